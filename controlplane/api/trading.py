"""Binance's signed trading endpoints (Spot API v3), over the engine and the projections.

==========================================  ======  ==========  =============================
endpoint                                    weight  permission  what
==========================================  ======  ==========  =============================
``POST   /api/v3/order``                    1       trade       place LIMIT / LIMIT_MAKER /
                                                                MARKET (ACK / RESULT / FULL)
``POST   /api/v3/order/test``               1       trade       every check, no order
``GET    /api/v3/order``                    4       read        one order
``DELETE /api/v3/order``                    1       trade       cancel one order
``DELETE /api/v3/openOrders``               1       trade       cancel a symbol's open orders
``GET    /api/v3/openOrders``               6 / 80  read        open orders (a symbol / all)
``GET    /api/v3/allOrders``                20      read        a symbol's orders
``GET    /api/v3/myTrades``                 20      read        a symbol's trades
``POST   /api/v3/order/cancelReplace``      1       trade       cancel, then place
``PUT /api/v3/order/amend/keepPriority``     4       trade       reduce a quantity in place
``GET    /api/v3/rateLimit/order``          40      read        the key's ORDERS counts
==========================================  ======  ==========  =============================

``POST /api/v3/order`` and ``cancelReplace`` count one order against the key's ORDERS limits.

Every request is authenticated first (:func:`controlplane.api.auth.authenticate`), then
every parameter is checked (unknown ones ``-1104``, missing ``-1102``, empty ``-1105``,
malformed ``-1100``, values out of their enumeration ``-1115``/``-1116``/``-1117``/``-1130``/
``-1145``/``-1136``, unknown symbol ``-1121``) and the symbol filters applied
(:mod:`controlplane.orders`: ``-1111``, ``-1013``), all before a command is submitted: an
error answer means nothing changed. A command the engine refuses changes nothing either
(the engine's rule); its reason becomes Binance's error (``-2010`` for new orders, ``-2011``
for cancels, ``-2013`` / ``-2038`` for amends). After a command's acknowledgement the handler
waits for the event feed to pass it (``EventFeed.wait_for``) and answers from the
projections, so a response and every later query show the command's effect.

Engine semantics as Binance sees them: fees are charged in the quote asset on both sides
(``commissionAsset`` is the quote asset); a MARKET order by ``quoteOrderQty`` is a buy with a
quote budget (a sell by quote amount is refused: "Quote order qty market orders are not
support for this symbol."); a MARKET buy by ``quantity`` may spend the account's free quote;
``timeInForce`` of MARKET and LIMIT_MAKER orders shows ``GTC`` as on Binance. Deviations:
``newClientOrderId`` of an amend must be absent or the order's current id (the engine keeps
an order's client id), a cancel's ``newClientOrderId`` is only echoed, ``strategyId``,
pegged and iceberg orders are not offered, cancel-replace is two engine commands
(another command may come between them), and the ORDERS counts are per API key.

Complexity: each request is one authentication, a few indexed SQLite reads and at most two
engine commands (cancel-replace); list endpoints are index range scans bounded by
``limit``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from controlplane import messages as m
from controlplane.api import EXCHANGE, Exchange
from controlplane.api.auth import LIMITER, SignedRequest, authenticate, read_only, weighted
from controlplane.api.errors import (
    CANCEL_REJECTED,
    EMPTY_NEW_CL_ORD_ID,
    INVALID_ORDER_TYPE,
    INVALID_PARAMETER,
    INVALID_SIDE,
    INVALID_TIF,
    MANDATORY_PARAM_EMPTY_OR_MALFORMED,
    NO_SUCH_ORDER,
    PARAM_EMPTY,
    PARAM_NOT_REQUIRED,
    UNEXPECTED_RESP,
    ApiError,
    bad_symbol,
    illegal,
    mandatory,
)
from controlplane.api.users import commission_rates, fee_rates
from controlplane.listing import Market
from controlplane.orders import (
    CLIENT_ID,
    CLIENT_ID_RANGE,
    NS_PER_MS,
    ClientOrderIds,
    OrderFilters,
    cancel_json,
    filter_failure,
    generated_client_order_id,
    order_fields,
    orig_qty,
    parse_amount,
    query_json,
    rejected,
    rejection_error,
    time_in_force,
)
from controlplane.orders import order_type as binance_type
from controlplane.projections import (
    MY_TRADES_DEFAULT,
    MY_TRADES_MAX,
    ORDERS_DEFAULT,
    ORDERS_MAX,
    OrderRow,
    Projections,
)
from controlplane.projections import setup as setup_projections

CLIENT_IDS = web.AppKey("client_order_ids", ClientOrderIds)

EMPTY_ORG_CL_ORD_ID = -1119
MORE_THAN_XX_HOURS = -1127
OPTIONAL_PARAMS_BAD_COMBO = -1128
INVALID_NEW_ORDER_RESP_TYPE = -1136
INVALID_CANCEL_RESTRICTIONS = -1145
CANCEL_REPLACE_PARTIALLY_FAILED = -2021
CANCEL_REPLACE_FAILED = -2022
ORDER_AMEND_KEEP_PRIORITY_FAILED = -2038

LONG_RANGE = "^[0-9]{1,20}$"
LONG_MAX = 2**63 - 1
DAY_MS = 86_400_000
SIDES: dict[str, m.Side] = {"BUY": "buy", "SELL": "sell"}
TIME_IN_FORCE: dict[str, m.TimeInForce] = {"GTC": "gtc", "IOC": "ioc", "FOK": "fok"}
STP_MODES: dict[str, m.StpMode] = {
    "NONE": "none",
    "EXPIRE_TAKER": "expire_taker",
    "EXPIRE_MAKER": "expire_maker",
    "EXPIRE_BOTH": "expire_both",
    "DECREMENT": "decrement",
}
RESPONSE_TYPES = ("ACK", "RESULT", "FULL")
CANCEL_RESTRICTIONS = ("ONLY_NEW", "ONLY_PARTIALLY_FILLED")
CANCEL_REPLACE_MODES = ("STOP_ON_FAILURE", "ALLOW_FAILURE")
RATE_LIMIT_EXCEEDED_MODES = ("DO_NOTHING", "CANCEL_ONLY")
SUPPORTED_TYPES = ("LIMIT", "LIMIT_MAKER", "MARKET")
UNSUPPORTED_TYPES = {
    "STOP_LOSS": "Stop loss orders are not supported for this symbol.",
    "STOP_LOSS_LIMIT": "Stop loss limit orders are not supported for this symbol.",
    "TAKE_PROFIT": "Take profit orders are not supported for this symbol.",
    "TAKE_PROFIT_LIMIT": "Take profit limit orders are not supported for this symbol.",
}
ORDER_PARAMS = frozenset(
    {
        "symbol", "side", "type", "timeInForce", "quantity", "quoteOrderQty", "price",
        "newClientOrderId", "newOrderRespType", "selfTradePreventionMode", "stopPrice",
        "trailingDelta", "icebergQty",
    }
)  # fmt: skip
CANCEL_REPLACE_PARAMS = ORDER_PARAMS | {
    "cancelReplaceMode",
    "cancelNewClientOrderId",
    "cancelOrigClientOrderId",
    "cancelOrderId",
    "cancelRestrictions",
    "orderRateLimitExceededMode",
}


# --- parameters ------------------------------------------------------------------------------


class Params:
    """A signed request's parameters, checked against the names an endpoint reads."""

    def __init__(self, signed: SignedRequest, known: Iterable[str]) -> None:
        self.values = signed.params
        read_only(signed, known)

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def optional(self, name: str) -> str | None:
        """The value, None if not sent; -1105 if sent empty."""
        value = self.values.get(name)
        if value is not None and not value:
            raise ApiError(PARAM_EMPTY, f"Parameter '{name}' was empty.")
        return value

    def required(self, name: str) -> str:
        value = self.values.get(name)
        if not value:
            raise mandatory(name)
        return value

    def long(self, name: str) -> int | None:
        text = self.optional(name)
        if text is None:
            return None
        if not text.isascii() or not text.isdigit() or len(text) > 20 or int(text) > LONG_MAX:
            raise illegal(name, LONG_RANGE)
        return int(text)

    def limit(self, default: int, maximum: int) -> int:
        value = self.long("limit")
        if value is None:
            return default
        if not 1 <= value <= maximum:
            raise illegal("limit", f"1-{maximum}")
        return value

    def choice(self, name: str, allowed: Iterable[str], default: str, error: ApiError) -> str:
        value = self.optional(name)
        if value is None:
            return default
        if value not in allowed:
            raise error
        return value

    def client_id(self, name: str, empty_code: int, empty_msg: str) -> str | None:
        value = self.values.get(name)
        if value is None:
            return None
        if not value:
            raise ApiError(empty_code, empty_msg)
        if not CLIENT_ID.match(value):
            raise illegal(name, CLIENT_ID_RANGE)
        return value


def invalid(name: str) -> ApiError:
    return ApiError(INVALID_PARAMETER, f"Data sent for parameter '{name}' is not valid.")


def not_required(name: str) -> ApiError:
    return ApiError(PARAM_NOT_REQUIRED, f"Parameter '{name}' sent when not required.")


def one_of(first: str, second: str) -> ApiError:
    return ApiError(
        MANDATORY_PARAM_EMPTY_OR_MALFORMED,
        f"Param '{first}' or '{second}' must be sent, but both were empty/null!",
    )


def unknown_order() -> ApiError:
    return ApiError(CANCEL_REJECTED, "Unknown order sent.")


def no_such_order() -> ApiError:
    return ApiError(NO_SUCH_ORDER, "Order does not exist.")


def market_of(exchange: Exchange, params: Params) -> Market:
    market = exchange.listing.by_symbol.get(params.required("symbol"))
    if market is None:
        raise bad_symbol()
    return market


def time_window(params: Params) -> tuple[int | None, int | None]:
    start, end = params.long("startTime"), params.long("endTime")
    if start is not None and end is not None and end - start > DAY_MS:
        raise ApiError(MORE_THAN_XX_HOURS, "More than 24 hours between startTime and endTime.")
    return start, end


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json"
    )


# --- new orders ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewOrder:
    """A checked new order: the engine command (account and client id not yet set), the
    client order id string, the response type."""

    market: Market
    command: m.PlaceOrder
    client_text: str
    response_type: str


def parse_new_order(exchange: Exchange, params: Params, mk: Market) -> NewOrder:
    """Every check of a new order that needs no engine state but the book (see module)."""
    side_text = params.required("side")
    if side_text not in SIDES:
        raise ApiError(INVALID_SIDE, "Invalid side.")
    side = SIDES[side_text]
    type_text = params.required("type")
    if type_text in UNSUPPORTED_TYPES:
        raise rejected(UNSUPPORTED_TYPES[type_text])
    if type_text not in SUPPORTED_TYPES:
        raise ApiError(INVALID_ORDER_TYPE, "Invalid orderType.")
    if params.optional("icebergQty") is not None:
        raise rejected("Iceberg orders are not supported for this symbol.")
    for name in ("stopPrice", "trailingDelta"):
        if name in params:
            raise not_required(name)
    tif_text = params.optional("timeInForce")
    if type_text == "LIMIT":
        if tif_text is None:
            raise mandatory("timeInForce")
        if tif_text not in TIME_IN_FORCE:
            raise ApiError(INVALID_TIF, "Invalid timeInForce.")
    elif tif_text is not None:
        raise not_required("timeInForce")
    stp_text = params.choice(
        "selfTradePreventionMode", STP_MODES, "NONE", invalid("selfTradePreventionMode")
    )
    default_response = "ACK" if type_text == "LIMIT_MAKER" else "FULL"
    response_type = params.choice(
        "newOrderRespType",
        RESPONSE_TYPES,
        default_response,
        ApiError(INVALID_NEW_ORDER_RESP_TYPE, "Invalid newOrderRespType."),
    )
    client_text = params.client_id(
        "newClientOrderId", EMPTY_NEW_CL_ORD_ID, "New client order ID was empty."
    )
    filters = OrderFilters(mk)
    command = m.PlaceOrder(
        account=0, market=mk.id, side=side, order_type="limit", stp=STP_MODES[stp_text]
    )
    if type_text in ("LIMIT", "LIMIT_MAKER"):
        if params.optional("quoteOrderQty") is not None:
            raise not_required("quoteOrderQty")
        quantity = filters.quantity(params.required("quantity"))
        price = filters.price(params.required("price"))
        filters.notional(price, quantity)
        command = msgspec.structs.replace(
            command,
            time_in_force=TIME_IN_FORCE[tif_text or "GTC"],
            post_only=type_text == "LIMIT_MAKER",
            price=price,
            quantity=quantity,
        )
    else:
        if params.optional("price") is not None:
            raise not_required("price")
        quantity_text = params.optional("quantity")
        quote_text = params.optional("quoteOrderQty")
        if quantity_text is None and quote_text is None:
            raise one_of("quantity", "quoteOrderQty")
        if quantity_text is not None and quote_text is not None:
            raise not_required("quoteOrderQty")
        opposite: m.Side = "sell" if side == "buy" else "buy"
        best = exchange.node.depth(mk.id, opposite, 1)
        if quantity_text is not None:
            quantity = filters.quantity(quantity_text)
            if best:
                filters.notional(best[0][0], quantity)
            command = msgspec.structs.replace(command, order_type="market", quantity=quantity)
        else:
            assert quote_text is not None
            quote_amount = filters.quote_amount(quote_text)
            if side == "sell":
                raise rejected("Quote order qty market orders are not support for this symbol.")
            if not best:
                raise rejected("Order book liquidity is less than symbol minimum quantity.")
            command = msgspec.structs.replace(
                command, order_type="market", quote_quantity=quote_amount
            )
    return NewOrder(mk, command, client_text or generated_client_order_id(), response_type)


def _projected(projections: Projections, account: int, order_id: int) -> OrderRow:
    row = projections.order(account, order_id)
    if row is None:
        raise ApiError(
            UNEXPECTED_RESP,
            "An unexpected response was received from the message bus. Execution status unknown.",
            500,
        )
    return row


async def place(
    exchange: Exchange, ids: ClientOrderIds, projections: Projections, account: int, new: NewOrder
) -> dict[str, Any]:
    """Submit a checked order; its Binance response (ApiError if the engine refused it)."""
    engine_id, _ = ids.allocate(account, new.client_text)
    command = msgspec.structs.replace(new.command, account=account, client_order_id=engine_id)
    ack = await exchange.bridge.submit(command)
    refusal = ack.rejection()
    if refusal is not None:
        raise rejection_error(refusal.reason)
    accepted = next(e for e in ack.events if isinstance(e, m.Accepted))
    await exchange.feed.wait_for(ack.seq)
    row = _projected(projections, account, accepted.order_id)
    mk = new.market
    out: dict[str, Any] = {
        "symbol": mk.symbol,
        "orderId": row.order_id,
        "orderListId": -1,
        "clientOrderId": new.client_text,
        "transactTime": ack.timestamp_ns // NS_PER_MS,
    }
    if new.response_type == "ACK":
        return out
    out.update(order_fields(mk, row))
    out["workingTime"] = row.working_ns // NS_PER_MS
    out["selfTradePreventionMode"] = row.stp.upper()
    if new.response_type == "FULL":
        out["fills"] = [
            {
                "price": mk.price_str(t.price),
                "qty": mk.qty_str(t.quantity),
                "commission": mk.quote_str(t.taker_fee),
                "commissionAsset": mk.quote.name,
                "tradeId": t.trade_id,
            }
            for t in ack.events
            if isinstance(t, m.Trade) and t.taker_order_id == row.order_id
        ]
    return out


# --- finding and cancelling orders -----------------------------------------------------------


@dataclass
class Trading:
    """What the handlers share."""

    exchange: Exchange
    ids: ClientOrderIds
    projections: Projections

    def find(
        self, account: int, mk: Market, order_id: int | None, client_text: str | None
    ) -> OrderRow | None:
        """The account's order in this market by id (checked against the client id if both
        are given) or by client order id (the newest with it)."""
        row: OrderRow | None
        if order_id is not None:
            row = self.projections.order(account, order_id)
            if (
                row is not None
                and client_text is not None
                and self.ids.text(account, row.client_order_id) != client_text
            ):
                row = None
        else:
            assert client_text is not None
            engine_id = self.ids.lookup(account, client_text)
            if engine_id is None:
                return None
            row = self.projections.order_by_client_id(account, engine_id)
        if row is None or row.market != mk.id:
            return None
        return row

    async def cancel(
        self, account: int, mk: Market, row: OrderRow, restriction: str | None, cancel_id: str
    ) -> dict[str, Any]:
        """Cancel an order found open; the cancel response. -2011 if it is not open, does
        not meet ``restriction`` or the engine no longer has it."""
        if not row.is_open:
            raise unknown_order()
        if (restriction == "ONLY_NEW" and row.status != "NEW") or (
            restriction == "ONLY_PARTIALLY_FILLED" and row.status != "PARTIALLY_FILLED"
        ):
            raise ApiError(CANCEL_REJECTED, "Order was not canceled due to cancel restrictions.")
        ack = await self.exchange.bridge.submit(
            m.CancelOrder(account=account, order=m.OrderRef(id=row.order_id))
        )
        refusal = ack.rejection()
        if refusal is not None:
            raise rejection_error(refusal.reason, CANCEL_REJECTED)
        await self.exchange.feed.wait_for(ack.seq)
        done = _projected(self.projections, account, row.order_id)
        orig = self.ids.text(account, done.client_order_id)
        return cancel_json(mk, done, orig, cancel_id, ack.timestamp_ns // NS_PER_MS)

    def query(self, account: int, row: OrderRow) -> dict[str, Any]:
        mk = self.exchange.listing.markets[row.market]
        return query_json(mk, row, self.ids.text(account, row.client_order_id))


TRADING = web.AppKey("trading", Trading)


def _order_ref(params: Params, id_name: str, client_name: str) -> tuple[int | None, str | None]:
    order_id = params.long(id_name)
    client_text = params.client_id(
        client_name, EMPTY_ORG_CL_ORD_ID, "Original client order ID was empty."
    )
    if order_id is None and client_text is None:
        raise one_of(client_name, id_name)
    return order_id, client_text


def _restriction(params: Params, name: str = "cancelRestrictions") -> str | None:
    value = params.values.get(name)
    if value is None:
        return None
    if value not in CANCEL_RESTRICTIONS:
        raise ApiError(INVALID_CANCEL_RESTRICTIONS, "Invalid cancelRestrictions")
    return value


def _cancel_id(params: Params, name: str) -> str:
    given = params.client_id(name, EMPTY_NEW_CL_ORD_ID, "New client order ID was empty.")
    return given or generated_client_order_id()


# --- handlers --------------------------------------------------------------------------------


@weighted(1, orders=True)
async def new_order(request: web.Request) -> web.Response:
    signed = await authenticate(request, "trade")
    t = request.app[TRADING]
    params = Params(signed, ORDER_PARAMS)
    mk = market_of(t.exchange, params)
    new = parse_new_order(t.exchange, params, mk)
    return json_response(await place(t.exchange, t.ids, t.projections, signed.account, new))


@weighted(1)
async def test_order(request: web.Request) -> web.Response:
    """Every check of ``POST /api/v3/order``, nothing submitted. With
    ``computeCommissionRates=true``: the account's rates (its fee tier in the engine) as
    Binance's ``standardCommissionForOrder``; no tax, no discount asset. (Weight 1 either
    way: Binance charges 20 with the rates.)"""
    signed = await authenticate(request, "trade")
    t = request.app[TRADING]
    params = Params(signed, ORDER_PARAMS | {"computeCommissionRates"})
    mk = market_of(t.exchange, params)
    compute = params.choice(
        "computeCommissionRates", ("true", "false"), "false", invalid("computeCommissionRates")
    )
    parse_new_order(t.exchange, params, mk)
    if compute == "false":
        return json_response({})
    rates = commission_rates(*fee_rates(t.exchange, signed.account))
    zero = rates["buyer"]
    return json_response(
        {
            "standardCommissionForOrder": {"maker": rates["maker"], "taker": rates["taker"]},
            "taxCommissionForOrder": {"maker": zero, "taker": zero},
            "discount": {
                "enabledForAccount": False,
                "enabledForSymbol": False,
                "discountAsset": None,
                "discount": zero,
            },
        }
    )


@weighted(4)
async def get_order(request: web.Request) -> web.Response:
    signed = await authenticate(request, "read")
    t = request.app[TRADING]
    params = Params(signed, {"symbol", "orderId", "origClientOrderId"})
    mk = market_of(t.exchange, params)
    order_id, client_text = _order_ref(params, "orderId", "origClientOrderId")
    row = t.find(signed.account, mk, order_id, client_text)
    if row is None:
        raise no_such_order()
    return json_response(t.query(signed.account, row))


@weighted(1)
async def cancel_order(request: web.Request) -> web.Response:
    signed = await authenticate(request, "trade")
    t = request.app[TRADING]
    params = Params(
        signed, {"symbol", "orderId", "origClientOrderId", "newClientOrderId", "cancelRestrictions"}
    )
    mk = market_of(t.exchange, params)
    order_id, client_text = _order_ref(params, "orderId", "origClientOrderId")
    cancel_id = _cancel_id(params, "newClientOrderId")
    restriction = _restriction(params)
    await t.exchange.caught_up()
    row = t.find(signed.account, mk, order_id, client_text)
    if row is None:
        raise unknown_order()
    return json_response(await t.cancel(signed.account, mk, row, restriction, cancel_id))


@weighted(1)
async def cancel_open_orders(request: web.Request) -> web.Response:
    """Cancel the symbol's open orders (one engine CancelAll); -2011 if there were none."""
    signed = await authenticate(request, "trade")
    t = request.app[TRADING]
    params = Params(signed, {"symbol"})
    mk = market_of(t.exchange, params)
    ack = await t.exchange.bridge.submit(m.CancelAll(account=signed.account, market=mk.id))
    refusal = ack.rejection()
    if refusal is not None:
        raise rejection_error(refusal.reason, CANCEL_REJECTED)
    done = [e.order_id for e in ack.events if isinstance(e, m.OrderDone)]
    if not done:
        raise unknown_order()
    await t.exchange.feed.wait_for(ack.seq)
    cancel_id = generated_client_order_id()
    transact_ms = ack.timestamp_ns // NS_PER_MS
    out = []
    for order_id in done:
        row = _projected(t.projections, signed.account, order_id)
        orig = t.ids.text(signed.account, row.client_order_id)
        out.append(cancel_json(mk, row, orig, cancel_id, transact_ms))
    return json_response(out)


def _open_orders_weight(request: web.Request) -> int:
    return 6 if "symbol" in request.query else 80


@weighted(_open_orders_weight)
async def open_orders(request: web.Request) -> web.Response:
    signed = await authenticate(request, "read")
    t = request.app[TRADING]
    params = Params(signed, {"symbol"})
    market_id: int | None = None
    if "symbol" in params:
        market_id = market_of(t.exchange, params).id
    rows = t.projections.open_orders(signed.account, market_id)
    return json_response([t.query(signed.account, r) for r in rows])


@weighted(20)
async def all_orders(request: web.Request) -> web.Response:
    signed = await authenticate(request, "read")
    t = request.app[TRADING]
    params = Params(signed, {"symbol", "orderId", "startTime", "endTime", "limit"})
    mk = market_of(t.exchange, params)
    from_id = params.long("orderId")
    start, end = time_window(params)
    limit = params.limit(ORDERS_DEFAULT, ORDERS_MAX)
    rows = t.projections.all_orders(signed.account, mk.id, from_id, start, end, limit)
    return json_response([t.query(signed.account, r) for r in rows])


@weighted(20)
async def my_trades(request: web.Request) -> web.Response:
    signed = await authenticate(request, "read")
    t = request.app[TRADING]
    params = Params(signed, {"symbol", "orderId", "startTime", "endTime", "fromId", "limit"})
    mk = market_of(t.exchange, params)
    order_id = params.long("orderId")
    from_id = params.long("fromId")
    start, end = time_window(params)
    if from_id is not None and (start is not None or end is not None):
        raise ApiError(OPTIONAL_PARAMS_BAD_COMBO, "Combination of optional parameters invalid.")
    limit = params.limit(MY_TRADES_DEFAULT, MY_TRADES_MAX)
    trades = t.projections.account_trades(
        signed.account, mk.id, from_id, start, end, limit, order_id
    )
    return json_response(
        [
            {
                "symbol": mk.symbol,
                "id": a.trade.trade_id,
                "orderId": a.order_id,
                "orderListId": -1,
                "price": mk.price_str(a.trade.price),
                "qty": mk.qty_str(a.trade.quantity),
                "quoteQty": mk.quote_str(a.trade.quote_quantity),
                "commission": mk.quote_str(a.fee),
                "commissionAsset": mk.quote.name,
                "time": a.trade.time_ms,
                "isBuyer": a.is_buyer,
                "isMaker": a.is_maker,
                "isBestMatch": True,
            }
            for a in trades
        ]
    )


def _failure(err: ApiError) -> dict[str, Any]:
    return {"code": err.code, "msg": err.msg}


@weighted(1, orders=True)
async def cancel_replace(request: web.Request) -> web.Response:
    """Cancel an order, then place a new one (two engine commands; every parameter and the
    new order's filters are checked before either). Responses as Binance: 200 both
    succeeded; 400 ``-2022`` cancel failed (new order not attempted, or failed too); 409
    ``-2021`` one of the two failed."""
    signed = await authenticate(request, "trade")
    t = request.app[TRADING]
    params = Params(signed, CANCEL_REPLACE_PARAMS)
    mk = market_of(t.exchange, params)
    mode_text = params.required("cancelReplaceMode")
    if mode_text not in CANCEL_REPLACE_MODES:
        raise invalid("cancelReplaceMode")
    params.choice(
        "orderRateLimitExceededMode",
        RATE_LIMIT_EXCEEDED_MODES,
        "DO_NOTHING",
        invalid("orderRateLimitExceededMode"),
    )
    order_id, client_text = _order_ref(params, "cancelOrderId", "cancelOrigClientOrderId")
    cancel_id = _cancel_id(params, "cancelNewClientOrderId")
    restriction = _restriction(params)
    new = parse_new_order(t.exchange, params, mk)

    account = signed.account
    cancel_response: dict[str, Any] | None = None
    cancel_error: ApiError | None = None
    await t.exchange.caught_up()
    row = t.find(account, mk, order_id, client_text)
    try:
        if row is None:
            raise unknown_order()
        cancel_response = await t.cancel(account, mk, row, restriction, cancel_id)
    except ApiError as err:
        cancel_error = err
    if cancel_error is not None and mode_text == "STOP_ON_FAILURE":
        return json_response(
            {
                "code": CANCEL_REPLACE_FAILED,
                "msg": "Order cancel-replace failed.",
                "data": {
                    "cancelResult": "FAILURE",
                    "newOrderResult": "NOT_ATTEMPTED",
                    "cancelResponse": _failure(cancel_error),
                    "newOrderResponse": None,
                },
            },
            400,
        )
    new_response: dict[str, Any] | None = None
    new_error: ApiError | None = None
    try:
        new_response = await place(t.exchange, t.ids, t.projections, account, new)
    except ApiError as err:
        new_error = err
    data = {
        "cancelResult": "FAILURE" if cancel_error else "SUCCESS",
        "newOrderResult": "FAILURE" if new_error else "SUCCESS",
        "cancelResponse": _failure(cancel_error) if cancel_error else cancel_response,
        "newOrderResponse": _failure(new_error) if new_error else new_response,
    }
    if cancel_error is None and new_error is None:
        return json_response(data)
    if cancel_error is not None and new_error is not None:
        body = {"code": CANCEL_REPLACE_FAILED, "msg": "Order cancel-replace failed."}
        return json_response({**body, "data": data}, 400)
    body = {
        "code": CANCEL_REPLACE_PARTIALLY_FAILED,
        "msg": "Order cancel-replace partially failed.",
    }
    return json_response({**body, "data": data}, 409)


def amend_failed(msg: str) -> ApiError:
    return ApiError(ORDER_AMEND_KEEP_PRIORITY_FAILED, msg)


@weighted(4)
async def amend_keep_priority(request: web.Request) -> web.Response:
    """Reduce an open order's quantity (``newQty``, the new total quantity) keeping its
    place: the engine's AmendOrder with the new open quantity ``newQty - executedQty``."""
    signed = await authenticate(request, "trade")
    t = request.app[TRADING]
    params = Params(
        signed, {"symbol", "orderId", "origClientOrderId", "newClientOrderId", "newQty"}
    )
    mk = market_of(t.exchange, params)
    order_id, client_text = _order_ref(params, "orderId", "origClientOrderId")
    new_client = params.client_id(
        "newClientOrderId", EMPTY_NEW_CL_ORD_ID, "New client order ID was empty."
    )
    new_qty = parse_amount("newQty", params.required("newQty"), mk.base.decimals)
    if new_qty == 0 or new_qty % mk.lot_size:
        raise filter_failure("LOT_SIZE")
    account = signed.account
    await t.exchange.caught_up()
    row = t.find(account, mk, order_id, client_text)
    if row is None or not row.is_open:
        raise no_such_order()
    current_client = t.ids.text(account, row.client_order_id)
    if new_client is not None and new_client != current_client:
        raise invalid("newClientOrderId")
    if new_qty >= row.quantity:
        raise amend_failed("Order amend (quantity increase) is not supported.")
    if new_qty <= row.executed_qty:
        raise amend_failed("The new quantity must be greater than the executed quantity.")
    leaves = new_qty - row.executed_qty
    OrderFilters(mk).notional(row.price, leaves)
    ack = await t.exchange.bridge.submit(
        m.AmendOrder(account=account, order=m.OrderRef(id=row.order_id), new_quantity=leaves)
    )
    refusal = ack.rejection()
    if refusal is not None:
        if refusal.reason == "order_not_found":
            raise no_such_order()
        raise rejection_error(refusal.reason, ORDER_AMEND_KEEP_PRIORITY_FAILED)
    await t.exchange.feed.wait_for(ack.seq)
    done = _projected(t.projections, account, row.order_id)
    return json_response(
        {
            "transactTime": ack.timestamp_ns // NS_PER_MS,
            "executionId": ack.seq,
            "amendedOrder": {
                "symbol": mk.symbol,
                "orderId": done.order_id,
                "orderListId": -1,
                "origClientOrderId": current_client,
                "clientOrderId": current_client,
                "price": mk.price_str(done.price),
                "qty": mk.qty_str(orig_qty(done)),
                "executedQty": mk.qty_str(done.executed_qty),
                "preventedQty": mk.qty_str(0),
                "quoteOrderQty": mk.quote_str(done.quote_quantity),
                "cumulativeQuoteQty": mk.quote_str(done.cumulative_quote_qty),
                "status": done.status,
                "timeInForce": time_in_force(done),
                "type": binance_type(done),
                "side": done.side.upper(),
                "workingTime": done.working_ns // NS_PER_MS,
                "selfTradePreventionMode": done.stp.upper(),
            },
        }
    )


@weighted(40)
async def order_rate_limit(request: web.Request) -> web.Response:
    """The key's ORDERS counts in the current 10-second and day windows."""
    signed = await authenticate(request, "read")
    Params(signed, ())
    limits = request.app[EXCHANGE].config.limits
    counts = request.app[LIMITER].order_headers(signed.key_id, extra=0)
    return json_response(
        [
            {
                "rateLimitType": "ORDERS",
                "interval": "SECOND",
                "intervalNum": 10,
                "limit": limits.orders_per_10s,
                "count": int(counts["X-MBX-ORDER-COUNT-10S"]),
            },
            {
                "rateLimitType": "ORDERS",
                "interval": "DAY",
                "intervalNum": 1,
                "limit": limits.orders_per_day,
                "count": int(counts["X-MBX-ORDER-COUNT-1D"]),
            },
        ]
    )


def setup(app: web.Application, exchange: Exchange) -> None:
    """The client order id table, the shared projections and the routes (after ``auth``,
    whose accounts service and rate limiter these endpoints use)."""
    projections = setup_projections(app, exchange)
    ids = ClientOrderIds(exchange.db)
    app[CLIENT_IDS] = ids
    app[TRADING] = Trading(exchange, ids, projections)
    r = app.router
    r.add_post("/api/v3/order", new_order)
    r.add_post("/api/v3/order/test", test_order)
    r.add_get("/api/v3/order", get_order)
    r.add_delete("/api/v3/order", cancel_order)
    r.add_delete("/api/v3/openOrders", cancel_open_orders)
    r.add_get("/api/v3/openOrders", open_orders)
    r.add_get("/api/v3/allOrders", all_orders)
    r.add_get("/api/v3/myTrades", my_trades)
    r.add_post("/api/v3/order/cancelReplace", cancel_replace)
    r.add_put("/api/v3/order/amend/keepPriority", amend_keep_priority)
    r.add_get("/api/v3/rateLimit/order", order_rate_limit)


__all__ = ["CLIENT_IDS", "TRADING", "ClientOrderIds", "Trading", "setup"]
