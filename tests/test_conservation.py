"""The control plane's end-to-end correctness check: a randomized session through the public
APIs, then money conservation, projections equal to the engine, the journal's state hash and
a projection rebuild.

``bourse serve`` runs on a fresh directory (demo listing, demo market maker stopped before the
session, so the session is the only activity). Operators create five users and their trade
keys (``/admin/v1``); each user turns TOTP on, gets a withdraw key and whitelists an address
per asset (the accounts clock moves one TOTP step per code); operators put the users on fee
tiers with non-zero fees and credit deposits. Then ~300 random operations, a few at a time
concurrently: signed REST orders of every type (LIMIT GTC/IOC/FOK, LIMIT_MAKER, MARKET by
quantity and by quoteOrderQty, with random self-trade prevention modes), cancels,
cancel-replace, amend keepPriority, DELETE openOrders, operator deposits (fresh, repeated and
conflicting transaction ids), withdrawals below and above the approval threshold, approvals
by two operators and rejections, and bursts of orders over the binary gateway with one
user's REST key. Every refusal must be a Binance-shaped ``{"code", "msg"}`` with a 4xx
status, never a 5xx.

With nothing in flight (the feed has passed the node's applied seq):

* money: per asset, Σ engine free + held over every account (fee account 0 included) ==
  the demo's deposits + credited deposits - withdrawals taken out + refunds, as the
  responses said, as funding's tables say and as the projections' ledger says; per account
  the ledger's sum and the projected balance equal the engine's, and every funding ledger row
  is one of funding's rows;
* orders: every level of every book (price, quantity, order count) equals the sums over the
  projected open orders; each account's held equals what its projected open orders need;
  ``GET /api/v3/openOrders`` equals the projection; every engine trade appears in both
  parties' ``myTrades`` exactly once, with its fee;
* a rebuild of the projections (fresh database, and the live one) reproduces the tables;
* after stopping, ``replay_journal`` gives the node's last state hash, invariants hold.

The seed fixes every choice; which of a group's concurrent operations wins a race (two
cancels of one order, two approvals of one withdrawal) may differ between runs, and every
check holds whatever the interleaving. Runtime: about five seconds per seed (two seeds).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pyotp
import pytest
import uvloop

from controlplane import replay_journal
from controlplane.api.admin import OPERATORS, PREFIX
from controlplane.api.auth import ACCOUNTS
from controlplane.config import ServerConfig
from controlplane.db import Database
from controlplane.demo import DEMO_ACCOUNTS, DEPOSITS, SETUP_DONE
from controlplane.gateway.client import connect
from controlplane.gateway.codec import OrderRejected, OrderType, Side, StpMode, TimeInForce
from controlplane.listing import Market, fmt
from controlplane.projections import PROJECTIONS, Projections
from controlplane.serve import Server, start
from tests.servers import server_config
from tests.test_operators import demo_operator_token

PASSWORD = "correct horse battery"
SEEDS = (20240601, 7)
USERS = 5
OPERATIONS = 300
FEE_TIERS = {1: (10, 20), 2: (5, 15)}  # tier: (maker bps, taker bps)
THRESHOLDS = {"USDT": "1000", "BTC": "0.5", "ETH": "5"}
FUNDING_RULES = {
    "approvals_required": 2,
    "approval_threshold": {**THRESHOLDS, "*": "1"},
    "daily_withdrawal_limits": {
        tier: {"USDT": "1000000", "BTC": "100", "ETH": "1000", "*": "0"} for tier in "012"
    },
}
INITIAL = {"USDT": "100000", "BTC": "2", "ETH": "20"}
MIDS = {"BTCUSDT": 6_000_000, "ETHUSDT": 300_000}  # price units (0.01 USDT)
STEPS = {"BTCUSDT": 50, "ETHUSDT": 5}  # price units between the prices orders pick
STP_CHOICES = ["NONE"] * 6 + ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "DECREMENT"]
OPEN = ("NEW", "PARTIALLY_FILLED")


def config(data_dir: Path) -> ServerConfig:
    return server_config(
        data_dir,
        limits={"request_weight_per_minute": 1_000_000, "orders_per_10s": 100_000},
        funding=FUNDING_RULES,
    )


class Clock:
    """The accounts service's clock, moved forward one TOTP step per code."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def __call__(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms

    def next_code(self, totp: pyotp.TOTP) -> str:
        self.offset_ms += 30_000
        return totp.at(self() / 1000)


@dataclass
class KnownOrder:
    symbol: str
    order_id: int
    client_id: str
    quantity: int
    maybe_open: bool = True
    """Whether the last response about it left it open (a hint: fills come unannounced)."""


@dataclass
class Member:
    """One session user and what the session knows about it."""

    name: str
    user_id: int
    account: int
    fee_tier: int
    trade_key: dict[str, Any]
    withdraw_key: dict[str, Any]
    orders: list[KnownOrder] = field(default_factory=list)


@dataclass
class Expected:
    """Funding as the responses told it."""

    credited: dict[str, tuple[int, str, int]] = field(default_factory=dict)
    """tx_id -> (account, asset name, amount atoms)."""
    withdrawals: dict[int, tuple[int, str, int, str]] = field(default_factory=dict)
    """id -> (account, asset name, amount atoms, status)."""


def assert_binance_error(what: str, status: int, body: Any) -> int:
    """A refusal: 4xx with ``{"code": int, "msg": str}``; its code."""
    assert 400 <= status < 500, (what, status, body)
    assert isinstance(body, dict), (what, status, body)
    assert isinstance(body.get("code"), int), (what, status, body)
    assert body["code"] < 0, (what, status, body)
    assert isinstance(body.get("msg"), str), (what, status, body)
    assert body["msg"], (what, status, body)
    code: int = body["code"]
    return code


class Session:
    """The random session's driver: HTTP helpers, the tally, the funding model."""

    def __init__(self, server: Server, http: aiohttp.ClientSession, rng: random.Random) -> None:
        self.server = server
        self.http = http
        self.rng = rng
        self.clock = Clock()
        server.runner.app[ACCOUNTS].clock_ms = self.clock
        self.markets: dict[str, Market] = dict(server.exchange.listing.by_symbol)
        self.assets = server.exchange.listing.assets_by_name
        self.mids = dict(MIDS)
        self.members: list[Member] = []
        self.ops: Counter[str] = Counter()
        self.rejections: Counter[tuple[str, int]] = Counter()
        self.expected = Expected()
        self.tx_count = 0
        self.deposit_bodies: list[dict[str, Any]] = []
        self.operator_tokens: list[str] = []
        self.first_trade_id = 1
        """The first trade id of the session (earlier ones are the demo market maker's)."""

    # -- HTTP --------------------------------------------------------------------------------

    def tally(self, what: str, status: int, body: Any) -> bool:
        """Count the outcome; whether it succeeded (refusals must be Binance-shaped 4xx)."""
        self.ops[what] += 1
        if status < 300:
            return True
        self.rejections[(what, assert_binance_error(what, status, body))] += 1
        return False

    async def signed(
        self, key: Mapping[str, Any], method: str, path: str, params: Mapping[str, Any]
    ) -> tuple[int, Any]:
        """A SIGNED request (query for GET/DELETE, form body otherwise), timestamped with
        the accounts clock."""
        payload = urlencode({**params, "timestamp": str(self.clock())})
        signature = hmac.new(
            key["secretKey"].encode(), payload.encode(), hashlib.sha256
        ).hexdigest()
        signed = f"{payload}&signature={signature}"
        headers = {"X-MBX-APIKEY": key["apiKey"]}
        url = self.server.base_url + path
        body: str | None = None
        if method in ("GET", "DELETE"):
            url = f"{url}?{signed}"
        else:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            body = signed
        async with self.http.request(method, url, data=body, headers=headers) as response:
            return response.status, await response.json()

    async def admin(self, token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"}
        url = f"{self.server.base_url}{PREFIX}{path}"
        async with self.http.request(method, url, json=body, headers=headers) as response:
            return response.status, await response.json()

    async def user_call(
        self, token: str | None, method: str, path: str, body: Any = None
    ) -> tuple[int, Any]:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        url = self.server.base_url + path
        async with self.http.request(method, url, json=body, headers=headers) as response:
            return response.status, await response.json()

    async def ok(self, request: Awaitable[tuple[int, Any]], expected: int = 200) -> Any:
        status, body = await request
        assert status == expected, (status, body)
        return body

    # -- setup -------------------------------------------------------------------------------

    async def setup(self) -> None:
        op1 = demo_operator_token(self.server)
        _, op2 = self.server.runner.app[OPERATORS].add("second-op", PASSWORD, "admin")
        self.operator_tokens = [op1, op2]
        for tier, (maker, taker) in FEE_TIERS.items():
            await self.ok(
                self.admin(
                    op1, "PUT", f"/fee-tiers/{tier}", {"maker_bps": maker, "taker_bps": taker}
                )
            )
        for i in range(USERS):
            name = f"trader{i}"
            user = await self.ok(
                self.admin(op1, "POST", "/users", {"username": name, "password": PASSWORD}), 201
            )
            uid = user["userId"]
            trade_key = await self.ok(
                self.admin(
                    op1, "POST", f"/users/{uid}/api-keys", {"permissions": ["read", "trade"]}
                ),
                201,
            )
            fee_tier = 1 + i % 2
            await self.ok(self.admin(op1, "PUT", f"/users/{uid}/fee-tier", {"fee_tier": fee_tier}))
            login = await self.ok(
                self.user_call(
                    None, "POST", "/api/v1/sessions", {"username": name, "password": PASSWORD}
                )
            )
            token = login["token"]
            begun = await self.ok(self.user_call(token, "POST", "/api/v1/me/totp"))
            totp = pyotp.TOTP(begun["secret"])
            await self.ok(
                self.user_call(
                    token,
                    "POST",
                    "/api/v1/me/totp/confirm",
                    {"code": self.clock.next_code(totp)},
                )
            )
            withdraw_key = await self.ok(
                self.user_call(
                    token,
                    "POST",
                    "/api/v1/me/api-keys",
                    {
                        "label": "w",
                        "permissions": ["read", "withdraw"],
                        "totpCode": self.clock.next_code(totp),
                    },
                ),
                201,
            )
            for asset in INITIAL:
                await self.ok(
                    self.user_call(
                        token,
                        "POST",
                        "/api/v1/me/withdrawal-addresses",
                        {
                            "asset": asset,
                            "address": address_of(name, asset),
                            "totp": self.clock.next_code(totp),
                        },
                    ),
                    201,
                )
            member = Member(name, uid, user["accountId"], fee_tier, trade_key, withdraw_key)
            self.members.append(member)
            for asset, amount in INITIAL.items():
                await self.deposit(member, asset, amount)

    # -- funding operations ------------------------------------------------------------------

    async def deposit(self, member: Member, asset: str, amount: str) -> None:
        self.tx_count += 1
        body = {
            "user_id": member.user_id,
            "asset": asset,
            "amount": amount,
            "tx_id": f"chain:{self.rng.getrandbits(48):012x}:{self.tx_count}",
        }
        await self.send_deposit(body)

    async def send_deposit(self, body: dict[str, Any]) -> None:
        status, out = await self.admin(
            self.rng.choice(self.operator_tokens), "POST", "/deposits", body
        )
        if not self.tally("deposit", status, out):
            return
        assert out["status"] == "CREDITED", out
        atoms = self.atoms(body["asset"], body["amount"])
        entry = (out["account"], body["asset"], atoms)
        if out["duplicate"]:
            assert self.expected.credited[body["tx_id"]] == entry
            self.ops["deposit duplicate"] += 1
        else:
            assert body["tx_id"] not in self.expected.credited
            self.expected.credited[body["tx_id"]] = entry
            self.deposit_bodies.append(body)

    async def random_deposit(self) -> None:
        roll = self.rng.random()
        if self.deposit_bodies and roll < 0.2:
            await self.send_deposit(dict(self.rng.choice(self.deposit_bodies)))  # idempotent
        elif self.deposit_bodies and roll < 0.28:
            again = dict(self.rng.choice(self.deposit_bodies))
            again["amount"] = str(Decimal(again["amount"]) + 1)
            await self.send_deposit(again)  # same tx id, other amount: 409
        else:
            member = self.rng.choice(self.members)
            asset = self.rng.choice(list(INITIAL))
            amount = Decimal(self.rng.randint(1, 5000)) * Decimal(INITIAL[asset]) / 10_000
            await self.deposit(member, asset, str(amount))

    async def random_withdrawal(self) -> None:
        member = self.rng.choice(self.members)
        asset = self.rng.choice(list(INITIAL))
        threshold = Decimal(THRESHOLDS[asset])
        roll = self.rng.random()
        if roll < 0.45:
            amount = threshold * self.rng.randint(1, 100) / 100  # sent at once
        elif roll < 0.9:
            amount = threshold * self.rng.randint(101, 300) / 100  # needs two approvals
        else:  # more than the balance (-4026), or than the daily limit too (-4023)
            amount = Decimal(INITIAL[asset]) * self.rng.choice((5, 100))
        params = {"coin": asset, "address": address_of(member.name, asset), "amount": str(amount)}
        status, out = await self.signed(
            member.withdraw_key, "POST", "/sapi/v1/capital/withdraw/apply", params
        )
        if not self.tally("withdraw", status, out):
            return
        wid = int(out["id"])
        atoms = self.atoms(asset, str(amount))
        state = "PENDING_APPROVAL" if amount > threshold else "SENT"
        self.expected.withdrawals[wid] = (member.account, asset, atoms, state)

    async def random_decision(self) -> None:
        pending = [
            wid for wid, w in self.expected.withdrawals.items() if w[3] == "PENDING_APPROVAL"
        ]
        decided = [
            wid for wid, w in self.expected.withdrawals.items() if w[3] != "PENDING_APPROVAL"
        ]
        if not pending or (decided and self.rng.random() < 0.1):
            if not decided:
                return
            wid = self.rng.choice(decided)  # already decided: 409
        else:
            wid = self.rng.choice(pending)
        token = self.rng.choice(self.operator_tokens)
        if self.rng.random() < 0.7:
            status, out = await self.admin(token, "POST", f"/withdrawals/{wid}/approve")
            kind = "approve"
        else:
            status, out = await self.admin(
                token, "POST", f"/withdrawals/{wid}/reject", {"reason": "random check"}
            )
            kind = "reject"
        if self.tally(kind, status, out):
            # Decisions run concurrently: a response may arrive after a later one, so a
            # final state is never taken back; a withdrawal is never both sent and rejected.
            account, asset, atoms, known = self.expected.withdrawals[wid]
            told = out["status"]
            assert told in ("PENDING_APPROVAL", "SENT", "REJECTED"), out
            assert {known, told} != {"SENT", "REJECTED"}, (wid, known, told)
            final = known if told == "PENDING_APPROVAL" else told
            self.expected.withdrawals[wid] = (account, asset, atoms, final)

    def atoms(self, asset: str, amount: str) -> int:
        decimals = self.assets[asset].decimals
        scaled = Decimal(amount) * 10**decimals
        assert scaled == scaled.to_integral_value()
        return int(scaled)

    # -- trading operations ------------------------------------------------------------------

    def price(self, symbol: str, side: str) -> int:
        step = STEPS[symbol]
        mid = self.mids[symbol] + self.rng.choice((-1, 0, 1)) * step
        self.mids[symbol] = mid
        offset = self.rng.randint(-20, 6) if side == "BUY" else self.rng.randint(-6, 20)
        return mid + offset * step

    def quantity(self, symbol: str, price: int) -> int:
        mk = self.markets[symbol]
        # At least the minimum notional (5 USDT), up to ~40 times it.
        value_per_lot = (
            mk.lot_size
            * price
            * 10**mk.quote.decimals
            // 10 ** (mk.price_decimals + mk.base.decimals)
        )
        min_lots = -(-mk.min_notional // value_per_lot) + 1
        return mk.lot_size * self.rng.randint(min_lots, 40 * min_lots)

    async def random_order(self) -> None:
        member = self.rng.choice(self.members)
        symbol = self.rng.choice(list(self.markets))
        mk = self.markets[symbol]
        side = self.rng.choice(("BUY", "SELL"))
        price = self.price(symbol, side)
        qty = self.quantity(symbol, price)
        params: dict[str, Any] = {"symbol": symbol, "side": side}
        kind = self.rng.choices(
            ["GTC", "IOC", "FOK", "LIMIT_MAKER", "MARKET", "MARKET_QUOTE", "BAD"],
            [35, 10, 8, 14, 13, 10, 10],
        )[0]
        if kind in ("GTC", "IOC", "FOK"):
            params.update(type="LIMIT", timeInForce=kind)
        elif kind == "LIMIT_MAKER":
            params.update(type="LIMIT_MAKER")
        if kind in ("GTC", "IOC", "FOK", "LIMIT_MAKER"):
            params.update(price=mk.price_str(price), quantity=mk.qty_str(qty))
        elif kind == "MARKET":
            params.update(type="MARKET", quantity=mk.qty_str(qty))
        elif kind == "MARKET_QUOTE":
            quote = (
                qty * price // 10**mk.price_decimals * 10**mk.quote.decimals // 10**mk.base.decimals
            )
            params.update(type="MARKET", side="BUY", quoteOrderQty=mk.quote_str(quote))
        else:
            params.update(self.bad_order(mk, price, qty))
        if self.rng.random() < 0.3:
            params["selfTradePreventionMode"] = self.rng.choice(STP_CHOICES)
        if self.rng.random() < 0.3:
            params["newOrderRespType"] = self.rng.choice(("ACK", "RESULT", "FULL"))
        if self.rng.random() < 0.4:
            params["newClientOrderId"] = f"c{self.rng.getrandbits(40):x}"
        elif self.rng.random() < 0.05 and member.orders:
            params["newClientOrderId"] = self.rng.choice(member.orders).client_id
        status, out = await self.signed(member.trade_key, "POST", "/api/v3/order", params)
        if self.tally(f"order {kind}", status, out):
            still_open = out.get("status", "NEW") in OPEN
            member.orders.append(
                KnownOrder(symbol, out["orderId"], out["clientOrderId"], qty, still_open)
            )

    def bad_order(self, mk: Market, price: int, qty: int) -> dict[str, Any]:
        """An order one of Binance's checks refuses (or, for some, the engine)."""
        choice = self.rng.randrange(6)
        limit = {"type": "LIMIT", "timeInForce": "GTC"}
        if choice == 0:  # off the price's decimals
            return {**limit, "price": mk.price_str(price) + "1", "quantity": mk.qty_str(qty)}
        if choice == 1:  # below the minimum notional
            return {**limit, "price": mk.price_str(price), "quantity": mk.qty_str(mk.lot_size)}
        if choice == 2:  # more than anyone holds
            return {**limit, "price": mk.price_str(price), "quantity": mk.qty_str(qty * 10_000)}
        if choice == 3:  # a sell by quote amount
            return {"type": "MARKET", "side": "SELL", "quoteOrderQty": "100"}
        if choice == 4:  # unsupported type
            return {"type": "STOP_LOSS", "quantity": mk.qty_str(qty), "stopPrice": "1"}
        return {**limit, "timeInForce": "GTD", "price": mk.price_str(price), "quantity": "1"}

    def pick_order(self, member: Member) -> KnownOrder | None:
        if not member.orders:
            return None
        hinted = [o for o in member.orders[-30:] if o.maybe_open]
        if hinted and self.rng.random() < 0.8:
            return self.rng.choice(hinted)
        return self.rng.choice(member.orders)

    async def random_cancel(self) -> None:
        member = self.rng.choice(self.members)
        known = self.pick_order(member)
        if known is None or self.rng.random() < 0.1:
            params = {"symbol": "BTCUSDT", "orderId": str(10**9 + self.rng.randrange(1000))}
        elif self.rng.random() < 0.5 or not known.client_id:
            params = {"symbol": known.symbol, "orderId": str(known.order_id)}
        else:
            params = {"symbol": known.symbol, "origClientOrderId": known.client_id}
        status, out = await self.signed(member.trade_key, "DELETE", "/api/v3/order", params)
        self.tally("cancel", status, out)
        if known is not None and "orderId" in params and params["orderId"] == str(known.order_id):
            known.maybe_open = False  # cancelled now, or it was not open

    async def random_cancel_replace(self) -> None:
        member = self.rng.choice(self.members)
        known = self.pick_order(member)
        if known is None:
            return
        mk = self.markets[known.symbol]
        side = self.rng.choice(("BUY", "SELL"))
        price = self.price(known.symbol, side)
        qty = self.quantity(known.symbol, price)
        params = {
            "symbol": known.symbol,
            "side": side,
            "type": "LIMIT",
            "timeInForce": self.rng.choice(("GTC", "GTC", "IOC")),
            "price": mk.price_str(price),
            "quantity": mk.qty_str(qty),
            "cancelReplaceMode": self.rng.choice(("STOP_ON_FAILURE", "ALLOW_FAILURE")),
            "cancelOrderId": str(known.order_id),
        }
        status, out = await self.signed(
            member.trade_key, "POST", "/api/v3/order/cancelReplace", params
        )
        # Binance's shape: the result itself on 200, under "data" with the error's code
        # otherwise.
        data = out if status == 200 else out.get("data", {})
        if data.get("cancelResult") in ("SUCCESS", "FAILURE"):
            known.maybe_open = False  # cancelled now, or it was not open
        if data.get("newOrderResult") == "SUCCESS":
            placed = data["newOrderResponse"]
            member.orders.append(
                KnownOrder(known.symbol, placed["orderId"], placed["clientOrderId"], qty)
            )
        self.tally("cancelReplace", status, out)

    async def random_amend(self) -> None:
        member = self.rng.choice(self.members)
        known = self.pick_order(member)
        if known is None:
            return
        mk = self.markets[known.symbol]
        lots = known.quantity // mk.lot_size
        new_qty = mk.lot_size * self.rng.randint(max(1, lots // 3), max(1, lots - 1))
        params = {
            "symbol": known.symbol,
            "orderId": str(known.order_id),
            "newQty": mk.qty_str(new_qty),
        }
        status, out = await self.signed(
            member.trade_key, "PUT", "/api/v3/order/amend/keepPriority", params
        )
        if self.tally("amend", status, out):
            known.quantity = new_qty
        elif out["code"] == -2013:  # no longer open
            known.maybe_open = False

    async def random_cancel_all(self) -> None:
        member = self.rng.choice(self.members)
        symbol = self.rng.choice(list(self.markets))
        status, out = await self.signed(
            member.trade_key, "DELETE", "/api/v3/openOrders", {"symbol": symbol}
        )
        self.tally("cancelAll", status, out)

    async def random_query(self) -> None:
        member = self.rng.choice(self.members)
        symbol = self.rng.choice(list(self.markets))
        path = self.rng.choice(("/api/v3/openOrders", "/api/v3/myTrades", "/api/v3/account"))
        params = {} if path == "/api/v3/account" else {"symbol": symbol}
        status, out = await self.signed(member.trade_key, "GET", path, params)
        self.tally("query", status, out)

    async def gateway_burst(self) -> None:
        """A few orders over the binary gateway with the first user's REST key."""
        member = self.members[0]
        key = member.trade_key
        session = await connect(
            self.server.gateway_host,
            self.server.gateway_port,
            key_id=key["id"],
            secret=key["secretKey"].encode(),
        )
        try:
            symbol = self.rng.choice(list(self.markets))
            mk = self.markets[symbol]
            resting: list[int] = []
            for _ in range(self.rng.randint(2, 4)):
                side = self.rng.choice(("BUY", "SELL"))
                price = self.price(symbol, side)
                qty = self.quantity(symbol, price)
                ioc = self.rng.random() < 0.3
                reply = await session.new_order(
                    mk.id,
                    Side.BUY if side == "BUY" else Side.SELL,
                    qty,
                    price,
                    order_type=OrderType.LIMIT,
                    time_in_force=TimeInForce.IOC if ioc else TimeInForce.GTC,
                    stp=self.rng.choice((StpMode.NONE, StpMode.DECREMENT)),
                )
                self.ops["gateway order"] += 1
                if isinstance(reply, OrderRejected):
                    self.rejections[("gateway order", int(reply.reason))] += 1
                elif not ioc:
                    resting.append(reply.order_id)
                    member.orders.append(KnownOrder(symbol, reply.order_id, "", qty))
            if resting:
                amended = await session.amend(
                    resting[0],
                    new_quantity=mk.lot_size * self.rng.randint(1, 10) + mk.lot_size * 60,
                )
                self.ops["gateway amend"] += 1
                if isinstance(amended, OrderRejected):
                    self.rejections[("gateway amend", int(amended.reason))] += 1
            if len(resting) > 1:
                cancelled = await session.cancel(resting[-1])
                self.ops["gateway cancel"] += 1
                if isinstance(cancelled, OrderRejected):
                    self.rejections[("gateway cancel", int(cancelled.reason))] += 1
            await session.logout()
        finally:
            await session.close()

    async def run(self) -> None:
        actions = [
            (self.random_order, 45),
            (self.random_cancel, 9),
            (self.random_cancel_replace, 6),
            (self.random_amend, 6),
            (self.random_cancel_all, 2),
            (self.random_deposit, 8),
            (self.random_withdrawal, 9),
            (self.random_decision, 7),
            (self.random_query, 5),
        ]
        funcs, weights = zip(*actions, strict=True)
        done = 0
        bursts = set(self.rng.sample(range(OPERATIONS // 3), 4))
        round_no = 0
        while done < OPERATIONS:
            group = list(self.rng.choices(funcs, weights, k=self.rng.randint(1, 4)))
            if round_no in bursts:
                group.append(self.gateway_burst)
            round_no += 1
            await asyncio.gather(*(f() for f in group))
            done += len(group)


def address_of(name: str, asset: str) -> str:
    return f"bc1q{name}{asset.lower()}address0001"


# --- the checks ------------------------------------------------------------------------------


async def check_money(s: Session, projections: Projections) -> dict[str, int]:
    """Conservation per asset and per account; funding's rows agree with the responses and
    the ledger. Returns the total per asset."""
    server = s.server
    node = server.node
    conn = server.exchange.db.conn
    assets = {a.id: a for a in s.assets.values()}
    members = {m.account: m for m in s.members}
    accounts = {0, SETUP_DONE, *DEMO_ACCOUNTS.values(), *members}
    balances = projections.balances()
    assert {account for account, _ in balances} <= accounts  # no one else holds anything
    ledger = projections.ledger_totals()

    # Funding's tables == what the responses said.
    deposits = conn.execute(
        "SELECT tx_id, account, asset, amount, status, seq FROM deposits"
    ).fetchall()
    assert {
        r["tx_id"]: (r["account"], assets[r["asset"]].name, r["amount"]) for r in deposits
    } == s.expected.credited
    assert all(r["status"] == "CREDITED" and r["seq"] for r in deposits)
    withdrawals = conn.execute(
        "SELECT id, account, asset, amount, status, withdraw_seq, refund_seq FROM withdrawals"
    ).fetchall()
    assert {
        r["id"]: (r["account"], assets[r["asset"]].name, r["amount"], r["status"])
        for r in withdrawals
    } == s.expected.withdrawals
    for r in withdrawals:
        assert r["withdraw_seq"] is not None, dict(r)
        assert (r["refund_seq"] is not None) == (r["status"] == "REJECTED"), dict(r)

    # Every funding ledger row is one of funding's rows, and the other way round.
    rows = conn.execute(
        "SELECT seq, account, asset, delta, reason FROM ledger "
        "WHERE reason IN ('deposit', 'withdrawal')"
    ).fetchall()
    ledger_moves = Counter((r["seq"], r["account"], r["asset"], r["delta"]) for r in rows)
    funding_moves: Counter[tuple[int, int, int, int]] = Counter()
    for r in deposits:
        funding_moves[(r["seq"], r["account"], r["asset"], r["amount"])] += 1
    for r in withdrawals:
        funding_moves[(r["withdraw_seq"], r["account"], r["asset"], -r["amount"])] += 1
        if r["refund_seq"] is not None:
            funding_moves[(r["refund_seq"], r["account"], r["asset"], r["amount"])] += 1
    demo_moves = ledger_moves - funding_moves
    assert funding_moves <= ledger_moves
    assert sorted(
        (account, asset, delta) for _, account, asset, delta in demo_moves.elements()
    ) == sorted(
        (account, asset.id, amount)
        for account, held in DEPOSITS.items()
        for asset, amount in held.items()
    )

    totals: dict[str, int] = {}
    for asset_id, asset in assets.items():
        engine_total = 0
        for account in accounts:
            free, held = node.balance(account, asset_id) or (0, 0)
            engine_total += free + held
            assert ledger.get((account, asset_id), 0) == free + held, (account, asset.name)
            if (account, asset_id) in balances:
                assert balances[(account, asset_id)] == (free, held), (account, asset.name)
            else:
                assert free == held == 0
        demo = sum(
            amount
            for funded in DEPOSITS.values()
            for a, amount in funded.items()
            if a.id == asset_id
        )
        credited = sum(
            amount for _, name, amount in s.expected.credited.values() if name == asset.name
        )
        taken = sum(w[2] for w in s.expected.withdrawals.values() if w[1] == asset.name)
        refunded = sum(
            w[2]
            for w in s.expected.withdrawals.values()
            if w[1] == asset.name and w[3] == "REJECTED"
        )
        assert engine_total == demo + credited - taken + refunded, asset.name
        totals[asset.name] = engine_total

    # Per user: what funding says moved + the trades' ledger == the engine; pending + sent.
    trade_deltas: dict[tuple[int, int], int] = defaultdict(int)
    for r in conn.execute(
        "SELECT account, asset, delta FROM ledger WHERE reason NOT IN ('deposit', 'withdrawal')"
    ):
        trade_deltas[(r["account"], r["asset"])] += r["delta"]
    for account in members:
        for asset_id, asset in assets.items():
            moved = sum(
                r["amount"] for r in deposits if r["account"] == account and r["asset"] == asset_id
            )
            out_now = 0
            for r in withdrawals:
                if r["account"] == account and r["asset"] == asset_id:
                    moved -= r["amount"]
                    if r["status"] == "REJECTED":
                        moved += r["amount"]
                    else:
                        out_now += r["amount"]
            free, held = node.balance(account, asset_id) or (0, 0)
            assert moved + trade_deltas[(account, asset_id)] == free + held, (account, asset.name)
            assert out_now == sum(
                w[2]
                for w in s.expected.withdrawals.values()
                if w[0] == account and w[1] == asset.name and w[3] in ("PENDING_APPROVAL", "SENT")
            )
    return totals


def check_books(s: Session, projections: Projections) -> int:
    """Every level of every book equals the projected open orders there; every account's
    held equals what its projected open orders need. Returns the open orders count."""
    server = s.server
    node = server.node
    conn = server.exchange.db.conn
    open_rows = conn.execute(
        "SELECT * FROM orders WHERE status IN ('NEW', 'PARTIALLY_FILLED')"
    ).fetchall()
    projected: dict[tuple[int, str], dict[int, list[int]]] = defaultdict(dict)
    for r in open_rows:
        assert r["leaves"] > 0, dict(r)
        level = projected[(r["market"], r["side"])].setdefault(r["price"], [0, 0])
        level[0] += r["leaves"]
        level[1] += 1
    views = {v["market"]: v for v in node.markets()}
    for market in views:
        for side in ("buy", "sell"):
            depth = node.depth(market, side, 100_000)
            engine = {price: [quantity, orders] for price, quantity, orders in depth}
            assert engine == projected.get((market, side), {}), (market, side)

    tiers = {m.account: FEE_TIERS[m.fee_tier] for m in s.members}
    held: dict[tuple[int, int], int] = defaultdict(int)
    for r in open_rows:
        view = views[r["market"]]
        if r["side"] == "sell":
            held[(r["account"], view["base"])] += r["leaves"]
        else:
            value = (
                r["leaves"]
                // view["lot_size"]
                * (r["price"] // view["tick_size"])
                * view["tick_value"]
            )
            held[(r["account"], view["quote"])] += (
                value + value * max(tiers[r["account"]]) // 10_000
            )
    for m in s.members:
        for asset in s.assets.values():
            _, engine_held = node.balance(m.account, asset.id) or (0, 0)
            assert engine_held == held[(m.account, asset.id)], (m.name, asset.name)
    return len(open_rows)


async def check_api_views(s: Session, projections: Projections) -> int:
    """openOrders == the projection; every trade in both parties' myTrades exactly once.
    Returns the number of session trades."""
    members = {m.account: m for m in s.members}
    by_id = {mk.id: mk for mk in s.markets.values()}
    for m in s.members:
        status, listed = await s.signed(m.trade_key, "GET", "/api/v3/openOrders", {})
        assert status == 200, listed
        rows = projections.open_orders(m.account)
        assert [o["orderId"] for o in listed] == [r.order_id for r in rows]
        for o, r in zip(listed, rows, strict=True):
            mk = by_id[r.market]
            assert o["symbol"] == mk.symbol
            assert o["status"] == r.status
            assert o["side"] == r.side.upper()
            assert o["price"] == mk.price_str(r.price)
            assert o["executedQty"] == mk.qty_str(r.executed_qty)
            assert Decimal(o["origQty"]) - Decimal(o["executedQty"]) == Decimal(
                mk.qty_str(r.leaves)
            )

    conn = s.server.exchange.db.conn
    node = s.server.node
    binance_withdraw_status = {"PENDING_APPROVAL": 2, "SENT": 6, "REJECTED": 3}
    for m in s.members:
        # Balances as the engine holds them.
        status, account = await s.signed(m.trade_key, "GET", "/api/v3/account", {})
        assert status == 200, account
        shown = {b["asset"]: (b["free"], b["locked"]) for b in account["balances"]}
        for name, asset in s.assets.items():
            free, held = node.balance(m.account, asset.id) or (0, 0)
            assert shown[name] == (fmt(free, asset.decimals), fmt(held, asset.decimals)), name
        # Every order, as projected.
        for symbol, mk in s.markets.items():
            status, orders = await s.signed(
                m.trade_key, "GET", "/api/v3/allOrders", {"symbol": symbol, "orderId": "0"}
            )
            assert status == 200, orders
            stored = conn.execute(
                "SELECT order_id, status, executed_qty FROM orders "
                "WHERE account = ? AND market = ? ORDER BY order_id",
                (m.account, mk.id),
            ).fetchall()
            assert len(stored) < 1000
            assert [(o["orderId"], o["status"], o["executedQty"]) for o in orders] == [
                (r["order_id"], r["status"], mk.qty_str(r["executed_qty"])) for r in stored
            ]
        # Funding history, as the responses said.
        status, history = await s.signed(
            m.withdraw_key, "GET", "/sapi/v1/capital/withdraw/history", {}
        )
        assert status == 200, history
        assert {int(h["id"]): h["status"] for h in history} == {
            wid: binance_withdraw_status[w[3]]
            for wid, w in s.expected.withdrawals.items()
            if w[0] == m.account
        }
        status, hisrec = await s.signed(
            m.withdraw_key, "GET", "/sapi/v1/capital/deposit/hisrec", {}
        )
        assert status == 200, hisrec
        assert {
            h["txId"]: (m.account, h["coin"], s.atoms(h["coin"], h["amount"])) for h in hisrec
        } == {tx: d for tx, d in s.expected.credited.items() if d[0] == m.account}

    first_session_trade = s.first_trade_id
    trades = conn.execute(
        "SELECT * FROM trades WHERE trade_id >= ? ORDER BY trade_id", (first_session_trade,)
    ).fetchall()
    expected: dict[tuple[int, str], Counter[tuple[int, int, bool, str, str]]] = defaultdict(Counter)
    for t in trades:
        mk = by_id[t["market"]]
        assert t["maker_account"] in members, dict(t)  # only the session traded
        assert t["taker_account"] in members, dict(t)
        for account, order_id, is_maker, fee in (
            (t["maker_account"], t["maker_order_id"], True, t["maker_fee"]),
            (t["taker_account"], t["taker_order_id"], False, t["taker_fee"]),
        ):
            expected[(account, mk.symbol)][
                (t["trade_id"], order_id, is_maker, mk.qty_str(t["quantity"]), mk.quote_str(fee))
            ] += 1
    for m in s.members:
        for symbol in s.markets:
            seen: Counter[tuple[int, int, bool, str, str]] = Counter()
            from_id = first_session_trade
            while True:
                status, page = await s.signed(
                    m.trade_key,
                    "GET",
                    "/api/v3/myTrades",
                    {"symbol": symbol, "fromId": str(from_id), "limit": "1000"},
                )
                assert status == 200, page
                for t in page:
                    seen[(t["id"], t["orderId"], t["isMaker"], t["qty"], t["commission"])] += 1
                if len(page) < 1000:
                    break
                from_id = page[-1]["id"] + 1
            assert seen == expected[(m.account, symbol)], (m.name, symbol)
    fees = sum(t["maker_fee"] + t["taker_fee"] for t in trades)
    assert not trades or fees > 0  # the fee tiers charge something
    return len(trades)


# --- the test --------------------------------------------------------------------------------


async def session(tmp_path: Path, seed: int) -> dict[str, Any]:
    data_dir = tmp_path / "bourse"
    server = await start(config(data_dir))
    try:
        # Stop the demo market maker: it pulls its quotes and logs out.
        assert server.market_maker is not None
        server.market_maker.stop()
        await asyncio.wait(server.tasks)
        server.tasks.clear()
        exchange = server.exchange
        await exchange.feed.wait_for(server.node.stats()["applied_seq"])
        for market in (1, 2):
            assert server.node.depth(market, "buy", 1) == server.node.depth(market, "sell", 1) == []
        projections = server.runner.app[PROJECTIONS]
        async with aiohttp.ClientSession() as http:
            s = Session(server, http, random.Random(seed))
            last = exchange.db.conn.execute("SELECT MAX(trade_id) FROM trades").fetchone()[0]
            s.first_trade_id = (last or 0) + 1
            await s.setup()
            await s.run()

            await exchange.feed.wait_for(server.node.stats()["applied_seq"])
            totals = await check_money(s, projections)
            open_orders = check_books(s, projections)
            trades = await check_api_views(s, projections)
            conn = exchange.db.conn
            self_trades = conn.execute(
                "SELECT COUNT(*) FROM trades WHERE trade_id >= ? AND maker_account = taker_account",
                (s.first_trade_id,),
            ).fetchone()[0]
            statuses = dict(
                conn.execute(
                    "SELECT status, COUNT(*) FROM orders WHERE account IN "
                    f"({', '.join('?' * len(s.members))}) GROUP BY status",
                    [m.account for m in s.members],
                ).fetchall()
            )

        # Rebuilds: into a fresh database, and the live one (the feed idle): the same tables.
        applied = server.node.stats()["applied_seq"]
        await exchange.feed.wait_for(applied)
        live = projections.dump()
        fresh = Projections(Database(tmp_path / "rebuilt.sqlite3"))
        try:
            await fresh.rebuild(server.node)
            assert fresh.dump() == live
        finally:
            fresh.db.close()
        await projections.rebuild(server.node, exchange.feed)
        assert projections.dump() == live
        state_hash = server.node.state_hash()
        assert server.node.stats()["applied_seq"] == applied
    finally:
        await server.stop()

    replayed = replay_journal(server.config.node_config())
    assert replayed["invariants_ok"], replayed["invariant_error"]
    assert replayed["state_hash"] == state_hash
    assert replayed["next_seq"] == applied + 1
    bare = replay_journal({"data_dir": str(data_dir)})
    assert bare["state_hash"] == state_hash
    return {
        "ops": s.ops,
        "rejections": s.rejections,
        "trades": trades,
        "self_trades": self_trades,
        "statuses": statuses,
        "open_orders": open_orders,
        "totals": totals,
        "commands": applied,
    }


@pytest.mark.parametrize("seed", SEEDS)
def test_random_session_conserves_money_and_projections_equal_engine(
    tmp_path: Path, seed: int
) -> None:
    results: list[dict[str, Any]] = []

    async def main() -> None:
        results.append(await asyncio.wait_for(session(tmp_path, seed), 120))

    started = time.monotonic()
    uvloop.run(main())
    summary = results[0]
    ops: Counter[str] = summary["ops"]
    print(
        f"\nseed {seed}: {sum(ops.values())} operations in {time.monotonic() - started:.1f} s, "
        f"{summary['trades']} trades, {summary['open_orders']} open orders, "
        f"{summary['commands']} commands"
    )
    print(f"  self-trades: {summary['self_trades']}, orders by status: {summary['statuses']}")
    print("  operations:", dict(sorted(ops.items())))
    print("  rejections:", dict(sorted(summary["rejections"].items())))
    # The session exercised what it claims to.
    assert summary["trades"] > 20
    for kind in ("order GTC", "cancel", "cancelReplace", "amend", "withdraw", "deposit"):
        assert ops[kind] > 0, kind
