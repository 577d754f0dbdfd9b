"""WebSocket market streams against a real ``bourse serve`` (node, gateway, demo market maker,
HTTP server on free ports) with aiohttp's WebSocket client: the local order book algorithm,
trades, combined streams and the control protocol, bad input and limits, partial depth and
klines."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import uvloop

from controlplane.api.streams import STREAM_HUB
from controlplane.config import ServerConfig
from controlplane.demo import DEMO_USER
from controlplane.messages import Entry, PlaceOrder, Side, Trade
from controlplane.serve import Server, start
from controlplane.streams.hub import StreamHub
from tests.servers import server_config

BTC_MARKET = 1
WAIT = 10.0


def config(data_dir: Path) -> ServerConfig:
    return server_config(data_dir)


def run(
    tmp_path: Path, scenario: Callable[[Server, aiohttp.ClientSession], Awaitable[None]]
) -> None:
    async def main() -> None:
        server = await start(config(tmp_path / "bourse"))
        try:
            async with aiohttp.ClientSession() as http:
                await asyncio.wait_for(scenario(server, http), 60)
        finally:
            await stop_market_maker(server)
            await server.stop()

    uvloop.run(main())


def hub_of(server: Server) -> StreamHub:
    return server.runner.app[STREAM_HUB]


def ws_url(server: Server, path: str) -> str:
    return server.base_url.replace("http://", "ws://") + path


async def receive(ws: aiohttp.ClientWebSocketResponse) -> Any:
    """The next JSON frame (fails the test if none comes in time)."""
    msg = await asyncio.wait_for(ws.receive(), WAIT)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def request(ws: aiohttp.ClientWebSocketResponse, message: Any) -> Any:
    """Send a control message; its reply (data frames before it are skipped)."""
    await ws.send_str(message if isinstance(message, str) else json.dumps(message))
    while True:
        frame = await receive(ws)
        if "result" in frame or "error" in frame:
            return frame


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, str]:
    """Read until the server closes; the close code and reason."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), WAIT)
        if msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
        ):
            return ws.close_code, str(msg.extra or "")


async def rest_depth(http: aiohttp.ClientSession, server: Server) -> Any:
    async with http.get(f"{server.base_url}/api/v3/depth?symbol=BTCUSDT&limit=5000") as r:
        assert r.status == 200
        return await r.json()


async def stop_market_maker(server: Server) -> None:
    """Stop the demo market maker (it pulls its quotes on the way out). Cancelled again
    until it ends: on Python 3.11 ``asyncio.wait_for`` can swallow a cancellation that
    arrives as its awaitable completes, and the market maker's loop would go on."""
    for task in server.tasks:
        while not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=0.2)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            task.result()
    server.tasks.clear()


async def place_quotes(server: Server) -> int:
    """Rest a few orders of the demo user on both sides of BTCUSDT and cross one level;
    the last command's sequence number."""
    quotes: list[tuple[Side, int, int]] = [
        ("buy", 5_900_000, 30_000),
        ("buy", 5_899_000, 20_000),
        ("buy", 5_899_000, 10_000),
        ("buy", 5_850_000, 50_000),
        ("sell", 6_100_000, 40_000),
        ("sell", 6_105_000, 10_000),
        ("sell", 6_200_000, 20_000),
        ("buy", 6_100_000, 10_000),  # crosses: fills part of the best ask
    ]
    orders = [
        PlaceOrder(
            account=DEMO_USER,
            market=BTC_MARKET,
            side=side,
            order_type="limit",
            price=price,
            quantity=quantity,
        )
        for side, price, quantity in quotes
    ]
    acks = await server.exchange.bridge.submit_many(orders)
    assert all(ack.rejection() is None for ack in acks), acks
    return acks[-1].seq


def entries(server: Server, first: int, last: int) -> list[Entry]:
    """The node's event stream from ``first`` to ``last`` (inclusive)."""
    out: list[Entry] = []
    seq = first
    while seq <= last:
        raw = server.node.events(seq, 1000, 1.0)
        batch = msgspec.convert(raw, list[Entry])
        out.extend(e for e in batch if e.seq <= last)
        seq = batch[-1].seq + 1
    return out


class LocalBook:
    """Binance's "how to manage a local order book correctly", with strings as given."""

    def __init__(self, snapshot: Any) -> None:
        self.last_update_id: int = snapshot["lastUpdateId"]
        self.bids = {p: q for p, q in snapshot["bids"]}
        self.asks = {p: q for p, q in snapshot["asks"]}
        self.previous_u: int | None = None

    def apply(self, event: Any) -> bool:
        """Apply a diff event; False if it is older than the book."""
        if event["u"] <= self.last_update_id:
            return False
        if self.previous_u is None:
            assert event["U"] <= self.last_update_id + 1 <= event["u"], event
        else:
            assert event["U"] == self.previous_u + 1, (event, self.previous_u)
        self.previous_u = event["u"]
        for levels, book in ((event["b"], self.bids), (event["a"], self.asks)):
            for price, qty in levels:
                if Decimal(qty) == 0:
                    book.pop(price, None)
                else:
                    book[price] = qty
        return True

    def sides(self) -> tuple[list[list[str]], list[list[str]]]:
        bids = sorted(self.bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)
        asks = sorted(self.asks.items(), key=lambda kv: Decimal(kv[0]))
        return [list(kv) for kv in bids], [list(kv) for kv in asks]


@pytest.mark.parametrize("stream", ["btcusdt@depth@100ms", "btcusdt@depth"])
def test_local_order_book_from_snapshot_and_diffs(tmp_path: Path, stream: str) -> None:
    async def scenario(server: Server, http: aiohttp.ClientSession) -> None:
        async with http.ws_connect(ws_url(server, f"/ws/{stream}")) as ws:
            buffered: list[Any] = []
            # Buffer a first frame, then take the snapshot, as Binance's algorithm says.
            buffered.append(await receive(ws))
            snapshot = await rest_depth(http, server)
            book = LocalBook(snapshot)
            previous: int = buffered[0]["u"]
            applied = 0
            while applied < 3:  # live: the market maker moves its quotes all along
                event = await receive(ws)
                assert event["e"] == "depthUpdate"
                assert event["s"] == "BTCUSDT"
                assert event["U"] == previous + 1
                assert event["U"] <= event["u"]
                previous = event["u"]
                buffered.append(event)
                for pending in buffered:
                    applied += book.apply(pending)
                buffered.clear()
            await stop_market_maker(server)
            last_seq = await place_quotes(server)
            while book.previous_u is None or book.previous_u < last_seq:
                event = await receive(ws)
                assert event["U"] == previous + 1
                previous = event["u"]
                book.apply(event)
            final = await rest_depth(http, server)
            assert final["lastUpdateId"] == book.previous_u == last_seq
            bids, asks = book.sides()
            assert (bids, asks) == (final["bids"], final["asks"])
            assert bids
            assert asks
            assert ["58990.00000000", "0.00030000"] in bids  # two orders at one level
            assert ["61000.00000000", "0.00030000"] in asks  # 0.0004 less the 0.0001 crossed

    run(tmp_path, scenario)


def test_trade_stream_has_every_trade_once_in_order(tmp_path: Path) -> None:
    async def scenario(server: Server, http: aiohttp.ClientSession) -> None:
        hub = hub_of(server)
        async with http.ws_connect(ws_url(server, "/ws")) as ws:
            first_seq = hub.covered_seq + 1  # every trade sent to this client is later
            reply = await request(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 7})
            assert reply == {"result": None, "id": 7}
            received: list[Any] = []
            while len(received) < 3:
                received.append(await receive(ws))
            last_seq = hub.covered_seq
            expected = [
                (entry, event)
                for entry in entries(server, first_seq, last_seq)
                for event in entry.events
                if isinstance(event, Trade) and event.market == BTC_MARKET
            ]
            # From the first trade sent on: each one, in order.
            expected = [(e, t) for e, t in expected if t.trade_id >= received[0]["t"]]
            while len(received) < len(expected):
                received.append(await receive(ws))
            market = server.exchange.listing.markets[BTC_MARKET]
            for frame, (entry, trade) in zip(received, expected, strict=False):
                assert frame == {
                    "e": "trade",
                    "E": frame["E"],
                    "s": "BTCUSDT",
                    "t": trade.trade_id,
                    "p": market.price_str(trade.price),
                    "q": market.qty_str(trade.quantity),
                    "T": entry.timestamp_ns // 1_000_000,
                    "m": trade.aggressor == "sell",
                    "M": True,
                }
                assert frame["E"] >= frame["T"]
            ids = [f["t"] for f in received]
            assert ids == sorted(set(ids))
            assert all(t > expected[-1][1].trade_id for t in ids[len(expected) :])
            assert hub.counters.messages_sent["trade"] >= len(received)
            assert hub.counters.delivery_lag_count > 0

    run(tmp_path, scenario)


def test_combined_stream_and_control_messages(tmp_path: Path) -> None:
    async def scenario(server: Server, http: aiohttp.ClientSession) -> None:
        hub = hub_of(server)
        hub.max_messages_per_second = 1000  # this test sends many control messages
        url = ws_url(server, "/stream?streams=btcusdt@trade/ethusdt@bookTicker")
        async with http.ws_connect(url) as ws:
            listed = await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1})
            assert listed == {"result": ["btcusdt@trade", "ethusdt@bookTicker"], "id": 1}
            assert await request(
                ws, {"method": "GET_PROPERTY", "params": ["combined"], "id": 2}
            ) == {
                "result": True,
                "id": 2,
            }
            seen: set[str] = set()
            while seen != {"btcusdt@trade", "ethusdt@bookTicker"}:
                frame = await receive(ws)
                assert set(frame) == {"stream", "data"}
                seen.add(frame["stream"])
                if frame["stream"] == "ethusdt@bookTicker":
                    assert set(frame["data"]) == {"u", "s", "b", "B", "a", "A"}
                    assert frame["data"]["s"] == "ETHUSDT"
                else:
                    assert frame["data"]["e"] == "trade"
            sub = {
                "method": "SUBSCRIBE",
                "params": ["btcusdt@aggTrade", "btcusdt@trade"],
                "id": "a-1",
            }
            assert await request(ws, sub) == {"result": None, "id": "a-1"}
            unsub = {"method": "UNSUBSCRIBE", "params": ["btcusdt@trade", "xrpusdt@trade"], "id": 3}
            assert await request(ws, unsub) == {"result": None, "id": 3}
            listed = await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": None})
            assert listed == {"result": ["ethusdt@bookTicker", "btcusdt@aggTrade"], "id": None}
            aggs = 0
            while aggs < 2:  # after the reply: never a trade frame again
                frame = await receive(ws)
                assert frame["stream"] in ("ethusdt@bookTicker", "btcusdt@aggTrade")
                if frame["stream"] == "btcusdt@aggTrade":
                    aggs += 1
                    data = frame["data"]
                    assert data["e"] == "aggTrade"
                    assert data["a"] == data["f"] <= data["l"]

        # A raw connection switched to combined payloads.
        async with http.ws_connect(ws_url(server, "/ws/btcusdt@bookTicker")) as ws:
            frame = await receive(ws)
            assert frame["s"] == "BTCUSDT"
            assert "stream" not in frame
            set_combined = {"method": "SET_PROPERTY", "params": ["combined", True], "id": 4}
            assert await request(ws, set_combined) == {"result": None, "id": 4}
            frame = await receive(ws)
            assert frame["stream"] == "btcusdt@bookTicker"
            assert frame["data"]["s"] == "BTCUSDT"
            assert hub.counters.clients == 1
        deadline = time.monotonic() + WAIT
        while hub.counters.clients:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)

    run(tmp_path, scenario)


def test_bad_input_errors_and_limits(tmp_path: Path) -> None:
    async def scenario(server: Server, http: aiohttp.ClientSession) -> None:
        hub = hub_of(server)
        for path in (
            "/ws/btcusdt@nope",
            "/ws/BTCUSDT@trade",
            "/ws/xrpusdt@trade",
            "/stream?streams=btcusdt@trade/btcusdt@kline_2s",
        ):
            async with http.ws_connect(ws_url(server, path)) as ws:
                code, reason = await closed_with(ws)
                assert code == 1008, path
                assert reason.startswith("Invalid stream name: "), reason

        # A bystander keeps receiving through everything below.
        async with (
            http.ws_connect(ws_url(server, "/ws/btcusdt@bookTicker")) as bystander,
            http.ws_connect(ws_url(server, "/ws")) as ws,
        ):
            await receive(bystander)
            unknown_variant = (
                "Invalid request: unknown variant `FOO`, expected one of `SUBSCRIBE`, "
                "`UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`"
            )
            cases: list[tuple[Any, Any]] = [
                ("{bad", {"code": 3, "msg": "Invalid JSON: expected value at line 1 column 2"}),
                ({"method": "FOO", "params": [], "id": 1}, {"code": 2, "msg": unknown_variant}),
                (
                    {"method": "SUBSCRIBE", "params": ["btcusdt@trade", "btcusdt@nope"], "id": 2},
                    {"code": 2, "msg": "Invalid request: unknown stream name `btcusdt@nope`"},
                ),
                (
                    {"method": "SUBSCRIBE", "params": "btcusdt@trade", "id": 3},
                    {"code": 2, "msg": "Invalid request: params must be an array of stream names"},
                ),
                (
                    {"method": "SUBSCRIBE", "params": []},
                    {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"},
                ),
                (
                    {"method": "SUBSCRIBE", "params": [], "id": -1},
                    {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"},
                ),
                (
                    {"params": [], "id": 4},
                    {"code": 2, "msg": "Invalid request: missing field `method`"},
                ),
                (
                    {"method": "SET_PROPERTY", "params": ["colour", True], "id": 5},
                    {"code": 0, "msg": "Unknown property"},
                ),
                (
                    {"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 6},
                    {"code": 1, "msg": "Invalid value type: expected Boolean"},
                ),
                (
                    {"method": "GET_PROPERTY", "params": [7], "id": 7},
                    {"code": 2, "msg": "Invalid request: property name must be a string"},
                ),
                (
                    {"method": "LIST_SUBSCRIPTIONS", "params": ["x"], "id": 8},
                    {"code": 2, "msg": "Invalid request: too many parameters"},
                ),
                ([1, 2], {"code": 2, "msg": "Invalid request: expected a JSON object"}),
            ]
            for message, error in cases:
                reply = await request(ws, message)
                request_id = message.get("id") if isinstance(message, dict) else None
                if isinstance(request_id, int) and request_id < 0:
                    request_id = None
                assert reply == {"error": error, "id": request_id}, message
                await asyncio.sleep(0.25)  # stay under 5 messages a second
            # Nothing was subscribed by the refused requests.
            assert await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 9}) == {
                "result": [],
                "id": 9,
            }
            await asyncio.sleep(0.25)
            too_many = [f"btcusdt@kline_{i}" for i in ("1s", "1m", "3m")]
            hub.max_streams_per_connection = 2
            reply = await request(ws, {"method": "SUBSCRIBE", "params": too_many, "id": 10})
            hub.max_streams_per_connection = 1024
            assert reply["error"]["code"] == 2
            assert "too many streams" in reply["error"]["msg"]
            await asyncio.sleep(1.1)
            # Over 5 messages in a second: disconnected.
            for i in range(6):
                await ws.send_str(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
            code, reason = await closed_with(ws)
            assert (code, reason) == (1008, "Too many messages")
            before = (await receive(bystander))["u"]
            assert (await receive(bystander))["u"] > before
            assert hub.counters.disconnects["rate"] == 1

            # A client whose unsent frames exceed the bound is disconnected.
            hub.max_queue_bytes = 10
            async with http.ws_connect(ws_url(server, "/ws/btcusdt@depth@100ms")) as slow:
                code, reason = await closed_with(slow)
            hub.max_queue_bytes = 4 * 1024 * 1024
            assert (code, reason) == (1008, "Send buffer full: the client reads too slowly")
            await receive(bystander)

            # The connection limit.
            hub.max_connections = hub.counters.clients
            async with http.ws_connect(ws_url(server, "/ws/btcusdt@trade")) as extra:
                code, reason = await closed_with(extra)
            hub.max_connections = 10_000
            assert (code, reason) == (1013, "Too many connections")

            # Pings: a client that answers stays, one that never does is closed.
            hub.ping_interval, hub.pong_timeout = 0.4, 1.0
            ticker = ws_url(server, "/ws/btcusdt@bookTicker")
            async with (
                http.ws_connect(ticker) as talker,
                http.ws_connect(ticker, autoping=False) as mute,
            ):
                frames: list[Any] = []

                async def read_talker() -> None:  # aiohttp answers pings while reading
                    while True:
                        frames.append(await receive(talker))

                reader = asyncio.create_task(read_talker())
                code, reason = await closed_with(mute)
                assert (code, reason) == (1008, "Pong timeout")
                seen = len(frames)
                await asyncio.sleep(1.5)
                assert hub.counters.disconnects["pong"] == 1
                assert not reader.done()
                assert len(frames) > seen
                reader.cancel()
            await receive(bystander)

    run(tmp_path, scenario)


def test_partial_depth_is_the_engine_top_levels(tmp_path: Path) -> None:
    async def scenario(server: Server, http: aiohttp.ClientSession) -> None:
        url = ws_url(server, "/stream?streams=btcusdt@depth5@100ms/btcusdt@depth10")
        market = server.exchange.listing.markets[BTC_MARKET]
        async with http.ws_connect(url) as ws:
            last_ids = {"btcusdt@depth5@100ms": 0, "btcusdt@depth10": 0}
            for _ in range(4):
                frame = await receive(ws)
                data = frame["data"]
                assert set(data) == {"lastUpdateId", "bids", "asks"}
                limit = 5 if frame["stream"] == "btcusdt@depth5@100ms" else 10
                assert len(data["bids"]) <= limit
                assert len(data["asks"]) <= limit
                prices = [Decimal(p) for p, _ in data["bids"]]
                assert prices == sorted(prices, reverse=True)
                assert data["lastUpdateId"] >= last_ids[frame["stream"]]
                last_ids[frame["stream"]] = data["lastUpdateId"]
            await stop_market_maker(server)
            last_seq = await place_quotes(server)
            got: dict[str, Any] = {}
            while len(got) < 2:
                frame = await receive(ws)
                if frame["data"]["lastUpdateId"] >= last_seq:
                    got[frame["stream"]] = frame["data"]
            for name, limit in (("btcusdt@depth5@100ms", 5), ("btcusdt@depth10", 10)):
                bids = server.node.depth(BTC_MARKET, "buy", limit)
                asks = server.node.depth(BTC_MARKET, "sell", limit)
                assert got[name] == {
                    "lastUpdateId": last_seq,
                    "bids": [[market.price_str(p), market.qty_str(q)] for p, q, _ in bids],
                    "asks": [[market.price_str(p), market.qty_str(q)] for p, q, _ in asks],
                }
            assert len(got["btcusdt@depth5@100ms"]["bids"]) == 3  # three bid prices

    run(tmp_path, scenario)


def test_kline_matches_the_trades(tmp_path: Path) -> None:
    async def scenario(server: Server, http: aiohttp.ClientSession) -> None:
        url = ws_url(server, "/stream?streams=btcusdt@trade/btcusdt@kline_1s/btcusdt@kline_1m")
        async with http.ws_connect(url) as ws:
            trades: list[Any] = []
            checked = {"1s": 0, "1m": 0}
            closed_seen = False
            early_minute = False  # the 1m candle began before this client subscribed
            while not (closed_seen and (checked["1m"] >= 1 or early_minute)):
                frame = await receive(ws)
                data = frame["data"]
                if frame["stream"] == "btcusdt@trade":
                    trades.append(data)
                    continue
                k = data["k"]
                assert data["e"] == "kline"
                assert data["s"] == k["s"] == "BTCUSDT"
                assert k["i"] == frame["stream"].split("_")[1]
                assert k["T"] == k["t"] + (1000 if k["i"] == "1s" else 60_000) - 1
                if not trades or k["f"] < trades[0]["t"]:
                    early_minute = early_minute or k["i"] == "1m"
                    continue  # the candle began before this client subscribed
                mine = [t for t in trades if k["f"] <= t["t"] <= k["L"]]
                assert mine
                assert mine[0]["t"] == k["f"]
                assert mine[-1]["t"] == k["L"]
                prices = [Decimal(t["p"]) for t in mine]
                assert k["n"] == len(mine)
                assert Decimal(k["o"]) == prices[0]
                assert Decimal(k["c"]) == prices[-1]
                assert Decimal(k["h"]) == max(prices)
                assert Decimal(k["l"]) == min(prices)
                assert Decimal(k["v"]) == sum(Decimal(t["q"]) for t in mine)
                assert Decimal(k["q"]) == sum(Decimal(t["p"]) * Decimal(t["q"]) for t in mine)
                taker_buys = [t for t in mine if not t["m"]]
                assert Decimal(k["V"]) == sum(Decimal(t["q"]) for t in taker_buys)
                assert Decimal(k["Q"]) == sum(Decimal(t["p"]) * Decimal(t["q"]) for t in taker_buys)
                assert all(k["t"] <= t["T"] <= k["T"] for t in mine)
                assert k["B"] == "0"
                checked[k["i"]] += 1
                closed_seen = closed_seen or (k["x"] and k["i"] == "1s")

    run(tmp_path, scenario)
