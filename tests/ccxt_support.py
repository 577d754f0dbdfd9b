"""CCXT's ``binance`` class pointed at a local ``bourse serve``, for tests/test_ccxt.py.

:func:`binance_client` builds a ``ccxt.pro.binance`` (the asyncio client, REST and
WebSocket) whose every URL — ``urls['api']``'s REST sections and ``urls['api']['ws']`` —
keeps Binance's path but names the local server, so a request CCXT makes to a section we do
not serve reaches this server (and fails there) rather than anywhere else. The options keep
CCXT on the endpoints a Binance spot exchange without margin or wallet-config endpoints
has: ``fetchCurrencies`` off (``sapi/v1/capital/config/getall``), ``fetchMargins`` off
(``sapi/v1/margin/allPairs``), spot markets only, no time-difference probe.

:func:`running_server` starts the real server (node, gateway, demo market maker quoting
every 100 ms, HTTP API) on a fresh data directory; :func:`stop_market_maker` stops the
market maker (its quotes are mass-cancelled) and waits until the projections have seen
everything the node applied, so the book holds only what a test puts there.

The conversions (:func:`dec`, :func:`units`, :func:`node_book`) compare CCXT's floats with
the server's integer atoms exactly: ``Decimal(str(x))`` of a float that CCXT parsed from a
decimal string gives that decimal back (shortest round-trip repr), so no tolerance is used.
Everything here is O(size of what it converts).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import ccxt.pro

from controlplane.engine_types import Side
from controlplane.listing import Market
from controlplane.serve import Server, start
from tests.test_serve import config

SETTLE_SECONDS = 10.0
"""The longest a test waits for something that must happen (a trade, a stream update)."""

CCXT_OPTIONS: dict[str, Any] = {
    "defaultType": "spot",
    "fetchMarkets": {"types": ["spot"]},
    "fetchCurrencies": False,
    "fetchMargins": False,
    "adjustForTimeDifference": False,
    "warnOnFetchOpenOrdersWithoutSymbol": False,
}


def _local(url: str, scheme: str, netloc: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment))


def point_at(urls: dict[str, Any], server: Server) -> None:
    """Rewrite every URL in CCXT's ``urls['api']`` (nested) to the local server, keeping
    Binance's paths: ``https://api.binance.com/api/v3`` → ``http://127.0.0.1:P/api/v3``,
    ``wss://stream.binance.com:9443/ws`` → ``ws://127.0.0.1:P/ws``."""
    netloc = f"{server.http_host}:{server.http_port}"
    for key, value in urls.items():
        if isinstance(value, dict):
            point_at(value, server)
        elif isinstance(value, str) and "://" in value:
            scheme = "ws" if value.startswith("ws") else "http"
            urls[key] = _local(value, scheme, netloc)


def binance_client(server: Server, api_key: str | None = None, secret: str | None = None) -> Any:
    """A ``ccxt.pro.binance`` talking to ``server`` only (close it with ``await .close()``)."""
    settings: dict[str, Any] = {
        "options": dict(CCXT_OPTIONS),
        "enableRateLimit": False,
        "enableLastJsonResponse": True,  # tests read the error body CCXT raised on
    }
    if api_key is not None:
        settings["apiKey"] = api_key
    if secret is not None:
        settings["secret"] = secret
    exchange = ccxt.pro.binance(settings)
    point_at(exchange.urls["api"], server)
    return exchange


def demo_client(server: Server) -> Any:
    """The demo user's client: its REST API key (read + trade) from ``demo-keys.json``."""
    login = server.demo_login
    assert login is not None
    return binance_client(server, login.api_key, login.secret)


@asynccontextmanager
async def running_server(tmp_path: Path) -> AsyncIterator[Server]:
    server = await start(config(tmp_path / "bourse"))
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def closing(exchange: Any) -> AsyncIterator[Any]:
    try:
        yield exchange
    finally:
        await exchange.close()


async def caught_up(server: Server) -> None:
    """Wait until the projections (REST, streams) have seen everything the node applied."""
    exchange = server.exchange
    await exchange.feed.wait_for(exchange.node.stats()["applied_seq"], SETTLE_SECONDS)


async def stop_market_maker(server: Server) -> None:
    """Stop the demo market maker (its quotes are mass-cancelled as it ends). The cancel is
    repeated until the task ends: on Python 3.11 ``asyncio.wait_for`` (the gateway client's
    ``Ticket.wait``) loses a cancellation that arrives as the awaited reply does, and the
    market maker's loop then just goes on."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while server.tasks:
        assert time.monotonic() < deadline, "the demo market maker does not stop"
        for task in server.tasks:
            task.cancel()
        done, _ = await asyncio.wait(server.tasks, timeout=0.2)
        server.tasks[:] = [task for task in server.tasks if task not in done]
    await caught_up(server)


async def rest_get(server: Server, path: str, params: Mapping[str, str] | None = None) -> Any:
    """A public REST GET answered 200: the server's raw JSON (the truth CCXT is compared to)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.base_url + path, params=dict(params or {})) as response,
    ):
        body = await response.json()
        assert response.status == 200, (path, params, body)
        return body


async def wait_for_trades(server: Server, symbol: str, count: int) -> list[Any]:
    """The market's recent trades (raw REST) once the demo market maker made ``count``."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        trades: list[Any] = await rest_get(server, "/api/v3/trades", {"symbol": symbol})
        if len(trades) >= count:
            return trades
        assert time.monotonic() < deadline, f"fewer than {count} {symbol} trades: {trades}"
        await asyncio.sleep(0.05)


def dec(value: float | str) -> Decimal:
    """The decimal a CCXT number (parsed from Binance's decimal string) stands for."""
    return Decimal(str(value))


def units(atoms: int, decimals: int) -> Decimal:
    return Decimal(atoms).scaleb(-decimals)


def node_book(server: Server, market: Market, levels: int) -> dict[str, list[list[Decimal]]]:
    """The node's book, top ``levels`` of each side, as ``[[price, quantity], ...]``."""
    node = server.node
    book: dict[str, list[list[Decimal]]] = {}
    sides: tuple[tuple[Side, str], ...] = (("buy", "bids"), ("sell", "asks"))
    for side, name in sides:
        book[name] = [
            [units(price, market.price_decimals), units(quantity, market.base.decimals)]
            for price, quantity, _ in node.depth(market.id, side, levels)
        ]
    return book


def ccxt_book(book: Mapping[str, Any], levels: int) -> dict[str, list[list[Decimal]]]:
    """CCXT's order book (REST result or the WebSocket local book), top ``levels``."""
    return {
        side: [[dec(price), dec(amount)] for price, amount, *_ in list(book[side])[:levels]]
        for side in ("bids", "asks")
    }
