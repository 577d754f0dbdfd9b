"""The user's side of funding: withdrawal addresses, withdrawals, and Binance's wallet
history endpoints (:mod:`controlplane.funding` does the work).

Two doors for a withdrawal, and where the second factor is checked:

- ``POST /sapi/v1/capital/withdraw/apply`` (Binance's; SIGNED, ``withdraw`` permission):
  Binance's API takes no TOTP code, so none is asked here; the second factor was checked
  when the key got its ``withdraw`` permission (creating such a key needs the user's TOTP,
  :meth:`controlplane.accounts.Accounts.create_api_key`), and the address must still be on
  the whitelist, which only a TOTP code can change.
- ``POST /api/v1/me/withdrawals`` (session token): needs ``totp`` in the body, every time.

=========================================================  ==================================
``GET    /api/v1/me/withdrawal-addresses``                 the user's whitelist
``POST   /api/v1/me/withdrawal-addresses``                 ``{asset, address, label?, totp}``
``DELETE /api/v1/me/withdrawal-addresses/{id}``            remove one
``POST   /api/v1/me/withdrawals``                          ``{coin, address, amount,
                                                           withdrawOrderId?, network?, totp}``
``POST   /sapi/v1/capital/withdraw/apply``                 SIGNED (withdraw): ``coin,
                                                           address, amount, withdrawOrderId?,
                                                           network?`` → ``{"id"}``
``GET    /sapi/v1/capital/withdraw/history``               SIGNED (read), Binance's shape
``GET    /sapi/v1/capital/deposit/hisrec``                 SIGNED (read), Binance's shape
=========================================================  ==================================

History queries take Binance's ``coin``, ``status``, ``offset``, ``limit`` (1..1000, default
1000), ``startTime``/``endTime`` (default: the last 90 days; at most 90 days apart, else
``-4047``), plus ``withdrawOrderId`` / ``txId``; any other parameter is ``-1104``. Amounts
are decimal strings with the asset's decimals; ``transactionFee`` is ``"0"`` (the simulated
chain charges nothing).

Complexity: each call is O(log n) indexed queries plus, for a withdrawal, one engine command.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from controlplane.accounts import User
from controlplane.api import EXCHANGE, Exchange
from controlplane.api.auth import ACCOUNTS, SignedRequest, authenticate, read_only, weighted
from controlplane.api.errors import INVALID_PARAMETER, ApiError, illegal
from controlplane.api.users import _Body as JsonBody
from controlplane.api.users import decode_body, json_response, session_user
from controlplane.funding import (
    BINANCE_DEPOSIT_STATUS,
    BINANCE_WITHDRAW_STATUS,
    FUNDING,
    DepositRecord,
    DepositStatus,
    Funding,
    Withdrawal,
    WithdrawalAddress,
)
from controlplane.funding import setup as setup_funding
from controlplane.listing import fmt
from controlplane.projections import LEDGER_DEFAULT, LEDGER_MAX, PROJECTIONS

HISTORY_DEFAULT = HISTORY_MAX = 1000
NINETY_DAYS_MS = 90 * 86_400_000
CAPITAL_DATE_INTERVAL_LIMIT = -4047
_LONG = "^[0-9]{1,19}$"
LONG_MAX = 2**63 - 1
"""The largest value of a LONG parameter (SQLite's INTEGER; above it: -1100)."""


class NewAddress(JsonBody):
    asset: str
    address: str
    totp: str | None = None
    label: str = ""


class NewWithdrawal(JsonBody, rename="camel"):
    coin: str
    address: str
    amount: str
    totp: str | None = None
    withdraw_order_id: str | None = None
    network: str | None = None


def _funding(request: web.Request) -> Funding:
    return request.app[FUNDING]


def utc_text(ms: int) -> str:
    """Binance's ``applyTime`` form: ``2019-10-12 11:12:02`` (UTC)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


def address_json(a: WithdrawalAddress) -> dict[str, Any]:
    return {
        "id": a.id,
        "coin": a.asset.name,
        "network": a.asset.name,
        "address": a.address,
        "name": a.label,
        "createdTime": a.created_ms,
        "usableTime": a.usable_ms,
        "whiteStatus": True,
    }


def withdraw_history_json(w: Withdrawal) -> dict[str, Any]:
    """One withdrawal as Binance's ``GET /sapi/v1/capital/withdraw/history`` item."""
    out: dict[str, Any] = {
        "id": str(w.id),
        "amount": w.amount_str,
        "transactionFee": "0",
        "coin": w.asset.name,
        "status": BINANCE_WITHDRAW_STATUS[w.status],
        "address": w.address,
        "txId": w.tx_id or "",
        "applyTime": utc_text(w.created_ms),
        "network": w.network,
        "transferType": 0,
        "info": w.info,
        "confirmNo": 1 if w.status == "SENT" else 0,
        "walletType": 0,
        "txKey": "",
    }
    if w.withdraw_order_id is not None:
        out["withdrawOrderId"] = w.withdraw_order_id
    if w.status == "SENT":
        out["completeTime"] = utc_text(w.updated_ms)
    return out


def deposit_history_json(d: DepositRecord) -> dict[str, Any]:
    """One deposit as Binance's ``GET /sapi/v1/capital/deposit/hisrec`` item."""
    credited = d.status == "CREDITED"
    return {
        "id": str(d.id),
        "amount": fmt(d.amount, d.asset.decimals, d.asset.decimals),
        "coin": d.asset.name,
        "network": d.asset.name,
        "status": BINANCE_DEPOSIT_STATUS[d.status],
        "address": "",
        "addressTag": "",
        "txId": d.tx_id,
        "insertTime": d.created_ms,
        "completeTime": d.credited_ms or 0,
        "transferType": 0,
        "confirmTimes": "1/1" if credited else "0/1",
        "unlockConfirm": 0,
        "walletType": 0,
    }


# --- session endpoints ----------------------------------------------------------------------


async def list_addresses(request: web.Request) -> web.Response:
    user = session_user(request)
    return json_response([address_json(a) for a in _funding(request).addresses(user)])


async def add_address(request: web.Request) -> web.Response:
    user = session_user(request)
    body = await decode_body(request, NewAddress)
    added = _funding(request).add_address(user, body.asset, body.address, body.label, body.totp)
    return json_response(address_json(added), 201)


async def remove_address(request: web.Request) -> web.Response:
    user = session_user(request)
    text = request.match_info["address_id"]
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > LONG_MAX:
        raise illegal("id", _LONG)
    return json_response(address_json(_funding(request).remove_address(user, int(text))))


async def session_withdraw(request: web.Request) -> web.Response:
    user = session_user(request)
    body = await decode_body(request, NewWithdrawal)
    w = await _funding(request).request_withdrawal(
        user,
        coin=body.coin,
        address=body.address,
        amount_text=body.amount,
        withdraw_order_id=body.withdraw_order_id,
        network=body.network,
        totp=body.totp,
        require_totp=True,
    )
    return json_response(withdraw_history_json(w), 201)


# --- Binance's signed wallet endpoints ------------------------------------------------------


def _signed_user(request: web.Request, signed: SignedRequest) -> User:
    user = request.app[ACCOUNTS].user(signed.user_id)
    assert user is not None
    return user


WITHDRAW_PARAMS = {"coin", "address", "amount", "withdrawOrderId", "network", "name"}


@weighted(1)
async def withdraw_apply(request: web.Request) -> web.Response:
    signed = await authenticate(request, "withdraw")
    read_only(signed, WITHDRAW_PARAMS)
    p = signed.params
    w = await _funding(request).request_withdrawal(
        _signed_user(request, signed),
        coin=p.get("coin", ""),
        address=p.get("address", ""),
        amount_text=p.get("amount", ""),
        withdraw_order_id=p.get("withdrawOrderId") or None,
        network=p.get("network") or None,
        require_totp=False,
    )
    return json_response({"id": str(w.id)})


def _long(params: dict[str, str], name: str) -> int | None:
    text = params.get(name)
    if text is None:
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > LONG_MAX:
        raise illegal(name, _LONG)
    return int(text)


def _window(params: dict[str, str], now: int) -> tuple[int, int, int, int]:
    """``(start_ms, end_ms, offset, limit)`` of a history query, Binance's defaults."""
    start, end = _long(params, "startTime"), _long(params, "endTime")
    if start is None and end is None:
        start, end = now - NINETY_DAYS_MS, now
    elif start is None:
        assert end is not None
        start = end - NINETY_DAYS_MS
    elif end is None:
        end = min(now, start + NINETY_DAYS_MS)
    if end < start or end - start > NINETY_DAYS_MS:
        raise ApiError(CAPITAL_DATE_INTERVAL_LIMIT, "Time interval must be within 0-90 days.")
    offset = _long(params, "offset") or 0
    limit = _long(params, "limit")
    if limit is None:
        limit = HISTORY_DEFAULT
    if not 1 <= limit <= HISTORY_MAX:
        raise illegal("limit", f"1-{HISTORY_MAX}")
    return start, end, offset, limit


WITHDRAW_HISTORY_PARAMS = {
    "coin",
    "withdrawOrderId",
    "status",
    "offset",
    "limit",
    "startTime",
    "endTime",
}
WITHDRAW_STATUS_FILTER = {
    status: [name for name, code in BINANCE_WITHDRAW_STATUS.items() if code == status]
    for status in sorted(set(BINANCE_WITHDRAW_STATUS.values()))
}


async def withdraw_history(request: web.Request) -> web.Response:
    signed = await authenticate(request, "read")
    read_only(signed, WITHDRAW_HISTORY_PARAMS)
    funding = _funding(request)
    p = signed.params
    asset = funding.asset_named(p["coin"]) if p.get("coin") else None
    statuses: list[str] | None = None
    status = _long(p, "status")
    if status is not None:
        statuses = WITHDRAW_STATUS_FILTER.get(status, [])
    start, end, offset, limit = _window(p, funding.clock_ms())
    rows = funding.withdrawals(
        user_id=signed.user_id,
        asset=asset,
        statuses=statuses,
        withdraw_order_id=p.get("withdrawOrderId") or None,
        start_ms=start,
        end_ms=end,
        offset=offset,
        limit=limit,
    )
    return json_response([withdraw_history_json(w) for w in rows])


DEPOSIT_HISTORY_PARAMS = {
    "coin",
    "status",
    "offset",
    "limit",
    "startTime",
    "endTime",
    "txId",
    "includeSource",
}
DEPOSIT_STATUS_FILTER: dict[int, DepositStatus] = {
    code: name for name, code in BINANCE_DEPOSIT_STATUS.items()
}


async def deposit_history(request: web.Request) -> web.Response:
    signed = await authenticate(request, "read")
    read_only(signed, DEPOSIT_HISTORY_PARAMS)
    funding = _funding(request)
    p = signed.params
    asset = funding.asset_named(p["coin"]) if p.get("coin") else None
    status = _long(p, "status")
    start, end, offset, limit = _window(p, funding.clock_ms())
    if status is not None and status not in DEPOSIT_STATUS_FILTER:
        return json_response([])
    rows = funding.deposits(
        account=signed.account,
        asset=asset,
        status=None if status is None else DEPOSIT_STATUS_FILTER[status],
        tx_id=p.get("txId") or None,
        start_ms=start,
        end_ms=end,
        offset=offset,
        limit=limit,
    )
    return json_response([deposit_history_json(d) for d in rows])


# --- the ledger -----------------------------------------------------------------------------


def _query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 19 or not low <= int(text) <= high:
        raise illegal(name, f"{low}-{high}")
    return int(text)


def ledger_page(request: web.Request, account: int) -> list[dict[str, Any]]:
    """One page of an account's balance changes, oldest first, from the projections'
    ledger: ``?asset=`` (a name) filters, ``?from_id=`` starts at an entry id, ``?limit=``
    (1..:data:`LEDGER_MAX`, default :data:`LEDGER_DEFAULT`). Each entry: its id, the
    command's ``seq`` and time, the asset, the signed ``delta``, the ``reason`` (deposit,
    withdrawal, trade, fee, fee_income) and its ``ref`` (tx, trade or order id), and the
    balance's ``free``/``held`` after it."""
    exchange = request.app[EXCHANGE]
    asset_id: int | None = None
    if "asset" in request.query:
        found = exchange.listing.assets_by_name.get(request.query["asset"])
        if found is None:
            raise ApiError(
                INVALID_PARAMETER, "Data sent for parameter 'asset' is not valid: no such asset."
            )
        asset_id = found.id
    limit = _query_int(request, "limit", LEDGER_DEFAULT, 1, LEDGER_MAX)
    from_id = _query_int(request, "from_id", -1, 0, 2**63 - 1)
    rows = request.app[PROJECTIONS].ledger(
        account, asset_id, limit=limit, from_id=None if from_id < 0 else from_id
    )
    assets = exchange.listing.assets
    out = []
    for r in rows:
        a = assets.get(r.asset)
        d = a.decimals if a is not None else 0
        sign = "-" if r.delta < 0 else ""
        out.append(
            {
                "id": r.id,
                "seq": r.seq,
                "time": r.time_ns // 1_000_000,
                "asset": a.name if a is not None else str(r.asset),
                "delta": sign + fmt(abs(r.delta), d, d),
                "reason": r.reason,
                "ref": r.ref,
                "free": fmt(r.free, d, d),
                "held": fmt(r.held, d, d),
            }
        )
    return out


async def my_ledger(request: web.Request) -> web.Response:
    """``GET /api/v1/me/ledger`` (session): the user's own ledger (:func:`ledger_page`)."""
    return json_response(ledger_page(request, session_user(request).account))


def setup(app: web.Application, exchange: Exchange) -> None:
    setup_funding(app, exchange)
    r = app.router
    r.add_get("/api/v1/me/ledger", my_ledger)
    r.add_get("/api/v1/me/withdrawal-addresses", list_addresses)
    r.add_post("/api/v1/me/withdrawal-addresses", add_address)
    r.add_delete("/api/v1/me/withdrawal-addresses/{address_id}", remove_address)
    r.add_post("/api/v1/me/withdrawals", session_withdraw)
    r.add_post("/sapi/v1/capital/withdraw/apply", withdraw_apply)
    r.add_get("/sapi/v1/capital/withdraw/history", withdraw_history)
    r.add_get("/sapi/v1/capital/deposit/hisrec", deposit_history)
