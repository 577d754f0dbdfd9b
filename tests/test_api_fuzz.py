"""Property tests: no bad input hurts the HTTP or WebSocket API.

The standard: bad input of any kind (malformed frames, wrong types, huge values, unknown
markets, replayed or unsigned requests) gets a precise error, nothing crashes, nothing is
lost and no state changes.

One real ``bourse serve`` (node, gateway, HTTP API on free ports, demo listing) runs for the
whole module on its own uvloop thread; the demo market maker is stopped (its quotes are
mass-cancelled) so that only the tests change the engine, and the rate limits are lifted so
that the generated traffic is never refused for its volume. Hypothesis generates requests
that are sent with a synchronous client (``http.client``, raw sockets) from the test thread;
WebSocket clients run on the server's loop through ``run_coroutine_threadsafe``.

HTTP (:func:`test_any_request_to_any_route_gets_a_precise_error_and_changes_nothing`): every
route of ``server.runner.app.router`` (so new routes are covered automatically) except
``/metrics`` and the WebSocket routes, with random methods, query strings, urlencoded, JSON
and raw bodies whose keys are Binance's parameter names, the API's own JSON field names
(read from its msgspec body Structs) or junk, and hostile values (empty, huge, negative,
floats, exponents, NaN/Infinity, unicode, control characters, very long, repeated keys,
broken percent-encoding), under every kind of credential: none, a bogus or malformed
``X-MBX-APIKEY``, the demo user's real key with a valid HMAC signature over the hostile
parameters (so the handlers' own parsing is reached) or a wrong one, stale and future
timestamps (a replay outside the recvWindow), and ``Authorization: Bearer`` with the demo
user's session, the demo operator's token (both read from ``demo-keys.json``) or junk.
Every response must be below 500; every 4xx must be exactly ``{"code": <int>, "msg": <str>}``
(JSON); a 2xx must be JSON. A 4xx, and any GET or HEAD, must leave the engine's state hash
and the control plane's database (every table but the audit trails, which record refused
calls by design) as they were. Nothing may be logged at ERROR (aiohttp's own report of a
request its HTTP parser refused aside). Each route gets its own Hypothesis run
(``FUZZ_EXAMPLES_PER_ROUTE`` examples, 40 by default), so every route gets its share.
Afterwards the API must still serve a signed order round trip and report the demo user's
balances equal to the engine's. Header values carry hostile text but no bytes below 0x20,
and methods are ones aiohttp's parser knows: a malformed request line or header is the raw
test's business.

What is deliberately not generated, so the fuzzer cannot lock itself out (each would be a
2xx that is the endpoint working, not a defect): the fuzzer's own session is never sent to
``DELETE /api/v1/sessions`` (a junk token is), and a path parameter of a route called with
anything but GET/HEAD never names an existing user, key, address, withdrawal or market
(ids below 10**6 and listed symbols are left out), so no freeze, halt, delist or revoke
hits the demo user, its key or BTCUSDT. Creating routes (register, API keys, addresses,
admin assets/markets/users/deposits/fee tiers) are fuzzed fully and may succeed: a 2xx of
a non-GET is allowed to change state.

Raw HTTP (:func:`test_garbage_bytes_on_the_http_port_never_hurt`): arbitrary bytes and
malformed requests (unknown methods, control characters, conflicting lengths, over-long
lines) on a fresh connection are answered below 500 or the connection is closed, nothing
changes, and the API still answers. (Such a request is refused by aiohttp's parser before
the application sees it: the answer is aiohttp's plain-text 400, not Binance's JSON.)

WebSocket (:func:`test_websocket_garbage_never_hurts_another_client`): random URLs (valid,
unknown and malformed stream names, labels, listen-key-like junk), random text and binary
frames and Binance control messages with hostile methods, params and ids, and raw
malformed frames over a bare socket. Each control frame gets Binance's ``{"result", "id"}``
or ``{"error": {"code": 0-3, "msg"}, "id"}`` (at most 5 per second are served; the sixth
closes with 1008), a URL naming an unknown stream is closed with 1008 (one no route
serves, such as ``/ws/``, is refused with a 4xx), malformed frames close the connection
with a protocol close code, never 1011, a client that hangs up during the handshake is no
error; nothing changes, nothing is logged at ERROR, and after every example a watcher
subscribed to ``btcusdt@bookTicker`` since the start still receives the frames of a fresh
order and of its cancellation.

Complexity: each example is one request (or one connection) plus an O(state) hash and
O(database) digest; the whole module runs in well under a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import http.client
import importlib
import inspect
import json
import logging
import os
import pkgutil
import re
import socket
import sqlite3
import struct
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus, unquote_plus

import aiohttp
import msgspec
import pytest
import uvloop
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import controlplane.api
from controlplane.db import FILE_NAME
from controlplane.demo import ASSETS as DEMO_ASSETS
from controlplane.demo import KEYS_FILE
from controlplane.serve import Server, start
from tests.test_accounts import config

T = TypeVar("T")

LIFTED_LIMITS = {
    "request_weight_per_minute": 10**9,
    "orders_per_10s": 10**9,
    "orders_per_day": 10**9,
}
SYMBOLS = ("BTCUSDT", "ETHUSDT")
SKIPPED_PATHS = ("/metrics", "/ws", "/ws/{streams}", "/stream")
AUDIT_TABLES = re.compile(r"audit", re.IGNORECASE)
"""Tables that record refused calls by design (the operator API's audit trail)."""
IMPOSSIBLE_ID_FLOOR = 10**6
"""Path ids at or above this name nothing the fuzzer could create."""
CALL_TIMEOUT_S = 30.0
EXAMPLES_PER_ROUTE = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES_PER_ROUTE", "40")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
AROUND_NOW_MS = time.time_ns() // 1_000_000
"""Timestamps near the present, fixed at import (a strategy must not depend on the clock)."""

BINANCE_PARAMS = (
    "symbol",
    "symbols",
    "side",
    "type",
    "timeInForce",
    "quantity",
    "quoteOrderQty",
    "price",
    "newClientOrderId",
    "orderId",
    "origClientOrderId",
    "cancelOrigClientOrderId",
    "cancelOrderId",
    "cancelNewClientOrderId",
    "cancelReplaceMode",
    "cancelRestrictions",
    "orderRateLimitExceededMode",
    "newCancelClientOrderId",
    "newQty",
    "stopPrice",
    "trailingDelta",
    "icebergQty",
    "strategyId",
    "strategyType",
    "selfTradePreventionMode",
    "newOrderRespType",
    "computeCommissionRates",
    "limit",
    "fromId",
    "startTime",
    "endTime",
    "interval",
    "timeZone",
    "windowSize",
    "recvWindow",
    "timestamp",
    "signature",
    "listenKey",
    "coin",
    "network",
    "address",
    "addressTag",
    "amount",
    "withdrawOrderId",
    "status",
    "offset",
    "txId",
    "asset",
    "user_id",
    "from_id",
)

HOSTILE_TEXT = (
    "",
    " ",
    "0",
    "-0",
    "1",
    "-1",
    "01",
    "+1",
    " 1",
    "1 ",
    "1.",
    ".1",
    "1.5",
    "-1.5",
    "1e3",
    "1E-3",
    "1e400",
    "0x10",
    "1_000",
    "1,000",
    "NaN",
    "nan",
    "-NaN",
    "sNaN",
    "Infinity",
    "-Infinity",
    "inf",
    "\uff11",  # FULLWIDTH DIGIT ONE: int() accepts it, Binance does not
    "\u0661\u0662",  # Arabic-Indic digits
    "9" * 19,
    "9" * 20,
    "9" * 21,
    "9" * 400,
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "4294967296",
    "0." + "0" * 30 + "1",
    "1." + "0" * 40,
    "99999999999999999999.99999999",
    "0.00000001",
    "null",
    "None",
    "true",
    "[]",
    "{}",
    '{"a":1}',
    "[1,2]",
    "\x00",
    "\x1b[31m",
    "a\nb",
    "\r\n",
    "\u202e",
    "\ud7ff\ue000",
    "\U0001f600",
    "a" * 5000,
    "%",
    "%zz",
    "&",
    "=",
    "'; DROP TABLE users; --",
    "../../etc/passwd",
    *SYMBOLS,
    "btcusdt",
    "BTCUSDT ",
    "NOPEUSDT",
    "BTC",
    "USDT",
    "BUY",
    "SELL",
    "buy",
    "LIMIT",
    "MARKET",
    "LIMIT_MAKER",
    "STOP_LOSS_LIMIT",
    "GTC",
    "IOC",
    "FOK",
    "GTX",
    "ACK",
    "RESULT",
    "FULL",
    "NONE",
    "EXPIRE_TAKER",
    "EXPIRE_BOTH",
    "STOP_ON_FAILURE",
    "ALLOW_FAILURE",
    "1s",
    "1m",
    "1h",
    "1d",
    "1w",
    "1M",
    "0.001",
    "0.01",
    "0.00001",
    "10000",
    "50000",
    "50000.00",
    "5",
    "1000",
    "60000",
    "60001",
    "HMAC_SHA256",
    "ED25519",
    "read",
    "trade",
    "withdraw",
    "admin",
)

JUNK_ESCAPES = ("%", "%z", "%zz", "%ff", "%c3%28", "%80", "%00", "%0a", "+", "%2B", "%26", "%3D")

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND")

AUTHS = (
    "none",
    "signed",
    "bad_signature",
    "api_key_only",
    "bogus_key",
    "malformed_key",
    "user_bearer",
    "operator_bearer",
    "bogus_bearer",
    "malformed_authorization",
)

CONTENT_TYPES = (
    None,
    "application/json",
    "application/x-www-form-urlencoded",
    "text/plain",
    "multipart/form-data; boundary=x",
    "application/json; charset=latin-1",
    "\u00ff/\u00ff",
)


def struct_field_names() -> tuple[str, ...]:
    """Every JSON field name of the API's request-body Structs (``controlplane.api.*``)."""
    names: set[str] = set()
    for info in pkgutil.iter_modules(controlplane.api.__path__):
        module = importlib.import_module(f"controlplane.api.{info.name}")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, msgspec.Struct) and obj is not msgspec.Struct:
                names.update(f.encode_name for f in msgspec.structs.fields(obj))
    return tuple(sorted(names))


# --- the server --------------------------------------------------------------------------


@dataclass
class Live:
    """The module's running server and the credentials the fuzzer uses."""

    server: Server
    loop: asyncio.AbstractEventLoop
    data_dir: Path
    api_key: str
    secret: str
    session_token: str
    operator_token: str
    account: int
    counts: Counter[str] = field(default_factory=Counter)

    def on_loop(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT_S) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def host(self) -> str:
        return self.server.http_host

    @property
    def port(self) -> int:
        return self.server.http_port


class ErrorLog(logging.Handler):
    """Collects every ERROR (or worse) record the server logs. (aiohttp's report of a
    request its HTTP parser refused — a malformed request line or header, answered 400
    before the application sees it — is a WARNING without the offending line:
    :class:`controlplane.api.errors.MalformedRequestRedaction`.)"""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()}\n{r.exc_text or ''}" for r in self.records]


@pytest.fixture(scope="module")
def errors() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, errors: ErrorLog) -> Iterator[Live]:
    data_dir = tmp_path_factory.mktemp("fuzz") / "bourse"
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzz-server", daemon=True)
    thread.start()

    def on_loop(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(CALL_TIMEOUT_S)

    server = on_loop(start(config(data_dir, LIFTED_LIMITS)))
    try:

        async def stop_market_maker() -> None:  # its quotes are cancelled as it stops
            for task in server.tasks:
                task.cancel()
            await asyncio.wait(server.tasks)

        on_loop(stop_market_maker())
        keys = json.loads((data_dir / KEYS_FILE).read_text())
        login, operator = keys["demo_login"], keys["demo_operator"]
        status, _, body = Http(server.http_host, server.http_port).send(
            "POST",
            "/api/v1/sessions",
            json.dumps({"username": login["username"], "password": login["password"]}).encode(),
            {"Content-Type": "application/json"},
        )
        assert status == 200, body
        yield Live(
            server=server,
            loop=loop,
            data_dir=data_dir,
            api_key=login["api_key"],
            secret=login["secret"],
            session_token=json.loads(body)["token"],
            operator_token=operator["token"],
            account=int(login["account"]),
        )
    finally:
        on_loop(server.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


class Http:
    """A keep-alive ``http.client`` connection that reconnects when the server closed it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.conn: http.client.HTTPConnection | None = None

    def send(
        self, method: str, target: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                self.conn.putrequest(method, target, skip_accept_encoding=True)
                for name, value in headers.items():
                    self.conn.putheader(name, value.encode("utf-8"))
                self.conn.putheader("Content-Length", str(len(body or b"")))
                self.conn.endheaders(body)
                response = self.conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt == 2:  # a fresh connection was dropped: the server refused it
                    raise
                continue
            if response.will_close:
                self.close()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Tables:
    """Digests of every table but the audit trails, read through a separate read-only
    connection (the server commits before it answers; WAL lets both read at once)."""

    def __init__(self, data_dir: Path) -> None:
        self.conn = sqlite3.connect(f"file:{data_dir / FILE_NAME}?mode=ro", uri=True)

    def digest(self) -> dict[str, str]:
        tables = [
            row[0]
            for row in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not AUDIT_TABLES.search(row[0])
        ]
        out: dict[str, str] = {}
        for table in sorted(tables):
            rows = self.conn.execute(f'SELECT * FROM "{table}"').fetchall()
            out[table] = hashlib.sha256(repr(sorted(map(repr, rows))).encode()).hexdigest()
        return out

    def close(self) -> None:
        self.conn.close()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


# --- generated HTTP requests -------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One generated request; the timestamp and signature are made when it is sent."""

    method: str
    route: str
    path: str
    query: tuple[str, ...]
    body_kind: str
    form: tuple[str, ...]
    payload: Any
    content_type: str | None
    auth: str
    auth_junk: str
    timestamp_offset_ms: int | None
    signature_in_body: bool


HOSTILE_VALUES: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(HOSTILE_TEXT),
    st.text(max_size=24),
    st.integers().map(str),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.floats().map(repr),
    st.integers(min_value=AROUND_NOW_MS - 10**9, max_value=AROUND_NOW_MS + 10**9).map(str),
)
KEYS: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(BINANCE_PARAMS),
    st.sampled_from(struct_field_names()),
    st.text(max_size=10),
)
ENCODINGS = st.sampled_from(("quote", "raw", "junk"))
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=-(10**40), max_value=10**40),
        st.floats(),
        st.sampled_from(HOSTILE_TEXT),
        st.text(max_size=16),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=8,
)
PLAUSIBLE_JSON = st.sampled_from(
    ("BTC", "USDT", "BTCUSDT", "fuzz", "0.01", "1", "5", "100", 0, 1, 2, 8, 100, ["read"], None)
)
JSON_BODIES = st.one_of(
    st.dictionaries(KEYS, st.one_of(PLAUSIBLE_JSON, JSON_VALUES), max_size=6), JSON_VALUES
)
TIMESTAMP_OFFSETS = st.one_of(
    st.just(0),  # now: the request is timely
    st.none(),  # no timestamp at all
    st.sampled_from((-70_000, -60_000, -5_001, 1_000, 5_000, -(10**13))),  # replayed, ahead
)


def encode(draw: st.DrawFn, text: str, is_key: bool) -> str:
    """``text`` percent-encoded properly, sent raw where that is possible, or with junk."""
    mode = draw(ENCODINGS)
    unsafe = "&#%= +" if is_key else "&#% +"
    if mode == "raw" and all(0x21 <= ord(c) < 0x7F and c not in unsafe for c in text):
        return text
    out = quote_plus(text, safe="")
    if mode == "junk":
        at = draw(st.integers(0, len(out)))
        out = out[:at] + draw(st.sampled_from(JUNK_ESCAPES)) + out[at:]
    return out


PLAUSIBLE: dict[str, tuple[str, ...]] = {
    "symbol": ("BTCUSDT", "ETHUSDT"),
    "symbols": ('["BTCUSDT"]', '["BTCUSDT","ETHUSDT"]'),
    "side": ("BUY", "SELL"),
    "type": ("LIMIT", "MARKET", "LIMIT_MAKER"),
    "timeInForce": ("GTC", "IOC", "FOK"),
    "quantity": ("0.001", "0.00001", "0.5"),
    "price": ("10000", "10000.01", "90000"),
    "quoteOrderQty": ("10", "100.5"),
    "newClientOrderId": ("fuzz-1", "x"),
    "orderId": ("1", "2", "100"),
    "origClientOrderId": ("fuzz-1",),
    "cancelOrderId": ("1",),
    "cancelReplaceMode": ("STOP_ON_FAILURE", "ALLOW_FAILURE"),
    "newQty": ("0.0005",),
    "newOrderRespType": ("ACK", "RESULT", "FULL"),
    "selfTradePreventionMode": ("NONE", "EXPIRE_TAKER"),
    "limit": ("1", "10", "1000"),
    "fromId": ("0", "1"),
    "startTime": (str(AROUND_NOW_MS - 3_600_000),),
    "endTime": (str(AROUND_NOW_MS + 3_600_000),),
    "interval": ("1m", "1h", "1d"),
    "windowSize": ("1m", "1d"),
    "recvWindow": ("5000", "60000"),
    "coin": ("USDT", "BTC"),
    "amount": ("1", "0.001"),
    "address": ("bc1qfuzz",),
    "listenKey": ("a" * 60,),
}
"""Binance parameters with values that pass their own checks, so that a hostile value next
to them reaches a handler's later checks."""
PLAUSIBLE_NAMES = st.sets(st.sampled_from(sorted(PLAUSIBLE)), min_size=1, max_size=8)


@st.composite
def pairs(draw: st.DrawFn) -> tuple[str, ...]:
    """``name=value`` pairs as sent on the wire (the same name may come twice): plausible
    parameters or none, and hostile ones."""
    out: list[str] = []
    if draw(st.booleans()):
        for name in sorted(draw(PLAUSIBLE_NAMES)):
            out.append(f"{name}={quote_plus(draw(st.sampled_from(PLAUSIBLE[name])))}")
    for _ in range(draw(st.integers(0, 4))):
        name = encode(draw, draw(KEYS), is_key=True)
        shape = draw(st.sampled_from(("pair", "pair", "pair", "bare", "empty")))
        if shape == "pair":
            out.append(f"{name}={encode(draw, draw(HOSTILE_VALUES), is_key=False)}")
        elif shape == "bare":
            out.append(name)
        else:
            out.append(f"{name}=")
    if len(out) > 1 and draw(st.booleans()):
        out = draw(st.permutations(out))
    return tuple(p for p in out if p)


def names_nothing(value: str) -> bool:
    """Whether a path value cannot name an existing id or a listed symbol."""
    with contextlib.suppress(ValueError):  # int() also reads " 1" and fullwidth digits
        if int(value) < IMPOSSIBLE_ID_FLOOR:
            return False
    with contextlib.suppress(ArithmeticError, ValueError):
        if Decimal(value.strip()) < IMPOSSIBLE_ID_FLOOR:
            return False
    return value.strip().upper() not in SYMBOLS


IMPOSSIBLE_PATH_VALUES = st.one_of(
    st.integers(min_value=IMPOSSIBLE_ID_FLOOR).map(str),
    st.sampled_from(HOSTILE_TEXT),
    st.text(max_size=12),
).filter(names_nothing)
READ_PATH_VALUES = st.one_of(
    st.sampled_from(("1", "2", "3", "0", *SYMBOLS, "btcusdt")), IMPOSSIBLE_PATH_VALUES
)
"""A path parameter's value: for a GET or HEAD also the real ids and symbols; for any other
method only values that name nothing (see the module docstring)."""


@dataclass(frozen=True)
class Route:
    method: str
    canonical: str
    params: tuple[str, ...]


def fuzzed_routes(app: web.Application) -> list[Route]:
    """Every route of the app but /metrics, the WebSocket routes and aiohttp's HEAD twins."""
    routes = []
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method == "HEAD" or resource.canonical in SKIPPED_PATHS:
            continue
        params = tuple(re.findall(r"\{(\w+)", resource.canonical))
        routes.append(Route(route.method, resource.canonical, params))
    return routes


def preferred_auth(path: str) -> str:
    if path.startswith("/admin/"):
        return "operator_bearer"
    if path.startswith("/api/v1/"):
        return "user_bearer"
    return "api_key_only" if "userDataStream" in path else "signed"


@st.composite
def cases(draw: st.DrawFn, routes: st.SearchStrategy[Route]) -> Case:
    route = draw(routes)
    own = st.just(route.method)
    method = draw(st.one_of(own, own, own, st.sampled_from(HTTP_METHODS)))
    path = route.canonical
    values = READ_PATH_VALUES if method in ("GET", "HEAD") else IMPOSSIBLE_PATH_VALUES
    for name in route.params:
        path = path.replace(f"{{{name}}}", quote(draw(values), safe=""), 1)
    if draw(st.integers(0, 30)) == 17:  # now and then a path nobody serves
        path += "/" + quote(draw(st.text(max_size=8)), safe="")
    preferred = st.just(preferred_auth(path))
    auth = draw(st.one_of(preferred, preferred, st.sampled_from(AUTHS)))
    if method == "DELETE" and path == "/api/v1/sessions" and auth == "user_bearer":
        auth = "bogus_bearer"  # never log the fuzzer's own session out
    body_kind = draw(st.sampled_from(("none", "form", "json", "raw", "oversize")))
    form: tuple[str, ...] = ()
    payload: Any = None
    default_type: str | None = None
    if body_kind == "form":
        form = draw(pairs())
        default_type = "application/x-www-form-urlencoded"
    elif body_kind == "json":
        payload = draw(JSON_BODIES)
        default_type = "application/json"
    elif body_kind == "raw":
        payload = draw(st.binary(max_size=64))
    return Case(
        method=method,
        route=route.canonical,
        path=path,
        query=draw(pairs()),
        body_kind=body_kind,
        form=form,
        payload=payload,
        content_type=draw(st.one_of(st.just(default_type), st.sampled_from(CONTENT_TYPES))),
        auth=auth,
        auth_junk=draw(st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=70))),
        timestamp_offset_ms=draw(TIMESTAMP_OFFSETS),
        signature_in_body=draw(st.booleans()),
    )


def signed_name(pair: str) -> str:
    return unquote_plus(pair.partition("=")[0], errors="replace")


def build(live: Live, case: Case) -> tuple[str, bytes | None, dict[str, str]]:
    """The request line target, body and headers of ``case``, signed as it says."""
    query, form = list(case.query), list(case.form)
    body: bytes | None = None
    headers: dict[str, str] = {}
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    if case.auth in ("signed", "bad_signature", "api_key_only"):
        headers["X-MBX-APIKEY"] = live.api_key
    elif case.auth == "bogus_key":
        headers["X-MBX-APIKEY"] = hashlib.sha256(case.auth_junk.encode()).hexdigest()
    elif case.auth == "malformed_key":
        headers["X-MBX-APIKEY"] = case.auth_junk
    elif case.auth == "user_bearer":
        headers["Authorization"] = f"Bearer {live.session_token}"
    elif case.auth == "operator_bearer":
        headers["Authorization"] = f"Bearer {live.operator_token}"
    elif case.auth == "bogus_bearer":
        headers["Authorization"] = f"Bearer {case.auth_junk or 'x'}"
    elif case.auth == "malformed_authorization":
        headers["Authorization"] = case.auth_junk
    for name, value in headers.items():  # valid header values (bytes below 0x20 are for
        # the raw test): hostile content, not a malformed request
        headers[name] = "".join(c for c in value if c >= " " and c != "\x7f")
    if case.auth in ("signed", "bad_signature"):
        target = form if case.signature_in_body and case.body_kind == "form" else query
        if case.timestamp_offset_ms is not None:
            target.append(f"timestamp={now_ms() + case.timestamp_offset_ms}")
        kept = [p for p in (*query, *form) if p and signed_name(p) != "signature"]
        payload = "&".join(p for p in query if p in kept) + "&".join(p for p in form if p in kept)
        signature = sign(live.secret, payload if case.auth == "signed" else payload + "x")
        target.append(f"signature={signature}")
    if case.body_kind == "form":
        body = "&".join(form).encode()
    elif case.body_kind == "json":
        body = json.dumps(case.payload).encode()  # NaN and Infinity too: invalid JSON
    elif case.body_kind == "raw":
        body = bytes(case.payload)
    elif case.body_kind == "oversize":
        body = b"a=" + b"9" * (controlplane.api.MAX_BODY_BYTES + 10)
    target_url = case.path + ("?" + "&".join(query) if query else "")
    return target_url, body, headers


def check_response(case: Case, status: int, headers: dict[str, str], data: bytes) -> None:
    assert status < 500, (status, data[:300])
    assert 200 <= status < 300 or 400 <= status < 500, (status, data[:300])
    if case.method == "HEAD":
        return
    assert headers.get("content-type", "").startswith("application/json"), (headers, data[:300])
    body = json.loads(data)
    if status >= 400:
        assert isinstance(body, dict), body
        assert set(body) == {"code", "msg"}, body
        assert type(body["code"]) is int, body
        assert body["code"] < 0, body
        assert isinstance(body["msg"], str), body
        assert body["msg"], body


def test_any_request_to_any_route_gets_a_precise_error_and_changes_nothing(
    live: Live, errors: ErrorLog
) -> None:
    routes = fuzzed_routes(live.server.runner.app)
    assert len(routes) > 50  # every route of the app, found by enumeration
    node = live.server.node
    client = Http(live.host, live.port)
    tables = Tables(live.data_dir)
    seen: Counter[tuple[str, int]] = Counter()

    def one_request(case: Case) -> None:
        errors.records.clear()
        state, before = node.state_hash(), tables.digest()
        target, body, headers = build(live, case)
        status, response_headers, data = client.send(case.method, target, body, headers)
        live.counts["http"] += 1
        seen[(case.route, status)] += 1
        check_response(case, status, response_headers, data)
        if status >= 400 or case.method in ("GET", "HEAD"):
            assert node.state_hash() == state, "a refused request or a read changed the engine"
            after = tables.digest()
            changed = sorted(t for t in before if after.get(t) != before[t])
            assert not changed, f"a refused request or a read changed tables {changed}"
        assert not errors.records, errors.messages()

    try:
        for route in routes:  # each route its own run, so each gets its share

            @EXAMPLES_PER_ROUTE
            @given(case=cases(st.just(route)))
            def example(case: Case) -> None:
                one_request(case)

            example()
    finally:
        client.close()
        tables.close()
        ok = sum(n for (_, s), n in seen.items() if s < 300)
        print(f"\nHTTP fuzz: {live.counts['http']} requests, {ok} answered 2xx, by route:")
        for canonical in sorted({r for r, _ in seen}):
            statuses = {s: n for (r, s), n in seen.items() if r == canonical}
            print(f"  {canonical}: {dict(sorted(statuses.items()))}")
    round_trip(live)  # and the server still serves a signed order round trip


def signed(live: Live, client: Http, method: str, path: str, params: dict[str, str]) -> Any:
    query = "&".join(
        f"{k}={quote_plus(v)}" for k, v in {**params, "timestamp": str(now_ms())}.items()
    )
    target = f"{path}?{query}&signature={sign(live.secret, query)}"
    status, _, data = client.send(method, target, None, {"X-MBX-APIKEY": live.api_key})
    assert status == 200, (path, data)
    return json.loads(data)


def round_trip(live: Live) -> None:
    """A signed order placed, found and cancelled; balances as the engine's."""
    client = Http(live.host, live.port)
    try:
        if signed(live, client, "GET", "/api/v3/openOrders", {"symbol": "BTCUSDT"}):
            signed(live, client, "DELETE", "/api/v3/openOrders", {"symbol": "BTCUSDT"})
        order = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC"}
        placed = signed(
            live, client, "POST", "/api/v3/order", {**order, "quantity": "0.001", "price": "10000"}
        )
        assert placed["status"] == "NEW"
        ref = {"symbol": "BTCUSDT", "orderId": str(placed["orderId"])}
        assert signed(live, client, "GET", "/api/v3/order", ref)["status"] == "NEW"
        assert signed(live, client, "DELETE", "/api/v3/order", ref)["status"] == "CANCELED"
        account = signed(live, client, "GET", "/api/v3/account", {})
        node, asset_ids = live.server.node, {a.name: a.id for a in DEMO_ASSETS}
        for entry in account["balances"]:
            free, held = node.balance(live.account, asset_ids[entry["asset"]]) or (0, 0)
            assert Decimal(entry["free"]) * 10**8 == free, entry
            assert Decimal(entry["locked"]) * 10**8 == held, entry
    finally:
        client.close()


# --- raw bytes on the HTTP port ----------------------------------------------------------

RAW_REQUESTS = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda method, target, version, header, body: (
            method + b" " + target + b" " + version + b"\r\n" + header + b"\r\n\r\n" + body
        ),
        st.sampled_from((b"GET", b"POST", b"FOO", b"G\x00T", b"", b"get", b"P O S T")),
        st.sampled_from(
            (b"/api/v3/ping", b"/api/v3/order?symbol=\x00", b"/%zz", b"*", b"", b"/" + b"a" * 9000)
        )
        | st.binary(max_size=40),
        st.sampled_from((b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/9", b"", b"FTP/1.1")),
        st.sampled_from(
            (
                b"Host: x",
                b"Content-Length: -1",
                b"Content-Length: 99999999999999999999",
                b"Content-Length: 5\r\nContent-Length: 6",
                b"Transfer-Encoding: chunked",
                b"Transfer-Encoding: chunked\r\nContent-Length: 3",
                b"X-MBX-APIKEY: \x00\x01",
                b"Bad Header: x",
                b": empty-name",
                b"X-Long: " + b"a" * 9000,
                b"Host: x\r\n continued",
            )
        )
        | st.binary(max_size=40),
        st.binary(max_size=40) | st.just(b"zz\r\nabc\r\n0\r\n\r\n"),
    ),
)


def exchange_raw(live: Live, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection, end the sending side, read until the server
    closes."""
    with socket.create_connection((live.host, live.port), timeout=CALL_TIMEOUT_S) as sock:
        with contextlib.suppress(ConnectionError):
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        received = b""
        with contextlib.suppress(ConnectionError):
            while chunk := sock.recv(65536):
                received += chunk
        return received


def test_garbage_bytes_on_the_http_port_never_hurt(live: Live, errors: ErrorLog) -> None:
    node = live.server.node
    client = Http(live.host, live.port)
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=int(os.environ.get("FUZZ_RAW_EXAMPLES", "300")),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(data=RAW_REQUESTS)
    def example(data: bytes) -> None:
        errors.records.clear()
        state = node.state_hash()
        received = exchange_raw(live, data)
        live.counts["raw"] += 1
        for found in re.finditer(rb"HTTP/1\.[01] (\d{3}) ", received):
            status = int(found.group(1))
            statuses[status] += 1
            assert status < 500, received[:400]
        assert node.state_hash() == state
        assert client.send("GET", "/api/v3/ping", None, {})[0] == 200
        assert not errors.records, errors.messages()

    try:
        example()
    finally:
        client.close()
        print(f"\nraw HTTP: {live.counts['raw']} connections, statuses {dict(statuses)}")


# --- WebSocket ---------------------------------------------------------------------------

STREAM_NAMES = st.one_of(
    st.sampled_from(
        (
            "btcusdt@trade",
            "ethusdt@aggTrade",
            "btcusdt@depth",
            "btcusdt@depth@100ms",
            "btcusdt@depth5",
            "ethusdt@depth20@100ms",
            "btcusdt@kline_1m",
            "btcusdt@kline_1M",
            "btcusdt@ticker",
            "btcusdt@miniTicker",
            "btcusdt@bookTicker",
            "btcusdt@nonsense",
            "BTCUSDT@trade",
            "nope@trade",
            "btcusdt@kline_7m",
            "btcusdt@depth7",
            "!bookTicker",
            "!ticker@arr",
            "@",
            "btcusdt@",
            "@trade",
            "a" * 60,
            "a" * 300,
            "123",
            "label_-",
            "",
        )
    ),
    st.text(max_size=20),
)
WS_IDS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=10),
    st.none(),
    st.floats(),
    st.booleans(),
    st.just("missing"),
)
CONTROL_MESSAGES = st.fixed_dictionaries(
    {
        "method": st.one_of(
            st.sampled_from(
                (
                    "SUBSCRIBE",
                    "UNSUBSCRIBE",
                    "LIST_SUBSCRIPTIONS",
                    "SET_PROPERTY",
                    "GET_PROPERTY",
                    "subscribe",
                    "",
                )
            ),
            JSON_VALUES,
        ),
        "params": st.one_of(
            st.lists(STREAM_NAMES, max_size=4),
            st.lists(st.sampled_from(("combined", True, False, 1, None)), max_size=3),
            JSON_VALUES,
        ),
        "id": WS_IDS,
    },
    optional={"extra": JSON_VALUES},
)


def control_text(message: dict[str, Any]) -> str:
    message = dict(message)
    if message.get("id") == "missing":
        del message["id"]
    return json.dumps(message)


WS_FRAMES = st.lists(
    st.one_of(
        CONTROL_MESSAGES.map(control_text).map(lambda text: ("text", text)),
        st.text(max_size=40).map(lambda text: ("text", text)),
        st.sampled_from(("{", "[]", "null", '{"method": "SUBSCRIBE"', "\x00", " ")).map(
            lambda text: ("text", text)
        ),
        st.binary(max_size=40).map(lambda data: ("binary", data)),
    ),
    max_size=7,
)


@st.composite
def ws_targets(draw: st.DrawFn) -> str:
    names = "/".join(quote(n, safe="@!") for n in draw(st.lists(STREAM_NAMES, max_size=3)))
    kind = draw(st.sampled_from(("ws", "ws_names", "stream", "stream_names")))
    if kind == "ws":
        return "/ws"
    if kind == "ws_names":
        return f"/ws/{names}"
    if kind == "stream":
        return "/stream"
    return f"/stream?streams={names}"


@st.composite
def raw_ws_frames(draw: st.DrawFn) -> bytes:
    """A malformed client frame: reserved bits or opcodes, no mask, a control frame too long
    or fragmented, a text frame that is not UTF-8, a length the bytes do not have, junk."""
    if draw(st.booleans()):
        return draw(st.binary(min_size=1, max_size=80))
    fin = draw(st.booleans())
    rsv = draw(st.integers(0, 7))
    opcode = draw(st.sampled_from((0x0, 0x1, 0x2, 0x3, 0x7, 0x8, 0x9, 0xA, 0xB, 0xF)))
    masked = draw(st.booleans())
    payload = draw(
        st.one_of(st.binary(max_size=200), st.just(b"\xc3\x28\xff"), st.just(b"\x03\xe8\xc3\x28"))
    )
    claimed = draw(st.one_of(st.just(len(payload)), st.integers(0, 2**63 - 1)))
    head = bytes([(fin << 7) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    if claimed < 126:
        head += bytes([mask_bit | claimed])
    elif claimed < 2**16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", claimed)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", claimed)
    if masked:
        key = draw(st.binary(min_size=4, max_size=4))
        head += key
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + payload


HANDSHAKE = (
    "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
PROTOCOL_CLOSE_CODES = {1000, 1002, 1003, 1007, 1008, 1009}
"""Close codes the server may answer malformed frames with; never 1011 (internal error)."""


def read_all(sock: socket.socket, received: bytes = b"", until: bytes | None = None) -> bytes:
    """Read until the server closes (or until ``until`` has arrived)."""
    with contextlib.suppress(ConnectionError):
        while until is None or until not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return received


def raw_ws(live: Live, frames: bytes, hang_up_early: bool) -> tuple[int | None, int | None]:
    """Open /ws over a bare socket and send ``frames``: after the server's 101, or at once
    and hang up (the client leaves during the handshake). End the sending side, read until
    the server closes; the handshake's status (if it came) and the server's close code."""
    request = HANDSHAKE.format(path="/ws", host=f"{live.host}:{live.port}").encode()
    with socket.create_connection((live.host, live.port), timeout=CALL_TIMEOUT_S) as sock:
        received = b""
        if not hang_up_early:
            sock.sendall(request)
            received = read_all(sock, until=b"\r\n\r\n")
            request = b""
        with contextlib.suppress(ConnectionError):
            sock.sendall(request + frames)
            sock.shutdown(socket.SHUT_WR)
        received = read_all(sock, received)
    if not received:
        return None, None
    head, _, rest = received.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    code = None
    while len(rest) >= 2:  # the server's frames (unmasked)
        opcode, length = rest[0] & 0x0F, rest[1] & 0x7F
        at = 2
        if length == 126:
            length, at = struct.unpack("!H", rest[2:4])[0], 4
        elif length == 127:
            length, at = struct.unpack("!Q", rest[2:10])[0], 10
        if opcode == 0x8 and length >= 2:
            code = struct.unpack("!H", rest[at : at + 2])[0]
        rest = rest[at + length :]
    return status, code


@dataclass
class WsOutcome:
    handshake_status: int | None = None
    replies: list[Any] = field(default_factory=list)
    close_code: int | None = None


def is_reply(frame: Any) -> bool:
    return isinstance(frame, dict) and ("result" in frame or "error" in frame)


async def ws_exchange(
    session: aiohttp.ClientSession, url: str, frames: list[tuple[str, Any]]
) -> WsOutcome:
    outcome = WsOutcome()
    try:
        ws = await session.ws_connect(url, autoping=True, heartbeat=None)
    except aiohttp.WSServerHandshakeError as err:
        outcome.handshake_status = err.status
        return outcome
    try:
        for kind, data in frames:
            if ws.closed:
                break
            with contextlib.suppress(ConnectionError, aiohttp.ClientConnectionResetError):
                if kind == "text":
                    await ws.send_str(data)
                else:
                    await ws.send_bytes(data)
        while len(outcome.replies) < min(len(frames), 5) or len(frames) > 5:
            msg = await ws.receive(timeout=CALL_TIMEOUT_S)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                outcome.close_code = ws.close_code
                break
            if msg.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                continue
            frame = json.loads(msg.data)
            if is_reply(frame):
                outcome.replies.append(frame)
    finally:
        await ws.close()
    return outcome


@dataclass
class WsCase:
    target: str
    frames: list[tuple[str, Any]]
    raw: bytes | None
    hang_up_early: bool


WS_CASES = st.builds(
    WsCase,
    target=ws_targets(),
    frames=WS_FRAMES,
    raw=st.one_of(st.none(), st.none(), raw_ws_frames()),
    hang_up_early=st.booleans(),
)


def check_reply(reply: Any) -> None:
    assert isinstance(reply, dict), reply
    if "error" in reply:
        assert set(reply) <= {"error", "id"}, reply
        error = reply["error"]
        assert set(error) == {"code", "msg"}, reply
        assert error["code"] in (0, 1, 2, 3), reply
        assert isinstance(error["msg"], str), reply
        assert error["msg"], reply
    else:
        assert set(reply) == {"result", "id"}, reply


def test_websocket_garbage_never_hurts_another_client(live: Live, errors: ErrorLog) -> None:
    node = live.server.node
    client = Http(live.host, live.port)
    if signed(live, client, "GET", "/api/v3/openOrders", {"symbol": "BTCUSDT"}):
        signed(live, client, "DELETE", "/api/v3/openOrders", {"symbol": "BTCUSDT"})
    base = f"ws://{live.host}:{live.port}"
    session = live.on_loop(make_session())
    watcher = live.on_loop(session.ws_connect(f"{base}/ws/btcusdt@bookTicker", heartbeat=None))
    closes: Counter[int | None] = Counter()

    async def next_bid() -> Decimal:
        while True:
            msg = await watcher.receive(timeout=CALL_TIMEOUT_S)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            return Decimal(json.loads(msg.data)["b"])

    def watcher_still_served() -> None:
        """A fresh bid's bookTicker frame, and its cancellation's, reach the watcher."""
        order = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC"}
        placed = signed(
            live, client, "POST", "/api/v3/order", {**order, "quantity": "0.001", "price": "10000"}
        )
        assert live.on_loop(next_bid()) == Decimal("10000")
        ref = {"symbol": "BTCUSDT", "orderId": str(placed["orderId"])}
        signed(live, client, "DELETE", "/api/v3/order", ref)
        assert live.on_loop(next_bid()) == 0

    @settings(
        max_examples=int(os.environ.get("FUZZ_WS_EXAMPLES", "400")),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(case=WS_CASES)
    def example(case: WsCase) -> None:
        errors.records.clear()
        state = node.state_hash()
        live.counts["ws"] += 1
        if case.raw is not None:
            status, code = raw_ws(live, case.raw, case.hang_up_early)
            assert status == 101 or (case.hang_up_early and status is None), status
            closes[code] += 1
            assert code is None or code in PROTOCOL_CLOSE_CODES, code
        else:
            outcome = live.on_loop(ws_exchange(session, base + case.target, case.frames))
            closes[outcome.close_code] += 1
            if outcome.handshake_status is not None:  # e.g. /ws/ names no route: 404
                assert 400 <= outcome.handshake_status < 500, outcome
            for reply in outcome.replies:
                check_reply(reply)
            if outcome.close_code is not None:
                assert outcome.close_code in (1008, 1013), outcome
            elif outcome.handshake_status is None:
                assert len(outcome.replies) == min(len(case.frames), 5), outcome
        assert node.state_hash() == state
        watcher_still_served()
        assert not errors.records, errors.messages()

    try:
        example()
    finally:
        live.on_loop(watcher.close())
        live.on_loop(session.close())
        client.close()
        print(f"\nWebSocket: {live.counts['ws']} connections, close codes {dict(closes)}")


async def make_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()
