"""Public market data: ``ping``, ``time``, ``exchangeInfo``, ``depth``.

``depth`` reads the engine's book directly (``Node.depth``); its ``lastUpdateId`` is the
node's applied sequence number read before the book, so every change up to it is included
(the WebSocket depth stream's ``U``/``u`` count in the same sequence).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from controlplane.api import EXCHANGE, Exchange
from controlplane.api.auth import rate_limits
from controlplane.api.errors import bad_symbol, illegal, mandatory
from controlplane.listing import U64_MAX, Market, fmt

DEPTH_DEFAULT, DEPTH_MAX = 100, 5000
STP_MODES = ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "DECREMENT"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def symbol_info(m: Market, status: str) -> dict[str, Any]:
    max_qty = U64_MAX // m.lot_size * m.lot_size
    return {
        "symbol": m.symbol,
        "status": status,
        "baseAsset": m.base.name,
        "baseAssetPrecision": m.base.decimals,
        "quoteAsset": m.quote.name,
        "quotePrecision": m.quote.decimals,
        "quoteAssetPrecision": m.quote.decimals,
        "baseCommissionPrecision": m.base.decimals,
        "quoteCommissionPrecision": m.quote.decimals,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
        "icebergAllowed": False,
        "ocoAllowed": False,
        "otoAllowed": False,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": True,
        "amendAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": m.price_str(m.tick_size),
                "maxPrice": "0.00000000",  # 0: no maximum (Binance's convention)
                "tickSize": m.price_str(m.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": m.qty_str(m.lot_size),
                "maxQty": m.qty_str(max_qty),
                "stepSize": m.qty_str(m.lot_size),
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": fmt(m.min_notional, m.quote.decimals),
                "applyMinToMarket": True,
                "maxNotional": fmt(U64_MAX, m.quote.decimals),
                "applyMaxToMarket": False,
                "avgPriceMins": 0,
            },
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "NONE",
        "allowedSelfTradePreventionModes": STP_MODES,
    }


ENGINE_STATUS = {"trading": "TRADING", "halted": "HALT", "delisted": "BREAK"}


def market_for(exchange: Exchange, request: web.Request) -> Market:
    """The ``symbol`` parameter's market (-1102 if missing, -1121 if unknown)."""
    symbol = request.query.get("symbol", "")
    if not symbol:
        raise mandatory("symbol")
    market = exchange.listing.by_symbol.get(symbol)
    if market is None:
        raise bad_symbol()
    return market


async def ping(request: web.Request) -> web.Response:
    return web.json_response({})


async def server_time(request: web.Request) -> web.Response:
    return web.json_response({"serverTime": now_ms()})


async def exchange_info(request: web.Request) -> web.Response:
    exchange = request.app[EXCHANGE]
    listing = exchange.listing
    chosen = list(listing.markets.values())
    if "symbol" in request.query:
        market = listing.by_symbol.get(request.query["symbol"])
        if market is None:
            raise bad_symbol()
        chosen = [market]
    status = {m["market"]: m["status"] for m in exchange.node.markets()}
    return web.json_response(
        {
            "timezone": "UTC",
            "serverTime": now_ms(),
            "rateLimits": rate_limits(exchange.config.limits),
            "exchangeFilters": [],
            "symbols": [symbol_info(m, ENGINE_STATUS[status[m.id]]) for m in chosen],
        }
    )


async def depth(request: web.Request) -> web.Response:
    exchange = request.app[EXCHANGE]
    market = market_for(exchange, request)
    limit_text = request.query.get("limit", str(DEPTH_DEFAULT))
    if not limit_text.isascii() or not limit_text.isdigit() or len(limit_text) > 20:
        raise illegal("limit", "^[0-9]{1,20}$")
    limit = int(limit_text)
    if not 1 <= limit <= DEPTH_MAX:
        raise illegal("limit", f"1-{DEPTH_MAX}")
    node = exchange.node
    # The applied sequence number read before the book: every change up to it is in the book.
    last_update_id = node.stats()["applied_seq"]
    bids = node.depth(market.id, "buy", limit)
    asks = node.depth(market.id, "sell", limit)
    return web.json_response(
        {
            "lastUpdateId": last_update_id,
            "bids": [[market.price_str(p), market.qty_str(q)] for p, q, _ in bids],
            "asks": [[market.price_str(p), market.qty_str(q)] for p, q, _ in asks],
        }
    )


def setup(app: web.Application, exchange: Exchange) -> None:
    app.router.add_get("/api/v3/ping", ping)
    app.router.add_get("/api/v3/time", server_time)
    app.router.add_get("/api/v3/exchangeInfo", exchange_info)
    app.router.add_get("/api/v3/depth", depth)
