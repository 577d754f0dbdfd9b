"""Users, sessions, API keys, TOTP, the anti-phishing code and notifications, through the real
server (node, gateway, HTTP API on free ports): ``controlplane.accounts`` and
``controlplane.api.users``."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sqlite3
import stat
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pyotp
import pytest
import uvloop

from controlplane.accounts import (
    FIRST_USER_ACCOUNT,
    TOTP_FAILURE_WINDOW_MS,
    TOTP_MAX_FAILURES,
    Accounts,
)
from controlplane.api.auth import ACCOUNTS
from controlplane.config import ServerConfig
from controlplane.db import FILE_NAME
from controlplane.demo import DEMO_USER, DEPOSITS, KEYS_FILE
from controlplane.gateway.client import LoginRejectedError, connect
from controlplane.listing import fmt
from controlplane.secretbox import KEY_FILE
from controlplane.serve import Server, start
from tests.servers import server_config

PASSWORD = "correct horse battery"


def config(data_dir: Path, limits: Mapping[str, int] | None = None) -> ServerConfig:
    return server_config(data_dir, demo={"quote_interval_ms": 200}, limits=dict(limits or {}))


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        await asyncio.wait_for(scenario(), 60)

    uvloop.run(main())


def accounts_of(server: Server) -> Accounts:
    return server.runner.app[ACCOUNTS]


async def call(
    http: aiohttp.ClientSession,
    server: Server,
    method: str,
    path: str,
    *,
    json: Any = None,
    data: bytes | str | None = None,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Any]:
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    async with http.request(
        method, server.base_url + path, json=json, data=data, headers=all_headers
    ) as response:
        return response.status, await response.json()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def hmac_sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


async def signed_get(
    http: aiohttp.ClientSession,
    server: Server,
    path: str,
    api_key: str,
    secret: str,
    params: str = "",
) -> tuple[int, Any, Mapping[str, str]]:
    """GET with ``params&timestamp=now&signature=HMAC`` (Binance's SIGNED request)."""
    query = f"{params}&timestamp={now_ms()}" if params else f"timestamp={now_ms()}"
    url = f"{server.base_url}{path}?{query}&signature={hmac_sign(secret, query)}"
    async with http.get(url, headers={"X-MBX-APIKEY": api_key}) as response:
        return response.status, await response.json(), response.headers


async def new_user(
    http: aiohttp.ClientSession, server: Server, username: str
) -> tuple[str, dict[str, Any]]:
    """Register and log in; the session token and the user."""
    status, user = await call(
        http, server, "POST", "/api/v1/users", json={"username": username, "password": PASSWORD}
    )
    assert status == 201, user
    status, session = await call(
        http, server, "POST", "/api/v1/sessions", json={"username": username, "password": PASSWORD}
    )
    assert status == 200, session
    return session["token"], user


async def new_key(
    http: aiohttp.ClientSession, server: Server, token: str, **fields: Any
) -> dict[str, Any]:
    body = {"label": "test", "permissions": ["read", "trade"], **fields}
    status, key = await call(http, server, "POST", "/api/v1/me/api-keys", json=body, token=token)
    assert status == 201, key
    created: dict[str, Any] = key
    return created


def db_bytes(data_dir: Path) -> bytes:
    """The SQLite file and its WAL, as stored."""
    out = b""
    for suffix in ("", "-wal"):
        path = data_dir / (FILE_NAME + suffix)
        if path.exists():
            out += path.read_bytes()
    return out


def test_register_login_logout_and_session_expiry(tmp_path: Path) -> None:
    data_dir = tmp_path / "bourse"

    async def scenario() -> None:
        server = await start(config(data_dir))
        try:
            async with aiohttp.ClientSession() as http:
                creds = {"username": "alice", "password": PASSWORD}
                status, user = await call(http, server, "POST", "/api/v1/users", json=creds)
                assert status == 201, user
                assert user["username"] == "alice"
                assert user["accountId"] >= FIRST_USER_ACCOUNT
                assert not user["frozen"]
                assert not user["totpEnabled"]
                # The engine account exists (a balance is (0, 0) once account and asset exist).
                assert server.node.balance(user["accountId"], 3) == (0, 0)

                # Bad input: precise errors, nothing created.
                bad: list[tuple[Any, int, str]] = [
                    (creds, -1130, "already taken"),
                    ({"username": "ALICE", "password": PASSWORD}, -1130, "already taken"),
                    ({"username": "bob", "password": "short"}, -1130, "'password'"),
                    ({"username": "b", "password": PASSWORD}, -1130, "'username'"),
                    ({"username": "bob"}, -1102, "'password'"),
                    ({"username": "bob", "password": PASSWORD, "x": 1}, -1103, "'x'"),
                    ({"username": 7, "password": PASSWORD}, -1130, "'username'"),
                    ([1, 2], -1130, "not valid"),
                ]
                for body, code, text in bad:
                    status, err = await call(http, server, "POST", "/api/v1/users", json=body)
                    assert (status, err["code"]) == (400, code), (body, err)
                    assert text in err["msg"], (body, err)
                status, err = await call(http, server, "POST", "/api/v1/users", data=b"{nope")
                assert (status, err["code"]) == (400, -1102)
                assert accounts_of(server).user_by_name("bob") is None

                # Login: wrong password or unknown user, the same 401.
                for wrong in (
                    {"username": "alice", "password": "x" * 12},
                    {**creds, "username": "nobody"},
                ):
                    status, err = await call(http, server, "POST", "/api/v1/sessions", json=wrong)
                    assert (status, err["code"]) == (401, -1002)
                status, session = await call(http, server, "POST", "/api/v1/sessions", json=creds)
                assert status == 200
                token = session["token"]
                assert session["expiresTime"] > now_ms()
                status, me = await call(http, server, "GET", "/api/v1/me", token=token)
                assert (status, me["userId"], me["accountId"]) == (
                    200,
                    user["userId"],
                    user["accountId"],
                )
                for bad_token in (None, "0" * 64):
                    status, err = await call(http, server, "GET", "/api/v1/me", token=bad_token)
                    assert (status, err["code"]) == (401, -1002)

                # Logout ends the session.
                status, _ = await call(http, server, "DELETE", "/api/v1/sessions", token=token)
                assert status == 200
                status, err = await call(http, server, "GET", "/api/v1/me", token=token)
                assert (status, err["code"]) == (401, -1002)

                # Sessions expire.
                status, session = await call(http, server, "POST", "/api/v1/sessions", json=creds)
                accounts = accounts_of(server)
                later = session["expiresTime"]
                accounts.clock_ms = lambda: later
                status, err = await call(http, server, "GET", "/api/v1/me", token=session["token"])
                assert (status, err["code"]) == (401, -1002)
                accounts.clock_ms = now_ms
        finally:
            await server.stop()

        # Stored: an argon2id hash, never the password; session tokens only hashed.
        conn = sqlite3.connect(data_dir / FILE_NAME)
        (stored,) = conn.execute(
            "SELECT password_hash FROM users WHERE username='alice'"
        ).fetchone()
        conn.close()
        assert stored.startswith("$argon2id$")
        raw = db_bytes(data_dir)
        assert PASSWORD.encode() not in raw
        assert session["token"].encode() not in raw

    run(scenario)


def test_api_keys_encrypted_at_rest_and_kept_across_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "bourse"
    saved: dict[str, Any] = {}

    async def first() -> None:
        server = await start(config(data_dir))
        try:
            async with aiohttp.ClientSession() as http:
                token, user = await new_user(http, server, "carol")
                key = await new_key(http, server, token, label="bot", ips=["127.0.0.0/8"])
                assert len(key["apiKey"]) == 64
                assert key["apiKey"].isalnum()
                assert len(key["secretKey"]) == 64
                assert key["secretKey"].isalnum()
                assert key["permissions"] == ["read", "trade"]
                assert key["ips"] == ["127.0.0.0/8"]
                assert key["id"] >= 1000
                status, keys = await call(http, server, "GET", "/api/v1/me/api-keys", token=token)
                assert status == 200
                assert [k["id"] for k in keys] == [key["id"]]
                assert "secretKey" not in keys[0]

                # Bad key requests change nothing.
                for body, code in [
                    ({"label": "x", "permissions": ["fly"]}, -1130),
                    ({"label": "x", "permissions": []}, -1130),
                    ({"label": "x", "permissions": ["read"], "ips": ["not-an-ip"]}, -1130),
                    ({"label": "", "permissions": ["read"]}, -1130),
                    ({"permissions": ["read"]}, -1102),
                    ({"label": "x", "permissions": ["read"], "type": "ED25519"}, -1102),
                    ({"label": "x", "permissions": ["read"], "publicKey": "x"}, -1106),
                ]:
                    status, err = await call(
                        http, server, "POST", "/api/v1/me/api-keys", json=body, token=token
                    )
                    assert (status, err["code"]) == (400, code), (body, err)
                status, keys = await call(http, server, "GET", "/api/v1/me/api-keys", token=token)
                assert len(keys) == 1
                # Someone else's key cannot be revoked.
                other_token, _ = await new_user(http, server, "mallory")
                status, err = await call(
                    http, server, "DELETE", f"/api/v1/me/api-keys/{key['id']}", token=other_token
                )
                assert (status, err["code"]) == (400, -1130)
                status, err = await call(
                    http, server, "DELETE", "/api/v1/me/api-keys/abc", token=other_token
                )
                assert (status, err["code"]) == (400, -1100)

                status, account, _ = await signed_get(
                    http, server, "/api/v3/account", key["apiKey"], key["secretKey"]
                )
                assert status == 200, account
                assert account["uid"] == user["userId"]
                saved.update(key=key, user=user)
        finally:
            await server.stop()

    run(first)
    # The secret is stored only encrypted; the server key is 32 bytes, mode 0600.
    assert saved["key"]["secretKey"].encode() not in db_bytes(data_dir)
    key_file = data_dir / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_bytes()) == 32

    async def second() -> None:
        server = await start(config(data_dir))
        try:
            assert not server.demo_login_created
            async with aiohttp.ClientSession() as http:
                key = saved["key"]
                status, account, _ = await signed_get(
                    http, server, "/api/v3/account", key["apiKey"], key["secretKey"]
                )
                assert status == 200, account
                assert account["uid"] == saved["user"]["userId"]
                creds = {"username": "carol", "password": PASSWORD}
                status, _ = await call(http, server, "POST", "/api/v1/sessions", json=creds)
                assert status == 200
                # The trade key is a gateway key again after the restart.
                session = await connect(
                    server.gateway_host,
                    server.gateway_port,
                    key_id=key["id"],
                    secret=key["secretKey"].encode(),
                )
                await session.logout()
                await session.close()
        finally:
            await server.stop()

    run(second)


def test_totp_withdraw_keys_and_replay(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = await start(config(tmp_path / "bourse"))
        try:
            async with aiohttp.ClientSession() as http:
                token, _ = await new_user(http, server, "dave")
                withdraw = {"label": "w", "permissions": ["read", "withdraw"]}
                status, err = await call(
                    http, server, "POST", "/api/v1/me/api-keys", json=withdraw, token=token
                )
                assert (status, err["code"]) == (400, -1130)
                assert "Two-factor" in err["msg"]
                status, err = await call(
                    http,
                    server,
                    "POST",
                    "/api/v1/me/totp/confirm",
                    json={"code": "123456"},
                    token=token,
                )
                assert (status, err["code"]) == (400, -1130)

                status, begun = await call(http, server, "POST", "/api/v1/me/totp", token=token)
                assert status == 200
                assert begun["provisioningUri"].startswith("otpauth://totp/")
                assert "issuer=Bourse" in begun["provisioningUri"]
                totp = pyotp.TOTP(begun["secret"])
                current = totp.now()
                wrong = "000000" if current != "000000" else "111111"
                status, err = await call(
                    http,
                    server,
                    "POST",
                    "/api/v1/me/totp/confirm",
                    json={"code": wrong},
                    token=token,
                )
                assert (status, err["code"]) == (401, -1002)
                status, me = await call(
                    http,
                    server,
                    "POST",
                    "/api/v1/me/totp/confirm",
                    json={"code": current},
                    token=token,
                )
                assert status == 200
                assert me["totpEnabled"]
                status, err = await call(http, server, "POST", "/api/v1/me/totp", token=token)
                assert (status, err["code"]) == (400, -1130)

                # A withdraw key needs a code; a used code is refused.
                status, err = await call(
                    http, server, "POST", "/api/v1/me/api-keys", json=withdraw, token=token
                )
                assert (status, err["code"]) == (400, -1102)
                assert "'totpCode'" in err["msg"]
                used = {**withdraw, "totpCode": current}
                status, err = await call(
                    http, server, "POST", "/api/v1/me/api-keys", json=used, token=token
                )
                assert (status, err["code"]) == (401, -1002)
                next_code = totp.at(time.time() + 30)
                fresh = {**withdraw, "totpCode": next_code}
                status, key = await call(
                    http, server, "POST", "/api/v1/me/api-keys", json=fresh, token=token
                )
                assert status == 201, key
                assert key["permissions"] == ["read", "withdraw"]
                status, err = await call(
                    http, server, "POST", "/api/v1/me/api-keys", json=fresh, token=token
                )
                assert (status, err["code"]) == (401, -1002)
                status, keys = await call(http, server, "GET", "/api/v1/me/api-keys", token=token)
                assert [k["id"] for k in keys] == [key["id"]]

                status, account, _ = await signed_get(
                    http, server, "/api/v3/account", key["apiKey"], key["secretKey"]
                )
                assert (status, account["canWithdraw"], account["canTrade"]) == (200, True, False)

                # verify_totp (for withdrawals) uses the same replay protection.
                accounts = accounts_of(server)
                user = accounts.user_by_name("dave")
                assert user is not None
                assert not accounts.verify_totp(user, next_code)
                assert not accounts.verify_totp(user, "abcdef")
                # The seed is stored only encrypted.
                assert begun["secret"].encode() not in db_bytes(tmp_path / "bourse")
        finally:
            await server.stop()

    run(scenario)


def test_anti_phishing_code_in_every_notification(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = await start(config(tmp_path / "bourse"))
        try:
            async with aiohttp.ClientSession() as http:
                token, _ = await new_user(http, server, "erin")
                for bad in ("abc", "has space", "x" * 21):
                    status, err = await call(
                        http,
                        server,
                        "PUT",
                        "/api/v1/me/anti-phishing",
                        json={"code": bad},
                        token=token,
                    )
                    assert (status, err["code"]) == (400, -1130), bad
                status, me = await call(
                    http,
                    server,
                    "PUT",
                    "/api/v1/me/anti-phishing",
                    json={"code": "Bourse42"},
                    token=token,
                )
                assert (status, me["antiPhishingCode"]) == (200, "Bourse42")
                key = await new_key(http, server, token)
                creds = {"username": "erin", "password": PASSWORD}
                status, _ = await call(http, server, "POST", "/api/v1/sessions", json=creds)
                status, notes = await call(
                    http, server, "GET", "/api/v1/me/notifications", token=token
                )
                assert status == 200
                subjects = [n["subject"] for n in notes]
                assert subjects[:3] == ["New login", "API key created", "Anti-phishing code set"]
                assert str(key["id"]) in notes[1]["body"]
                for note in notes[:3]:
                    assert "Anti-phishing code: Bourse42" in note["body"]
                # Before the code was set, notifications said so.
                assert "not set" in notes[-1]["body"]
                status, one = await call(
                    http, server, "GET", "/api/v1/me/notifications?limit=1", token=token
                )
                assert [n["id"] for n in one] == [notes[0]["id"]]
                for bad_limit in ("0", "501", "x"):
                    status, err = await call(
                        http,
                        server,
                        "GET",
                        f"/api/v1/me/notifications?limit={bad_limit}",
                        token=token,
                    )
                    assert (status, err["code"]) == (400, -1100)
        finally:
            await server.stop()

    run(scenario)


def test_demo_user_one_key_two_doors(tmp_path: Path) -> None:
    data_dir = tmp_path / "bourse"

    async def scenario() -> None:
        server = await start(config(data_dir))
        try:
            login = server.demo_login
            assert login is not None
            assert server.demo_login_created
            assert login.username == "demo"
            assert login.account == DEMO_USER
            banner = "\n".join(server.banner())
            assert login.password in banner
            assert login.api_key in banner
            assert stat.S_IMODE((data_dir / KEYS_FILE).stat().st_mode) == 0o600
            async with aiohttp.ClientSession() as http:
                # REST: the demo balances.
                status, account, _headers = await signed_get(
                    http, server, "/api/v3/account", login.api_key, login.secret
                )
                assert status == 200, account
                assert account["canTrade"]
                assert not account["canWithdraw"]
                assert account["accountType"] == "SPOT"
                assert account["permissions"] == ["SPOT"]
                balances = {b["asset"]: b for b in account["balances"]}
                assert set(balances) == {"BTC", "ETH", "USDT"}
                for asset, amount in DEPOSITS[DEMO_USER].items():
                    free, locked = server.node.balance(DEMO_USER, asset.id) or (0, 0)
                    assert free + locked == amount
                    assert balances[asset.name]["free"] == fmt(free, 8)
                    assert balances[asset.name]["locked"] == fmt(locked, 8)
                # The demo user logs in with its password.
                creds = {"username": "demo", "password": login.password}
                status, _ = await call(http, server, "POST", "/api/v1/sessions", json=creds)
                assert status == 200

                # The binary gateway: the same key id and secret.
                session = await connect(
                    server.gateway_host,
                    server.gateway_port,
                    key_id=server.demo_login_key_id,
                    secret=login.secret.encode(),
                )
                await session.logout()
                await session.close()

                # A new user's trade key opens the gateway too; a read-only key does not;
                # a revoked key no longer does.
                token, _ = await new_user(http, server, "frank")
                trade = await new_key(http, server, token)
                read_only = await new_key(http, server, token, permissions=["read"])
                # A new account holds nothing: zero balances, or none with omitZeroBalances.
                for omit, expected in (("false", 3), ("true", 0)):
                    status, fresh, _ = await signed_get(
                        http,
                        server,
                        "/api/v3/account",
                        trade["apiKey"],
                        trade["secretKey"],
                        f"omitZeroBalances={omit}",
                    )
                    assert status == 200, fresh
                    assert len(fresh["balances"]) == expected
                    assert all(b["free"] == "0.00000000" for b in fresh["balances"])
                session = await connect(
                    server.gateway_host,
                    server.gateway_port,
                    key_id=trade["id"],
                    secret=trade["secretKey"].encode(),
                )
                await session.logout()
                await session.close()
                with pytest.raises(LoginRejectedError):
                    await connect(
                        server.gateway_host,
                        server.gateway_port,
                        key_id=read_only["id"],
                        secret=read_only["secretKey"].encode(),
                    )
                status, revoked = await call(
                    http, server, "DELETE", f"/api/v1/me/api-keys/{trade['id']}", token=token
                )
                assert status == 200
                assert revoked["revokedTime"] is not None
                with pytest.raises(LoginRejectedError):
                    await connect(
                        server.gateway_host,
                        server.gateway_port,
                        key_id=trade["id"],
                        secret=trade["secretKey"].encode(),
                    )
        finally:
            await server.stop()

    run(scenario)


async def raw_request(server: Server, head: bytes) -> tuple[int, Any]:
    """Send a request line and headers as raw bytes (a client library would refuse bytes that
    are not UTF-8); the status and the JSON body."""
    host, port = server.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head + b"Host: bourse\r\nConnection: close\r\n\r\n")
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    _, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(body)


def test_review_regressions_tokens_names_ids_and_totp_guessing(tmp_path: Path) -> None:
    """Regressions of the security review: non-UTF-8 session tokens, names with a trailing
    newline, ids beyond SQLite's INTEGER, and TOTP codes guessed at the request rate."""

    async def scenario() -> None:
        server = await start(config(tmp_path / "bourse"))
        try:
            async with aiohttp.ClientSession() as http:
                token, _ = await new_user(http, server, "grace")
                # A bearer token of bytes that are not UTF-8: 401, not 500.
                for path in (b"/api/v1/me", b"/api/v1/me/api-keys"):
                    status, err = await raw_request(
                        server, b"GET " + path + b" HTTP/1.1\r\nAuthorization: Bearer \xff\xfe\r\n"
                    )
                    assert (status, err["code"]) == (401, -1002), path
                # `$` matched before a trailing newline: "grace\n" was a second, look-alike user.
                body = {"username": "grace\n", "password": PASSWORD}
                status, err = await call(http, server, "POST", "/api/v1/users", json=body)
                assert (status, err["code"]) == (400, -1130), err
                assert "'username'" in err["msg"]
                status, err = await call(
                    http,
                    server,
                    "PUT",
                    "/api/v1/me/anti-phishing",
                    json={"code": "abcd\n"},
                    token=token,
                )
                assert (status, err["code"]) == (400, -1130), err
                # An id beyond 2**63 - 1: -1100, not an OverflowError.
                status, err = await call(
                    http, server, "DELETE", "/api/v1/me/api-keys/9999999999999999999", token=token
                )
                assert (status, err["code"]) == (400, -1100), err
                accounts = accounts_of(server)
                assert accounts.user(2**63) is None
                assert accounts.api_key(2**64) is None

                # TOTP guessing: after TOTP_MAX_FAILURES wrong codes even the right one is
                # refused (429, Retry-After) until the window ends; nothing is created.
                offset_ms = 0
                accounts.clock_ms = lambda: now_ms() + offset_ms
                status, begun = await call(http, server, "POST", "/api/v1/me/totp", token=token)
                assert status == 200
                totp = pyotp.TOTP(begun["secret"])
                status, _ = await call(
                    http,
                    server,
                    "POST",
                    "/api/v1/me/totp/confirm",
                    json={"code": totp.at(accounts.clock_ms() / 1000)},
                    token=token,
                )
                assert status == 200
                offset_ms += 30_000
                right = totp.at(accounts.clock_ms() / 1000)
                now_s = accounts.clock_ms() / 1000
                valid = {totp.at(now_s + drift) for drift in (-30, 0, 30)}
                wrong = [str(n) * 6 for n in range(10) if str(n) * 6 not in valid]
                withdraw = {"label": "w", "permissions": ["read", "withdraw"]}
                for code in wrong[:TOTP_MAX_FAILURES]:
                    status, err = await call(
                        http,
                        server,
                        "POST",
                        "/api/v1/me/api-keys",
                        json={**withdraw, "totpCode": code},
                        token=token,
                    )
                    assert (status, err["code"]) == (401, -1002), err
                async with http.post(
                    server.base_url + "/api/v1/me/api-keys",
                    json={**withdraw, "totpCode": right},
                    headers={"Authorization": f"Bearer {token}"},
                ) as response:
                    assert response.status == 429
                    assert int(response.headers["Retry-After"]) > 0
                    assert (await response.json())["code"] == -1003
                status, keys = await call(http, server, "GET", "/api/v1/me/api-keys", token=token)
                assert keys == []
                offset_ms += TOTP_FAILURE_WINDOW_MS
                right = totp.at(accounts.clock_ms() / 1000)
                status, key = await call(
                    http,
                    server,
                    "POST",
                    "/api/v1/me/api-keys",
                    json={**withdraw, "totpCode": right},
                    token=token,
                )
                assert status == 201, key
                assert key["permissions"] == ["read", "withdraw"]
        finally:
            await server.stop()

    run(scenario)


def test_a_user_with_totp_logs_in_with_a_code(tmp_path: Path) -> None:
    """Once TOTP is on, a session needs the password and a fresh code: without a code, with
    a wrong one or with a used one there is no session."""

    async def scenario() -> None:
        server = await start(config(tmp_path / "bourse"))
        try:
            async with aiohttp.ClientSession() as http:
                token, _ = await new_user(http, server, "heidi")
                accounts = accounts_of(server)
                offset_ms = 0
                accounts.clock_ms = lambda: now_ms() + offset_ms
                status, begun = await call(http, server, "POST", "/api/v1/me/totp", token=token)
                assert status == 200
                totp = pyotp.TOTP(begun["secret"])
                first = totp.at(accounts.clock_ms() / 1000)
                status, _ = await call(
                    http,
                    server,
                    "POST",
                    "/api/v1/me/totp/confirm",
                    json={"code": first},
                    token=token,
                )
                assert status == 200
                creds = {"username": "heidi", "password": PASSWORD}
                sessions = accounts.db.conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
                offset_ms += 30_000
                fresh = totp.at(accounts.clock_ms() / 1000)
                wrong = "000000" if fresh != "000000" else "111111"
                for body, text in [
                    (creds, "'totpCode'"),
                    ({**creds, "totpCode": wrong}, "Invalid two-factor code."),
                    ({**creds, "totpCode": first}, "Invalid two-factor code."),  # used already
                    ({**creds, "password": "not the password", "totpCode": fresh}, "password"),
                ]:
                    status, err = await call(http, server, "POST", "/api/v1/sessions", json=body)
                    assert (status, err["code"]) == (401, -1002), err
                    assert text in err["msg"], err
                count = accounts.db.conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
                assert count == sessions
                status, session = await call(
                    http, server, "POST", "/api/v1/sessions", json={**creds, "totpCode": fresh}
                )
                assert status == 200, session
                status, me = await call(http, server, "GET", "/api/v1/me", token=session["token"])
                assert (status, me["username"]) == (200, "heidi")
        finally:
            await server.stop()

    run(scenario)
