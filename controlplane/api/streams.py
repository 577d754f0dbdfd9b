"""WebSocket market streams, Binance-compatible: ``/ws/<streamName>`` (raw; several names may
be joined by ``/``), ``/ws`` (then SUBSCRIBE) and ``/stream?streams=<a>/<b>`` (combined:
every frame is ``{"stream": <name>, "data": <payload>}``).

Control messages (text frames) are Binance's: ``{"method": "SUBSCRIBE" | "UNSUBSCRIBE" |
"LIST_SUBSCRIPTIONS" | "SET_PROPERTY" | "GET_PROPERTY", "params": [...], "id": <id>}``,
answered ``{"result": null | [...] | true, "id": <id>}`` or ``{"error": {"code", "msg"},
"id": <id>}`` with Binance's codes: 0 unknown property, 1 invalid value type, 2 invalid
request (bad id, unknown method, bad params, unknown stream name, more than
:data:`~controlplane.streams.hub.MAX_STREAMS_PER_CONNECTION` streams), 3 invalid JSON. A
refused request changes no subscription (SUBSCRIBE of several names is all or nothing).

Limits (Binance's): at most 5 incoming messages (text, binary, ping, pong) per second — the
connection is closed (1008) on the sixth; at most 1024 streams per connection; at most
:data:`~controlplane.streams.hub.MAX_CONNECTIONS` connections (then 1013 right after the
handshake); a ping every 20 s, and a client that has answered no ping for a minute is
closed (1008 "Pong timeout"); a client whose unsent frames exceed the hub's bound is closed
(1008). A URL naming an unknown stream is closed at once (1008 with the name as reason).

What a URL's segments stand for (``/ws/<a>/<b>``, ``/stream?streams=<a>/<b>``), each in
turn: a segment containing ``@`` is a market stream name and must be one this server
publishes (else 1008 ``Invalid stream name: <segment>``, as for ``btcusdt@nonsense``); a
segment without ``@`` that is an active listen key (:mod:`controlplane.api.userstream`)
is that account's user data stream; and ``/ws/<label>`` with exactly one segment matching
``^[A-Za-z0-9_-]{1,64}$`` that is neither opens a connection with no subscriptions, as
Binance does (CCXT connects to ``/ws/<its connection number>`` and then SUBSCRIBEs; an
expired listen key lands here too). Any other segment (such a label next to other
segments, or in ``/stream?streams=``, or with other characters) is refused with 1008.

Streams (symbol lower-case; payloads with Binance's field names, numbers as strings in the
market's decimals):

- ``<s>@depth`` / ``<s>@depth@100ms``: diff depth every 1000/100 ms when the book changed;
  ``U``/``u`` are node sequence numbers, contiguous per stream (``U`` = previous ``u`` + 1),
  consistent with REST ``depth``'s ``lastUpdateId`` (see the hub's docstring).
- ``<s>@depth5|10|20`` (``@100ms``): the engine's top levels (``Node.depth``) when the book
  changed, ``lastUpdateId`` read before the book as REST does.
- ``<s>@trade``: every trade at once. ``<s>@aggTrade``: the fills of one taker order at one
  price in one command; its id ``a`` is its first trade id ``f``.
- ``<s>@kline_<1s…1M>``: the current candle, at most once a second, and once more with
  ``x`` true when it closes; a period without trades sends nothing. Trade ids are
  exchange-wide, so ``L - f + 1`` may exceed ``n``.
- ``<s>@bookTicker``: on every change of the best bid or ask (``u``: the command's
  sequence number). ``!bookTicker`` (deprecated at Binance) and the all-market arrays are
  not offered.
- ``<s>@ticker`` / ``<s>@miniTicker``: the rolling 24 hours in one-minute buckets, once a
  second when changed.

Klines and tickers are built from the trades seen live: after a restart they start from
the first trade after it (REST klines come from the SQLite projection). Memory is bounded:
one candle per market and interval, 1,440 buckets per market.

The frames themselves come from the hub (:mod:`controlplane.streams.hub`), kept under
:data:`STREAM_HUB`. Each control message costs O(params) work.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from controlplane.api import Exchange
from controlplane.streams.hub import (
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN_LATER,
    Connection,
    PrivateStream,
    StreamHub,
    streams_of,
)
from controlplane.streams.names import StreamNameError, StreamSpec, parse

STREAM_HUB = web.AppKey("stream_hub", StreamHub)
_TIMER = web.AppKey("stream_hub_timer", asyncio.Task[None])

MAX_MESSAGE_BYTES = 64 * 1024
CLIENT_CLOSED_REQUEST = 499
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_ID_TEXT = re.compile(r"^[A-Za-z0-9_-]{1,36}\Z")
CONNECTION_LABEL = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
"""``/ws/<label>``: a lone segment of this shape that is no listen key opens a connection
with no subscriptions (CCXT's ``/ws/0``)."""
_BYTE_AT = re.compile(r"\(byte (\d+)\)")
U64_MAX = 2**64 - 1

UNKNOWN_PROPERTY, INVALID_VALUE, INVALID_REQUEST, INVALID_JSON = 0, 1, 2, 3


class ControlError(Exception):
    """A control message refused with Binance's ``code`` and ``msg``."""

    def __init__(self, code: int, msg: str, request_id: Any = None) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.request_id = request_id


def invalid(msg: str, request_id: Any = None) -> ControlError:
    return ControlError(INVALID_REQUEST, f"Invalid request: {msg}", request_id)


def _json_error(text: str, err: msgspec.DecodeError) -> ControlError:
    match = _BYTE_AT.search(str(err))
    at = int(match.group(1)) if match else len(text.encode())
    before = text.encode()[:at].decode(errors="replace")
    line = before.count("\n") + 1
    column = len(before) - (before.rfind("\n") + 1) + 1
    return ControlError(
        INVALID_JSON, f"Invalid JSON: expected value at line {line} column {column}"
    )


def _request_id(message: dict[str, Any]) -> Any:
    if "id" not in message:
        raise invalid("request ID must be an unsigned integer")
    value = message["id"]
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U64_MAX:
        return value
    if isinstance(value, str) and _ID_TEXT.match(value):
        return value
    raise invalid("request ID must be an unsigned integer")


def _stream_names(params: Any, request_id: Any) -> list[str]:
    if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
        raise invalid("params must be an array of stream names", request_id)
    return params


def handle_control(hub: StreamHub, conn: Connection, text: str) -> tuple[Any, Any]:
    """Apply one control message; its id and result (raises ControlError)."""
    try:
        message = msgspec.json.decode(text)
    except msgspec.DecodeError as err:
        raise _json_error(text, err) from None
    if not isinstance(message, dict):
        raise invalid("expected a JSON object")
    request_id = _request_id(message)
    for key in message:
        if key not in ("method", "params", "id"):
            raise invalid(
                f"unknown field `{key}`, expected one of `method`, `params`, `id`", request_id
            )
    if "method" not in message:
        raise invalid("missing field `method`", request_id)
    method = message["method"]
    if method not in METHODS:
        shown = method if isinstance(method, str) else msgspec.json.encode(method).decode()
        expected = ", ".join(f"`{m}`" for m in METHODS)
        raise invalid(f"unknown variant `{shown[:64]}`, expected one of {expected}", request_id)
    params = message.get("params", [])
    listing = hub.exchange.listing
    if method == "SUBSCRIBE":
        names = _stream_names(params, request_id)
        specs: dict[str, StreamSpec] = {}
        for name in names:
            try:
                specs[name] = parse(name, listing)
            except StreamNameError:
                raise invalid(f"unknown stream name `{name[:64]}`", request_id) from None
        new = [n for n in specs if n not in conn.streams]
        if len(conn.streams) + len(new) > hub.max_streams_per_connection:
            raise invalid(
                f"too many streams: at most {hub.max_streams_per_connection} per connection",
                request_id,
            )
        for spec in specs.values():
            hub.subscribe(conn, spec)
        return request_id, None
    if method == "UNSUBSCRIBE":
        for name in _stream_names(params, request_id):
            if name in conn.streams and conn.streams[name] is not None:
                hub.unsubscribe(conn, name)
        return request_id, None
    if not isinstance(params, list):
        raise invalid("params must be an array", request_id)
    if method == "LIST_SUBSCRIPTIONS":
        if params:
            raise invalid("too many parameters", request_id)
        return request_id, list(streams_of(conn))
    wanted = 2 if method == "SET_PROPERTY" else 1
    if len(params) > wanted:
        raise invalid("too many parameters", request_id)
    if not params or not isinstance(params[0], str):
        raise invalid("property name must be a string", request_id)
    if params[0] != "combined":
        raise ControlError(UNKNOWN_PROPERTY, "Unknown property", request_id)
    if method == "GET_PROPERTY":
        return request_id, conn.combined
    if len(params) < 2 or not isinstance(params[1], bool):
        raise ControlError(INVALID_VALUE, "Invalid value type: expected Boolean", request_id)
    conn.combined = params[1]
    return request_id, None


def _reply(conn: Connection, text: str) -> None:
    try:
        request_id, result = handle_control(conn.hub, conn, text)
    except ControlError as err:
        body: dict[str, Any] = {"error": {"code": err.code, "msg": err.msg}, "id": err.request_id}
        conn.enqueue(msgspec.json.encode(body).decode(), "response")
        return
    conn.enqueue(msgspec.json.encode({"result": result, "id": request_id}).decode(), "response")


def resolve_url_streams(
    hub: StreamHub, names: list[str], *, raw_path: bool
) -> tuple[list[StreamSpec], list[PrivateStream]]:
    """What the streams of a connection URL stand for (see the module docstring): market
    streams, private streams (listen keys), or, for ``/ws/<label>`` alone, nothing.
    StreamNameError (with the offending name) for anything else."""
    specs: list[StreamSpec] = []
    private: list[PrivateStream] = []
    for name in names:
        if "@" in name:
            specs.append(parse(name, hub.exchange.listing))
            continue
        found = hub.resolve_private(name)
        if found is not None:
            private.append(found)
        elif not (raw_path and len(names) == 1 and CONNECTION_LABEL.match(name)):
            raise StreamNameError(name)
    return specs, private


async def _serve(
    request: web.Request, names: list[str], combined: bool, *, raw_path: bool = False
) -> web.StreamResponse:
    hub = request.app[STREAM_HUB]
    ws = web.WebSocketResponse(autoping=False, compress=False, max_msg_size=MAX_MESSAGE_BYTES)
    try:
        await ws.prepare(request)
    except ConnectionResetError:
        # The client left during the handshake: nobody to serve. A plain response, which
        # aiohttp drops quietly on the closed transport (status 499, nginx's "client closed
        # request", as the metrics' CLIENT_GONE).
        return web.Response(status=CLIENT_CLOSED_REQUEST)
    if len(hub.connections) >= hub.max_connections:
        hub.counters.disconnects["limit"] = hub.counters.disconnects.get("limit", 0) + 1
        await ws.close(code=CLOSE_TRY_AGAIN_LATER, message=b"Too many connections")
        return ws
    try:
        specs, private = resolve_url_streams(hub, names, raw_path=raw_path)
    except StreamNameError as err:
        reason = f"Invalid stream name: {err.args[0]}".encode()[:123]
        await ws.close(code=CLOSE_POLICY, message=reason)
        return ws
    wanted = {s.name for s in specs} | {p.key for p in private}
    if len(wanted) > hub.max_streams_per_connection:
        await ws.close(code=CLOSE_POLICY, message=b"Too many streams")
        return ws
    conn = hub.connect(ws, combined)
    conn.transport = request.transport
    for spec in specs:
        hub.subscribe(conn, spec)
    for stream in private:
        hub.subscribe_key(conn, stream.key, stream.name)
    writer = asyncio.create_task(conn.write())
    keep_alive = asyncio.create_task(conn.keep_alive())
    try:
        async for msg in ws:
            if conn.closing:
                break
            if not conn.count_message():
                conn.kill("rate", CLOSE_POLICY, "Too many messages")
                break
            if msg.type == WSMsgType.TEXT:
                _reply(conn, msg.data)
            elif msg.type == WSMsgType.BINARY:
                body = {"error": {"code": INVALID_JSON, "msg": "Invalid JSON: binary frame"}}
                conn.enqueue(msgspec.json.encode({**body, "id": None}).decode(), "response")
            elif msg.type == WSMsgType.PING:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.pong(msg.data)
            elif msg.type == WSMsgType.PONG:
                conn.last_pong = time.monotonic()
    finally:
        hub.disconnect(conn)
        if conn.close_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close_task)
        for task in (writer, keep_alive):
            task.cancel()
        for task in (writer, keep_alive):
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return ws


async def raw_streams(request: web.Request) -> web.StreamResponse:
    names = request.match_info.get("streams", "")
    return await _serve(request, names.split("/") if names else [], combined=False, raw_path=True)


async def combined_streams(request: web.Request) -> web.StreamResponse:
    names = request.query.get("streams")
    return await _serve(request, names.split("/") if names is not None else [], combined=True)


def setup(app: web.Application, exchange: Exchange) -> None:
    hub = StreamHub(exchange)
    app[STREAM_HUB] = hub
    exchange.feed.subscribe("streams", hub.consume)
    app.router.add_get("/ws", raw_streams)
    app.router.add_get("/ws/{streams:.+}", raw_streams)
    app.router.add_get("/stream", combined_streams)

    async def start(app: web.Application) -> None:
        hub.seed()
        app[_TIMER] = asyncio.create_task(hub.run_timer(), name="stream-hub-timer")

    async def shutdown(app: web.Application) -> None:
        await hub.close_all()

    async def cleanup(app: web.Application) -> None:
        timer = app.get(_TIMER)
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer

    app.on_startup.append(start)
    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)
