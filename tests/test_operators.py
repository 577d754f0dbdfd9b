"""The operator API (``controlplane.api.admin``, ``controlplane.operators``) through the real
server (node, gateway, HTTP on free ports, demo on): operator authentication on every
endpoint, the audit trail, listing an asset and a market and trading it, halting and
resuming, fee tiers, users, operator-issued keys, freezing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from controlplane.api.admin import OPERATORS, PREFIX, ROUTES
from controlplane.config import ServerConfig
from controlplane.demo import DEMO_OPERATOR, KEYS_FILE
from controlplane.operators import Operators
from controlplane.serve import Server, start
from tests.servers import server_config
from tests.test_accounts import PASSWORD, accounts_of, hmac_sign, raw_request, run


def config(data_dir: Path, funding: Mapping[str, Any] | None = None) -> ServerConfig:
    return server_config(data_dir, demo={"quote_interval_ms": 500}, funding=dict(funding or {}))


def demo_operator_token(server: Server) -> str:
    raw = json.loads((Path(server.config.server.data_dir) / KEYS_FILE).read_text())
    token: str = raw[DEMO_OPERATOR]["token"]
    return token


def operators_of(server: Server) -> Operators:
    return server.runner.app[OPERATORS]


async def admin(
    http: aiohttp.ClientSession,
    server: Server,
    method: str,
    path: str,
    token: str | None,
    body: Any = None,
) -> tuple[int, Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with http.request(
        method, f"{server.base_url}{PREFIX}{path}", json=body, headers=headers
    ) as response:
        return response.status, await response.json()


async def signed(
    http: aiohttp.ClientSession,
    server: Server,
    method: str,
    path: str,
    key: Mapping[str, Any],
    params: Mapping[str, Any] | None = None,
) -> tuple[int, Any]:
    """A SIGNED request with the server's own clock as the timestamp (tests may move the
    accounts clock for TOTP steps)."""
    query = urlencode({**(params or {}), "timestamp": accounts_of(server).clock_ms()})
    url = f"{server.base_url}{path}?{query}&signature={hmac_sign(key['secretKey'], query)}"
    async with http.request(method, url, headers={"X-MBX-APIKEY": key["apiKey"]}) as response:
        return response.status, await response.json()


def state_of(server: Server) -> dict[str, Any]:
    """What an operator endpoint could change (apart from the audit trail)."""
    conn = server.exchange.db.conn
    tables = (
        "assets",
        "markets",
        "users",
        "api_keys",
        "deposits",
        "withdrawals",
        "withdrawal_approvals",
        "verification_tiers",
    )
    return {
        "rows": {t: [tuple(r) for r in conn.execute(f"SELECT * FROM {t}")] for t in tables},
        "markets": [(m["market"], m["status"]) for m in server.node.markets()],
        "assets": server.node.assets(),
    }


def route_path(path: str) -> str:
    return (
        path.replace("{symbol}", "BTCUSDT")
        .replace("{user_id}", "1")
        .replace("{tier}", "1")
        .replace("{withdrawal_id}", "1")
    )


def test_every_endpoint_needs_an_operator_token(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = await start(config(tmp_path / "bourse"))
        try:
            async with aiohttp.ClientSession() as http:
                token = demo_operator_token(server)
                # A user and a withdrawal-free state to aim at.
                status, user = await admin(
                    http, server, "POST", "/users", token, {"username": "ann", "password": PASSWORD}
                )
                assert status == 201, user
                auditor, auditor_token = operators_of(server).add("auditor1", PASSWORD, "auditor")
                before = state_of(server)
                audit_before = len(operators_of(server).audit_log(1000))
                bodies: dict[str, Any] = {
                    "POST": {"name": "XYZ", "decimals": 2},
                    "PUT": {"tier": 1},
                }
                # The token with its last character changed (never to itself), and cut.
                altered = token[:-1] + ("B" if token.endswith("A") else "A")
                wrong = [None, "bop_" + "x" * 43, "Bearer", altered, token[4:]]
                for method, path, _, _ in ROUTES:
                    for bad in wrong:
                        status, err = await admin(
                            http, server, method, route_path(path), bad, bodies.get(method)
                        )
                        assert (status, err.get("code")) == (401, -1002), (method, path, bad, err)
                    if method != "GET":
                        status, err = await admin(
                            http,
                            server,
                            method,
                            route_path(path),
                            auditor_token,
                            bodies.get(method),
                        )
                        assert (status, err["code"]) == (403, -1002), (method, path, err)
                    else:
                        status, _ = await admin(
                            http, server, method, route_path(path), auditor_token
                        )
                        assert status in (200, 404), (path, status)
                # A header that is not Bearer.
                async with http.get(
                    f"{server.base_url}{PREFIX}/health", headers={"Authorization": f"Basic {token}"}
                ) as response:
                    assert response.status == 401
                # Regression: a token of bytes that are not UTF-8 was a 500.
                status, err = await raw_request(
                    server, b"GET /admin/v1/health HTTP/1.1\r\nAuthorization: Bearer bop_\xff\r\n"
                )
                assert (status, err["code"]) == (401, -1002)
                assert state_of(server) == before
                # Refused calls by the auditor are audited (it is an operator); anonymous ones
                # cannot be attributed and are not.
                audit = operators_of(server).audit_log(1000)
                refused = audit[: len(audit) - audit_before]
                assert len(refused) == len([r for r in ROUTES if r[0] != "GET"])
                assert all(a["operator"] == auditor.name for a in refused)
                assert all(a["outcome"] == 403 for a in refused)

                # Login: a name and password give a token; wrong ones the same 401.
                for creds in (
                    {"name": "auditor1", "password": "x" * 12},
                    {"name": "nobody", "password": PASSWORD},
                ):
                    status, err = await admin(http, server, "POST", "/login", None, creds)
                    assert (status, err["code"]) == (401, -1002)
                status, err = await admin(http, server, "POST", "/login", None, {"name": "a"})
                assert (status, err["code"]) == (400, -1102)
                status, session = await admin(
                    http, server, "POST", "/login", None, {"name": "auditor1", "password": PASSWORD}
                )
                assert status == 200, session
                assert session["role"] == "auditor"
                status, health = await admin(http, server, "GET", "/health", session["token"])
                assert status == 200
                assert health["operator"] == "auditor1"
                assert health["feed"]["failure"] is None
                assert health["db"]["bytes"] > 0
                assert health["projections"]["cursor"] >= 1
                # Tokens are stored only as digests.
                conn = server.exchange.db.conn
                stored = b"".join(
                    bytes(r[0]) for r in conn.execute("SELECT token_sha256 FROM operator_tokens")
                )
                assert token.encode() not in stored
                assert session["token"].encode() not in stored
        finally:
            await server.stop()

    run(scenario)


async def order(
    http: aiohttp.ClientSession,
    server: Server,
    key: Mapping[str, Any],
    symbol: str,
    side: str,
    price: str,
    quantity: str,
) -> tuple[int, Any]:
    return await signed(
        http,
        server,
        "POST",
        "/api/v3/order",
        key,
        {
            "symbol": symbol,
            "side": side,
            "type": "LIMIT",
            "timeInForce": "GTC",
            "price": price,
            "quantity": quantity,
        },
    )


def test_list_trade_halt_resume_fees_users(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = await start(config(tmp_path / "bourse"))
        try:
            async with aiohttp.ClientSession() as http:
                token = demo_operator_token(server)

                async def op(method: str, path: str, body: Any = None) -> tuple[int, Any]:
                    return await admin(http, server, method, path, token, body)

                # An asset: bad input is refused precisely, nothing listed.
                before = state_of(server)
                for body, code, text in [
                    ({"name": "sol", "decimals": 6}, -1130, "'name'"),
                    ({"name": "SOL", "decimals": 19}, -1130, "'decimals'"),
                    ({"name": "BTC", "decimals": 8}, -1130, "listed already"),
                    ({"name": "SOL", "decimals": 6, "id": 1}, -1130, "listed already"),
                    ({"name": "SOL"}, -1102, "'decimals'"),
                    ({"name": "SOL", "decimals": 6, "x": 1}, -1103, "'x'"),
                    ({"name": "SOL", "decimals": "6"}, -1130, "decimals"),
                ]:
                    status, err = await op("POST", "/assets", body)
                    assert err["code"] == code, (body, err)
                    assert text in err["msg"], (body, err)
                    assert status in (400, 409)
                assert state_of(server) == before
                status, sol = await op("POST", "/assets", {"name": "SOL", "decimals": 6})
                assert status == 201, sol
                assert (sol["name"], sol["decimals"]) == ("SOL", 6)
                assert (sol["id"], 6) in server.node.assets()

                # A market (sizes as decimal strings).
                market: dict[str, Any] = {
                    "symbol": "SOLUSDT",
                    "base": "SOL",
                    "quote": "USDT",
                    "price_decimals": 2,
                    "tick_size": "0.01",
                    "lot_size": "0.01",
                    "min_notional": "1",
                }
                before = state_of(server)
                changes: list[tuple[dict[str, Any], str]] = [
                    ({"base": "NOPE"}, "no asset NOPE"),
                    ({"quote": "SOL"}, "same asset"),
                    ({"tick_size": "0.001"}, "'tick_size'"),
                    ({"lot_size": "0"}, "'lot_size'"),
                    ({"lot_size": "0.0000001"}, "'lot_size'"),
                    ({"symbol": "BTCUSDT"}, "listed already"),
                    ({"symbol": "sol-usdt"}, "'symbol'"),
                    ({"price_decimals": 19}, "'price_decimals'"),
                ]
                for change, text in changes:
                    status, err = await op("POST", "/markets", {**market, **change})
                    assert text in err["msg"], (change, err)
                assert state_of(server) == before
                status, listed = await op("POST", "/markets", market)
                assert status == 201, listed
                assert listed["status"] == "trading"
                assert listed["tick_size"] == "0.01000000"
                async with http.get(f"{server.base_url}/api/v3/exchangeInfo?symbol=SOLUSDT") as r:
                    info = await r.json()
                assert r.status == 200, info
                filters = {f["filterType"]: f for f in info["symbols"][0]["filters"]}
                assert info["symbols"][0]["status"] == "TRADING"
                assert float(filters["PRICE_FILTER"]["tickSize"]) == 0.01
                assert float(filters["LOT_SIZE"]["stepSize"]) == 0.01
                status, markets = await op("GET", "/markets")
                assert "SOLUSDT" in [m["symbol"] for m in markets]

                # Two users, funded by deposits, with operator-issued trade keys.
                keys = {}
                users = {}
                for name, asset, amount in (("seller", "SOL", "10"), ("buyer", "USDT", "1000")):
                    status, user = await op(
                        "POST", "/users", {"username": name, "password": PASSWORD}
                    )
                    assert status == 201, user
                    users[name] = user
                    status, dep = await op(
                        "POST",
                        "/deposits",
                        {
                            "user_id": user["userId"],
                            "asset": asset,
                            "amount": amount,
                            "tx_id": name,
                        },
                    )
                    assert status == 200, dep
                    status, err = await op(
                        "POST",
                        f"/users/{user['userId']}/api-keys",
                        {"permissions": ["read", "withdraw"]},
                    )
                    assert (status, err["code"]) == (400, -1130), err
                    status, key = await op(
                        "POST",
                        f"/users/{user['userId']}/api-keys",
                        {"permissions": ["read", "trade"]},
                    )
                    assert status == 201, key
                    assert key["permissions"] == ["read", "trade"]
                    assert key["secretKey"]
                    keys[name] = key

                status, sell = await order(
                    http, server, keys["seller"], "SOLUSDT", "SELL", "20.00", "2"
                )
                assert status == 200, sell
                status, buy = await order(
                    http, server, keys["buyer"], "SOLUSDT", "BUY", "20.00", "1.5"
                )
                assert status == 200, buy
                assert buy["status"] == "FILLED", buy
                status, seller_info = await op("GET", f"/users/{users['seller']['userId']}")
                balances = {b["asset"]: b for b in seller_info["balances"]}
                assert balances["SOL"]["free"] == "8.000000"  # 10 - 2 on offer
                assert balances["SOL"]["held"] == "0.500000"
                assert balances["USDT"]["free"] == "30.00000000"

                # Halt: new orders refused, nothing placed; resume: accepted again.
                status, halted = await op("POST", "/markets/SOLUSDT/halt")
                assert (status, halted["status"]) == (200, "halted"), halted
                status, err = await op("POST", "/markets/SOLUSDT/halt")
                assert (status, err["code"]) == (409, -1130)
                async with http.get(f"{server.base_url}/api/v3/exchangeInfo?symbol=SOLUSDT") as r:
                    assert (await r.json())["symbols"][0]["status"] == "HALT"
                status, err = await order(
                    http, server, keys["buyer"], "SOLUSDT", "BUY", "20.00", "0.5"
                )
                assert (status, err["code"]) == (400, -2010), err
                status, resumed = await op("POST", "/markets/SOLUSDT/resume")
                assert (status, resumed["status"]) == (200, "trading")
                status, buy = await order(
                    http, server, keys["buyer"], "SOLUSDT", "BUY", "20.00", "0.5"
                )
                assert (status, buy["status"]) == (200, "FILLED"), buy
                status, err = await op("POST", "/markets/NOPE/halt")
                assert (status, err["code"]) == (400, -1121)

                # Fee tiers: define one, move the buyer to it; unknown tier refused.
                status, tier = await op("PUT", "/fee-tiers/3", {"maker_bps": 10, "taker_bps": 20})
                assert (status, tier["taker_bps"]) == (200, 20), tier
                status, err = await op("PUT", "/fee-tiers/3", {"maker_bps": 10, "taker_bps": 10001})
                assert (status, err["code"]) == (400, -1130)
                status, err = await op("PUT", "/fee-tiers/256", {"maker_bps": 1, "taker_bps": 1})
                assert (status, err["code"]) == (400, -1100)
                buyer_id = users["buyer"]["userId"]
                status, err = await op("PUT", f"/users/{buyer_id}/fee-tier", {"fee_tier": 7})
                assert (status, err["code"]) == (409, -1130)
                assert "unknown_fee_tier" in err["msg"]
                status, moved = await op("PUT", f"/users/{buyer_id}/fee-tier", {"fee_tier": 3})
                assert (status, moved["fee_tier"]) == (200, 3)
                status, sell = await order(
                    http, server, keys["seller"], "SOLUSDT", "SELL", "10.00", "1"
                )
                assert status == 200
                status, buy = await order(
                    http, server, keys["buyer"], "SOLUSDT", "BUY", "10.00", "1"
                )
                assert (status, buy["status"]) == (200, "FILLED")
                # 20 bps taker fee on 10 USDT, in the quote asset.
                assert sum(Decimal(f["commission"]) for f in buy["fills"]) == Decimal("0.02")

                # Freeze: trading refused; unfreeze: allowed. Verification tier.
                seller_id = users["seller"]["userId"]
                status, frozen = await op("POST", f"/users/{seller_id}/freeze")
                assert (status, frozen["frozen"]) == (200, True)
                status, err = await op("POST", f"/users/{seller_id}/freeze")
                assert status == 409
                status, err = await order(
                    http, server, keys["seller"], "SOLUSDT", "SELL", "20.00", "1"
                )
                assert (status, err["code"]) == (401, -2015)
                status, active = await op("POST", f"/users/{seller_id}/unfreeze")
                assert (status, active["frozen"]) == (200, False)
                status, tiered = await op("PUT", f"/users/{seller_id}/tier", {"tier": 2})
                assert (status, tiered["verification_tier"]) == (200, 2)
                status, err = await op("PUT", f"/users/{seller_id}/tier", {"tier": 3})
                assert (status, err["code"]) == (400, -1130)
                status, err = await op("GET", "/users/99999")
                assert (status, err["code"]) == (404, -4039)

                # The ledger: deposit then trades, oldest first.
                status, ledger = await op("GET", f"/users/{seller_id}/ledger?asset=SOL")
                assert status == 200
                assert [r["reason"] for r in ledger][:2] == ["deposit", "trade"]
                assert ledger[0]["delta"] == "10.000000"

                # Delist: final.
                status, delisted = await op("POST", "/markets/SOLUSDT/delist")
                assert (status, delisted["status"]) == (200, "delisted")
                status, err = await op("POST", "/markets/SOLUSDT/resume")
                assert (status, err["code"]) == (409, -1130)

                # The audit trail names each action and its outcome; never a password.
                audit = operators_of(server).audit_log(1000)
                actions = {a["action"] for a in audit}
                assert {
                    "assets.add",
                    "markets.add",
                    "markets.halt",
                    "markets.resume",
                    "markets.delist",
                    "fee_tiers.set",
                    "users.create",
                    "users.freeze",
                    "deposits.create",
                } <= actions
                assert {409, 201, 200, 400} <= {a["outcome"] for a in audit}
                assert all(a["operator"] == "demo-operator" for a in audit)
                assert PASSWORD not in json.dumps(audit)
                assert all(time.time() * 1000 - a["time"] < 600_000 for a in audit)
        finally:
            await server.stop()

    run(scenario)

    # A restart with the operator's market listed: the demo market maker quotes only the
    # demo's own markets, and the new one keeps its name and specification.
    async def restarted() -> None:
        server = await start(config(tmp_path / "bourse"))
        try:
            assert "SOLUSDT" in server.exchange.listing.by_symbol
            assert server.market_maker is not None
            assert {m.symbol for m in server.market_maker.markets} == {"BTCUSDT", "ETHUSDT"}
        finally:
            await server.stop()

    run(restarted)


def test_review_regressions_operator_input(tmp_path: Path) -> None:
    """Regressions of the security review: a deposit's ``tx_id`` (its idempotency key) and an
    asset's name with a trailing newline were accepted as new values (`$` matches before a
    final newline), so "tx-1\\n" credited "tx-1" a second time; a ``user_id`` beyond SQLite's
    INTEGER was a 500."""

    async def scenario() -> None:
        server = await start(config(tmp_path / "bourse"))
        try:
            async with aiohttp.ClientSession() as http:
                token = demo_operator_token(server)
                status, user = await admin(
                    http, server, "POST", "/users", token, {"username": "ivy", "password": PASSWORD}
                )
                assert status == 201, user
                deposit = {
                    "user_id": user["userId"],
                    "asset": "USDT",
                    "amount": "5",
                    "tx_id": "tx-1",
                }
                status, first = await admin(http, server, "POST", "/deposits", token, deposit)
                assert status == 200, first
                before = state_of(server)
                status, err = await admin(
                    http, server, "POST", "/deposits", token, {**deposit, "tx_id": "tx-1\n"}
                )
                assert (status, err["code"]) == (400, -1130), err
                assert "'tx_id'" in err["msg"]
                status, err = await admin(
                    http, server, "POST", "/deposits", token, {**deposit, "user_id": 2**63}
                )
                assert (status, err["code"]) == (404, -4039), err
                status, err = await admin(
                    http, server, "POST", "/assets", token, {"name": "USDT\n", "decimals": 8}
                )
                assert (status, err["code"]) == (400, -1130), err
                assert state_of(server) == before
                usdt = server.exchange.listing.assets_by_name["USDT"]
                free, _ = server.node.balance(user["accountId"], usdt.id) or (0, 0)
                assert free == 5 * 10**usdt.decimals

                # Listings racing at the engine command: the same explicit id under two
                # names is one listing and one 409 (it was an IntegrityError, a 500); two
                # listings with the next free id get two ids.
                same_id = await asyncio.gather(
                    admin(
                        http,
                        server,
                        "POST",
                        "/assets",
                        token,
                        {"name": "AAA", "id": 77, "decimals": 8},
                    ),
                    admin(
                        http,
                        server,
                        "POST",
                        "/assets",
                        token,
                        {"name": "BBB", "id": 77, "decimals": 8},
                    ),
                )
                assert sorted(status for status, _ in same_id) == [201, 409], same_id
                next_ids = await asyncio.gather(
                    admin(http, server, "POST", "/assets", token, {"name": "CCC", "decimals": 2}),
                    admin(http, server, "POST", "/assets", token, {"name": "DDD", "decimals": 2}),
                )
                assert [status for status, _ in next_ids] == [201, 201], next_ids
                assert len({body["id"] for _, body in next_ids}) == 2
                listed = server.exchange.listing.assets
                assert {listed[body["id"]].name for _, body in next_ids} == {"CCC", "DDD"}
        finally:
            await server.stop()

    run(scenario)
