"""Users, sessions and API keys over HTTP (Bourse's own ``/api/v1/`` endpoints), and
Binance's signed ``GET /api/v3/account``.

Session endpoints take ``Authorization: Bearer <token>`` (from ``POST /api/v1/sessions``);
a missing, unknown or expired token is ``-1002`` (401). JSON bodies are decoded with msgspec
into the Structs below: invalid JSON → ``-1102``, a missing field → ``-1102`` naming it, an
unknown field → ``-1103`` naming it, a wrong type → ``-1130`` naming it (all HTTP 400).
Every handler validates fully before changing anything (see :mod:`controlplane.accounts`).

=====================================  ===========================================
``POST   /api/v1/users``                register ``{username, password}``
``POST   /api/v1/sessions``             log in ``{username, password, totpCode?}`` → token
``DELETE /api/v1/sessions``             log out
``GET    /api/v1/me``                   the user
``POST   /api/v1/me/totp``              start TOTP → ``{secret, provisioningUri}``
``POST   /api/v1/me/totp/confirm``      ``{code}``: enable TOTP
``PUT    /api/v1/me/anti-phishing``     ``{code}``
``GET    /api/v1/me/api-keys``          the user's keys (never secrets)
``POST   /api/v1/me/api-keys``          ``{label, permissions, ips?, type?, publicKey?,
                                        totpCode?}`` → the key (+ ``secretKey`` once)
``DELETE /api/v1/me/api-keys/{id}``     revoke
``GET    /api/v1/me/notifications``     newest first, ``?limit=`` 1..500 (100)
``GET    /api/v3/account``              Binance's account information (SIGNED, read)
``GET    /api/v3/account/commission``   the account's commission rates (SIGNED, read)
=====================================  ===========================================
"""

from __future__ import annotations

import re
from typing import Any, Literal, TypeVar

import msgspec
from aiohttp import web

from controlplane.accounts import ApiKey, User
from controlplane.api import EXCHANGE, Exchange
from controlplane.api.auth import ACCOUNTS, authenticate, read_only, weighted
from controlplane.api.errors import (
    ILLEGAL_CHARS,
    INVALID_PARAMETER,
    MANDATORY_PARAM_EMPTY_OR_MALFORMED,
    REJECTED_MBX_KEY,
    UNAUTHORIZED,
    UNKNOWN_PARAM,
    ApiError,
    bad_symbol,
    illegal,
    mandatory,
)
from controlplane.listing import fmt
from controlplane.projections import PROJECTIONS

NOTIFICATIONS_DEFAULT, NOTIFICATIONS_MAX = 100, 500


class _Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class Credentials(_Body):
    username: str
    password: str
    totpCode: str | None = None
    """Required once the user has enabled TOTP."""


class TotpCode(_Body):
    code: str


class AntiPhishing(_Body):
    code: str


class NewApiKey(_Body, rename="camel"):
    label: str
    permissions: list[Literal["read", "trade", "withdraw"]]
    ips: list[str] = msgspec.field(default_factory=list)
    type: Literal["HMAC_SHA256", "ED25519"] = "HMAC_SHA256"
    public_key: str | None = None
    totp_code: str | None = None


B = TypeVar("B", bound=_Body)

_MISSING = re.compile(r"missing required field `([^`]+)`")
_UNKNOWN = re.compile(r"unknown field `([^`]+)`")
_AT = re.compile(r"at `\$\.([A-Za-z0-9_]+)")


async def decode_body(request: web.Request, kind: type[B]) -> B:
    """The JSON body as ``kind``, or a precise -1102/-1103/-1130 error."""
    raw = await request.read()
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as err:
        text = str(err)
        if m := _MISSING.search(text):
            raise mandatory(m.group(1)) from None
        if m := _UNKNOWN.search(text):
            raise ApiError(
                UNKNOWN_PARAM, f"An unknown parameter was sent: '{m.group(1)}'."
            ) from None
        field = m.group(1) if (m := _AT.search(text)) else "body"
        raise ApiError(
            INVALID_PARAMETER, f"Data sent for parameter '{field}' is not valid: {text}."
        ) from None
    except msgspec.DecodeError as err:
        raise ApiError(
            MANDATORY_PARAM_EMPTY_OR_MALFORMED, f"Malformed JSON request body: {err}."
        ) from None


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json"
    )


def bearer_token(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(UNAUTHORIZED, "You are not authorized to execute this request.", 401)
    return token.strip()


def session_user(request: web.Request) -> User:
    return request.app[ACCOUNTS].session_user(bearer_token(request))


def user_json(user: User) -> dict[str, Any]:
    return {
        "userId": user.id,
        "username": user.username,
        "accountId": user.account,
        "frozen": user.frozen,
        "totpEnabled": user.totp_enabled,
        "antiPhishingCode": user.anti_phishing,
        "createdTime": user.created_ms,
    }


def key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "apiKey": key.api_key,
        "type": key.key_type,
        "label": key.label,
        "permissions": sorted(key.permissions),
        "ips": [str(n) for n in key.ips],
        "createdTime": key.created_ms,
        "revokedTime": key.revoked_ms,
    }


@weighted(10)
async def register(request: web.Request) -> web.Response:
    body = await decode_body(request, Credentials)
    user = await request.app[ACCOUNTS].register(body.username, body.password)
    return json_response(user_json(user), 201)


@weighted(10)
async def login(request: web.Request) -> web.Response:
    body = await decode_body(request, Credentials)
    token, expires, user = await request.app[ACCOUNTS].login(
        body.username, body.password, body.totpCode
    )
    return json_response({"token": token, "expiresTime": expires, "userId": user.id})


async def logout(request: web.Request) -> web.Response:
    request.app[ACCOUNTS].logout(bearer_token(request))
    return json_response({})


async def me(request: web.Request) -> web.Response:
    return json_response(user_json(session_user(request)))


async def totp_begin(request: web.Request) -> web.Response:
    user = session_user(request)
    secret, uri = request.app[ACCOUNTS].totp_begin(user)
    return json_response({"secret": secret, "provisioningUri": uri})


async def totp_confirm(request: web.Request) -> web.Response:
    user = session_user(request)
    body = await decode_body(request, TotpCode)
    return json_response(user_json(request.app[ACCOUNTS].totp_confirm(user, body.code)))


async def set_anti_phishing(request: web.Request) -> web.Response:
    user = session_user(request)
    body = await decode_body(request, AntiPhishing)
    return json_response(user_json(request.app[ACCOUNTS].set_anti_phishing(user, body.code)))


async def list_keys(request: web.Request) -> web.Response:
    user = session_user(request)
    return json_response([key_json(k) for k in request.app[ACCOUNTS].list_api_keys(user)])


async def create_key(request: web.Request) -> web.Response:
    user = session_user(request)
    body = await decode_body(request, NewApiKey)
    created = await request.app[ACCOUNTS].create_api_key(
        user,
        label=body.label,
        permissions=body.permissions,
        ips=body.ips,
        key_type=body.type,
        public_key_pem=body.public_key,
        totp_code=body.totp_code,
    )
    out = key_json(created.key)
    if created.secret is not None:
        out["secretKey"] = created.secret
    return json_response(out, 201)


async def revoke_key(request: web.Request) -> web.Response:
    user = session_user(request)
    text = request.match_info["key_id"]
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > 2**63 - 1:
        raise illegal("id", "^[0-9]{1,19}$")
    key = request.app[ACCOUNTS].revoke_api_key(user, int(text))
    return json_response(key_json(key))


async def notifications(request: web.Request) -> web.Response:
    user = session_user(request)
    text = request.query.get("limit", str(NOTIFICATIONS_DEFAULT))
    if not text.isascii() or not text.isdigit() or len(text) > 4:
        raise illegal("limit", f"1-{NOTIFICATIONS_MAX}")
    limit = int(text)
    if not 1 <= limit <= NOTIFICATIONS_MAX:
        raise illegal("limit", f"1-{NOTIFICATIONS_MAX}")
    return json_response(request.app[ACCOUNTS].notifications(user, limit))


ACCOUNT_PARAMS = {"omitZeroBalances"}


def fee_rates(exchange: Exchange, account: int) -> tuple[int, int]:
    """The account's ``(maker_bps, taker_bps)`` from its fee tier in the engine."""
    found = exchange.node.fee_rates(account)
    if found is None:  # every user's account exists in the engine before the user does
        raise ApiError(REJECTED_MBX_KEY, "Invalid API-key, IP, or permissions for action.", 401)
    return found[1], found[2]


def commission_rates(maker_bps: int, taker_bps: int) -> dict[str, str]:
    """Binance's ``commissionRates`` / ``standardCommission``: fractions with 8 decimals."""
    zero = fmt(0, 4)
    return {"maker": fmt(maker_bps, 4), "taker": fmt(taker_bps, 4), "buyer": zero, "seller": zero}


@weighted(20)
async def account(request: web.Request) -> web.Response:
    """Binance's ``GET /api/v3/account``. Commissions are the account's fee tier in the
    engine (``makerCommission`` in basis points, ``commissionRates`` as fractions; no
    buyer/seller surcharge); ``updateTime`` is when any of the account's balances last
    changed, holds included (from the projections, once they have caught up with the
    engine)."""
    signed = await authenticate(request, "read")
    read_only(signed, ACCOUNT_PARAMS)
    omit_text = signed.params.get("omitZeroBalances", "false")
    if omit_text not in ("true", "false"):
        raise ApiError(
            ILLEGAL_CHARS,
            "Illegal characters found in parameter 'omitZeroBalances'; legal range is "
            "'true, false'.",
        )
    omit_zero = omit_text == "true"
    exchange: Exchange = request.app[EXCHANGE]
    user = request.app[ACCOUNTS].user(signed.user_id)
    assert user is not None
    balances = []
    for asset in exchange.listing.assets.values():
        free, held = exchange.node.balance(signed.account, asset.id) or (0, 0)
        if omit_zero and free == 0 and held == 0:
            continue
        balances.append(
            {
                "asset": asset.name,
                "free": fmt(free, asset.decimals, asset.decimals),
                "locked": fmt(held, asset.decimals, asset.decimals),
            }
        )
    maker_bps, taker_bps = fee_rates(exchange, signed.account)
    await exchange.caught_up()
    update_ms = request.app[PROJECTIONS].last_balance_change_ms(signed.account)
    can_trade = "trade" in signed.permissions and not user.frozen
    return json_response(
        {
            "makerCommission": maker_bps,
            "takerCommission": taker_bps,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": commission_rates(maker_bps, taker_bps),
            "canTrade": can_trade,
            "canWithdraw": "withdraw" in signed.permissions and not user.frozen,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": update_ms,
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
            "uid": user.id,
        }
    )


COMMISSION_PARAMS = {"symbol"}


@weighted(20)
async def account_commission(request: web.Request) -> web.Response:
    """Binance's ``GET /api/v3/account/commission``: the account's rates for a symbol (the
    same for every symbol: the fee tier is per account). No tax, no discount asset."""
    signed = await authenticate(request, "read")
    read_only(signed, COMMISSION_PARAMS)
    symbol = signed.params.get("symbol", "")
    if not symbol:
        raise mandatory("symbol")
    exchange: Exchange = request.app[EXCHANGE]
    if symbol not in exchange.listing.by_symbol:
        raise bad_symbol()
    zero = fmt(0, 4)
    return json_response(
        {
            "symbol": symbol,
            "standardCommission": commission_rates(*fee_rates(exchange, signed.account)),
            "taxCommission": {"maker": zero, "taker": zero, "buyer": zero, "seller": zero},
            "discount": {
                "enabledForAccount": False,
                "enabledForSymbol": False,
                "discountAsset": None,
                "discount": zero,
            },
        }
    )


def setup(app: web.Application, exchange: Exchange) -> None:
    r = app.router
    r.add_post("/api/v1/users", register)
    r.add_post("/api/v1/sessions", login)
    r.add_delete("/api/v1/sessions", logout)
    r.add_get("/api/v1/me", me)
    r.add_post("/api/v1/me/totp", totp_begin)
    r.add_post("/api/v1/me/totp/confirm", totp_confirm)
    r.add_put("/api/v1/me/anti-phishing", set_anti_phishing)
    r.add_get("/api/v1/me/api-keys", list_keys)
    r.add_post("/api/v1/me/api-keys", create_key)
    r.add_delete("/api/v1/me/api-keys/{key_id}", revoke_key)
    r.add_get("/api/v1/me/notifications", notifications)
    r.add_get("/api/v3/account", account)
    r.add_get("/api/v3/account/commission", account_commission)
