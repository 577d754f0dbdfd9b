"""The signed trading endpoints (``controlplane.api.trading``) over real HTTP against the
real server: orders through their whole life, fills, fees and balances, client order ids,
cancel-replace, amend, and Binance's exact error for every bad request, after which nothing
has changed.

Each test starts ``bourse serve`` on a fresh directory (demo listing: BTCUSDT, 8-decimal
assets, price tick 0.01, lot 0.00001 BTC, minimum notional 5 USDT), stops the demo market
maker (its quotes are mass-cancelled) so the book holds only the tests' orders, funds a
second user ("maker") through the engine and puts both on a fee tier (maker 10 bps, taker
20 bps)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from controlplane import messages as m
from controlplane.demo import BTC, DEMO_USER, USDT
from controlplane.serve import Server, start
from tests.test_accounts import config, new_key, new_user, now_ms, run

SYMBOL = "BTCUSDT"
MARKET = 1
COIN = 10**8
MAKER_BPS, TAKER_BPS = 10, 20
ORDER, OPEN_ORDERS = "/api/v3/order", "/api/v3/openOrders"


@dataclass(frozen=True)
class Trader:
    api_key: str
    secret: str
    account: int


@dataclass
class Venue:
    server: Server
    http: aiohttp.ClientSession
    demo: Trader
    maker: Trader

    async def call(
        self,
        trader: Trader,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """A SIGNED request: parameters in the query string for GET and DELETE, in the form
        body otherwise (Binance's totalParams = query + body)."""
        payload = urlencode({**(params or {}), "timestamp": str(now_ms())})
        signature = hmac.new(trader.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        signed = f"{payload}&signature={signature}"
        headers = {"X-MBX-APIKEY": trader.api_key}
        url = self.server.base_url + path
        if method in ("GET", "DELETE"):
            url, body = f"{url}?{signed}", None
        else:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            body = signed
        async with self.http.request(method, url, data=body, headers=headers) as response:
            return response.status, await response.json()

    async def weight_of(self, trader: Trader, path: str, params: Mapping[str, str]) -> int:
        """The REQUEST_WEIGHT a GET costs: the used weight's increase over a ``ping``."""

        async def used(url: str, headers: Mapping[str, str]) -> int:
            async with self.http.get(url, headers=headers) as response:
                assert response.status == 200
                return int(response.headers["X-MBX-USED-WEIGHT-1M"])

        payload = urlencode({**params, "timestamp": str(now_ms())})
        signature = hmac.new(trader.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        base = self.server.base_url
        before = await used(f"{base}/api/v3/ping", {})
        after = await used(
            f"{base}{path}?{payload}&signature={signature}", {"X-MBX-APIKEY": trader.api_key}
        )
        return after - before

    async def ok(
        self, trader: Trader, method: str, path: str, params: Mapping[str, str] | None = None
    ) -> Any:
        status, body = await self.call(trader, method, path, params)
        assert status == 200, (path, params, body)
        return body

    async def balances(self, trader: Trader) -> dict[str, tuple[Decimal, Decimal]]:
        body = await self.ok(trader, "GET", "/api/v3/account")
        return {b["asset"]: (Decimal(b["free"]), Decimal(b["locked"])) for b in body["balances"]}

    async def open_ids(self, trader: Trader) -> list[int]:
        return [o["orderId"] for o in await self.ok(trader, "GET", OPEN_ORDERS)]

    async def state(self, trader: Trader) -> tuple[Any, ...]:
        """Everything a refused request must leave as it was."""
        orders = await self.ok(trader, "GET", "/api/v3/allOrders", {"symbol": SYMBOL})
        trades = await self.ok(trader, "GET", "/api/v3/myTrades", {"symbol": SYMBOL})
        return await self.balances(trader), orders, trades


def limit(side: str, quantity: str, price: str, tif: str = "GTC", **more: str) -> dict[str, str]:
    return {
        "symbol": SYMBOL,
        "side": side,
        "type": "LIMIT",
        "timeInForce": tif,
        "quantity": quantity,
        "price": price,
        **more,
    }


def error(status: int, code: int, msg: str) -> tuple[int, dict[str, Any]]:
    return status, {"code": code, "msg": msg}


def fee(price: str, qty: str, bps: int) -> Decimal:
    """The engine's fee: bps of the fill's quote value in atoms, rounded down."""
    atoms = int(Decimal(price) * Decimal(qty) * COIN)
    return Decimal(atoms * bps // 10_000) / COIN


@asynccontextmanager
async def venue(tmp_path: Path) -> AsyncIterator[Venue]:
    server = await start(config(tmp_path / "bourse"))
    try:
        for task in server.tasks:  # the demo market maker: its quotes go with it
            task.cancel()
        await asyncio.wait(server.tasks)
        exchange = server.exchange
        async with aiohttp.ClientSession() as http:
            token, user = await new_user(http, server, "maker")
            key = await new_key(http, server, token)
            maker = Trader(key["apiKey"], key["secretKey"], user["accountId"])
            login = server.demo_login
            assert login is not None
            demo = Trader(login.api_key, login.secret, DEMO_USER)
            acks = await exchange.bridge.submit_many(
                [
                    m.Deposit(account=maker.account, asset=BTC.id, amount=10 * COIN),
                    m.Deposit(account=maker.account, asset=USDT.id, amount=1_000_000 * COIN),
                    m.SetFeeTier(tier=1, maker_bps=MAKER_BPS, taker_bps=TAKER_BPS),
                    m.SetAccountFeeTier(account=maker.account, fee_tier=1),
                    m.SetAccountFeeTier(account=demo.account, fee_tier=1),
                ]
            )
            assert all(a.rejection() is None for a in acks)
            await exchange.feed.wait_for(acks[-1].seq)
            node = exchange.node
            assert node.depth(MARKET, "buy", 1) == node.depth(MARKET, "sell", 1) == []
            yield Venue(server, http, demo, maker)
    finally:
        await server.stop()


def test_limit_order_life_client_ids_amend_and_cancel(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with venue(tmp_path) as v:
            demo = v.demo
            # The commissions are the account's fee tier in the engine.
            status, account = await v.call(demo, "GET", "/api/v3/account")
            assert status == 200
            assert (account["makerCommission"], account["takerCommission"]) == (
                MAKER_BPS,
                TAKER_BPS,
            )
            rates = {"maker": "0.00100000", "taker": "0.00200000"}
            assert {k: account["commissionRates"][k] for k in rates} == rates
            status, commission = await v.call(
                demo, "GET", "/api/v3/account/commission", {"symbol": "BTCUSDT"}
            )
            assert status == 200
            assert commission["symbol"] == "BTCUSDT"
            assert commission["standardCommission"]["maker"] == rates["maker"]
            assert commission["standardCommission"]["taker"] == rates["taker"]
            for params, code in [({}, -1102), ({"symbol": "DOGEUSDT"}, -1121)]:
                status, err = await v.call(demo, "GET", "/api/v3/account/commission", params)
                assert (status, err["code"]) == (400, code)
            before = await v.balances(demo)
            placed = await v.ok(
                demo, "POST", ORDER, limit("BUY", "0.01", "50000", newClientOrderId="my-order_1")
            )
            assert placed["status"] == "NEW"
            assert placed["fills"] == []
            assert placed["clientOrderId"] == "my-order_1"
            # The order held funds: the account's balances last changed then.
            assert 0 < account["updateTime"] < placed["transactTime"]
            status, account = await v.call(demo, "GET", "/api/v3/account")
            assert account["updateTime"] == placed["transactTime"]
            assert placed["orderListId"] == -1
            assert (placed["price"], placed["origQty"]) == ("50000.00000000", "0.01000000")
            assert (placed["type"], placed["side"], placed["timeInForce"]) == (
                "LIMIT",
                "BUY",
                "GTC",
            )
            assert placed["selfTradePreventionMode"] == "NONE"
            order_id = placed["orderId"]
            # The hold: 500 USDT plus the highest fee the order could pay (20 bps).
            free, locked = (await v.balances(demo))["USDT"]
            assert locked == Decimal("500") + fee("50000", "0.01", TAKER_BPS)
            assert free + locked == sum(before["USDT"])

            by_id = await v.ok(demo, "GET", ORDER, {"symbol": SYMBOL, "orderId": str(order_id)})
            by_client = await v.ok(
                demo, "GET", ORDER, {"symbol": SYMBOL, "origClientOrderId": "my-order_1"}
            )
            assert by_id == by_client
            assert by_id["status"] == "NEW"
            assert by_id["isWorking"] is True
            assert by_id["time"] == by_id["workingTime"] == placed["transactTime"]
            assert await v.open_ids(demo) == [order_id]
            assert [o["orderId"] for o in await v.ok(demo, "GET", OPEN_ORDERS, {"symbol": SYMBOL})]

            # The client id is taken while the order is open: the engine refuses, no change.
            state = await v.state(demo)
            assert await v.call(
                demo, "POST", ORDER, limit("BUY", "0.02", "49000", newClientOrderId="my-order_1")
            ) == error(400, -2010, "Duplicate order sent.")
            assert await v.state(demo) == state

            # Amend keeping priority: the quantity goes down, so does the hold.
            amended = await v.ok(
                demo,
                "PUT",
                "/api/v3/order/amend/keepPriority",
                {"symbol": SYMBOL, "orderId": str(order_id), "newQty": "0.004"},
            )
            assert amended["amendedOrder"]["qty"] == "0.00400000"
            assert amended["amendedOrder"]["status"] == "NEW"
            assert amended["amendedOrder"]["clientOrderId"] == "my-order_1"
            assert amended["transactTime"] >= placed["transactTime"]
            assert (await v.balances(demo))["USDT"][1] == Decimal("200") + fee(
                "50000", "0.004", TAKER_BPS
            )
            shown = await v.ok(demo, "GET", ORDER, {"symbol": SYMBOL, "orderId": str(order_id)})
            assert shown["origQty"] == "0.00400000"
            for new_qty, expected in (
                ("0.004", error(400, -2038, "Order amend (quantity increase) is not supported.")),
                ("0.005", error(400, -2038, "Order amend (quantity increase) is not supported.")),
                ("0.000015", error(400, -1013, "Filter failure: LOT_SIZE")),
                ("0.00001", error(400, -1013, "Filter failure: NOTIONAL")),
            ):
                params = {"symbol": SYMBOL, "orderId": str(order_id), "newQty": new_qty}
                state = await v.state(demo)
                got = await v.call(demo, "PUT", "/api/v3/order/amend/keepPriority", params)
                assert got == expected, new_qty
                assert await v.state(demo) == state

            # Cancel by client id: CANCELED, the hold released, listed as such.
            cancelled = await v.ok(
                demo, "DELETE", ORDER, {"symbol": SYMBOL, "origClientOrderId": "my-order_1"}
            )
            assert cancelled["status"] == "CANCELED"
            assert cancelled["orderId"] == order_id
            assert cancelled["origClientOrderId"] == "my-order_1"
            assert len(cancelled["clientOrderId"]) == 22
            assert (await v.balances(demo))["USDT"] == before["USDT"]
            assert await v.open_ids(demo) == []
            listed = await v.ok(demo, "GET", "/api/v3/allOrders", {"symbol": SYMBOL})
            assert [(o["orderId"], o["status"]) for o in listed] == [(order_id, "CANCELED")]
            assert await v.call(
                demo, "DELETE", ORDER, {"symbol": SYMBOL, "orderId": str(order_id)}
            ) == error(400, -2011, "Unknown order sent.")

            # Once done, the client id may be used again; queries find the newest order.
            again = await v.ok(
                demo, "POST", ORDER, limit("BUY", "0.01", "49000", newClientOrderId="my-order_1")
            )
            assert again["orderId"] != order_id
            found = await v.ok(
                demo, "GET", ORDER, {"symbol": SYMBOL, "origClientOrderId": "my-order_1"}
            )
            assert found["orderId"] == again["orderId"]
            # A numeric client id is the engine's own (the binary gateway's) id; one sent
            # without a client id gets a generated one.
            numeric = await v.ok(
                demo, "POST", ORDER, limit("BUY", "0.01", "48000", newClientOrderId="12345")
            )
            assert numeric["clientOrderId"] == "12345"
            generated = await v.ok(demo, "POST", ORDER, limit("SELL", "0.01", "70000"))
            assert len(generated["clientOrderId"]) == 22
            shown = await v.ok(
                demo,
                "GET",
                ORDER,
                {"symbol": SYMBOL, "origClientOrderId": generated["clientOrderId"]},
            )
            assert shown["orderId"] == generated["orderId"]
            assert await v.call(
                demo, "GET", ORDER, {"symbol": SYMBOL, "origClientOrderId": "never-used"}
            ) == error(400, -2013, "Order does not exist.")
            assert await v.call(
                demo,
                "GET",
                ORDER,
                {"symbol": SYMBOL, "orderId": str(again["orderId"]), "origClientOrderId": "12345"},
            ) == error(400, -2013, "Order does not exist.")

            # Cancel all of the symbol's open orders.
            open_now = await v.open_ids(demo)
            assert len(open_now) == 3
            gone = await v.ok(demo, "DELETE", OPEN_ORDERS, {"symbol": SYMBOL})
            assert sorted(o["orderId"] for o in gone) == sorted(open_now)
            assert {o["status"] for o in gone} == {"CANCELED"}
            assert {o["origClientOrderId"] for o in gone} == {
                "my-order_1",
                "12345",
                generated["clientOrderId"],
            }
            assert await v.open_ids(demo) == []
            assert (await v.balances(demo)) == before
            assert await v.call(demo, "DELETE", OPEN_ORDERS, {"symbol": SYMBOL}) == error(
                400, -2011, "Unknown order sent."
            )
            statuses = await v.ok(demo, "GET", "/api/v3/allOrders", {"symbol": SYMBOL})
            assert {o["status"] for o in statuses} == {"CANCELED"}
            assert len(statuses) == 4

    run(scenario)


def test_market_orders_fills_fees_balances_and_time_in_force(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with venue(tmp_path) as v:
            demo, maker = v.demo, v.maker
            asks = [
                await v.ok(maker, "POST", ORDER, limit("SELL", "0.01", "60000")),
                await v.ok(maker, "POST", ORDER, limit("SELL", "0.02", "60010")),
            ]
            before = await v.balances(demo)
            bought = await v.ok(
                demo,
                "POST",
                ORDER,
                {"symbol": SYMBOL, "side": "BUY", "type": "MARKET", "quantity": "0.015"},
            )
            assert bought["status"] == "FILLED"
            assert bought["type"] == "MARKET"
            fills = bought["fills"]
            assert [(f["price"], f["qty"]) for f in fills] == [
                ("60000.00000000", "0.01000000"),
                ("60010.00000000", "0.00500000"),
            ]
            executed = sum(Decimal(f["qty"]) for f in fills)
            spent = sum(Decimal(f["price"]) * Decimal(f["qty"]) for f in fills)
            commission = sum(Decimal(f["commission"]) for f in fills)
            assert Decimal(bought["executedQty"]) == executed == Decimal("0.015")
            assert Decimal(bought["cummulativeQuoteQty"]) == spent
            for f in fills:
                assert f["commissionAsset"] == "USDT"
                assert Decimal(f["commission"]) == fee(f["price"], f["qty"], TAKER_BPS) > 0
            after = await v.balances(demo)
            assert after["BTC"] == (before["BTC"][0] + executed, Decimal(0))
            assert after["USDT"] == (before["USDT"][0] - spent - commission, Decimal(0))

            mine = await v.ok(demo, "GET", "/api/v3/myTrades", {"symbol": SYMBOL})
            assert [t["id"] for t in mine] == [f["tradeId"] for f in fills]
            for t, f in zip(mine, fills, strict=True):
                assert (t["price"], t["qty"], t["commission"]) == (
                    f["price"],
                    f["qty"],
                    f["commission"],
                )
                assert t["orderId"] == bought["orderId"]
                assert t["commissionAsset"] == "USDT"
                assert (t["isBuyer"], t["isMaker"], t["isBestMatch"]) == (True, False, True)
                assert Decimal(t["quoteQty"]) == Decimal(t["price"]) * Decimal(t["qty"])
            theirs = await v.ok(maker, "GET", "/api/v3/myTrades", {"symbol": SYMBOL})
            assert [(t["isBuyer"], t["isMaker"]) for t in theirs] == [(False, True)] * 2
            assert [Decimal(t["commission"]) for t in theirs] == [
                fee(f["price"], f["qty"], MAKER_BPS) for f in fills
            ]
            only_first = await v.ok(
                maker,
                "GET",
                "/api/v3/myTrades",
                {"symbol": SYMBOL, "orderId": str(asks[0]["orderId"])},
            )
            assert [t["id"] for t in only_first] == [fills[0]["tradeId"]]
            first_ask = await v.ok(
                maker, "GET", ORDER, {"symbol": SYMBOL, "orderId": str(asks[0]["orderId"])}
            )
            assert first_ask["status"] == "FILLED"

            # LIMIT_MAKER that would take: refused, nothing changes.
            state = await v.state(demo)
            assert await v.call(
                demo,
                "POST",
                ORDER,
                {
                    "symbol": SYMBOL,
                    "side": "BUY",
                    "type": "LIMIT_MAKER",
                    "quantity": "0.001",
                    "price": "60010",
                },
            ) == error(400, -2010, "Order would immediately match and take.")
            assert await v.state(demo) == state
            # One that rests is answered ACK by default.
            resting = await v.ok(
                demo,
                "POST",
                ORDER,
                {
                    "symbol": SYMBOL,
                    "side": "BUY",
                    "type": "LIMIT_MAKER",
                    "quantity": "0.001",
                    "price": "59000",
                },
            )
            assert set(resting) == {
                "symbol",
                "orderId",
                "orderListId",
                "clientOrderId",
                "transactTime",
            }
            shown = await v.ok(
                demo, "GET", ORDER, {"symbol": SYMBOL, "orderId": str(resting["orderId"])}
            )
            assert (shown["type"], shown["status"]) == ("LIMIT_MAKER", "NEW")

            # IOC takes what there is (0.015 left at 60010) and expires the rest.
            ioc = await v.ok(demo, "POST", ORDER, limit("BUY", "0.02", "60010", "IOC"))
            assert (ioc["status"], ioc["executedQty"]) == ("EXPIRED", "0.01500000")
            assert await v.open_ids(demo) == [resting["orderId"]]
            # FOK: all or nothing.
            await v.ok(maker, "POST", ORDER, limit("SELL", "0.01", "60020"))
            state = await v.state(demo)
            fok = await v.ok(demo, "POST", ORDER, limit("BUY", "0.02", "60020", "FOK"))
            assert (fok["status"], fok["executedQty"], fok["fills"]) == (
                "EXPIRED",
                "0.00000000",
                [],
            )
            balances, orders, trades = await v.state(demo)
            assert (balances, trades) == (state[0], state[2])
            assert len(orders) == len(state[1]) + 1
            fok = await v.ok(demo, "POST", ORDER, limit("BUY", "0.01", "60020", "FOK"))
            assert (fok["status"], fok["executedQty"]) == ("FILLED", "0.01000000")

            # MARKET by quote amount: refused with an empty ask side, else spends at most it.
            assert await v.call(
                demo,
                "POST",
                ORDER,
                {"symbol": SYMBOL, "side": "BUY", "type": "MARKET", "quoteOrderQty": "100"},
            ) == error(400, -2010, "Order book liquidity is less than symbol minimum quantity.")
            await v.ok(maker, "POST", ORDER, limit("SELL", "0.1", "60000"))
            before = await v.balances(demo)
            by_quote = await v.ok(
                demo,
                "POST",
                ORDER,
                {
                    "symbol": SYMBOL,
                    "side": "BUY",
                    "type": "MARKET",
                    "quoteOrderQty": "100",
                    "newOrderRespType": "RESULT",
                },
            )
            assert "fills" not in by_quote
            assert (by_quote["status"], by_quote["origQuoteOrderQty"]) == (
                "FILLED",
                "100.00000000",
            )
            quote_spent = Decimal(by_quote["cummulativeQuoteQty"])
            assert Decimal("100") - Decimal("0.6") < quote_spent <= Decimal("100")
            assert Decimal(by_quote["executedQty"]) * 60000 == quote_spent
            after = await v.balances(demo)
            paid = before["USDT"][0] - after["USDT"][0]
            assert paid == quote_spent + fee("60000", by_quote["executedQty"], TAKER_BPS)
            assert await v.call(
                demo,
                "POST",
                ORDER,
                {"symbol": SYMBOL, "side": "SELL", "type": "MARKET", "quoteOrderQty": "100"},
            ) == error(400, -2010, "Quote order qty market orders are not support for this symbol.")
            # A market sell by quantity against the demo user's resting bid (self-trade
            # allowed with NONE): the maker sells into it.
            sold = await v.ok(
                maker,
                "POST",
                ORDER,
                {"symbol": SYMBOL, "side": "SELL", "type": "MARKET", "quantity": "0.001"},
            )
            assert sold["status"] == "FILLED"
            assert sold["fills"][0]["price"] == "59000.00000000"
            done = await v.ok(
                demo, "GET", ORDER, {"symbol": SYMBOL, "orderId": str(resting["orderId"])}
            )
            assert done["status"] == "FILLED"

            # Self-trade prevention: the demo user's buy meets its own sell, the best ask.
            own_ask = await v.ok(demo, "POST", ORDER, limit("SELL", "0.001", "59900"))
            state = await v.state(demo)
            stopped = await v.ok(
                demo,
                "POST",
                ORDER,
                limit("BUY", "0.001", "59900", selfTradePreventionMode="EXPIRE_TAKER"),
            )
            assert (stopped["status"], stopped["selfTradePreventionMode"]) == (
                "EXPIRED_IN_MATCH",
                "EXPIRE_TAKER",
            )
            assert stopped["fills"] == []
            assert await v.open_ids(demo) == [own_ask["orderId"]]
            balances, _, trades = await v.state(demo)
            assert (balances, trades) == (state[0], state[2])

    run(scenario)


def test_cancel_replace_and_every_refusal_changes_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with venue(tmp_path) as v:
            demo, maker = v.demo, v.maker
            await v.ok(maker, "POST", ORDER, limit("SELL", "0.01", "61000"))
            first = await v.ok(demo, "POST", ORDER, limit("BUY", "0.01", "50000"))
            path = "/api/v3/order/cancelReplace"

            def replace_params(cancel: str, mode: str, **new: str) -> dict[str, str]:
                order = limit("BUY", "0.02", "51000") | new
                return {**order, "cancelReplaceMode": mode, "cancelOrderId": cancel}

            both = await v.ok(
                demo, "POST", path, replace_params(str(first["orderId"]), "STOP_ON_FAILURE")
            )
            assert (both["cancelResult"], both["newOrderResult"]) == ("SUCCESS", "SUCCESS")
            assert both["cancelResponse"]["status"] == "CANCELED"
            assert both["cancelResponse"]["orderId"] == first["orderId"]
            second = both["newOrderResponse"]
            assert (second["status"], second["price"]) == ("NEW", "51000.00000000")
            assert await v.open_ids(demo) == [second["orderId"]]

            state = await v.state(demo)
            status, body = await v.call(
                demo, "POST", path, replace_params(str(first["orderId"]), "STOP_ON_FAILURE")
            )
            assert (status, body) == (
                400,
                {
                    "code": -2022,
                    "msg": "Order cancel-replace failed.",
                    "data": {
                        "cancelResult": "FAILURE",
                        "newOrderResult": "NOT_ATTEMPTED",
                        "cancelResponse": {"code": -2011, "msg": "Unknown order sent."},
                        "newOrderResponse": None,
                    },
                },
            )
            assert await v.state(demo) == state
            # Cancel succeeds, the new order is refused by the engine: 409.
            status, body = await v.call(
                demo,
                "POST",
                path,
                replace_params(
                    str(second["orderId"]), "STOP_ON_FAILURE", type="LIMIT_MAKER", price="61000"
                )
                | {"timeInForce": ""},
            )
            assert (status, body["code"]) == (400, -1105), body
            params = replace_params(str(second["orderId"]), "STOP_ON_FAILURE", price="61000")
            params |= {"type": "LIMIT_MAKER"}
            del params["timeInForce"]
            status, body = await v.call(demo, "POST", path, params)
            assert (status, body["code"]) == (409, -2021), body
            assert body["msg"] == "Order cancel-replace partially failed."
            data = body["data"]
            assert (data["cancelResult"], data["newOrderResult"]) == ("SUCCESS", "FAILURE")
            assert data["cancelResponse"]["status"] == "CANCELED"
            assert data["newOrderResponse"] == {
                "code": -2010,
                "msg": "Order would immediately match and take.",
            }
            assert await v.open_ids(demo) == []
            # ALLOW_FAILURE: the cancel fails, the new order is placed: 409.
            status, body = await v.call(
                demo, "POST", path, replace_params(str(first["orderId"]), "ALLOW_FAILURE")
            )
            assert (status, body["code"]) == (409, -2021), body
            data = body["data"]
            assert (data["cancelResult"], data["newOrderResult"]) == ("FAILURE", "SUCCESS")
            assert data["newOrderResponse"]["status"] == "NEW"
            third = data["newOrderResponse"]["orderId"]
            assert await v.open_ids(demo) == [third]
            # Both fail: 400.
            state = await v.state(demo)
            status, body = await v.call(
                demo, "POST", path, {**params, "cancelReplaceMode": "ALLOW_FAILURE"}
            )
            assert (status, body["code"]) == (400, -2022), body
            data = body["data"]
            assert (data["cancelResult"], data["newOrderResult"]) == ("FAILURE", "FAILURE")
            assert await v.state(demo) == state

            # Every refusal below: Binance's code and message, and no change at all.
            state = await v.state(demo)
            market_buy = {"symbol": SYMBOL, "side": "BUY", "type": "MARKET"}
            cases: list[tuple[str, str, dict[str, str], tuple[int, dict[str, Any]]]] = [
                (
                    "POST",
                    ORDER,
                    {"side": "BUY", "type": "LIMIT"},
                    error(
                        400,
                        -1102,
                        "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
                    ),
                ),
                (
                    "POST",
                    ORDER,
                    limit("BUY", "1", "1") | {"symbol": "XYZ"},
                    error(400, -1121, "Invalid symbol."),
                ),
                ("POST", ORDER, limit("HOLD", "0.01", "50000"), error(400, -1117, "Invalid side.")),
                (
                    "POST",
                    ORDER,
                    limit("BUY", "0.01", "50000") | {"type": "ICEBERG"},
                    error(400, -1116, "Invalid orderType."),
                ),
                (
                    "POST",
                    ORDER,
                    limit("BUY", "0.01", "50000") | {"type": "STOP_LOSS"},
                    error(400, -2010, "Stop loss orders are not supported for this symbol."),
                ),
                (
                    "POST",
                    ORDER,
                    limit("BUY", "0.01", "50000", "GTX"),
                    error(400, -1115, "Invalid timeInForce."),
                ),
                (
                    "POST",
                    ORDER,
                    {k: v for k, v in limit("BUY", "0.01", "50000").items() if k != "price"},
                    error(
                        400,
                        -1102,
                        "Mandatory parameter 'price' was not sent, was empty/null, or malformed.",
                    ),
                ),
                (
                    "POST",
                    ORDER,
                    {k: v for k, v in limit("BUY", "1", "1").items() if k != "timeInForce"},
                    error(
                        400,
                        -1102,
                        "Mandatory parameter 'timeInForce' was not sent, was empty/null, or "
                        "malformed.",
                    ),
                ),
                (
                    "POST",
                    ORDER,
                    market_buy | {"quantity": "0.01", "timeInForce": "GTC"},
                    error(400, -1106, "Parameter 'timeInForce' sent when not required."),
                ),
                (
                    "POST",
                    ORDER,
                    market_buy | {"quantity": "0.01", "price": "60000"},
                    error(400, -1106, "Parameter 'price' sent when not required."),
                ),
                (
                    "POST",
                    ORDER,
                    market_buy,
                    error(
                        400,
                        -1102,
                        "Param 'quantity' or 'quoteOrderQty' must be sent, but both were "
                        "empty/null!",
                    ),
                ),
                (
                    "POST",
                    ORDER,
                    market_buy | {"quantity": "0.01", "quoteOrderQty": "100"},
                    error(400, -1106, "Parameter 'quoteOrderQty' sent when not required."),
                ),
                (
                    "POST",
                    ORDER,
                    limit("BUY", "0.01", "50000") | {"icebergQty": "0.001"},
                    error(400, -2010, "Iceberg orders are not supported for this symbol."),
                ),
                (
                    "POST",
                    ORDER,
                    limit("BUY", "0.01", "50000") | {"stopPrice": "1"},
                    error(400, -1106, "Parameter 'stopPrice' sent when not required."),
                ),
                (
                    "POST",
                    ORDER,
                    limit("BUY", "0.01", "50000") | {"colour": "red"},
                    error(
                        400,
                        -1104,
                        "Not all sent parameters were read; read '8' parameter(s) but was "
                        "sent '9'.",
                    ),
                ),
                (
                    "POST",
                    ORDER,
                    limit("BUY", "0.01", "50000") | {"selfTradePreventionMode": "SOMETIMES"},
                    error(
                        400,
                        -1130,
                        "Data sent for parameter 'selfTradePreventionMode' is not valid.",
                    ),
                ),
                (
                    "POST",
                    ORDER,
                    limit("BUY", "0.01", "50000") | {"newOrderRespType": "ALL"},
                    error(400, -1136, "Invalid newOrderRespType."),
                ),
                (
                    "POST",
                    ORDER,
                    limit("BUY", "0.01", "50000") | {"newClientOrderId": ""},
                    error(400, -1118, "New client order ID was empty."),
                ),
                (
                    "POST",
                    ORDER,
                    limit("BUY", "0.01", "50000") | {"newClientOrderId": "no spaces!"},
                    error(
                        400,
                        -1100,
                        "Illegal characters found in parameter 'newClientOrderId'; legal range "
                        "is '^[a-zA-Z0-9-_]{1,36}$'.",
                    ),
                ),
                (  # regression: `$` matched before a trailing newline
                    "POST",
                    ORDER,
                    limit("BUY", "0.01", "50000") | {"newClientOrderId": "abc\n"},
                    error(
                        400,
                        -1100,
                        "Illegal characters found in parameter 'newClientOrderId'; legal range "
                        "is '^[a-zA-Z0-9-_]{1,36}$'.",
                    ),
                ),
                (
                    "POST",
                    ORDER,
                    limit("BUY", "0.01\n", "50000"),
                    error(
                        400,
                        -1100,
                        "Illegal characters found in parameter 'quantity'; legal range is "
                        "'^([0-9]{1,20})(\\.[0-9]{1,20})?$'.",
                    ),
                ),
                (
                    "POST",
                    ORDER,
                    limit("BUY", "0.01", "50000") | {"newClientOrderId": "x" * 37},
                    error(
                        400,
                        -1100,
                        "Illegal characters found in parameter 'newClientOrderId'; legal range "
                        "is '^[a-zA-Z0-9-_]{1,36}$'.",
                    ),
                ),
                (
                    "POST",
                    ORDER,
                    limit("BUY", "0.01", "5e4"),
                    error(
                        400,
                        -1100,
                        "Illegal characters found in parameter 'price'; legal range is "
                        "'^([0-9]{1,20})(\\.[0-9]{1,20})?$'.",
                    ),
                ),
                (
                    "POST",
                    ORDER,
                    limit("BUY", "0.000000001", "50000"),
                    error(400, -1111, "Parameter 'quantity' has too much precision."),
                ),
                (
                    "POST",
                    ORDER,
                    limit("BUY", "0.01", "50000.000000001"),
                    error(400, -1111, "Parameter 'price' has too much precision."),
                ),
                (
                    "POST",
                    ORDER,
                    limit("BUY", "0.01", "50000.001"),
                    error(400, -1013, "Filter failure: PRICE_FILTER"),
                ),
                (
                    "POST",
                    ORDER,
                    limit("BUY", "0.01", "0"),
                    error(400, -1013, "Filter failure: PRICE_FILTER"),
                ),
                (
                    "POST",
                    ORDER,
                    limit("BUY", "0.000015", "50000"),
                    error(400, -1013, "Filter failure: LOT_SIZE"),
                ),
                (
                    "POST",
                    ORDER,
                    limit("BUY", "0", "50000"),
                    error(400, -1013, "Filter failure: LOT_SIZE"),
                ),
                (
                    "POST",
                    ORDER,
                    limit("BUY", "0.00001", "50000"),
                    error(400, -1013, "Filter failure: NOTIONAL"),
                ),
                (
                    "POST",
                    ORDER,
                    market_buy | {"quantity": "0.00005"},  # 3.05 USDT at the best ask
                    error(400, -1013, "Filter failure: NOTIONAL"),
                ),
                (
                    "POST",
                    ORDER,
                    market_buy | {"quoteOrderQty": "4.99"},
                    error(400, -1013, "Filter failure: NOTIONAL"),
                ),
                (
                    "POST",
                    ORDER,
                    limit("BUY", "100", "50000"),  # 5,000,000 USDT: more than the demo has
                    error(400, -2010, "Account has insufficient balance for requested action."),
                ),
                (
                    "POST",
                    "/api/v3/order/test",
                    limit("BUY", "0.01", "50000.001"),
                    error(400, -1013, "Filter failure: PRICE_FILTER"),
                ),
                (
                    "GET",
                    ORDER,
                    {"symbol": SYMBOL},
                    error(
                        400,
                        -1102,
                        "Param 'origClientOrderId' or 'orderId' must be sent, but both were "
                        "empty/null!",
                    ),
                ),
                (
                    "GET",
                    ORDER,
                    {"symbol": SYMBOL, "orderId": "12x"},
                    error(
                        400,
                        -1100,
                        "Illegal characters found in parameter 'orderId'; legal range is "
                        "'^[0-9]{1,20}$'.",
                    ),
                ),
                (
                    "GET",
                    ORDER,
                    {"symbol": SYMBOL, "origClientOrderId": ""},
                    error(400, -1119, "Original client order ID was empty."),
                ),
                (
                    "GET",
                    ORDER,
                    {"symbol": SYMBOL, "orderId": "999999"},
                    error(400, -2013, "Order does not exist."),
                ),
                (
                    "DELETE",
                    ORDER,
                    {"symbol": SYMBOL, "orderId": "999999"},
                    error(400, -2011, "Unknown order sent."),
                ),
                (
                    "DELETE",
                    ORDER,
                    {"symbol": SYMBOL, "orderId": str(third), "cancelRestrictions": "ONLY_FILLED"},
                    error(400, -1145, "Invalid cancelRestrictions"),
                ),
                (
                    "DELETE",
                    ORDER,
                    {
                        "symbol": SYMBOL,
                        "orderId": str(third),
                        "cancelRestrictions": "ONLY_PARTIALLY_FILLED",
                    },
                    error(400, -2011, "Order was not canceled due to cancel restrictions."),
                ),
                (
                    "DELETE",
                    OPEN_ORDERS,
                    {"symbol": "ETHUSDT"},
                    error(400, -2011, "Unknown order sent."),
                ),
                (
                    "GET",
                    "/api/v3/allOrders",
                    {"symbol": SYMBOL, "limit": "1001"},
                    error(
                        400,
                        -1100,
                        "Illegal characters found in parameter 'limit'; legal range is '1-1000'.",
                    ),
                ),
                (
                    "GET",
                    "/api/v3/allOrders",
                    {"symbol": SYMBOL, "startTime": "0", "endTime": str(2 * 86_400_000)},
                    error(400, -1127, "More than 24 hours between startTime and endTime."),
                ),
                (
                    "GET",
                    "/api/v3/myTrades",
                    {"symbol": SYMBOL, "fromId": "1", "startTime": "1"},
                    error(400, -1128, "Combination of optional parameters invalid."),
                ),
                (
                    "GET",
                    OPEN_ORDERS,
                    {"symbol": ""},
                    error(
                        400,
                        -1102,
                        "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
                    ),
                ),
                (
                    "POST",
                    path,
                    replace_params(str(third), "SOMETIMES"),
                    error(400, -1130, "Data sent for parameter 'cancelReplaceMode' is not valid."),
                ),
                (
                    "POST",
                    path,
                    {
                        k: v
                        for k, v in replace_params("1", "ALLOW_FAILURE").items()
                        if k != "cancelOrderId"
                    },
                    error(
                        400,
                        -1102,
                        "Param 'cancelOrigClientOrderId' or 'cancelOrderId' must be sent, but "
                        "both were empty/null!",
                    ),
                ),
                (
                    "POST",
                    path,
                    replace_params(str(third), "STOP_ON_FAILURE", price="50000.001"),
                    error(400, -1013, "Filter failure: PRICE_FILTER"),
                ),
            ]
            for method, where, params, expected in cases:
                got = await v.call(demo, method, where, params)
                assert got == expected, (method, where, params)
            assert await v.state(demo) == state
            assert await v.open_ids(demo) == [third]

            # The read-only key can query but not trade.
            login = v.server.demo_login
            assert login is not None
            token, _ = await new_user(v.http, v.server, "reader")
            key = await new_key(v.http, v.server, token, permissions=["read"])
            reader = Trader(key["apiKey"], key["secretKey"], 0)
            assert await v.call(reader, "POST", ORDER, limit("BUY", "0.01", "50000")) == error(
                401, -2015, "Invalid API-key, IP, or permissions for action."
            )
            assert await v.ok(reader, "GET", OPEN_ORDERS) == []

            # openOrders weighs 6 for one symbol, 80 for all.
            assert await v.weight_of(demo, OPEN_ORDERS, {"symbol": SYMBOL}) == 6
            assert await v.weight_of(demo, OPEN_ORDERS, {}) == 80

            # order/test checks everything and places nothing.
            assert (
                await v.ok(demo, "POST", "/api/v3/order/test", limit("BUY", "0.01", "50000")) == {}
            )
            rates = await v.ok(
                demo,
                "POST",
                "/api/v3/order/test",
                {**limit("BUY", "0.01", "50000"), "computeCommissionRates": "true"},
            )
            assert rates["standardCommissionForOrder"] == {
                "maker": "0.00100000",  # the demo user's fee tier: 10 / 20 bps
                "taker": "0.00200000",
            }
            assert await v.state(demo) == state
            counts = await v.ok(demo, "GET", "/api/v3/rateLimit/order")
            assert [(c["rateLimitType"], c["interval"], c["intervalNum"]) for c in counts] == [
                ("ORDERS", "SECOND", 10),
                ("ORDERS", "DAY", 1),
            ]
            assert counts[1]["count"] >= 4
            assert counts[1]["limit"] > 0

    run(scenario)
