"""A real third-party client against the real server: CCXT's ``binance`` class (ccxt.pro,
asyncio, on the server's own event loop) with every URL pointed at a local ``bourse serve``
(:mod:`tests.ccxt_support`).

What CCXT returns is compared with the server's own truth, never with fixed numbers: the
listing (markets, precision, limits), the node (``Node.depth``, ``Node.balance``), the
projections (orders) and the server's raw REST answers (trades, tickers, the depth
snapshot's ``lastUpdateId``); candles are checked against the trades themselves. Binance's
error bodies go through CCXT's own error mapping to CCXT's exception classes (the same
mapping CCXT applies to api.binance.com for these codes), and a refused request changes
nothing.

The demo market maker (quotes every 100 ms, crosses the spread now and then) supplies
trades and liquidity; tests that need a quiet book stop it (its quotes are mass-cancelled)
and put their own orders there.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Awaitable
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import pytest

from controlplane.demo import DEMO_USER, QUOTING
from controlplane.engine_types import Side
from controlplane.listing import Market
from controlplane.projections import PROJECTIONS
from controlplane.serve import Server
from tests.ccxt_support import (
    SETTLE_SECONDS,
    binance_client,
    caught_up,
    ccxt_book,
    closing,
    dec,
    demo_client,
    node_book,
    rest_get,
    running_server,
    stop_market_maker,
    units,
    wait_for_trades,
)
from tests.test_serve import run

BTC_USDT = "BTC/USDT"
MINUTE_MS = 60_000


def minute_of(ms: int) -> int:
    return ms // MINUTE_MS * MINUTE_MS


def market_of(server: Server, symbol: str) -> Market:
    return server.exchange.listing.by_symbol[symbol.replace("/", "")]


def unified(market: Market) -> str:
    return f"{market.base.name}/{market.quote.name}"


def balances_of(server: Server, account: int) -> dict[str, tuple[Decimal, Decimal]]:
    """The node's ``(free, held)`` of every listed asset the account holds, as decimals."""
    out: dict[str, tuple[Decimal, Decimal]] = {}
    for market in server.exchange.listing.markets.values():
        for asset in (market.base, market.quote):
            held = server.node.balance(account, asset.id)
            if held is not None:
                out[asset.name] = (units(held[0], asset.decimals), units(held[1], asset.decimals))
    return out


def ccxt_balances(balance: dict[str, Any]) -> dict[str, tuple[Decimal, Decimal]]:
    skip = {"info", "free", "used", "total", "timestamp", "datetime"}
    out = {}
    for code, entry in balance.items():
        if code not in skip:
            assert dec(entry["total"]) == dec(entry["free"]) + dec(entry["used"])
            out[code] = (dec(entry["free"]), dec(entry["used"]))
    return out


def level(server: Server, market: Market, side: Side, price: Decimal) -> tuple[Decimal, int] | None:
    """The node's book level at ``price``: ``(quantity, orders)``, or None if there is none."""
    for at, quantity, orders in server.node.depth(market.id, side, 256):
        if units(at, market.price_decimals) == price:
            return units(quantity, market.base.decimals), orders
    return None


async def refused(exchange: Any, error: type[Exception], call: Awaitable[Any]) -> Any:
    """Await a CCXT call that must raise ``error``; the server's error body that made CCXT
    raise it (CCXT's last JSON response), whose ``msg`` the exception carries."""
    exchange.last_json_response = None
    with pytest.raises(error) as caught:
        await call
    body = exchange.last_json_response
    assert isinstance(body, dict), caught.value
    assert str(caught.value).startswith("binance ")
    assert body["msg"] in str(caught.value)
    return body


async def quiet_book_orders(exchange: Any, server: Server, market: Market) -> list[Any]:
    """Rest the demo user's orders on both sides around the last trade price: two levels a
    side, two orders on the best bid (so a level aggregates). Returns CCXT's orders."""
    symbol = unified(market)
    traded = (await exchange.fetch_ticker(symbol))["last"]
    # Before the demo market maker's first trade there is no last price: use its start mid.
    last = (
        dec(traded)
        if traded is not None
        else Decimal(QUOTING[market.id].mid).scaleb(-market.price_decimals)
    )
    min_cost = units(market.min_notional, market.quote.decimals)
    amount = float(exchange.amount_to_precision(symbol, float(min_cost * 2 / last)))
    placed = []
    for side, factor in (
        ("buy", "0.99"),
        ("buy", "0.99"),
        ("buy", "0.98"),
        ("sell", "1.01"),
        ("sell", "1.02"),
    ):
        price = float(exchange.price_to_precision(symbol, last * Decimal(factor)))
        placed.append(await exchange.create_order(symbol, "limit", side, amount, price))
    await caught_up(server)
    return placed


# --- markets and market data -----------------------------------------------------------


def test_load_markets_and_market_data_match_the_server(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_server(tmp_path) as server, closing(demo_client(server)) as ex:
            listing = server.exchange.listing
            markets = await ex.load_markets()
            assert set(ex.symbols) == {unified(m) for m in listing.markets.values()}
            assert {"BTC/USDT", "ETH/USDT"} <= set(ex.symbols)
            info = await rest_get(server, "/api/v3/exchangeInfo")
            raw_by_id = {s["symbol"]: s for s in info["symbols"]}
            for market in listing.markets.values():
                got = markets[unified(market)]
                assert (got["id"], got["base"], got["quote"]) == (
                    market.symbol,
                    market.base.name,
                    market.quote.name,
                )
                assert got["spot"]
                assert got["active"]
                assert got["type"] == "spot"
                assert got["info"] == raw_by_id[market.symbol]
                tick = units(market.tick_size, market.price_decimals)
                lot = units(market.lot_size, market.base.decimals)
                assert dec(got["precision"]["price"]) == tick
                assert dec(got["precision"]["amount"]) == lot
                assert dec(got["precision"]["base"]) == units(1, market.base.decimals)
                assert dec(got["precision"]["quote"]) == units(1, market.quote.decimals)
                assert dec(got["limits"]["amount"]["min"]) == lot
                assert dec(got["limits"]["price"]["min"]) == tick
                assert dec(got["limits"]["cost"]["min"]) == units(
                    market.min_notional, market.quote.decimals
                )

            # Trades from the market maker, then a quiet book holding only our orders.
            btc = market_of(server, BTC_USDT)
            await wait_for_trades(server, btc.symbol, 2)
            await stop_market_maker(server)
            await quiet_book_orders(ex, server, btc)

            book = await ex.fetch_order_book(BTC_USDT)
            assert ccxt_book(book, 100) == node_book(server, btc, 100)
            assert (len(book["bids"]), len(book["asks"])) == (2, 2)
            raw_depth = await rest_get(server, "/api/v3/depth", {"symbol": btc.symbol})
            assert book["nonce"] == raw_depth["lastUpdateId"]
            limited = await ex.fetch_order_book(BTC_USDT, 5)
            assert ccxt_book(limited, 5) == node_book(server, btc, 5)

            # Trades: CCXT reads aggregate trades; every one matches the raw answer.
            trades = await ex.fetch_trades(BTC_USDT)
            raw_agg = await rest_get(server, "/api/v3/aggTrades", {"symbol": btc.symbol})
            assert [
                (t["id"], dec(t["price"]), dec(t["amount"]), t["timestamp"], t["side"])
                for t in trades
            ] == [
                (str(a["a"]), dec(a["p"]), dec(a["q"]), a["T"], "sell" if a["m"] else "buy")
                for a in raw_agg
            ]
            raw_trades = await rest_get(server, "/api/v3/trades", {"symbol": btc.symbol})
            assert sum(dec(t["amount"]) for t in trades) == sum(dec(t["qty"]) for t in raw_trades)
            limited_trades = await ex.fetch_trades(BTC_USDT, limit=1)
            assert [t["id"] for t in limited_trades] == [trades[-1]["id"]]

            # Ticker: last trade, 24 h range and volume from the trades; bid/ask from the book.
            ticker = await ex.fetch_ticker(BTC_USDT)
            prices = [dec(t["price"]) for t in raw_trades]
            assert dec(ticker["last"]) == prices[-1]
            assert (dec(ticker["high"]), dec(ticker["low"])) == (max(prices), min(prices))
            assert dec(ticker["open"]) == prices[0]
            assert dec(ticker["baseVolume"]) == sum(dec(t["qty"]) for t in raw_trades)
            assert dec(ticker["quoteVolume"]) == sum(dec(t["quoteQty"]) for t in raw_trades)
            truth = node_book(server, btc, 1)
            assert [dec(ticker["bid"]), dec(ticker["bidVolume"])] == truth["bids"][0]
            assert [dec(ticker["ask"]), dec(ticker["askVolume"])] == truth["asks"][0]
            raw_ticker = await rest_get(server, "/api/v3/ticker/24hr", {"symbol": btc.symbol})
            assert ticker["info"] == raw_ticker | {
                "openTime": ticker["info"]["openTime"],
                "closeTime": ticker["info"]["closeTime"],
            }
            tickers = await ex.fetch_tickers()
            assert set(tickers) == set(ex.symbols)
            for symbol, one in tickers.items():
                raw = await rest_get(
                    server, "/api/v3/ticker/24hr", {"symbol": market_of(server, symbol).symbol}
                )
                assert dec(one["last"]) == dec(raw["lastPrice"])
                assert dec(one["baseVolume"]) == dec(raw["volume"])

            # OHLCV: the trades bucketed by minute, one candle for every minute from the
            # first trade's to the current one (Binance's: an empty minute repeats the close).
            assert len(raw_trades) < 500  # all of them: the first is the market's first
            before_ms = time.time_ns() // 1_000_000
            candles = await ex.fetch_ohlcv(BTC_USDT, "1m")
            after_ms = time.time_ns() // 1_000_000
            by_minute: dict[int, list[Decimal]] = defaultdict(list)
            volume: dict[int, Decimal] = defaultdict(Decimal)
            for t in raw_trades:
                by_minute[minute_of(t["time"])].append(dec(t["price"]))
                volume[minute_of(t["time"])] += dec(t["qty"])
            opens = [c[0] for c in candles]
            assert opens == list(range(minute_of(raw_trades[0]["time"]), opens[-1] + 1, MINUTE_MS))
            assert minute_of(before_ms) <= opens[-1] <= minute_of(after_ms)
            expected = []
            close = Decimal(0)
            for minute in opens:
                prices = by_minute.get(minute, [close])
                close = prices[-1]
                expected.append(
                    [minute, prices[0], max(prices), min(prices), close, volume[minute]]
                )
            assert [[c[0], *(dec(x) for x in c[1:])] for c in candles] == expected

    run(scenario)


# --- trading ---------------------------------------------------------------------------


def test_limit_order_life_market_order_fills_and_balances(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_server(tmp_path) as server, closing(demo_client(server)) as ex:
            await ex.load_markets()
            btc = market_of(server, BTC_USDT)
            projections = server.runner.app[PROJECTIONS]
            assert ccxt_balances(await ex.fetch_balance()) == balances_of(server, DEMO_USER)

            # A limit buy far below the market maker's quotes: it rests.
            await wait_for_trades(server, btc.symbol, 1)
            best_bid = dec((await ex.fetch_order_book(BTC_USDT))["bids"][0][0])
            price = float(ex.price_to_precision(BTC_USDT, best_bid * Decimal("0.8")))
            amount = 0.001
            placed = await ex.create_order(BTC_USDT, "limit", "buy", amount, price)
            assert placed["status"] == "open"
            assert (placed["symbol"], placed["type"], placed["side"]) == (BTC_USDT, "limit", "buy")
            order_id = int(placed["id"])
            # In the node's book at its price, alone there; in the projections, NEW.
            assert level(server, btc, "buy", dec(price)) == (dec(amount), 1)
            row = projections.order(DEMO_USER, order_id)
            assert row is not None
            assert row.status == "NEW"

            fetched = await ex.fetch_order(placed["id"], BTC_USDT)
            assert fetched["status"] == "open"
            assert (fetched["id"], fetched["clientOrderId"]) == (
                placed["id"],
                placed["clientOrderId"],
            )
            assert (dec(fetched["price"]), dec(fetched["amount"])) == (dec(price), dec(amount))
            assert (dec(fetched["filled"]), dec(fetched["remaining"])) == (Decimal(0), dec(amount))
            open_orders = await ex.fetch_open_orders(BTC_USDT)
            assert [o["id"] for o in open_orders] == [
                str(o.order_id) for o in projections.open_orders(DEMO_USER)
            ]
            assert [o["id"] for o in open_orders] == [placed["id"]]
            assert [o["id"] for o in await ex.fetch_open_orders()] == [placed["id"]]
            # The hold shows as "used", exactly the node's.
            assert ccxt_balances(await ex.fetch_balance()) == balances_of(server, DEMO_USER)
            assert balances_of(server, DEMO_USER)["USDT"][1] > 0

            cancelled = await ex.cancel_order(placed["id"], BTC_USDT)
            assert (cancelled["id"], cancelled["status"]) == (placed["id"], "canceled")
            assert level(server, btc, "buy", dec(price)) is None
            assert (await ex.fetch_order(placed["id"], BTC_USDT))["status"] == "canceled"
            assert await ex.fetch_open_orders(BTC_USDT) == []
            assert ccxt_balances(await ex.fetch_balance()) == balances_of(server, DEMO_USER)
            assert balances_of(server, DEMO_USER)["USDT"][1] == 0

            # A market buy fills against the market maker's asks.
            before = balances_of(server, DEMO_USER)
            bought = await ex.create_order(BTC_USDT, "market", "buy", amount)
            assert bought["status"] == "closed"
            assert (dec(bought["filled"]), dec(bought["remaining"])) == (dec(amount), Decimal(0))
            fills = bought["info"]["fills"]
            assert fills
            assert sum(dec(f["qty"]) for f in fills) == dec(amount)
            cost = sum(dec(f["price"]) * dec(f["qty"]) for f in fills)
            assert dec(bought["cost"]) == cost
            after = balances_of(server, DEMO_USER)
            btc_fee = sum(dec(f["commission"]) for f in fills if f["commissionAsset"] == "BTC")
            usdt_fee = sum(dec(f["commission"]) for f in fills if f["commissionAsset"] == "USDT")
            assert after["BTC"][0] == before["BTC"][0] + dec(amount) - btc_fee
            assert after["USDT"][0] == before["USDT"][0] - cost - usdt_fee
            assert ccxt_balances(await ex.fetch_balance()) == after

            mine = [t for t in await ex.fetch_my_trades(BTC_USDT) if t["order"] == bought["id"]]
            assert [(t["id"], dec(t["price"]), dec(t["amount"])) for t in mine] == [
                (str(f["tradeId"]), dec(f["price"]), dec(f["qty"])) for f in fills
            ]
            assert all(t["side"] == "buy" and t["takerOrMaker"] == "taker" for t in mine)
            assert all(t["symbol"] == BTC_USDT for t in mine)

            history = {o["id"]: o["status"] for o in await ex.fetch_orders(BTC_USDT)}
            assert history == {placed["id"]: "canceled", bought["id"]: "closed"}
            closed = await ex.fetch_closed_orders(BTC_USDT)
            assert [o["id"] for o in closed] == [bought["id"]]  # "canceled" is not "closed"

    run(scenario)


# --- errors ----------------------------------------------------------------------------


def test_binance_errors_map_to_ccxt_exceptions_and_change_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_server(tmp_path) as server, closing(demo_client(server)) as ex:
            await ex.load_markets()
            await stop_market_maker(server)
            btc = market_of(server, BTC_USDT)

            projections = server.runner.app[PROJECTIONS]

            def state() -> tuple[Any, ...]:
                return (
                    balances_of(server, DEMO_USER),
                    node_book(server, btc, 100),
                    projections.all_orders(DEMO_USER, btc.id),
                )

            before = state()
            lot = float(units(btc.lot_size, btc.base.decimals))
            # Below the minimum notional: Binance's -1013, which CCXT maps to BadRequest.
            assert await refused(
                ex, ccxt.BadRequest, ex.create_order(BTC_USDT, "limit", "buy", lot, 100.0)
            ) == {"code": -1013, "msg": "Filter failure: NOTIONAL"}
            # Not a whole number of lots (sent through CCXT's implicit API, which does not
            # round as the unified one does): LOT_SIZE, which CCXT maps to InvalidOrder.
            half_lots = units(btc.lot_size * 3 // 2, btc.base.decimals)
            order = {"symbol": btc.symbol, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC"}
            assert await refused(
                ex,
                ccxt.InvalidOrder,
                ex.private_post_order(order | {"quantity": str(half_lots), "price": "50000"}),
            ) == {"code": -1013, "msg": "Filter failure: LOT_SIZE"}
            # More than the account holds: -2010, InsufficientFunds.
            usdt_free = balances_of(server, DEMO_USER)["USDT"][0]
            too_much = float(usdt_free / 10_000 + 1)
            assert await refused(
                ex,
                ccxt.InsufficientFunds,
                ex.create_order(BTC_USDT, "limit", "buy", too_much, 10_000.0),
            ) == {"code": -2010, "msg": "Account has insufficient balance for requested action."}
            # A symbol we do not list: -1121, BadSymbol (through the raw endpoint; the
            # unified method refuses it before sending, also with BadSymbol).
            assert await refused(
                ex, ccxt.BadSymbol, ex.public_get_depth({"symbol": "DOGEUSDT"})
            ) == {
                "code": -1121,
                "msg": "Invalid symbol.",
            }
            with pytest.raises(ccxt.BadSymbol):
                await ex.fetch_order_book("DOGE/USDT")
            # Unknown orders: -2013 on query, -2011 on cancel; both OrderNotFound.
            assert await refused(ex, ccxt.OrderNotFound, ex.fetch_order("987654321", BTC_USDT)) == {
                "code": -2013,
                "msg": "Order does not exist.",
            }
            assert await refused(
                ex, ccxt.OrderNotFound, ex.cancel_order("987654321", BTC_USDT)
            ) == {
                "code": -2011,
                "msg": "Unknown order sent.",
            }
            assert state() == before

            # Credentials: an unknown key (-2015), a malformed key (-2014), a wrong secret
            # (-1022): AuthenticationError each time, signed reads and orders alike.
            login = server.demo_login
            assert login is not None
            for api_key, secret, code in (
                ("A" * 64, login.secret, -2015),
                ("not-a-key", login.secret, -2014),
                (login.api_key, "0" * len(login.secret), -1022),
            ):
                async with closing(binance_client(server, api_key, secret)) as other:
                    await other.load_markets()
                    for call in (
                        other.fetch_balance(),
                        other.create_order(BTC_USDT, "limit", "buy", 0.001, 10_000.0),
                    ):
                        body = await refused(other, ccxt.AuthenticationError, call)
                        assert body["code"] == code
            assert state() == before

    run(scenario)


# --- WebSocket: watch_order_book -----------------------------------------------------------

BINANCE_WS_PATH = "/ws"
"""Binance's raw-stream base: CCXT connects to ``<base>/<n>`` (``n`` is its connection
number, 0 for the first) and then SUBSCRIBEs ``btcusdt@depth@100ms`` on it."""
QUERY_WS_PATH = "/ws?ccxt-connection="
"""The same endpoint with CCXT's connection number moved into the query string
(``/ws?ccxt-connection=/0``), so only the path differs from Binance's."""


@pytest.mark.parametrize(
    "ws_path",
    [
        pytest.param(BINANCE_WS_PATH, id="binance-url"),
        pytest.param(QUERY_WS_PATH, id="connection-number-in-query"),
    ],
)
def test_watch_order_book_keeps_the_nodes_book(tmp_path: Path, ws_path: str) -> None:
    async def scenario() -> None:
        async with running_server(tmp_path) as server, closing(demo_client(server)) as ex:
            base = f"ws://{server.http_host}:{server.http_port}"
            ex.urls["api"]["ws"]["spot"] = base + ws_path
            await ex.load_markets()
            btc = market_of(server, BTC_USDT)

            # While the market maker requotes: a sane, advancing book.
            nonce, two_sided = 0, 0
            for _ in range(5):
                book = await asyncio.wait_for(ex.watch_order_book(BTC_USDT), SETTLE_SECONDS)
                assert book["symbol"] == BTC_USDT
                assert book["nonce"] > nonce
                nonce = book["nonce"]
                bids = [dec(p) for p, *_ in book["bids"]]
                asks = [dec(p) for p, *_ in book["asks"]]
                assert bids == sorted(set(bids), reverse=True)
                assert asks == sorted(set(asks))
                assert not bids or not asks or bids[0] < asks[0]
                two_sided += bool(bids and asks)
            assert two_sided > 0

            # Quiet: the market maker's quotes go, the local book empties with the node's.
            await stop_market_maker(server)
            assert node_book(server, btc, 100) == {"bids": [], "asks": []}
            await settled(ex, server, btc)
            # Our own orders on both sides: the local book follows them exactly.
            await quiet_book_orders(ex, server, btc)
            book = await settled(ex, server, btc)
            assert (len(book["bids"]), len(book["asks"])) == (2, 2)
            raw_depth = await rest_get(server, "/api/v3/depth", {"symbol": btc.symbol})
            assert book["nonce"] == raw_depth["lastUpdateId"]

    run(scenario)


async def settled(ex: Any, server: Server, market: Market) -> Any:
    """Wait (on stream updates) until CCXT's local book equals the node's; the book."""
    symbol = unified(market)
    truth = node_book(server, market, 100)
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        book = ex.orderbooks.get(symbol)
        if book is not None and ccxt_book(book, 100) == truth:
            return book
        remaining = deadline - time.monotonic()
        assert remaining > 0, (ccxt_book(book, 100) if book is not None else None, truth)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ex.watch_order_book(symbol), remaining)
