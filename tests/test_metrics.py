"""``GET /metrics`` on a real ``bourse serve`` (node, binary gateway, demo market maker, HTTP
API): the scrape parses as Prometheus text, HTTP figures count exactly the requests made,
the node's figures equal ``Node.stats()``, and the business figures equal what the book and
the event stream say at a moment the engine stands still."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import pytest
import uvloop
from prometheus_client.parser import text_string_to_metric_families

from controlplane import messages as m
from controlplane.api.streams import STREAM_HUB
from controlplane.bridge import EventFeed
from controlplane.config import ConfigError
from controlplane.demo import BTC, DEMO_ACCOUNTS, ETH, MARKETS, USDT
from controlplane.metrics import METRICS
from controlplane.serve import Server, start
from tests.servers import server_config
from tests.test_serve import config

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def scrape(http: aiohttp.ClientSession, server: Server) -> Samples:
    async with http.get(server.base_url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        return parse(await response.text())


class StreamTally:
    """The test's own count of the event stream, from where the metrics started."""

    def __init__(self) -> None:
        self.trades: Counter[int] = Counter()
        self.base: Counter[int] = Counter()
        self.quote: Counter[int] = Counter()
        self.accepted: Counter[int] = Counter()
        self.rejects: Counter[str] = Counter()
        self.deposits: Counter[int] = Counter()

    def consume(self, entries: Sequence[m.Entry]) -> None:
        for entry in entries:
            for event in entry.events:
                if isinstance(event, m.Trade):
                    self.trades[event.market] += 1
                    self.base[event.market] += event.quantity
                    self.quote[event.market] += event.quote_quantity
                elif isinstance(event, m.Accepted):
                    self.accepted[event.market] += 1
                elif isinstance(event, m.Rejected):
                    self.rejects[event.reason] += 1
                elif isinstance(event, m.Deposited):
                    self.deposits[event.asset] += event.amount


HTTP_REQUESTS = [
    # (method, path, expected status, route label)
    ("GET", "/api/v3/ping", 200, "/api/v3/ping"),
    ("GET", "/api/v3/ping", 200, "/api/v3/ping"),
    ("GET", "/api/v3/ping", 200, "/api/v3/ping"),
    ("GET", "/api/v3/depth?symbol=BTCUSDT&limit=5", 200, "/api/v3/depth"),
    ("GET", "/api/v3/depth?symbol=BTCUSDT&limit=5", 200, "/api/v3/depth"),
    ("GET", "/api/v3/depth?symbol=NOPE", 400, "/api/v3/depth"),
    ("GET", "/api/v3/no-such-endpoint", 404, "unmatched"),
    ("GET", "/favicon.ico", 404, "unmatched"),
]


def http_series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def test_metrics_of_a_running_exchange(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = await start(config(tmp_path / "bourse"))
        tally = StreamTally()
        app = server.runner.app
        metrics = app[METRICS]
        own_feed = EventFeed(server.node)
        own_feed.subscribe("test", tally.consume, metrics.business.from_seq)
        own_feed.start()
        node = server.node
        try:
            async with aiohttp.ClientSession() as http:
                # The demo trades on both markets; its two gateway sessions are up.
                assert server.market_maker is not None
                deadline = time.monotonic() + 20
                while server.market_maker.crosses < 2 or tally.trades[1] == 0:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)
                first = await scrape(http, server)

                # --- HTTP: exactly the requests made, per route, method and code.
                for method, path, status, _ in HTTP_REQUESTS:
                    async with http.request(method, server.base_url + path) as response:
                        assert response.status == status, path
                        body = await response.json()
                        if status >= 400:
                            assert set(body) == {"code", "msg"}
                before = await scrape(http, server)
                for method, path, status, _ in HTTP_REQUESTS:
                    async with http.request(method, server.base_url + path) as response:
                        assert response.status == status, path
                        await response.read()
                after = await scrape(http, server)
                expected: Counter[frozenset[tuple[str, str]]] = Counter()
                for method, _, status, route in HTTP_REQUESTS:
                    expected[
                        frozenset({"route": route, "method": method, "code": str(status)}.items())
                    ] += 1
                # The scrape that made `before` is counted in `after`.
                expected[
                    frozenset({"route": "/metrics", "method": "GET", "code": "200"}.items())
                ] += 1
                counts_before = http_series(before, "bourse_http_requests_total")
                counts_after = http_series(after, "bourse_http_requests_total")
                deltas = {
                    labels: v - counts_before.get(labels, 0.0)
                    for labels, v in counts_after.items()
                    if v != counts_before.get(labels, 0.0)
                }
                assert deltas == {labels: float(n) for labels, n in expected.items()}
                # The first round's 404s and 400 were there already, with the same labels.
                assert (
                    value(
                        before,
                        "bourse_http_requests_total",
                        route="unmatched",
                        method="GET",
                        code="404",
                    )
                    == 2
                )
                durations: Counter[frozenset[tuple[str, str]]] = Counter()
                for labels, n in expected.items():
                    keep = {(k, v) for k, v in labels if k != "code"}
                    durations[frozenset(keep)] += n
                timed_before = http_series(before, "bourse_http_request_duration_seconds_count")
                timed_after = http_series(after, "bourse_http_request_duration_seconds_count")
                for labels, n in durations.items():
                    assert timed_after[labels] - timed_before.get(labels, 0.0) == n, labels
                ping = frozenset({"route": "/api/v3/ping", "method": "GET"}.items())
                inf_bucket = (
                    "bourse_http_request_duration_seconds_bucket",
                    ping | {("le", "+Inf")},
                )
                assert after[inf_bucket] == timed_after[ping]

                # --- the engine moves while the market maker trades.
                deadline = time.monotonic() + 10
                while True:
                    later = await scrape(http, server)
                    if value(later, "bourse_engine_commands_total") > value(
                        first, "bourse_engine_commands_total"
                    ):
                        break
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)

                # --- a moment the engine stands still: everything must agree exactly.
                deadline = time.monotonic() + 15
                while True:
                    applied = node.stats()["applied_seq"]
                    await server.exchange.feed.wait_for(applied)
                    await own_feed.wait_for(applied)
                    resting = {
                        market.symbol: sum(
                            orders
                            for side in ("buy", "sell")
                            for _, _, orders in node.depth(market.id, side, 100_000)
                        )
                        for market in MARKETS
                    }
                    held = {
                        asset.name: sum(
                            (node.balance(account, asset.id) or (0, 0))[1]
                            for account in DEMO_ACCOUNTS.values()
                        )
                        for asset in (BTC, ETH, USDT)
                    }
                    still = await scrape(http, server)
                    stats = node.stats()
                    if stats["applied_seq"] == applied:
                        break
                    assert time.monotonic() < deadline, "the engine never stood still"
                    await asyncio.sleep(0.005)

                s = still
                assert value(s, "bourse_engine_applied_seq") == applied
                assert value(s, "bourse_engine_commands_total") == applied
                assert value(s, "bourse_engine_durable_seq") == stats["durable_seq"]
                assert value(s, "bourse_engine_published_seq") == stats["published_seq"]
                assert value(s, "bourse_feed_seq") == applied
                assert value(s, "bourse_event_lag_commands") == 0
                assert value(s, "bourse_journal_commits_total") == stats["commits"]
                assert value(s, "bourse_journal_commit_seconds_count") == stats["commits"] > 0
                assert value(s, "bourse_journal_commit_seconds_sum") > 0
                # Every command applied since the node started was timed once.
                since_start = applied - node.recovery()["next_seq"] + 1
                assert value(s, "bourse_engine_match_seconds_count") == since_start
                match_inf = value(s, "bourse_engine_match_seconds_bucket", le="+Inf")
                assert match_inf == since_start
                for ring in ("sequencer", "engine", "publisher"):
                    assert value(s, "bourse_ring_depth", ring=ring) == 0
                assert value(s, "bourse_snapshots_total") == stats["snapshots"]
                assert value(s, "bourse_node_busy_rejections_total") == stats["busy_rejections"]
                assert value(s, "bourse_gateway_sessions") >= 2
                assert value(s, "bourse_gateway_messages_in_total") > 0
                assert value(s, "bourse_gateway_messages_out_total") > 0
                assert value(s, "bourse_data_dir_free_bytes") > 0
                assert value(s, "bourse_data_dir_size_bytes") >= value(
                    s, "bourse_data_dir_free_bytes"
                )

                for market in MARKETS:
                    symbol = market.symbol
                    assert value(s, "bourse_open_orders", market=symbol) == resting[symbol]
                    assert (
                        value(s, "bourse_orders_total", market=symbol)
                        == (tally.accepted[market.id])
                    )
                    assert (
                        value(s, "bourse_trades_total", market=symbol) == (tally.trades[market.id])
                    )
                    assert value(s, "bourse_volume_base_total", market=symbol) == (
                        tally.base[market.id] / 10**market.base.decimals
                    )
                    assert value(s, "bourse_volume_quote_total", market=symbol) == (
                        tally.quote[market.id] / 10**market.quote.decimals
                    )
                assert resting["BTCUSDT"] > 0
                assert value(s, "bourse_trades_total", market="BTCUSDT") > 0
                assert value(s, "bourse_volume_base_total", market="BTCUSDT") > 0
                for asset in (BTC, ETH, USDT):
                    assert value(s, "bourse_balances_held", asset=asset.name) == (
                        held[asset.name] / 10**asset.decimals
                    )
                    assert value(s, "bourse_deposits_total", asset=asset.name) == (
                        tally.deposits[asset.id] / 10**asset.decimals
                    )
                assert held["USDT"] > 0
                rejects = {
                    dict(labels)["reason"]: v
                    for labels, v in http_series(s, "bourse_engine_rejects_total").items()
                }
                assert rejects == {reason: float(n) for reason, n in tally.rejects.items()}

                # --- WebSocket figures: two real clients on the trade stream.
                hub = server.runner.app[STREAM_HUB]
                sockets = [
                    await http.ws_connect(server.base_url + "/ws/btcusdt@trade") for _ in range(2)
                ]
                try:
                    for ws in sockets:  # the demo market maker's taker trades every few rounds
                        frame = await asyncio.wait_for(ws.receive_json(), 30)
                        assert frame["e"] == "trade"
                    ws_scrape = await scrape(http, server)
                    counters = hub.counters
                    assert value(ws_scrape, "bourse_ws_clients") == counters.clients >= 2
                    sent = value(ws_scrape, "bourse_ws_messages_sent_total", stream="trade")
                    assert sent == counters.messages_sent["trade"] >= 2
                    assert value(ws_scrape, "bourse_ws_messages_sent_total", stream="user") == 0
                    lag_count = value(ws_scrape, "bourse_ws_delivery_lag_seconds_count")
                    assert lag_count == counters.delivery_lag_count >= 2
                    inf = value(ws_scrape, "bourse_ws_delivery_lag_seconds_bucket", le="+Inf")
                    assert inf == lag_count
                finally:
                    for ws in sockets:
                        await ws.close()

                # --- without a gateway its figures are left out; the rest stays.
                await asyncio.to_thread(node.stop_gateway)
                bare = await scrape(http, server)
                assert not any(name.startswith("bourse_gateway_") for name, _ in bare)
                assert value(bare, "bourse_engine_applied_seq") >= applied
        finally:
            await own_feed.stop()
            await server.stop()

    async def main() -> None:
        await asyncio.wait_for(scenario(), 90)

    uvloop.run(main())


def test_a_metrics_token_admits_only_its_bearer(tmp_path: Path) -> None:
    token = "scrape-4c1d9e0b7f2a"
    cfg = server_config(tmp_path / "bourse", http={"metrics_token": token}, demo={"enabled": False})

    async def scenario() -> None:
        server = await start(cfg)
        try:
            async with aiohttp.ClientSession() as http:
                url = server.base_url + "/metrics"
                for headers in (
                    {},
                    {"Authorization": "Bearer wrong-token-0123456"},
                    {"Authorization": f"Bearer {token}x"},
                    {"Authorization": f"Basic {token}"},
                    {"Authorization": token},
                ):
                    async with http.get(url, headers=headers) as response:
                        assert response.status == 401, headers
                        assert response.headers["WWW-Authenticate"].startswith("Bearer")
                        assert await response.json() == {
                            "code": -1002,
                            "msg": "You are not authorized to execute this request.",
                        }
                async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
                    assert response.status == 200
                    assert "bourse_engine_applied_seq" in await response.text()
                # The rest of the API is unaffected.
                async with http.get(server.base_url + "/api/v3/ping") as response:
                    assert response.status == 200
        finally:
            await server.stop()

    uvloop.run(asyncio.wait_for(scenario(), 60))


def test_a_metrics_token_must_be_long_and_printable(tmp_path: Path) -> None:
    for bad in ("short", "has a space in it!!", "tab\tinside-the-token"):
        with pytest.raises(ConfigError, match="metrics_token"):
            server_config(tmp_path, http={"metrics_token": bad})
