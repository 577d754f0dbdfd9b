"""SIGNED request authentication and the rate limits (``controlplane.api.auth``), through the
real server: Binance's codes and HTTP statuses for every failure, HMAC and Ed25519 keys,
frozen users, REQUEST_WEIGHT and ORDERS limits.

Endpoints that trade are built by other modules on :func:`authenticate`; here a small app
with the server's own accounts service stands in as their caller (``/probe/*``), served over
real HTTP with the same middlewares."""

from __future__ import annotations

import base64
import secrets
import string
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from controlplane.api.auth import (
    ACCOUNTS,
    LIMITER,
    RateLimiter,
    api_key_only,
    authenticate,
    rate_limit_middleware,
    weighted,
)
from controlplane.api.errors import error_middleware
from controlplane.config import LimitsSection
from controlplane.serve import Server, start
from tests.test_accounts import (
    accounts_of,
    call,
    config,
    hmac_sign,
    new_key,
    new_user,
    now_ms,
    run,
    signed_get,
)

ACCOUNT = "/api/v3/account"


async def get_raw(
    http: aiohttp.ClientSession,
    base_url: str,
    path_and_query: str,
    api_key: str | None,
    body: str | None = None,
) -> tuple[int, Any, Any]:
    headers = {} if api_key is None else {"X-MBX-APIKEY": api_key}
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    async with http.get(base_url + path_and_query, headers=headers, data=body) as response:
        return response.status, await response.json(), response.headers


def signed_query(secret: str, params: str) -> str:
    return f"{params}&signature={hmac_sign(secret, params)}"


def table_counts(server: Server) -> dict[str, int]:
    conn = accounts_of(server).db.conn
    return {
        table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        for table in ("users", "sessions", "api_keys", "notifications")
    }


def test_signed_requests_and_every_failure_mode(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = await start(config(tmp_path / "bourse"))
        try:
            async with aiohttp.ClientSession() as http:
                token, _ = await new_user(http, server, "grace")
                key = await new_key(http, server, token)
                api_key, secret = key["apiKey"], key["secretKey"]
                trade_only = await new_key(http, server, token, permissions=["trade"])
                elsewhere = await new_key(http, server, token, ips=["10.0.0.0/8", "192.0.2.1"])
                here = await new_key(http, server, token, ips=["127.0.0.1"])
                revoked = await new_key(http, server, token)
                status, _ = await call(
                    http, server, "DELETE", f"/api/v1/me/api-keys/{revoked['id']}", token=token
                )
                assert status == 200
                before = table_counts(server)
                base = server.base_url

                # The good request, then the same with the parameters split between the query
                # string and the body (totalParams = query + body, concatenated as sent).
                status, body, headers = await signed_get(http, server, ACCOUNT, api_key, secret)
                assert status == 200, body
                assert int(headers["X-MBX-USED-WEIGHT-1M"]) >= 20
                ts = now_ms()
                query, form = "omitZeroBalances=true", f"timestamp={ts}&recvWindow=10000"
                signature = hmac_sign(secret, query + form)
                status, body, _ = await get_raw(
                    http, base, f"{ACCOUNT}?{query}", api_key, f"{form}&signature={signature}"
                )
                assert (status, body["balances"]) == (200, []), body
                status, body, _ = await signed_get(
                    http, server, ACCOUNT, here["apiKey"], here["secretKey"]
                )
                assert status == 200, body

                def q(params: str, sign_with: str = secret) -> str:
                    return f"{ACCOUNT}?{signed_query(sign_with, params)}"

                fresh = f"timestamp={now_ms()}"
                key_format = (401, {"code": -2014, "msg": "API-key format invalid."})
                rejected_key = (
                    401,
                    {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."},
                )
                bad_signature = (
                    400,
                    {"code": -1022, "msg": "Signature for this request is not valid."},
                )
                unknown = "".join(secrets.choice(string.ascii_letters) for _ in range(64))
                cases: list[tuple[str, str | None, tuple[int, dict[str, Any]]]] = [
                    (q(fresh), None, key_format),
                    (q(fresh), "short", key_format),
                    (q(fresh), api_key + "x", key_format),
                    (q(fresh), unknown, rejected_key),
                    (q(fresh, revoked["secretKey"]), revoked["apiKey"], rejected_key),
                    (q(fresh, trade_only["secretKey"]), trade_only["apiKey"], rejected_key),
                    (q(fresh, elsewhere["secretKey"]), elsewhere["apiKey"], rejected_key),
                    (f"{ACCOUNT}?{fresh}&signature={'0' * 64}", api_key, bad_signature),
                    (f"{ACCOUNT}?{fresh}&signature=xyz", api_key, bad_signature),
                    (q(fresh, "another secret"), api_key, bad_signature),
                    # Signed, then a parameter changed.
                    (q(fresh) + "&omitZeroBalances=true", api_key, bad_signature),
                    (
                        q(f"timestamp={now_ms() - 10_000}"),
                        api_key,
                        (
                            400,
                            {
                                "code": -1021,
                                "msg": "Timestamp for this request is outside of the recvWindow.",
                            },
                        ),
                    ),
                    (
                        q(f"timestamp={now_ms() + 5_000}"),
                        api_key,
                        (
                            400,
                            {
                                "code": -1021,
                                "msg": "Timestamp for this request was 1000ms ahead of the "
                                "server's time.",
                            },
                        ),
                    ),
                    (
                        q(f"{fresh}&recvWindow=60001"),
                        api_key,
                        (400, {"code": -1131, "msg": "recvWindow must be less than 60000."}),
                    ),
                    (
                        q("omitZeroBalances=true"),
                        api_key,
                        (
                            400,
                            {
                                "code": -1102,
                                "msg": "Mandatory parameter 'timestamp' was not sent, was "
                                "empty/null, or malformed.",
                            },
                        ),
                    ),
                    (
                        f"{ACCOUNT}?{fresh}",
                        api_key,
                        (
                            400,
                            {
                                "code": -1102,
                                "msg": "Mandatory parameter 'signature' was not sent, was "
                                "empty/null, or malformed.",
                            },
                        ),
                    ),
                    (
                        q("timestamp=soon"),
                        api_key,
                        (
                            400,
                            {
                                "code": -1100,
                                "msg": "Illegal characters found in parameter 'timestamp'; "
                                "legal range is '^[0-9]{1,20}$'.",
                            },
                        ),
                    ),
                    (
                        q(f"{fresh}&{fresh}"),
                        api_key,
                        (400, {"code": -1101, "msg": "Duplicate values for a parameter detected."}),
                    ),
                    (
                        q(f"{fresh}&symbol=BTCUSDT"),
                        api_key,
                        (
                            400,
                            {
                                "code": -1104,
                                "msg": "Not all sent parameters were read; read '2' "
                                "parameter(s) but was sent '3'.",
                            },
                        ),
                    ),
                    (
                        q(f"{fresh}&omitZeroBalances=maybe"),
                        api_key,
                        (
                            400,
                            {
                                "code": -1100,
                                "msg": "Illegal characters found in parameter "
                                "'omitZeroBalances'; legal range is 'true, false'.",
                            },
                        ),
                    ),
                ]
                for path, header, expected in cases:
                    status, body, _ = await get_raw(http, base, path, header)
                    assert (status, body) == expected, (path, header)
                # A wider recvWindow admits the older timestamp.
                status, body, _ = await get_raw(
                    http, base, q(f"timestamp={now_ms() - 10_000}&recvWindow=20000"), api_key
                )
                assert status == 200, body
                # Nothing changed: no user, session, key or notification added or removed.
                assert table_counts(server) == before
        finally:
            await server.stop()

    run(scenario)


def test_ed25519_key_signs_and_verifies(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = await start(config(tmp_path / "bourse"))
        try:
            async with aiohttp.ClientSession() as http:
                token, user = await new_user(http, server, "heidi")
                private = Ed25519PrivateKey.generate()
                pem = (
                    private.public_key()
                    .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
                    .decode()
                )
                key = await new_key(http, server, token, type="ED25519", publicKey=pem)
                assert key["type"] == "ED25519"
                assert "secretKey" not in key
                payload = f"omitZeroBalances=false&timestamp={now_ms()}"
                signature = base64.b64encode(private.sign(payload.encode())).decode()
                path = f"{ACCOUNT}?{payload}&signature={quote(signature, safe='')}"
                status, body, _ = await get_raw(http, server.base_url, path, key["apiKey"])
                assert status == 200, body
                assert body["uid"] == user["userId"]
                # Another key's signature, a tampered payload, an HMAC-style signature: -1022.
                other = base64.b64encode(
                    Ed25519PrivateKey.generate().sign(payload.encode())
                ).decode()
                for bad_path in (
                    f"{ACCOUNT}?{payload}&signature={quote(other, safe='')}",
                    f"{ACCOUNT}?{payload.replace('false', 'true')}&signature="
                    + quote(signature, safe=""),
                    f"{ACCOUNT}?{payload}&signature={'ab' * 32}",
                ):
                    status, body, _ = await get_raw(http, server.base_url, bad_path, key["apiKey"])
                    assert (status, body["code"]) == (400, -1022), bad_path
                # A public key that is not Ed25519 PEM is refused.
                status, err = await call(
                    http,
                    server,
                    "POST",
                    "/api/v1/me/api-keys",
                    json={
                        "label": "x",
                        "permissions": ["read"],
                        "type": "ED25519",
                        "publicKey": "nope",
                    },
                    token=token,
                )
                assert (status, err["code"]) == (400, -1130)
        finally:
            await server.stop()

    run(scenario)


@weighted(1, orders=True)
async def probe_order(request: web.Request) -> web.Response:
    signed = await authenticate(request, "trade")
    return web.json_response({"account": signed.account, "params": signed.params})


async def probe_withdraw(request: web.Request) -> web.Response:
    signed = await authenticate(request, "withdraw")
    return web.json_response({"account": signed.account})


async def probe_listen_key(request: web.Request) -> web.Response:
    key = api_key_only(request)
    return web.json_response({"account": key.account, "keyId": key.key_id})


@asynccontextmanager
async def probe_app(server: Server, limiter: RateLimiter) -> AsyncIterator[str]:
    """A caller of ``authenticate`` on the server's accounts service, with its own limiter."""
    app = web.Application(middlewares=[error_middleware, rate_limit_middleware])
    app[ACCOUNTS] = accounts_of(server)
    app[LIMITER] = limiter
    app.router.add_post("/api/v3/probe/order", probe_order)
    app.router.add_post("/api/v3/probe/withdraw", probe_withdraw)
    app.router.add_post("/api/v3/probe/listenKey", probe_listen_key)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def post_signed(
    http: aiohttp.ClientSession, url: str, api_key: str, secret: str, params: str
) -> tuple[int, Any, Any]:
    body = signed_query(secret, f"{params}&timestamp={now_ms()}")
    headers = {"X-MBX-APIKEY": api_key, "Content-Type": "application/x-www-form-urlencoded"}
    async with http.post(url, data=body, headers=headers) as response:
        return response.status, await response.json(), response.headers


def test_frozen_user_orders_limit_and_api_key_only(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = await start(config(tmp_path / "bourse"))
        fixed = (now_ms() // 86_400_000) * 86_400_000 + 5_000  # early in a 10 s window
        limiter = RateLimiter(LimitsSection(orders_per_10s=3), clock_ms=lambda: fixed)
        try:
            async with aiohttp.ClientSession() as http, probe_app(server, limiter) as base:
                token, user = await new_user(http, server, "ivan")
                key = await new_key(http, server, token)
                api_key, secret = key["apiKey"], key["secretKey"]

                # Orders count per key: headers, then -1015 / 429 with Retry-After.
                for n in (1, 2, 3):
                    status, body, headers = await post_signed(
                        http, f"{base}/api/v3/probe/order", api_key, secret, "symbol=BTCUSDT"
                    )
                    assert status == 200, body
                    assert body == {"account": user["accountId"], "params": {"symbol": "BTCUSDT"}}
                    assert headers["X-MBX-ORDER-COUNT-10S"] == str(n)
                    assert headers["X-MBX-ORDER-COUNT-1D"] == str(n)
                status, body, headers = await post_signed(
                    http, f"{base}/api/v3/probe/order", api_key, secret, "symbol=BTCUSDT"
                )
                assert (status, body) == (
                    429,
                    {
                        "code": -1015,
                        "msg": "Too many new orders; current limit is 3 orders per 10 SECOND.",
                    },
                )
                assert headers["Retry-After"] == "5"
                assert headers["X-MBX-ORDER-COUNT-10S"] == "3"
                # A request refused before the count (bad signature) does not count.
                status, body, _ = await post_signed(
                    http, f"{base}/api/v3/probe/order", api_key, "wrong", "symbol=BTCUSDT"
                )
                assert (status, body["code"]) == (400, -1022)
                assert limiter.order_headers(key["id"], extra=0)["X-MBX-ORDER-COUNT-10S"] == "3"

                # No withdraw permission: -2015. USER_STREAM style: the key alone.
                status, body, _ = await post_signed(
                    http, f"{base}/api/v3/probe/withdraw", api_key, secret, "asset=BTC"
                )
                assert (status, body["code"]) == (401, -2015)
                async with http.post(
                    f"{base}/api/v3/probe/listenKey", headers={"X-MBX-APIKEY": api_key}
                ) as response:
                    assert response.status == 200
                    assert await response.json() == {
                        "account": user["accountId"],
                        "keyId": key["id"],
                    }
                async with http.post(f"{base}/api/v3/probe/listenKey") as response:
                    assert response.status == 401
                    assert (await response.json())["code"] == -2014

                # Frozen: trading refused with -2015; reading works and says canTrade false.
                accounts = accounts_of(server)
                found = accounts.user(user["userId"])
                assert found is not None
                await accounts.set_frozen(found, True)
                limiter.clock_ms = lambda: fixed + 10_000  # the next 10 s window
                status, body, _ = await post_signed(
                    http, f"{base}/api/v3/probe/order", api_key, secret, "symbol=BTCUSDT"
                )
                assert (status, body["code"]) == (401, -2015)
                status, body, _ = await signed_get(http, server, ACCOUNT, api_key, secret)
                assert status == 200
                assert body["canTrade"] is False
                status, me = await call(http, server, "GET", "/api/v1/me", token=token)
                assert me["frozen"] is True
                unfrozen = accounts.user(user["userId"])
                assert unfrozen is not None
                await accounts.set_frozen(unfrozen, False)
                status, body, _ = await post_signed(
                    http, f"{base}/api/v3/probe/order", api_key, secret, "symbol=BTCUSDT"
                )
                assert status == 200, body
        finally:
            await server.stop()

    run(scenario)


def test_request_weight_limit(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = await start(config(tmp_path / "bourse", {"request_weight_per_minute": 50}))
        limiter = server.runner.app[LIMITER]
        minute = (time.time_ns() // 1_000_000 // 60_000) * 60_000
        limiter.clock_ms = lambda: minute + 45_500  # 14.5 s before the window turns
        try:
            async with aiohttp.ClientSession() as http:
                login = server.demo_login
                assert login is not None
                async with http.get(server.base_url + "/api/v3/ping") as response:
                    assert response.headers["X-MBX-USED-WEIGHT-1M"] == "1"
                async with http.get(server.base_url + "/api/v3/exchangeInfo") as response:
                    info = await response.json()
                    used = int(response.headers["X-MBX-USED-WEIGHT-1M"])
                assert info["rateLimits"] == [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": 50,
                    },
                    {
                        "rateLimitType": "ORDERS",
                        "interval": "SECOND",
                        "intervalNum": 10,
                        "limit": 100,
                    },
                    {
                        "rateLimitType": "ORDERS",
                        "interval": "DAY",
                        "intervalNum": 1,
                        "limit": 200000,
                    },
                ]
                # /api/v3/account weighs 20: served while it fits, then -1003 / 429.
                while used + 20 <= 50:
                    status, body, headers = await signed_get(
                        http, server, ACCOUNT, login.api_key, login.secret
                    )
                    assert status == 200, body
                    assert headers["X-MBX-USED-WEIGHT-1M"] == str(used + 20)
                    used += 20
                status, body, headers = await signed_get(
                    http, server, ACCOUNT, login.api_key, login.secret
                )
                assert status == 429
                assert body["code"] == -1003
                assert "50 request weight per 1 MINUTE" in body["msg"]
                assert headers["Retry-After"] == "15"
                assert headers["X-MBX-USED-WEIGHT-1M"] == str(used)
                # A lighter request still fits if there is room; errors count too.
                async with http.get(server.base_url + "/api/v3/ping") as response:
                    if used < 50:
                        assert response.status == 200
                        used += 1
                    else:
                        assert response.status == 429
                    assert response.headers["X-MBX-USED-WEIGHT-1M"] == str(used)
                # Prometheus scraping from the same address is never refused, and neither
                # is the operator API: the limit is the public APIs'.
                async with http.get(server.base_url + "/metrics") as response:
                    assert response.status == 200
                    assert "X-MBX-USED-WEIGHT-1M" not in response.headers
                async with http.get(server.base_url + "/admin/v1/health") as response:
                    assert response.status == 401  # no operator token: refused, not limited
                # The next minute starts afresh.
                limiter.clock_ms = lambda: minute + 60_000
                status, body, headers = await signed_get(
                    http, server, ACCOUNT, login.api_key, login.secret
                )
                assert status == 200, body
                assert headers["X-MBX-USED-WEIGHT-1M"] == "20"
        finally:
            await server.stop()

    run(scenario)
