"""The API-trader Locust user: signed REST requests, as a Binance client sends them.

Each user gets its own funded account and read+trade key (:mod:`.fixtures`) and then, per
task: places a LIMIT order a few ticks behind the best price (it rests), reads it back and
cancels it; now and then sends a small IOC order that crosses (it trades), reads its
account, and lists its open orders. Requests are signed exactly as Binance specifies
(HMAC-SHA256 of the query string, ``X-MBX-APIKEY``), so the server's full authentication
path is under load. Locust records each under its route name (``POST /api/v3/order``, …).
"""

from __future__ import annotations

import hashlib
import hmac
import random
import time
from typing import Any
from urllib.parse import urlencode

from locust import FastHttpUser, task

from loadtests.bourse_load.fixtures import Credentials, MarketSpec, fixtures_for, pause

UNKNOWN_ORDER = -2011
"""Binance's "Unknown order sent." (a cancel of an order that is no longer open)."""
OPEN = ("NEW", "PARTIALLY_FILLED")


class ApiTraderUser(FastHttpUser):
    """A trader over the signed REST API (see the module docstring)."""

    weight = 2

    def wait_time(self) -> float:
        return pause(self.environment, "bourse_trader_rate", 0.1, 0.5)

    def on_start(self) -> None:
        fixtures = fixtures_for(self.environment)
        self.credentials: Credentials = fixtures.take_trader()
        self.markets: list[MarketSpec] = fixtures.markets
        self.rng = random.Random()

    def _signed(
        self, method: str, path: str, params: dict[str, Any], tolerate: int | None = None
    ) -> Any:
        """Send a signed request; its JSON on 200. A 400 whose Binance code is ``tolerate``
        counts as a success and returns ``{"code": tolerate}``; anything else fails."""
        params = {**params, "timestamp": time.time_ns() // 1_000_000, "recvWindow": 10_000}
        query = urlencode(params)
        signature = hmac.new(
            self.credentials.secret.encode(), query.encode(), hashlib.sha256
        ).hexdigest()
        with self.client.request(
            method,
            f"{path}?{query}&signature={signature}",
            headers={"X-MBX-APIKEY": self.credentials.api_key},
            name=f"{method} {path}",
            catch_response=True,
        ) as response:
            if response.status_code == 400 and tolerate is not None:
                body = response.json()
                if isinstance(body, dict) and body.get("code") == tolerate:
                    response.success()
                    return {"code": tolerate}
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text}")
                return None
            return response.json()

    @task(4)
    def rest_and_cancel(self) -> None:
        m = self.rng.choice(self.markets)
        side = self.rng.choice(("BUY", "SELL"))
        away = self.rng.randint(30, 60) * m.tick_size
        price = m.mid - away if side == "BUY" else m.mid + away
        placed = self._signed(
            "POST",
            "/api/v3/order",
            {
                "symbol": m.symbol,
                "side": side,
                "type": "LIMIT",
                "timeInForce": "GTC",
                "quantity": m.qty_text(m.lot_size * m.min_lots * self.rng.randint(1, 3)),
                "price": m.price_text(price),
                "newOrderRespType": "ACK",
            },
        )
        if placed is None:
            return
        order = {"symbol": m.symbol, "orderId": placed["orderId"]}
        self._signed("GET", "/api/v3/order", order)
        cancelled = self._signed("DELETE", "/api/v3/order", order, tolerate=UNKNOWN_ORDER)
        if cancelled == {"code": UNKNOWN_ORDER}:
            # Another trader's IOC can sweep down to this order and fill it before the
            # cancel arrives: then it must be closed, which is checked.
            after = self._signed("GET", "/api/v3/order", order)
            if after is not None and after["status"] in OPEN:
                self.environment.events.request.fire(
                    request_type="CHECK",
                    name="cancel refused for an open order",
                    response_time=0,
                    response_length=0,
                    exception=AssertionError(f"-2011 for open order {after}"),
                    context={},
                )

    @task(1)
    def cross(self) -> None:
        m = self.rng.choice(self.markets)
        side = self.rng.choice(("BUY", "SELL"))
        away = 100 * m.tick_size
        self._signed(
            "POST",
            "/api/v3/order",
            {
                "symbol": m.symbol,
                "side": side,
                "type": "LIMIT",
                "timeInForce": "IOC",
                "quantity": m.qty_text(m.lot_size * m.min_lots),
                "price": m.price_text(m.mid + away if side == "BUY" else m.mid - away),
                "newOrderRespType": "FULL",
            },
        )

    @task(1)
    def account(self) -> None:
        self._signed("GET", "/api/v3/account", {"omitZeroBalances": "true"})

    @task(1)
    def open_orders(self) -> None:
        self._signed("GET", "/api/v3/openOrders", {"symbol": self.rng.choice(self.markets).symbol})
