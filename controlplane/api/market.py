"""Public market data from the projections: trades, aggregate trades, klines, tickers.

Endpoints (Binance Spot API v3 shapes; numbers as decimal strings written with the market's
``price_str`` / ``qty_str`` / ``quote_str``): ``trades``, ``historicalTrades`` (public here),
``aggTrades``, ``klines``, ``uiKlines``, ``ticker/24hr`` (FULL / MINI), ``ticker/price``,
``ticker/bookTicker`` and ``avgPrice``.

History comes from :mod:`controlplane.projections` (SQLite, as far as the event feed has
applied); best bid/ask come from the engine's book at request time (``Node.depth``), so they
are exact. Every parameter is checked before anything is read; a bad one is answered with
Binance's code and HTTP 400 (missing symbol -1102, unknown symbol -1121, bad interval -1120,
malformed numbers and out-of-range limits -1100, an invalid value -1130, ``symbol`` and
``symbols`` together -1128, duplicate symbols -1101). These endpoints change no state.

Complexity: each request is a few index range scans bounded by its ``limit`` (klines: the
1-minute rows of the window; a 24-hour ticker: ≤ 1,440 minute rows and two partial minutes).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from aiohttp import web

from controlplane.api import EXCHANGE, Exchange
from controlplane.api.errors import (
    BAD_INTERVAL,
    INVALID_PARAMETER,
    TOO_MANY_PARAMETERS,
    ApiError,
    bad_symbol,
    illegal,
    mandatory,
)
from controlplane.api.public import market_for
from controlplane.listing import Market, change_percent, fmt
from controlplane.projections import (
    INTERVALS,
    KLINES_DEFAULT,
    KLINES_MAX,
    NS_PER_MS,
    PROJECTIONS,
    TRADES_DEFAULT,
    TRADES_MAX,
    Kline,
    Projections,
    TradeRow,
    WindowStats,
)
from controlplane.projections import setup as setup_projections

INVALID_COMBINATION = -1128
"""Binance's BAD_CONTRACT: "Combination of optional parameters invalid."."""
AVG_PRICE_MINS = 5
_LONG = "^[0-9]{1,20}$"
_LONG_MAX = 2**63 - 1
_SYMBOLS_RANGE = '^\\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\\]$'
_SYMBOLS = re.compile(r'^\[("[A-Z0-9\-_.]{1,20}"(,"[A-Z0-9\-_.]{1,20}")*)?\]\Z')
_TIME_ZONE = re.compile(r"^([+-]?)([0-9]{1,2})(?::([0-9]{2}))?\Z")
TICKER_TYPES = ("FULL", "MINI")


# --- parameters ------------------------------------------------------------------------------


def _long(request: web.Request, name: str) -> int | None:
    """An optional non-negative LONG parameter (-1100 if malformed)."""
    text = request.query.get(name)
    if text is None:
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 20 or int(text) > _LONG_MAX:
        raise illegal(name, _LONG)
    return int(text)


def _limit(request: web.Request, default: int, maximum: int) -> int:
    text = request.query.get("limit")
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        raise illegal("limit", _LONG)
    limit = int(text)
    if not 1 <= limit <= maximum:
        raise illegal("limit", f"1-{maximum}")
    return limit


def _invalid(name: str) -> ApiError:
    return ApiError(INVALID_PARAMETER, f"Data sent for parameter '{name}' is not valid.")


def _time_zone(request: web.Request) -> int:
    """``timeZone`` as milliseconds ahead of UTC: hours or hours:minutes in [-12:00, +14:00]."""
    text = request.query.get("timeZone")
    if text is None:
        return 0
    match = _TIME_ZONE.match(text)
    if match is None:
        raise _invalid("timeZone")
    sign = -1 if match.group(1) == "-" else 1
    hours, minutes = int(match.group(2)), int(match.group(3) or 0)
    offset = sign * (hours * 60 + minutes)
    if minutes >= 60 or not -12 * 60 <= offset <= 14 * 60:
        raise _invalid("timeZone")
    return offset * 60_000


def _markets(exchange: Exchange, request: web.Request) -> tuple[list[Market], bool]:
    """The markets of ``symbol`` (one, answered as an object) or ``symbols`` (a JSON array,
    answered as a list) or neither (all, as a list)."""
    query = request.query
    if "symbol" in query and "symbols" in query:
        raise ApiError(INVALID_COMBINATION, "Combination of optional parameters invalid.")
    if "symbol" in query:
        return [market_for(exchange, request)], True
    if "symbols" not in query:
        return list(exchange.listing.markets.values()), False
    text = query["symbols"]
    if not text:
        raise mandatory("symbols")
    if _SYMBOLS.match(text) is None:
        raise illegal("symbols", _SYMBOLS_RANGE)
    names: list[str] = json.loads(text)
    if not names:
        raise mandatory("symbols")
    if len(set(names)) != len(names):
        raise ApiError(TOO_MANY_PARAMETERS, "Duplicate values for a parameter detected.")
    chosen = []
    for name in names:
        market = exchange.listing.by_symbol.get(name)
        if market is None:
            raise bad_symbol()
        chosen.append(market)
    return chosen, False


def _answer(items: list[dict[str, Any]], single: bool) -> web.Response:
    return web.json_response(items[0] if single else items)


# --- formatting ------------------------------------------------------------------------------


def _trade_json(market: Market, t: TradeRow) -> dict[str, Any]:
    return {
        "id": t.trade_id,
        "price": market.price_str(t.price),
        "qty": market.qty_str(t.quantity),
        "quoteQty": market.quote_str(t.quote_quantity),
        "time": t.time_ms,
        "isBuyerMaker": t.is_buyer_maker,
        "isBestMatch": True,
    }


def _kline_json(market: Market, k: Kline) -> list[Any]:
    return [
        k.open_ms,
        market.price_str(k.open),
        market.price_str(k.high),
        market.price_str(k.low),
        market.price_str(k.close),
        market.qty_str(k.volume),
        k.close_ms,
        market.quote_str(k.quote_volume),
        k.count,
        market.qty_str(k.taker_buy_volume),
        market.quote_str(k.taker_buy_quote_volume),
        "0",
    ]


def average_price(market: Market, quote_volume: int, volume: int) -> str:
    """Quote per whole base of ``quote_volume`` atoms over ``volume`` base atoms, rounded
    down to the quote asset's decimals (Binance's weighted average price)."""
    if volume == 0:
        return market.quote_str(0)
    scale: int = 10**market.base.decimals
    return fmt(quote_volume * scale // volume, market.quote.decimals, market.quote.decimals)


def _book_top(exchange: Exchange, market: Market) -> dict[str, str]:
    node = exchange.node
    bid = node.depth(market.id, "buy", 1)
    ask = node.depth(market.id, "sell", 1)
    bid_price, bid_qty = (bid[0][0], bid[0][1]) if bid else (0, 0)
    ask_price, ask_qty = (ask[0][0], ask[0][1]) if ask else (0, 0)
    return {
        "bidPrice": market.price_str(bid_price),
        "bidQty": market.qty_str(bid_qty),
        "askPrice": market.price_str(ask_price),
        "askQty": market.qty_str(ask_qty),
    }


def _ticker_json(exchange: Exchange, market: Market, s: WindowStats, full: bool) -> dict[str, Any]:
    # No trade in the window: every price is the last one before it, volumes are 0.
    traded = s.count > 0
    open_price = s.open if traded else s.prev_close
    high = s.high if traded else s.prev_close
    low = s.low if traded else s.prev_close
    last = s.last if traded else s.prev_close
    mini = {
        "openPrice": market.price_str(open_price),
        "highPrice": market.price_str(high),
        "lowPrice": market.price_str(low),
        "lastPrice": market.price_str(last),
        "volume": market.qty_str(s.volume),
        "quoteVolume": market.quote_str(s.quote_volume),
        "openTime": s.open_ms,
        "closeTime": s.close_ms,
        "firstId": s.first_id,
        "lastId": s.last_id,
        "count": s.count,
    }
    if not full:
        return {"symbol": market.symbol, **mini}
    return {
        "symbol": market.symbol,
        "priceChange": market.price_str(last - open_price),
        "priceChangePercent": change_percent(open_price, last),
        "weightedAvgPrice": average_price(market, s.quote_volume, s.volume),
        "prevClosePrice": market.price_str(s.prev_close),
        "lastPrice": market.price_str(last),
        "lastQty": market.qty_str(s.last_qty),
        **_book_top(exchange, market),
        **{k: v for k, v in mini.items() if k != "lastPrice"},
    }


# --- handlers --------------------------------------------------------------------------------


def _context(request: web.Request) -> tuple[Exchange, Projections, Market]:
    exchange = request.app[EXCHANGE]
    return exchange, request.app[PROJECTIONS], market_for(exchange, request)


async def trades(request: web.Request) -> web.Response:
    _, projections, market = _context(request)
    limit = _limit(request, TRADES_DEFAULT, TRADES_MAX)
    rows = projections.recent_trades(market.id, limit)
    return web.json_response([_trade_json(market, t) for t in rows])


async def historical_trades(request: web.Request) -> web.Response:
    _, projections, market = _context(request)
    limit = _limit(request, TRADES_DEFAULT, TRADES_MAX)
    from_id = _long(request, "fromId")
    if from_id is None:
        rows = projections.recent_trades(market.id, limit)
    else:
        rows = projections.trades_from(market.id, from_id, limit)
    return web.json_response([_trade_json(market, t) for t in rows])


async def agg_trades(request: web.Request) -> web.Response:
    _, projections, market = _context(request)
    from_id = _long(request, "fromId")
    start_ms = _long(request, "startTime")
    end_ms = _long(request, "endTime")
    limit = _limit(request, TRADES_DEFAULT, TRADES_MAX)
    rows = projections.agg_trades(market.id, from_id, start_ms, end_ms, limit)
    return web.json_response(
        [
            {
                "a": a.agg_id,
                "p": market.price_str(a.price),
                "q": market.qty_str(a.quantity),
                "f": a.first_trade_id,
                "l": a.last_trade_id,
                "T": a.time_ns // NS_PER_MS,
                "m": a.is_buyer_maker,
                "M": True,
            }
            for a in rows
        ]
    )


async def klines(request: web.Request) -> web.Response:
    _, projections, market = _context(request)
    interval = request.query.get("interval", "")
    if not interval:
        raise mandatory("interval")
    if interval not in INTERVALS:
        raise ApiError(BAD_INTERVAL, "Invalid interval.")
    start_ms = _long(request, "startTime")
    end_ms = _long(request, "endTime")
    tz_ms = _time_zone(request)
    limit = _limit(request, KLINES_DEFAULT, KLINES_MAX)
    rows = projections.klines(market.id, interval, start_ms, end_ms, limit, tz_ms)
    return web.json_response([_kline_json(market, k) for k in rows])


async def ticker_24hr(request: web.Request) -> web.Response:
    exchange = request.app[EXCHANGE]
    projections = request.app[PROJECTIONS]
    kind = request.query.get("type", "FULL")
    if kind not in TICKER_TYPES:
        raise _invalid("type")
    chosen, single = _markets(exchange, request)
    now_ns = time.time_ns()
    return _answer(
        [
            _ticker_json(exchange, m, projections.ticker_24h(m.id, now_ns), kind == "FULL")
            for m in chosen
        ],
        single,
    )


async def ticker_price(request: web.Request) -> web.Response:
    exchange = request.app[EXCHANGE]
    projections = request.app[PROJECTIONS]
    chosen, single = _markets(exchange, request)
    items = []
    for market in chosen:
        last = projections.last_trade(market.id)
        price = 0 if last is None else last.price
        items.append({"symbol": market.symbol, "price": market.price_str(price)})
    return _answer(items, single)


async def book_ticker(request: web.Request) -> web.Response:
    exchange = request.app[EXCHANGE]
    chosen, single = _markets(exchange, request)
    return _answer([{"symbol": m.symbol, **_book_top(exchange, m)} for m in chosen], single)


async def avg_price(request: web.Request) -> web.Response:
    _, projections, market = _context(request)
    now_ns = time.time_ns()
    window = projections.window(market.id, now_ns - AVG_PRICE_MINS * 60_000 * NS_PER_MS, now_ns)
    if window.count:
        price = average_price(market, window.quote_volume, window.volume)
        close_ms = window.last_time_ns // NS_PER_MS
    else:  # no trade in the window: the last price, if any
        last = projections.last_trade(market.id)
        price = market.price_str(0 if last is None else last.price)
        close_ms = 0 if last is None else last.time_ms
    return web.json_response({"mins": AVG_PRICE_MINS, "price": price, "closeTime": close_ms})


def setup(app: web.Application, exchange: Exchange) -> None:
    setup_projections(app, exchange)
    app.router.add_get("/api/v3/trades", trades)
    app.router.add_get("/api/v3/historicalTrades", historical_trades)
    app.router.add_get("/api/v3/aggTrades", agg_trades)
    app.router.add_get("/api/v3/klines", klines)
    app.router.add_get("/api/v3/uiKlines", klines)
    app.router.add_get("/api/v3/ticker/24hr", ticker_24hr)
    app.router.add_get("/api/v3/ticker/price", ticker_price)
    app.router.add_get("/api/v3/ticker/bookTicker", book_ticker)
    app.router.add_get("/api/v3/avgPrice", avg_price)
