"""``bourse serve`` in process: the real node, binary gateway, demo market maker and HTTP API
on free ports; a graceful stop and a restart on the same data directory."""

from __future__ import annotations

import asyncio
import logging
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop

from controlplane import read_journal, replay_journal
from controlplane.config import ServerConfig
from controlplane.demo import DEMO_USER, DEPOSITS, KEYS_FILE, USDT
from controlplane.serve import Server, start
from tests.servers import server_config


def config(data_dir: Path) -> ServerConfig:
    return server_config(data_dir)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        await asyncio.wait_for(scenario(), 60)

    uvloop.run(main())


async def get(http: aiohttp.ClientSession, server: Server, path: str) -> tuple[int, Any]:
    async with http.get(server.base_url + path) as response:
        return response.status, await response.json()


async def two_sided_book(http: aiohttp.ClientSession, server: Server, symbol: str) -> Any:
    deadline = time.monotonic() + 10
    while True:
        status, book = await get(http, server, f"/api/v3/depth?symbol={symbol}&limit=3")
        assert status == 200
        if book["bids"] and book["asks"]:
            return book
        assert time.monotonic() < deadline, book
        await asyncio.sleep(0.02)


def test_serve_public_api_demo_market_maker_and_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "bourse"
    hashes: list[str] = []
    restarted_at: list[int] = []

    async def first() -> None:
        server = await start(config(data_dir))
        try:
            assert server.listed_now
            assert server.keys_created
            assert server.http_port > 0
            assert server.gateway_port > 0
            keys_file = data_dir / KEYS_FILE
            assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
            assert stat.S_IMODE((data_dir / "controlplane.sqlite3").stat().st_mode) == 0o600
            assert any("shown once" in line for line in server.banner())
            async with aiohttp.ClientSession() as http:
                assert await get(http, server, "/api/v3/ping") == (200, {})
                status, body = await get(http, server, "/api/v3/time")
                assert status == 200
                assert abs(body["serverTime"] - time.time() * 1000) < 60_000

                status, info = await get(http, server, "/api/v3/exchangeInfo")
                assert status == 200
                assert info["timezone"] == "UTC"
                assert [r["rateLimitType"] for r in info["rateLimits"]] == [
                    "REQUEST_WEIGHT",
                    "ORDERS",
                    "ORDERS",
                ]
                assert info["exchangeFilters"] == []
                symbols = {s["symbol"]: s for s in info["symbols"]}
                assert set(symbols) == {"BTCUSDT", "ETHUSDT"}
                btc = symbols["BTCUSDT"]
                assert (btc["status"], btc["baseAsset"], btc["quoteAsset"]) == (
                    "TRADING",
                    "BTC",
                    "USDT",
                )
                assert btc["orderTypes"] == ["LIMIT", "LIMIT_MAKER", "MARKET"]
                assert btc["baseAssetPrecision"] == btc["quoteAssetPrecision"] == 8
                filters = {f["filterType"]: f for f in btc["filters"]}
                assert filters["PRICE_FILTER"]["tickSize"] == "0.01000000"
                assert filters["LOT_SIZE"]["stepSize"] == "0.00001000"
                assert filters["LOT_SIZE"]["minQty"] == "0.00001000"
                assert filters["NOTIONAL"]["minNotional"] == "5.00000000"
                eth = {f["filterType"]: f for f in symbols["ETHUSDT"]["filters"]}
                assert eth["LOT_SIZE"]["stepSize"] == "0.00010000"
                status, one = await get(http, server, "/api/v3/exchangeInfo?symbol=ETHUSDT")
                assert [s["symbol"] for s in one["symbols"]] == ["ETHUSDT"]

                # Errors: Binance's codes and HTTP 400.
                invalid = {"code": -1121, "msg": "Invalid symbol."}
                assert await get(http, server, "/api/v3/depth?symbol=DOGEUSDT") == (400, invalid)
                assert await get(http, server, "/api/v3/exchangeInfo?symbol=X") == (400, invalid)
                status, err = await get(http, server, "/api/v3/depth")
                assert (status, err["code"]) == (400, -1102)
                assert "'symbol'" in err["msg"]
                # "%C2%B2" is "²" (str.isdigit, but not int()); "%D9%A1" Arabic-Indic 1.
                for bad in ("abc", "-1", "0", "5001", "%C2%B2", "%D9%A1"):
                    status, err = await get(
                        http, server, f"/api/v3/depth?symbol=BTCUSDT&limit={bad}"
                    )
                    assert (status, err["code"]) == (400, -1100), bad
                    assert "'limit'" in err["msg"]

                # An unknown endpoint: Binance's UNSUPPORTED_OPERATION, which clients map to a
                # bad request (not to an order error).
                status, err = await get(http, server, "/api/v3/noSuchEndpoint")
                assert (status, err["code"]) == (404, -1020)

                # The demo market maker quotes both markets, bids below asks.
                for symbol in ("BTCUSDT", "ETHUSDT"):
                    book = await two_sided_book(http, server, symbol)
                    assert len(book["bids"]) <= 3
                    assert len(book["asks"]) <= 3
                    assert float(book["bids"][0][0]) < float(book["asks"][0][0])
                    assert isinstance(book["lastUpdateId"], int)
                # ... and its taker crosses the spread now and then.
                assert server.market_maker is not None
                deadline = time.monotonic() + 10
                while server.market_maker.crosses < 2:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)
        finally:
            await server.stop()
        await server.stop()  # idempotent

    run(first)
    # The market maker pulled its quotes before the node stopped; a clean replay of the
    # directory gives the state the restarted node must recover.
    hashes.append(replay_journal({"data_dir": str(data_dir)})["state_hash"])
    keys_before = (data_dir / KEYS_FILE).read_bytes()

    async def second() -> None:
        server = await start(config(data_dir))
        try:
            assert not server.listed_now
            assert not server.keys_created
            assert not any("shown once" in line for line in server.banner())
            recovery = server.node.recovery()
            assert recovery["state_hash"] == hashes[0]
            restarted_at.append(recovery["next_seq"])
            assert server.node.balance(DEMO_USER, USDT.id) == (DEPOSITS[DEMO_USER][USDT], 0)
            async with aiohttp.ClientSession() as http:
                await two_sided_book(http, server, "BTCUSDT")
        finally:
            await server.stop()

    run(second)
    assert (data_dir / KEYS_FILE).read_bytes() == keys_before
    # Nothing listed, created or deposited a second time: the second run only traded.
    second_run = read_journal(data_dir, from_seq=restarted_at[0])
    assert second_run, "the market maker quoted after the restart"
    assert {r["command"]["type"] for r in second_run} <= {
        "place_order",
        "cancel_order",
        "cancel_all",
    }


def test_a_malformed_request_is_refused_without_its_secret_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp's parser refuses a header with a control character; its log line must say so
    without quoting the header (here a bearer token)."""
    secret = "bop_" + "s3cr3t" * 6

    async def scenario() -> None:
        server = await start(config(tmp_path / "bourse"))
        try:
            reader, writer = await asyncio.open_connection(server.http_host, server.http_port)
            request = f"GET /api/v1/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\x01"
            writer.write(request.encode() + b"\r\n\r\n")
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), 10)
            assert status_line.split()[1:2] == [b"400"]
            writer.close()
            async with aiohttp.ClientSession() as http:  # and the server carries on
                assert await get(http, server, "/api/v3/ping") == (200, {})
        finally:
            await server.stop()

    with caplog.at_level(logging.DEBUG):
        run(scenario)
    refused = [r for r in caplog.records if "malformed HTTP request refused" in r.getMessage()]
    assert refused
    assert all(secret not in r.getMessage() and r.exc_info is None for r in refused)
    assert {r.levelname for r in refused} == {"WARNING"}  # the client's error, not ours
    assert not any(secret in (r.getMessage() + (r.exc_text or "")) for r in caplog.records)
