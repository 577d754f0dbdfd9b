"""The user data stream (``controlplane.api.userstream``) against the real server: listen
keys over REST with Binance's errors, and each account's ``executionReport``,
``outboundAccountPosition`` and ``balanceUpdate`` frames on ``/ws/<listenKey>`` and
``/stream?streams=<listenKey>``, checked against the server's own REST answers (orders,
``myTrades``, ``account``), for orders from REST and from the binary gateway. Also which
``/ws/<segment>`` URLs open a plain connection (CCXT's ``/ws/0``) and which are refused.

The venue is :func:`tests.test_api_trading.venue`: a fresh server with the demo market maker
stopped (so only these tests' orders are in the book), a funded second user ``maker`` and
both users on a fee tier (maker 10 bps, taker 20 bps)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from controlplane import messages as m
from controlplane.api.userstream import LISTEN_KEYS, VALIDITY_SECONDS, ListenKeys
from controlplane.demo import USDT
from controlplane.gateway import codec as c
from controlplane.gateway.client import connect
from tests.test_accounts import call, new_key, new_user
from tests.test_api_trading import ORDER, SYMBOL, Trader, Venue, limit, venue
from tests.test_operators import admin, demo_operator_token
from tests.test_serve import run
from tests.test_streams import closed_with, request, ws_url

PATH = "/api/v3/userDataStream"
WAIT = 10.0
Frame = dict[str, Any]


def listen_keys(v: Venue) -> ListenKeys:
    return v.server.runner.app[LISTEN_KEYS]


async def user_stream(
    v: Venue,
    method: str,
    api_key: str | None,
    query: str = "",
    body: str | None = None,
) -> tuple[int, Any]:
    """A USER_STREAM request: the API key header only, no signature."""
    headers = {} if api_key is None else {"X-MBX-APIKEY": api_key}
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    url = f"{v.server.base_url}{PATH}" + (f"?{query}" if query else "")
    async with v.http.request(method, url, headers=headers, data=body) as response:
        return response.status, await response.json()


async def open_key(v: Venue, trader: Trader) -> str:
    status, body = await user_stream(v, "POST", trader.api_key)
    assert status == 200, body
    key: str = body["listenKey"]
    return key


async def frames_until(
    ws: aiohttp.ClientWebSocketResponse, done: Callable[[Frame], bool]
) -> list[Frame]:
    """Every frame up to and including the first for which ``done`` holds."""
    out: list[Frame] = []
    while True:
        msg = await asyncio.wait_for(ws.receive(), WAIT)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        frame = json.loads(msg.data)
        out.append(frame)
        if done(frame):
            return out


def kind(name: str, **fields: Any) -> Callable[[Frame], bool]:
    return lambda f: f.get("e") == name and all(f.get(k) == v for k, v in fields.items())


def reports(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if f["e"] == "executionReport"]


async def rest_balances(v: Venue, trader: Trader) -> dict[str, tuple[str, str]]:
    body = await v.ok(trader, "GET", "/api/v3/account")
    return {b["asset"]: (b["free"], b["locked"]) for b in body["balances"]}


async def check_position(v: Venue, trader: Trader, frame: Frame) -> set[str]:
    """An ``outboundAccountPosition`` equals REST's account for every asset it names."""
    assert frame["e"] == "outboundAccountPosition"
    assert isinstance(frame["E"], int)
    assert isinstance(frame["u"], int)
    balances = await rest_balances(v, trader)
    for row in frame["B"]:
        assert (row["f"], row["l"]) == balances[row["a"]], (row, balances)
    return {row["a"] for row in frame["B"]}


def check_against_order(report: Frame, order: Frame) -> None:
    """The fields an ``executionReport`` shares with REST's ``GET /api/v3/order``."""
    assert report["s"] == order["symbol"]
    assert report["i"] == order["orderId"]
    assert report["S"] == order["side"]
    assert report["o"] == order["type"]
    assert report["f"] == order["timeInForce"]
    assert report["q"] == order["origQty"]
    assert report["p"] == order["price"]
    assert report["Q"] == order["origQuoteOrderQty"]
    assert report["O"] == order["time"]
    assert report["W"] == order["workingTime"]
    assert report["V"] == order["selfTradePreventionMode"]
    assert report["g"] == order["orderListId"] == -1
    assert (report["P"], report["F"], report["r"]) == ("0.00000000", "0.00000000", "NONE")


def test_listen_key_lifecycle_errors_and_url_shapes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with venue(tmp_path) as v:
            demo, maker = v.demo, v.maker
            # Authentication as auth.py: a malformed key -2014, an unknown one -2015.
            assert await user_stream(v, "POST", None) == (
                401,
                {"code": -2014, "msg": "API-key format invalid."},
            )
            assert await user_stream(v, "POST", "A" * 64) == (
                401,
                {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."},
            )
            key = await open_key(v, demo)
            assert len(key) == 60
            assert key.isascii()
            assert key.isalnum()
            assert await open_key(v, demo) == key  # the active key again
            maker_key = await open_key(v, maker)
            assert maker_key != key

            no_such = (400, {"code": -1125, "msg": "This listenKey does not exist."})
            # Keep-alive: query string or form body; another account's key does not exist.
            assert await user_stream(v, "PUT", demo.api_key, f"listenKey={key}") == (200, {})
            assert await user_stream(v, "PUT", demo.api_key, body=f"listenKey={key}") == (200, {})
            assert await user_stream(v, "PUT", demo.api_key, f"listenKey={maker_key}") == no_such
            assert await user_stream(v, "PUT", demo.api_key, "listenKey=" + "x" * 60) == no_such
            missing = "Mandatory parameter 'listenKey' was not sent, was empty/null, or malformed."
            for query in ("", "listenKey="):
                assert await user_stream(v, "PUT", demo.api_key, query) == (
                    400,
                    {"code": -1102, "msg": missing},
                )
            assert await user_stream(
                v, "PUT", demo.api_key, f"listenKey={key}", body=f"listenKey={key}"
            ) == (400, {"code": -1101, "msg": "Duplicate values for a parameter detected."})
            assert await user_stream(v, "PUT", demo.api_key, f"listenKey={key}&foo=1") == (
                400,
                {
                    "code": -1104,
                    "msg": "Not all sent parameters were read; read '1' parameter(s) but was "
                    "sent '2'.",
                },
            )
            assert await user_stream(v, "PUT", None, f"listenKey={key}") == (
                401,
                {"code": -2014, "msg": "API-key format invalid."},
            )

            # The stream, raw and combined with a market stream (shown as the listen key).
            async with (
                v.http.ws_connect(ws_url(v.server, f"/ws/{key}")) as raw,
                v.http.ws_connect(
                    ws_url(v.server, f"/stream?streams=btcusdt@trade/{key}")
                ) as combined,
            ):
                await v.ok(demo, "POST", ORDER, limit("BUY", "0.001", "40000"))
                frames = await frames_until(raw, kind("outboundAccountPosition"))
                (new,) = reports(frames)
                assert new["x"] == "NEW"
                wrapped = await frames_until(
                    combined, lambda f: f["data"]["e"] == "outboundAccountPosition"
                )
                assert all(f["stream"] == key for f in wrapped)
                assert [f["data"] for f in wrapped] == frames

                # DELETE closes it: no event, no more frames, the connection stays open.
                assert await user_stream(v, "DELETE", demo.api_key, f"listenKey={key}") == (
                    200,
                    {},
                )
                assert await user_stream(v, "DELETE", demo.api_key, f"listenKey={key}") == no_such
                assert await user_stream(v, "PUT", demo.api_key, f"listenKey={key}") == no_such
                await v.ok(demo, "POST", ORDER, limit("BUY", "0.001", "40001"))
                await raw.send_str(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 7}))
                # The order's frames would have been queued before the reply: none came.
                assert await frames_until(raw, lambda f: "id" in f) == [{"result": [], "id": 7}]

            # A new key after the close; a short validity makes it expire: listenKeyExpired.
            fresh = await open_key(v, demo)
            assert fresh != key
            keys = listen_keys(v)
            keys.validity_ns = 300_000_000
            keys.keep_alive(keys.find(demo.account, fresh))
            async with v.http.ws_connect(ws_url(v.server, f"/ws/{fresh}")) as ws:
                (expired,) = await frames_until(ws, kind("listenKeyExpired"))
                assert expired["listenKey"] == fresh
                assert expired["E"].isdigit()
                assert await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1}) == {
                    "result": [],
                    "id": 1,
                }
            assert await user_stream(v, "PUT", demo.api_key, f"listenKey={fresh}") == no_such
            keys.validity_ns = VALIDITY_SECONDS * 1_000_000_000
            assert await open_key(v, demo) != fresh

            # Revoking the API key expires its listen key too.
            token, _ = await new_user(v.http, v.server, "revoker")
            created = await new_key(v.http, v.server, token)
            revoker = Trader(created["apiKey"], created["secretKey"], 0)
            doomed = await open_key(v, revoker)
            async with v.http.ws_connect(ws_url(v.server, f"/ws/{doomed}")) as ws:
                status, _ = await call(
                    v.http, v.server, "DELETE", f"/api/v1/me/api-keys/{created['id']}", token=token
                )
                assert status == 200
                (expired,) = await frames_until(ws, kind("listenKeyExpired"))
                assert expired["listenKey"] == doomed
            assert await user_stream(v, "POST", revoker.api_key) == (
                401,
                {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."},
            )

            # /ws/<label>: a plain connection (CCXT's /ws/0, an expired key) that SUBSCRIBEs.
            for label in ("0", "17", fresh):
                async with v.http.ws_connect(ws_url(v.server, f"/ws/{label}")) as ws:
                    reply = await request(
                        ws, {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}
                    )
                    assert reply == {"result": None, "id": 1}
            # Refused as before: a malformed stream name, a label next to other segments
            # or in /stream, a segment of other characters.
            for path, name in (
                ("/ws/btcusdt@nonsense", "btcusdt@nonsense"),
                ("/ws/0/btcusdt@trade", "0"),
                ("/stream?streams=0", "0"),
                (f"/stream?streams={fresh}", fresh),
                ("/ws/a.b", "a.b"),
            ):
                async with v.http.ws_connect(ws_url(v.server, path)) as ws:
                    assert await closed_with(ws) == (1008, f"Invalid stream name: {name}")

    run(scenario)


def test_account_events_match_rest_for_rest_and_gateway_orders(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with venue(tmp_path) as v:
            demo, maker = v.demo, v.maker
            # An order from before the listen key: its state is followed from the start.
            early = await v.ok(
                demo, "POST", ORDER, limit("SELL", "0.003", "70000", newClientOrderId="early")
            )
            demo_key, maker_key = await open_key(v, demo), await open_key(v, maker)
            async with (
                v.http.ws_connect(ws_url(v.server, f"/ws/{demo_key}")) as ws,
                v.http.ws_connect(ws_url(v.server, f"/ws/{maker_key}")) as maker_ws,
            ):
                seen: list[Frame] = []
                maker_seen: list[Frame] = []

                async def demo_frames(done: Callable[[Frame], bool]) -> list[Frame]:
                    frames = await frames_until(ws, done)
                    seen.extend(frames)
                    return frames

                # A resting LIMIT order from REST: NEW, then the held USDT.
                placed = await v.ok(
                    demo, "POST", ORDER, limit("BUY", "0.01", "50000", newClientOrderId="ladder-1")
                )
                order_id = placed["orderId"]
                frames = await demo_frames(kind("outboundAccountPosition"))
                (new,) = reports(frames)
                order = await v.ok(demo, "GET", ORDER, {"symbol": SYMBOL, "orderId": str(order_id)})
                check_against_order(new, order)
                assert (new["x"], new["X"], new["c"], new["C"]) == ("NEW", "NEW", "ladder-1", "")
                assert (new["l"], new["z"], new["L"], new["Z"]) == (
                    "0.00000000",
                    "0.00000000",
                    "0.00000000",
                    "0.00000000",
                )
                assert (new["n"], new["N"], new["t"], new["m"], new["w"]) == (
                    "0",
                    None,
                    -1,
                    False,
                    True,
                )
                assert new["T"] == placed["transactTime"]
                assert await check_position(v, demo, frames[-1]) == {"USDT"}

                # The maker sells into it twice: TRADE reports, as REST's myTrades.
                for quantity, status in (("0.004", "PARTIALLY_FILLED"), ("0.006", "FILLED")):
                    await v.ok(maker, "POST", ORDER, limit("SELL", quantity, "49990"))
                    frames = await demo_frames(kind("outboundAccountPosition"))
                    (trade,) = reports(frames)
                    order = await v.ok(
                        demo, "GET", ORDER, {"symbol": SYMBOL, "orderId": str(order_id)}
                    )
                    mine = await v.ok(demo, "GET", "/api/v3/myTrades", {"symbol": SYMBOL})
                    (fill,) = [t for t in mine if t["id"] == trade["t"]]
                    check_against_order(trade, order)
                    assert (trade["x"], trade["X"], trade["c"]) == ("TRADE", status, "ladder-1")
                    assert (trade["l"], trade["L"], trade["Y"]) == (
                        fill["qty"],
                        fill["price"],
                        fill["quoteQty"],
                    )
                    assert (trade["n"], trade["N"], trade["m"]) == (
                        fill["commission"],
                        fill["commissionAsset"],
                        fill["isMaker"],
                    )
                    assert trade["m"] is True
                    assert fill["orderId"] == order_id
                    assert trade["T"] == fill["time"]
                    assert (trade["z"], trade["Z"]) == (
                        order["executedQty"],
                        order["cummulativeQuoteQty"],
                    )
                    assert order["status"] == status
                    assert trade["w"] is (status != "FILLED")
                    assert await check_position(v, demo, frames[-1]) == {"BTC", "USDT"}
                    # The maker's own stream has its side of the same trade (taker).
                    frames = await frames_until(maker_ws, kind("outboundAccountPosition"))
                    maker_seen.extend(frames)
                    taker_side = [r for r in reports(frames) if r["x"] == "TRADE"]
                    assert [(r["t"], r["m"], r["L"]) for r in taker_side] == [
                        (trade["t"], False, trade["L"])
                    ]
                    await check_position(v, maker, frames[-1])

                # Amend keepPriority: REPLACED with the new quantity; then a cancel: CANCELED.
                second = await v.ok(
                    demo, "POST", ORDER, limit("SELL", "0.02", "60000", newClientOrderId="ask-1")
                )
                await demo_frames(kind("outboundAccountPosition"))
                params = {"symbol": SYMBOL, "orderId": str(second["orderId"]), "newQty": "0.015"}
                await v.ok(demo, "PUT", "/api/v3/order/amend/keepPriority", params)
                frames = await demo_frames(kind("outboundAccountPosition"))
                (amended,) = reports(frames)
                query = {"symbol": SYMBOL, "orderId": str(second["orderId"])}
                check_against_order(amended, await v.ok(demo, "GET", ORDER, query))
                assert (amended["x"], amended["X"], amended["q"]) == (
                    "REPLACED",
                    "NEW",
                    "0.01500000",
                )
                assert await check_position(v, demo, frames[-1]) == {"BTC"}
                await v.ok(demo, "DELETE", ORDER, query)
                frames = await demo_frames(kind("outboundAccountPosition"))
                (cancelled,) = reports(frames)
                check_against_order(cancelled, await v.ok(demo, "GET", ORDER, query))
                assert (cancelled["x"], cancelled["X"], cancelled["w"]) == (
                    "CANCELED",
                    "CANCELED",
                    False,
                )
                assert (cancelled["c"], cancelled["C"]) == ("ask-1", "ask-1")
                assert await check_position(v, demo, frames[-1]) == {"BTC"}

                # The binary gateway: the same account's stream, numeric client ids as REST.
                login = v.server.demo_login
                assert login is not None
                session = await connect(
                    v.server.gateway_host,
                    v.server.gateway_port,
                    key_id=v.server.demo_login_key_id,
                    secret=login.secret.encode(),
                )
                try:
                    accepted = await session.new_order(
                        1, c.Side.BUY, 500_000, 4_500_000, client_order_id=77
                    ).ok()
                    frames = await demo_frames(kind("outboundAccountPosition"))
                    (gateway_new,) = reports(frames)
                    query = {"symbol": SYMBOL, "orderId": str(accepted.order_id)}
                    order = await v.ok(demo, "GET", ORDER, query)
                    check_against_order(gateway_new, order)
                    assert (gateway_new["x"], gateway_new["c"]) == ("NEW", "77")
                    assert order["clientOrderId"] == "77"
                    assert (order["price"], order["origQty"]) == ("45000.00000000", "0.00500000")
                    await check_position(v, demo, frames[-1])
                    await session.cancel(accepted.order_id).ok()
                    frames = await demo_frames(kind("outboundAccountPosition"))
                    (gateway_cancel,) = reports(frames)
                    assert (gateway_cancel["x"], gateway_cancel["i"]) == (
                        "CANCELED",
                        accepted.order_id,
                    )
                    await check_position(v, demo, frames[-1])
                finally:
                    await session.logout()
                    await session.close()

                # An operator deposit: balanceUpdate, then the position; a withdrawal: -d.
                deposit: dict[str, Any] = {
                    "account": demo.account,
                    "asset": "USDT",
                    "amount": "250.5",
                    "tx_id": "u:1",
                }
                http_status, credited = await admin(
                    v.http, v.server, "POST", "/deposits", demo_operator_token(v.server), deposit
                )
                assert http_status == 200, credited
                frames = await demo_frames(kind("outboundAccountPosition"))
                assert [f["e"] for f in frames] == ["balanceUpdate", "outboundAccountPosition"]
                assert (frames[0]["a"], frames[0]["d"]) == ("USDT", "250.50000000")
                assert await check_position(v, demo, frames[-1]) == {"USDT"}
                ack = await v.server.exchange.bridge.submit(
                    m.Withdraw(account=demo.account, asset=USDT.id, amount=12 * 10**8)
                )
                assert ack.rejection() is None
                frames = await demo_frames(kind("outboundAccountPosition"))
                assert [f["e"] for f in frames] == ["balanceUpdate", "outboundAccountPosition"]
                assert (frames[0]["a"], frames[0]["d"]) == ("USDT", "-12.00000000")
                assert frames[0]["T"] == ack.timestamp_ns // 1_000_000
                await check_position(v, demo, frames[-1])

                # The early order: a partial fill, then a cancel, as REST shows them.
                query = {"symbol": SYMBOL, "orderId": str(early["orderId"])}
                await v.ok(maker, "POST", ORDER, limit("BUY", "0.001", "70000"))
                frames = await demo_frames(kind("outboundAccountPosition"))
                (partial,) = reports(frames)
                order = await v.ok(demo, "GET", ORDER, query)
                check_against_order(partial, order)
                assert (partial["x"], partial["X"], partial["c"]) == (
                    "TRADE",
                    "PARTIALLY_FILLED",
                    "early",
                )
                assert (partial["z"], partial["Z"]) == (
                    order["executedQty"],
                    order["cummulativeQuoteQty"],
                )
                assert partial["z"] == "0.00100000"
                await check_position(v, demo, frames[-1])
                await v.ok(demo, "DELETE", ORDER, query)
                frames = await demo_frames(kind("outboundAccountPosition"))
                (cancelled,) = reports(frames)
                order = await v.ok(demo, "GET", ORDER, query)
                check_against_order(cancelled, order)
                assert (cancelled["x"], cancelled["X"], cancelled["z"]) == (
                    "CANCELED",
                    "CANCELED",
                    order["executedQty"],
                )
                await check_position(v, demo, frames[-1])
                maker_seen += await frames_until(maker_ws, kind("outboundAccountPosition"))

                # Each stream has its own account's orders only. The maker's deposit is the
                # last thing on its stream: everything before it has arrived.
                maker_deposit = {**deposit, "account": maker.account, "tx_id": "u:2"}
                token = demo_operator_token(v.server)
                http_status, credited = await admin(
                    v.http, v.server, "POST", "/deposits", token, maker_deposit
                )
                assert http_status == 200, credited
                maker_seen += await frames_until(maker_ws, kind("balanceUpdate"))
                demo_orders = await v.ok(demo, "GET", "/api/v3/allOrders", {"symbol": SYMBOL})
                maker_orders = await v.ok(maker, "GET", "/api/v3/allOrders", {"symbol": SYMBOL})
                demo_ids = {o["orderId"] for o in demo_orders}
                maker_ids = {o["orderId"] for o in maker_orders}
                assert {r["i"] for r in reports(seen)} == demo_ids
                assert {r["i"] for r in reports(maker_seen)} == maker_ids
                assert not any(
                    f["e"] == "balanceUpdate" and f["d"] == "-12.00000000" for f in maker_seen
                )
                # Every order's last report agrees with REST's final status.
                final = {r["i"]: r["X"] for r in reports(seen)}
                assert final == {o["orderId"]: o["status"] for o in demo_orders}

    run(scenario)
