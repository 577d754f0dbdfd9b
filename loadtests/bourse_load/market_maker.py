"""The market-maker Locust user: quotes around the mid over the binary gateway.

Each user logs in with its own API key (cancel-on-disconnect on), then, per task, moves a
random walk mid price, places a bid and an ask a few ticks from it, amends one resting quote
and cancels the oldest once it holds more than ``max_open`` orders. Every request's
send-to-ack time is reported to Locust's ``request`` event (request type ``BIN``; names
``new_order``, ``cancel``, ``amend``), with the order's ``client_order_id`` in the context.
A rejection is a failure, except a cancel or amend of an order that has filled meanwhile
(``ORDER_NOT_FOUND``), which is the market working.
"""

from __future__ import annotations

import random
import time
from typing import Any

from locust import User, task

from controlplane.gateway.codec import (
    OrderAccepted,
    OrderCancelled,
    OrderExecuted,
    OrderRejected,
    RejectCode,
    Side,
)
from loadtests.bourse_load.fixtures import Fixtures, MarketSpec, fixtures_for, pause
from loadtests.bourse_load.gateway import GatewayClient, Reply

RACES = {RejectCode.ORDER_NOT_FOUND, RejectCode.AMEND_NO_CHANGE}
"""Refusals that are the market working: the order filled meanwhile, or an amend to the
size it already has."""


class MarketMakerUser(User):
    """A market maker over the binary protocol (see the module docstring)."""

    weight = 2
    max_open = 20

    def wait_time(self) -> float:
        return pause(self.environment, "bourse_mm_rate", 0.05, 0.2)

    def on_start(self) -> None:
        self.fixtures: Fixtures = fixtures_for(self.environment)
        key = self.fixtures.take_market_maker()
        self.rng = random.Random()
        self.markets: list[MarketSpec] = self.fixtures.markets
        self.mids = {m.id: m.mid for m in self.markets}
        self.open: dict[int, list[int]] = {m.id: [] for m in self.markets}
        self.client_order_ids: dict[int, int] = {}
        self.next_client_order_id = time.time_ns() // 1000 % 10**12
        self.client = GatewayClient(
            self.fixtures.gateway_host,
            self.fixtures.gateway_port,
            key_id=key.key_id,
            secret=key.gateway_secret,
            on_reply=self._on_reply,
            on_message=self._on_message,
        )

    def on_stop(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()

    def _fire(self, name: str, elapsed: float, exc: BaseException | None, **context: Any) -> None:
        self.environment.events.request.fire(
            request_type="BIN",
            name=name,
            response_time=elapsed * 1000,
            response_length=0,
            exception=exc,
            context=context,
        )

    def _on_reply(
        self, kind: str, ref: int, elapsed: float, reply: Reply | None, error: BaseException | None
    ) -> None:
        client_order_id = self.client_order_ids.pop(ref, 0)
        if reply is None:
            self._fire(kind, elapsed, error, client_order_id=client_order_id)
            return
        if isinstance(reply, OrderRejected):
            if kind in ("cancel", "amend") and reply.reason in RACES:
                self._fire(kind, elapsed, None, client_order_id=client_order_id)
            else:
                self._fire(
                    kind,
                    elapsed,
                    RuntimeError(f"rejected: {reply.reason.name}"),
                    client_order_id=client_order_id,
                )
            return
        if isinstance(reply, OrderAccepted):
            self.open[reply.market].append(reply.order_id)
        elif isinstance(reply, OrderCancelled):
            self._forget(reply.market, reply.order_id)
        self._fire(kind, elapsed, None, client_order_id=client_order_id)

    def _on_message(self, message: object) -> None:
        # An order leaves the book when its last fill or its cancellation arrives.
        if (isinstance(message, OrderExecuted) and message.leaves_quantity == 0) or isinstance(
            message, OrderCancelled
        ):
            self._forget(message.market, message.order_id)

    def _forget(self, market: int, order_id: int) -> None:
        orders = self.open.get(market, [])
        if order_id in orders:
            orders.remove(order_id)

    def _client_order_id(self) -> int:
        self.next_client_order_id += 1
        return self.next_client_order_id

    @task(4)
    def quote(self) -> None:
        m = self.rng.choice(self.markets)
        mid = self.mids[m.id] + self.rng.choice((-1, 0, 1)) * m.tick_size
        mid = min(max(mid, m.mid * 9 // 10), m.mid * 11 // 10)
        self.mids[m.id] = mid
        for side, sign in ((Side.BUY, -1), (Side.SELL, 1)):
            price = mid + sign * self.rng.randint(2, 20) * m.tick_size
            quantity = m.lot_size * m.min_lots * self.rng.randint(1, 3)
            cid = self._client_order_id()
            ref = self.client.new_order(m.id, side, quantity, price, client_order_id=cid)
            self.client_order_ids[ref] = cid
        while len(self.open[m.id]) > self.max_open:
            self.client.cancel(self.open[m.id].pop(0))

    @task(1)
    def amend(self) -> None:
        m = self.rng.choice(self.markets)
        if self.open[m.id]:
            order_id = self.rng.choice(self.open[m.id])
            # A smaller size keeps priority; the engine refuses an unchanged amend.
            self.client.amend(order_id, new_quantity=m.lot_size * m.min_lots)

    @task(1)
    def cancel(self) -> None:
        m = self.rng.choice(self.markets)
        if self.open[m.id]:
            self.client.cancel(self.open[m.id].pop(0))
