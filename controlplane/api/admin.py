"""The operator HTTP API, ``/admin/v1/``: listing, market status, fees, users, deposits,
withdrawal approval, ledgers and health.

Every endpoint except ``POST /admin/v1/login`` needs ``Authorization: Bearer <operator
token>`` (:mod:`controlplane.operators`): missing, unknown or expired → ``-1002`` (401);
an ``auditor`` calling anything but ``GET`` → ``-1002`` (403). Every call that is not a
``GET`` is appended to the audit trail with its outcome (HTTP status), whether it succeeded
or not; secrets in bodies (``password``) are never recorded.

Bodies are JSON with snake_case fields, decoded into the msgspec Structs below (invalid JSON
→ ``-1102``, missing field → ``-1102``, unknown field → ``-1103``, wrong type → ``-1130``,
as :mod:`controlplane.api.users`); responses are JSON with snake_case fields. Amounts and
market sizes are **decimal strings** in the asset's units, as Binance's ``exchangeInfo``
writes them: ``tick_size`` in the quote asset with ``price_decimals`` decimals (``"0.01"``),
``lot_size`` in the base asset (``"0.00001"``), ``min_notional`` in the quote asset
(``"5"``). Every handler validates fully before it changes anything.

==========================================  ===============================================
``POST /admin/v1/login``                    ``{name, password}`` → a 12-hour token
``GET  /admin/v1/health``                   node, feed, gateway, projections, funding, db
``GET  /admin/v1/audit``                    the audit trail, newest first (``?limit=``)
``GET  /admin/v1/assets``                   listed assets
``POST /admin/v1/assets``                   ``{name, id?, decimals}`` (``ListAsset``)
``GET  /admin/v1/markets``                  listed markets with their status
``POST /admin/v1/markets``                  ``{symbol, base, quote, price_decimals, tick_size,
                                            lot_size, min_notional, id?}`` (``ListMarket``)
``POST /admin/v1/markets/{symbol}/halt``    also ``resume``, ``delist`` (``SetMarketStatus``)
``PUT  /admin/v1/fee-tiers/{tier}``         ``{maker_bps, taker_bps}`` (``SetFeeTier``)
``POST /admin/v1/users``                    ``{username, password}``: a user + engine account
``GET  /admin/v1/users/{id}``               the user, tier and balances
``PUT  /admin/v1/users/{id}/fee-tier``      ``{fee_tier}`` (``SetAccountFeeTier``)
``PUT  /admin/v1/users/{id}/tier``          ``{tier}``: verification tier 0, 1 or 2
``POST /admin/v1/users/{id}/api-keys``      ``{permissions, label?}``: read/trade only
``POST /admin/v1/users/{id}/freeze``        also ``unfreeze``
``GET  /admin/v1/users/{id}/ledger``        ``?asset=&limit=&from_id=``
``POST /admin/v1/deposits``                 ``{user_id | account, asset, amount, tx_id}``
``GET  /admin/v1/withdrawals``              ``?status=&user_id=&limit=``
``POST /admin/v1/withdrawals/{id}/approve``
``POST /admin/v1/withdrawals/{id}/reject``  ``{reason?}``: the amount is paid back
==========================================  ===============================================

Complexity: each endpoint is O(1) engine commands and indexed queries; the list endpoints
are bounded by ``limit`` (or the listing's size).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

from controlplane import NodeError
from controlplane.accounts import User
from controlplane.api import EXCHANGE, Exchange
from controlplane.api.auth import ACCOUNTS
from controlplane.api.errors import (
    UNAUTHORIZED,
    ApiError,
    bad_symbol,
    illegal,
)
from controlplane.api.users import _Body as JsonBody
from controlplane.api.users import decode_body, json_response, key_json, user_json
from controlplane.api.wallet import ledger_page
from controlplane.db import FILE_NAME
from controlplane.funding import (
    BINANCE_WITHDRAW_STATUS,
    CAPITAL_USER_EMPTY,
    FUNDING,
    Withdrawal,
    conflict,
    invalid,
    parse_amount,
)
from controlplane.funding import setup as setup_funding
from controlplane.listing import Asset, DecimalError, Market, fmt, parse_decimal
from controlplane.messages import (
    Ack,
    Command,
    ListAsset,
    ListMarket,
    MarketStatus,
    SetAccountFeeTier,
    SetFeeTier,
    SetMarketStatus,
)
from controlplane.operators import Operator, Operators
from controlplane.projections import PROJECTIONS
from controlplane.projections import setup as setup_projections

OPERATORS = web.AppKey("operators", Operators)
PREFIX = "/admin/v1"
ASSET_NAME = re.compile(r"^[A-Z0-9]{2,20}\Z")
SYMBOL = re.compile(r"^[A-Z0-9]{2,40}\Z")
U32_MAX = 2**32 - 1
BPS_MAX = 10_000
LIST_DEFAULT, LIST_MAX = 100, 1000
SECRET_FIELDS = ("password",)

OperatorHandler = Callable[[web.Request, Operator], Awaitable[web.Response]]


# --- bodies ---------------------------------------------------------------------------------


class Login(JsonBody):
    name: str
    password: str


class NewAsset(JsonBody):
    name: str
    decimals: int
    id: int | None = None


class NewMarket(JsonBody):
    symbol: str
    base: str
    quote: str
    price_decimals: int
    tick_size: str
    lot_size: str
    min_notional: str
    id: int | None = None


class FeeTier(JsonBody):
    maker_bps: int
    taker_bps: int


class AccountFeeTier(JsonBody):
    fee_tier: int


class VerificationTier(JsonBody):
    tier: int


class NewUser(JsonBody):
    username: str
    password: str


class OperatorKey(JsonBody):
    permissions: list[Literal["read", "trade", "withdraw"]]
    label: str = "operator-issued"


class NewDeposit(JsonBody):
    asset: str
    amount: str
    tx_id: str
    user_id: int | None = None
    account: int | None = None


class Rejection(JsonBody):
    reason: str = ""


# --- authentication and audit ---------------------------------------------------------------


def _redacted_body(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        return "<not JSON>"
    if isinstance(body, dict):
        return {k: ("<redacted>" if k in SECRET_FIELDS else v) for k, v in body.items()}
    return body


def operator_only(action: str, handler: OperatorHandler) -> Callable[[web.Request], Any]:
    """Wrap a handler: operator token required, role checked, non-GET calls audited."""

    async def wrapped(request: web.Request) -> web.Response:
        operators = request.app[OPERATORS]
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        operator = operators.authenticate(token.strip()) if scheme.lower() == "bearer" else None
        if operator is None:
            raise ApiError(UNAUTHORIZED, "A valid operator token is required.", 401)
        if request.method == "GET":
            return await handler(request, operator)
        detail = {"query": dict(request.query), "body": _redacted_body(await request.read())}
        status = 500
        try:
            if operator.role != "admin":
                raise ApiError(UNAUTHORIZED, f"Operator role {operator.role!r} may only read.", 403)
            response = await handler(request, operator)
            status = response.status
            return response
        except ApiError as err:
            status = err.status
            detail["error"] = {"code": err.code, "msg": err.msg}
            raise
        finally:
            operators.audit(operator, action, request.path, detail, status)

    return wrapped


# --- helpers --------------------------------------------------------------------------------


def _exchange(request: web.Request) -> Exchange:
    return request.app[EXCHANGE]


def _path_int(request: web.Request, name: str, maximum: int = 2**63 - 1) -> int:
    text = request.match_info[name]
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > maximum:
        raise illegal(name, f"0-{maximum}")
    return int(text)


def _query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 19 or not low <= int(text) <= high:
        raise illegal(name, f"{low}-{high}")
    return int(text)


def _user(request: web.Request, name: str = "user_id") -> User:
    user = request.app[ACCOUNTS].user(_path_int(request, name))
    if user is None:
        raise ApiError(CAPITAL_USER_EMPTY, "The user does not exist.", 404)
    return user


def _refused(ack: Ack, what: str) -> None:
    rejected = ack.rejection()
    if rejected is not None:
        raise conflict(f"The engine refused {what}: {rejected.reason}.")


async def _submit(request: web.Request, command: Command, what: str) -> Ack:
    exchange = _exchange(request)
    ack = await exchange.bridge.submit(command)
    _refused(ack, what)
    await exchange.feed.wait_for(ack.seq)
    return ack


def asset_json(asset: Asset) -> dict[str, Any]:
    return {"id": asset.id, "name": asset.name, "decimals": asset.decimals}


def market_json(market: Market, status: str) -> dict[str, Any]:
    return {
        "id": market.id,
        "symbol": market.symbol,
        "base": market.base.name,
        "quote": market.quote.name,
        "price_decimals": market.price_decimals,
        "tick_size": market.price_str(market.tick_size),
        "lot_size": market.qty_str(market.lot_size),
        "min_notional": market.quote_str(market.min_notional),
        "status": status,
    }


def withdrawal_json(w: Withdrawal, approvals_required: int) -> dict[str, Any]:
    return {
        "id": w.id,
        "user_id": w.user_id,
        "account": w.account,
        "asset": w.asset.name,
        "amount": w.amount_str,
        "address": w.address,
        "network": w.network,
        "withdraw_order_id": w.withdraw_order_id,
        "status": w.status,
        "binance_status": BINANCE_WITHDRAW_STATUS[w.status],
        "needs_approval": w.needs_approval,
        "approvals": list(w.approvals),
        "approvals_required": approvals_required if w.needs_approval else 0,
        "withdraw_seq": w.withdraw_seq,
        "refund_seq": w.refund_seq,
        "tx_id": w.tx_id,
        "info": w.info,
        "created_time": w.created_ms,
        "updated_time": w.updated_ms,
    }


# --- handlers -------------------------------------------------------------------------------


async def login(request: web.Request) -> web.Response:
    body = await decode_body(request, Login)
    found = await request.app[OPERATORS].login(body.name, body.password)
    if found is None:
        raise ApiError(UNAUTHORIZED, "Invalid operator name or password.", 401)
    operator, token, expires = found
    return json_response(
        {"token": token, "expires_time": expires, "operator": operator.name, "role": operator.role}
    )


async def health(request: web.Request, operator: Operator) -> web.Response:
    exchange = _exchange(request)
    node = exchange.node
    stats = node.stats()
    try:
        gateway: dict[str, Any] | None = dict(node.gateway_stats())
    except NodeError:
        gateway = None
    data_dir = Path(exchange.config.server.data_dir)
    db_bytes = sum(
        p.stat().st_size
        for p in (data_dir / FILE_NAME, data_dir / f"{FILE_NAME}-wal")
        if p.exists()
    )
    funding = request.app[FUNDING]
    return json_response(
        {
            "node": {
                key: value
                for key, value in stats.items()
                if key not in ("engine_apply_ns", "journal_commit_ns")
            },
            "feed": {
                "next_seq": exchange.feed.next_seq,
                "lag": exchange.feed.lag,
                "failure": None if exchange.feed.failure is None else repr(exchange.feed.failure),
            },
            "gateway": gateway,
            "projections": {"cursor": request.app[PROJECTIONS].cursor},
            "funding": {
                "cursor": funding.cursor,
                "pending_approvals": funding.count_withdrawals("PENDING_APPROVAL"),
            },
            "db": {"bytes": db_bytes},
            "operator": operator.name,
        }
    )


async def audit_log(request: web.Request, operator: Operator) -> web.Response:
    limit = _query_int(request, "limit", LIST_DEFAULT, 1, LIST_MAX)
    return json_response(request.app[OPERATORS].audit_log(limit))


async def list_assets(request: web.Request, operator: Operator) -> web.Response:
    return json_response([asset_json(a) for a in _exchange(request).listing.assets.values()])


async def add_asset(request: web.Request, operator: Operator) -> web.Response:
    body = await decode_body(request, NewAsset)
    exchange = _exchange(request)
    listing = exchange.listing
    if not ASSET_NAME.match(body.name):
        raise invalid(
            "Data sent for parameter 'name' is not valid: 2 to 20 characters from A-Z, 0-9."
        )
    if not 0 <= body.decimals <= 18:
        raise invalid("Data sent for parameter 'decimals' is not valid: 0 to 18.")
    engine_assets = dict(exchange.node.assets())
    busy = _listing_now(request)
    asset_id = body.id if body.id is not None else _next_id(engine_assets, busy, "asset-id")
    if not 1 <= asset_id <= U32_MAX:
        raise invalid(f"Data sent for parameter 'id' is not valid: 1 to {U32_MAX}.")
    if body.name in listing.assets_by_name or f"asset:{body.name}" in busy:
        raise conflict(f"Asset {body.name} is listed already.")
    if asset_id in listing.assets:
        raise conflict(f"Asset id {asset_id} is listed already ({listing.assets[asset_id].name}).")
    if f"asset-id:{asset_id}" in busy:
        raise conflict(f"Asset id {asset_id} is being listed.")
    asset = Asset(asset_id, body.name, body.decimals)
    with _Reserving(request, f"asset:{body.name}", f"asset-id:{asset_id}"):
        if engine_assets.get(asset_id) != body.decimals:  # else: a crash left it unnamed
            await _submit(request, ListAsset(asset=asset_id, decimals=body.decimals), "the asset")
        listing.record_asset(asset)
    return json_response(asset_json(asset), 201)


_LISTING_NOW = web.AppKey("admin_listing_now", set[str])


def _listing_now(request: web.Request) -> set[str]:
    return request.app[_LISTING_NOW]


class _Reserving:
    """Reserve names and ids (``asset:BTC``, ``asset-id:1``, ``market:BTCUSDT``,
    ``market-id:1``) while they are being listed: two requests interleaved at the engine
    command's ``await`` cannot list the same name or the same id."""

    def __init__(self, request: web.Request, *keys: str) -> None:
        self.busy = _listing_now(request)
        self.keys = keys

    def __enter__(self) -> None:
        self.busy.update(self.keys)

    def __exit__(self, *_: object) -> None:
        self.busy.difference_update(self.keys)


def _next_id(listed: Iterable[int], busy: set[str], prefix: str) -> int:
    """The next free id: above every listed one and every one being listed now."""
    taken = [int(k.split(":", 1)[1]) for k in busy if k.startswith(prefix + ":")]
    return max([*listed, *taken], default=0) + 1


def _market_status(exchange: Exchange) -> dict[int, str]:
    return {m["market"]: m["status"] for m in exchange.node.markets()}


async def list_markets(request: web.Request, operator: Operator) -> web.Response:
    exchange = _exchange(request)
    status = _market_status(exchange)
    return json_response(
        [market_json(m, status.get(m.id, "unknown")) for m in exchange.listing.markets.values()]
    )


def _size(text: str, decimals: int, name: str, *, positive: bool) -> int:
    try:
        value = parse_decimal(text, decimals)
    except DecimalError as err:
        raise invalid(f"Data sent for parameter '{name}' is not valid: {err}.") from None
    if positive and value == 0:
        raise invalid(f"Data sent for parameter '{name}' is not valid: must be above zero.")
    if value > 2**64 - 1:
        raise invalid(f"Data sent for parameter '{name}' is not valid: too large.")
    return value


async def add_market(request: web.Request, operator: Operator) -> web.Response:
    body = await decode_body(request, NewMarket)
    exchange = _exchange(request)
    listing = exchange.listing
    if not SYMBOL.match(body.symbol):
        raise invalid(
            "Data sent for parameter 'symbol' is not valid: 2 to 40 characters from A-Z, 0-9."
        )
    busy = _listing_now(request)
    if body.symbol in listing.by_symbol or f"market:{body.symbol}" in busy:
        raise conflict(f"Market {body.symbol} is listed already.")
    base = listing.assets_by_name.get(body.base)
    quote = listing.assets_by_name.get(body.quote)
    if base is None or quote is None:
        missing = body.base if base is None else body.quote
        raise invalid(f"Data sent for parameter 'base'/'quote' is not valid: no asset {missing}.")
    if base.id == quote.id:
        raise invalid("Data sent for parameter 'quote' is not valid: the same asset as base.")
    if not 0 <= body.price_decimals <= 18:
        raise invalid("Data sent for parameter 'price_decimals' is not valid: 0 to 18.")
    tick = _size(body.tick_size, body.price_decimals, "tick_size", positive=True)
    lot = _size(body.lot_size, base.decimals, "lot_size", positive=True)
    min_notional = _size(body.min_notional, quote.decimals, "min_notional", positive=False)
    engine_markets = {m["market"]: m for m in exchange.node.markets()}
    market_id = body.id if body.id is not None else _next_id(engine_markets, busy, "market-id")
    if not 1 <= market_id <= U32_MAX:
        raise invalid(f"Data sent for parameter 'id' is not valid: 1 to {U32_MAX}.")
    if market_id in listing.markets:
        raise conflict(f"Market id {market_id} is listed already.")
    if f"market-id:{market_id}" in busy:
        raise conflict(f"Market id {market_id} is being listed.")
    market = Market(
        market_id, body.symbol, base, quote, body.price_decimals, tick, lot, min_notional
    )
    spec = (base.id, quote.id, body.price_decimals, tick, lot, min_notional)
    command = ListMarket(
        market=market_id,
        base=base.id,
        quote=quote.id,
        price_decimals=body.price_decimals,
        tick_size=tick,
        lot_size=lot,
        min_notional=min_notional,
    )
    with _Reserving(request, f"market:{body.symbol}", f"market-id:{market_id}"):
        engine = engine_markets.get(market_id)
        unnamed = engine is not None and spec == (
            engine["base"],
            engine["quote"],
            engine["price_decimals"],
            engine["tick_size"],
            engine["lot_size"],
            engine["min_notional"],
        )
        if not unnamed:  # else: a crash left it listed but unnamed
            await _submit(request, command, "the market")
        listing.record_market(market)
    return json_response(market_json(market, _market_status(exchange)[market_id]), 201)


def _status_change(status: MarketStatus) -> OperatorHandler:
    async def change(request: web.Request, operator: Operator) -> web.Response:
        exchange = _exchange(request)
        market = exchange.listing.by_symbol.get(request.match_info["symbol"])
        if market is None:
            raise bad_symbol()
        current = _market_status(exchange)[market.id]
        if current == status or current == "delisted":
            raise conflict(f"Market {market.symbol} is {current}: it cannot become {status}.")
        await _submit(request, SetMarketStatus(market=market.id, status=status), "the change")
        return json_response(market_json(market, _market_status(exchange)[market.id]))

    return change


async def set_fee_tier(request: web.Request, operator: Operator) -> web.Response:
    tier = _path_int(request, "tier", 255)
    body = await decode_body(request, FeeTier)
    for name, bps in (("maker_bps", body.maker_bps), ("taker_bps", body.taker_bps)):
        if not 0 <= bps <= BPS_MAX:
            raise invalid(f"Data sent for parameter '{name}' is not valid: 0 to {BPS_MAX}.")
    command = SetFeeTier(tier=tier, maker_bps=body.maker_bps, taker_bps=body.taker_bps)
    await _submit(request, command, "the fee tier")
    return json_response({"tier": tier, "maker_bps": body.maker_bps, "taker_bps": body.taker_bps})


async def create_user(request: web.Request, operator: Operator) -> web.Response:
    body = await decode_body(request, NewUser)
    user = await request.app[ACCOUNTS].register(body.username, body.password)
    return json_response(_user_info(request, user), 201)


def _user_info(request: web.Request, user: User) -> dict[str, Any]:
    exchange = _exchange(request)
    balances = []
    for asset in exchange.listing.assets.values():
        free, held = exchange.node.balance(user.account, asset.id) or (0, 0)
        if free or held:
            d = asset.decimals
            balances.append({"asset": asset.name, "free": fmt(free, d, d), "held": fmt(held, d, d)})
    return {
        **user_json(user),
        "verification_tier": request.app[FUNDING].tier(user.id),
        "balances": balances,
    }


async def get_user(request: web.Request, operator: Operator) -> web.Response:
    return json_response(_user_info(request, _user(request)))


async def set_account_fee_tier(request: web.Request, operator: Operator) -> web.Response:
    user = _user(request)
    body = await decode_body(request, AccountFeeTier)
    if not 0 <= body.fee_tier <= 255:
        raise invalid("Data sent for parameter 'fee_tier' is not valid: 0 to 255.")
    command = SetAccountFeeTier(account=user.account, fee_tier=body.fee_tier)
    await _submit(request, command, "the account's fee tier")
    return json_response({"user_id": user.id, "fee_tier": body.fee_tier})


async def set_verification_tier(request: web.Request, operator: Operator) -> web.Response:
    user = _user(request)
    body = await decode_body(request, VerificationTier)
    tier = request.app[FUNDING].set_tier(user, body.tier)
    return json_response({"user_id": user.id, "verification_tier": tier})


async def create_key(request: web.Request, operator: Operator) -> web.Response:
    user = _user(request)
    body = await decode_body(request, OperatorKey)
    if "withdraw" in body.permissions:
        raise invalid(
            "Data sent for parameter 'permissions' is not valid: operator-issued keys may only "
            "read and trade (withdraw keys need the user's own two-factor code)."
        )
    created = await request.app[ACCOUNTS].create_api_key(
        user, label=body.label, permissions=body.permissions
    )
    out = key_json(created.key)
    out["secretKey"] = created.secret
    return json_response(out, 201)


def _freeze(frozen: bool) -> OperatorHandler:
    async def change(request: web.Request, operator: Operator) -> web.Response:
        user = _user(request)
        if user.frozen == frozen:
            raise conflict(f"User {user.id} is already {'frozen' if frozen else 'active'}.")
        updated = await request.app[ACCOUNTS].set_frozen(user, frozen)
        return json_response(user_json(updated))

    return change


async def ledger(request: web.Request, operator: Operator) -> web.Response:
    return json_response(ledger_page(request, _user(request).account))


async def deposit(request: web.Request, operator: Operator) -> web.Response:
    body = await decode_body(request, NewDeposit)
    exchange = _exchange(request)
    funding = request.app[FUNDING]
    if (body.user_id is None) == (body.account is None):
        raise invalid("Send exactly one of 'user_id' and 'account'.")
    user: User | None = None
    if body.user_id is not None:
        user = request.app[ACCOUNTS].user(body.user_id)
        if user is None:
            raise ApiError(CAPITAL_USER_EMPTY, "The user does not exist.", 404)
        account = user.account
    else:
        assert body.account is not None
        account = body.account
        if not 1 <= account <= 2**64 - 1:
            raise invalid("Data sent for parameter 'account' is not valid.")
    asset = exchange.listing.assets_by_name.get(body.asset)
    if asset is None:
        raise invalid("Data sent for parameter 'asset' is not valid: no such asset.")
    amount = parse_amount(body.amount, asset)
    record, created = await funding.deposit(
        account=account,
        user=user,
        asset=asset,
        amount=amount,
        tx_id=body.tx_id,
        operator=operator.name,
    )
    if record.seq is not None:
        await exchange.feed.wait_for(record.seq)
    d = record.asset.decimals
    return json_response(
        {
            "id": record.id,
            "tx_id": record.tx_id,
            "account": record.account,
            "user_id": record.user_id,
            "asset": record.asset.name,
            "amount": fmt(record.amount, d, d),
            "status": record.status,
            "seq": record.seq,
            "operator": record.operator,
            "created_time": record.created_ms,
            "credited_time": record.credited_ms,
            "duplicate": not created,
        }
    )


WITHDRAWAL_STATUSES = ("REQUESTED", "PENDING_APPROVAL", "SENT", "REJECTING", "REJECTED", "FAILED")


async def list_withdrawals(request: web.Request, operator: Operator) -> web.Response:
    funding = request.app[FUNDING]
    statuses: list[str] | None = None
    if "status" in request.query:
        statuses = request.query["status"].split(",")
        if not set(statuses) <= set(WITHDRAWAL_STATUSES):
            raise illegal("status", ", ".join(WITHDRAWAL_STATUSES))
    user_id = _query_int(request, "user_id", -1, 0, 2**63 - 1)
    limit = _query_int(request, "limit", LIST_DEFAULT, 1, LIST_MAX)
    rows = funding.withdrawals(
        statuses=statuses, user_id=None if user_id < 0 else user_id, limit=limit
    )
    needed = funding.settings.approvals_required
    return json_response([withdrawal_json(w, needed) for w in rows])


async def approve(request: web.Request, operator: Operator) -> web.Response:
    funding = request.app[FUNDING]
    w = funding.approve(_path_int(request, "withdrawal_id"), operator)
    return json_response(withdrawal_json(w, funding.settings.approvals_required))


async def reject(request: web.Request, operator: Operator) -> web.Response:
    funding = request.app[FUNDING]
    raw = await request.read()
    body = await decode_body(request, Rejection) if raw.strip() else Rejection()
    withdrawal_id = _path_int(request, "withdrawal_id")
    w = await funding.reject(withdrawal_id, operator, body.reason)
    if w.refund_seq is not None:
        await _exchange(request).feed.wait_for(w.refund_seq)
    return json_response(withdrawal_json(w, funding.settings.approvals_required))


# --- setup ----------------------------------------------------------------------------------

ROUTES: list[tuple[str, str, str, OperatorHandler]] = [
    ("GET", "/health", "health", health),
    ("GET", "/audit", "audit.list", audit_log),
    ("GET", "/assets", "assets.list", list_assets),
    ("POST", "/assets", "assets.add", add_asset),
    ("GET", "/markets", "markets.list", list_markets),
    ("POST", "/markets", "markets.add", add_market),
    ("POST", "/markets/{symbol}/halt", "markets.halt", _status_change("halted")),
    ("POST", "/markets/{symbol}/resume", "markets.resume", _status_change("trading")),
    ("POST", "/markets/{symbol}/delist", "markets.delist", _status_change("delisted")),
    ("PUT", "/fee-tiers/{tier}", "fee_tiers.set", set_fee_tier),
    ("POST", "/users", "users.create", create_user),
    ("GET", "/users/{user_id}", "users.get", get_user),
    ("PUT", "/users/{user_id}/fee-tier", "users.fee_tier", set_account_fee_tier),
    ("PUT", "/users/{user_id}/tier", "users.tier", set_verification_tier),
    ("POST", "/users/{user_id}/api-keys", "users.api_keys.create", create_key),
    ("POST", "/users/{user_id}/freeze", "users.freeze", _freeze(True)),
    ("POST", "/users/{user_id}/unfreeze", "users.unfreeze", _freeze(False)),
    ("GET", "/users/{user_id}/ledger", "users.ledger", ledger),
    ("POST", "/deposits", "deposits.create", deposit),
    ("GET", "/withdrawals", "withdrawals.list", list_withdrawals),
    ("POST", "/withdrawals/{withdrawal_id}/approve", "withdrawals.approve", approve),
    ("POST", "/withdrawals/{withdrawal_id}/reject", "withdrawals.reject", reject),
]
"""``(method, path under /admin/v1, audit action, handler)``: every operator endpoint."""


def setup(app: web.Application, exchange: Exchange) -> None:
    setup_projections(app, exchange)
    setup_funding(app, exchange)
    if OPERATORS not in app:
        app[OPERATORS] = Operators(exchange.db)
    app[_LISTING_NOW] = set()
    app.router.add_post(f"{PREFIX}/login", login)
    for method, path, action, handler in ROUTES:
        app.router.add_route(method, PREFIX + path, operator_only(action, handler))
