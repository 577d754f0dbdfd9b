"""The WebSocket-subscriber Locust user: diff depth and trades, reporting delivery lag.

Each user opens one combined stream (``/stream?streams=<sym>@depth@100ms/<sym>@trade``) for
one market and reads it. Every frame is reported to Locust's ``request`` event (request type
``WS``; names ``depth`` and ``trade``) with, as its "response time", the delivery lag: the
time the frame arrived minus its event time ``E`` (the engine's timestamp of the command, in
ms; both clocks are this machine's when Locust runs next to the server). A diff-depth frame
whose ``U`` is not the previous ``u`` + 1 is reported as a failure (a gap).
"""

from __future__ import annotations

import json
import random
import time

import websocket
from locust import User, constant, task

from loadtests.bourse_load.fixtures import fixtures_for


class StreamSubscriberUser(User):
    """A market-data subscriber over WebSocket (see the module docstring)."""

    wait_time = constant(0)
    weight = 1

    def on_start(self) -> None:
        fixtures = fixtures_for(self.environment)
        market = random.choice(fixtures.markets)
        symbol = market.symbol.lower()
        url = fixtures.base_url.replace("http", "ws", 1)
        url += f"/stream?streams={symbol}@depth@100ms/{symbol}@trade"
        self.ws = websocket.create_connection(url, timeout=5)
        self.last_u: int | None = None

    def on_stop(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()

    def _fire(self, name: str, lag_ms: float, exc: BaseException | None, length: int) -> None:
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=max(lag_ms, 0.0),
            response_length=length,
            exception=exc,
            context={},
        )

    @task
    def read(self) -> None:
        try:
            raw = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            return
        now_ms = time.time() * 1000
        frame = json.loads(raw)
        data = frame.get("data", {})
        kind = data.get("e")
        if kind == "depthUpdate":
            error: BaseException | None = None
            if self.last_u is not None and data["U"] != self.last_u + 1:
                error = RuntimeError(f"gap: U {data['U']} after u {self.last_u}")
            self.last_u = data["u"]
            self._fire("depth", now_ms - data["E"], error, len(raw))
        elif kind == "trade":
            self._fire("trade", now_ms - data["E"], None, len(raw))
