"""``bourse bench bridge``: how fast the control plane's command bridge submits orders.

A real node (durability as asked) in a temporary directory, one market and two funded
accounts, then ``orders`` limit orders submitted through :class:`EngineBridge.submit` by
``concurrency`` asyncio tasks at once on a uvloop loop (a closed loop: each task submits its
next order when the previous one is acknowledged). Orders alternate buy and sell at
overlapping prices, so about half of them trade and the book stays small. The report is one
JSON object: orders/s over the whole run and the p50 / p99 / max latency of
``await bridge.submit`` in µs (submission to resolved acknowledgement, as a REST handler
sees it).

Cost: O(orders) time; memory O(orders) for the latency samples.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from typing import Any, cast

import uvloop

from controlplane import Node
from controlplane import messages as m
from controlplane.bridge import EngineBridge
from controlplane.engine_types import Durability

BASE, QUOTE, MARKET = 1, 2, 1
LOT = 1000


def _setup() -> list[m.Command]:
    return [
        m.ListAsset(asset=BASE, decimals=8),
        m.ListAsset(asset=QUOTE, decimals=8),
        m.ListMarket(
            market=MARKET,
            base=BASE,
            quote=QUOTE,
            price_decimals=2,
            tick_size=1,
            lot_size=LOT,
            min_notional=0,
        ),
        m.CreateAccount(account=1),
        m.CreateAccount(account=2),
        m.Deposit(account=1, asset=QUOTE, amount=10**18),
        m.Deposit(account=2, asset=BASE, amount=10**18),
    ]


def _order(i: int) -> m.PlaceOrder:
    """The ``i``-th order: buys from account 1 and sells from account 2 in turn, at prices
    around 100 that cross about half the time."""
    buy = i % 2 == 0
    return m.PlaceOrder(
        account=1 if buy else 2,
        market=MARKET,
        side="buy" if buy else "sell",
        order_type="limit",
        price=100 + (i * 7) % 5 if buy else 102 - (i * 3) % 5,
        quantity=LOT * (1 + i % 3),
    )


def _percentile(sorted_samples: list[int], fraction: float) -> float:
    if not sorted_samples:
        return 0.0
    index = min(len(sorted_samples) - 1, int(fraction * len(sorted_samples)))
    return sorted_samples[index] / 1e3


async def _run(node: Node, orders: int, concurrency: int) -> dict[str, Any]:
    bridge = EngineBridge(node)
    try:
        for ack in await bridge.submit_many(_setup()):
            rejection = ack.rejection()
            if rejection is not None:
                raise RuntimeError(f"benchmark setup rejected: {rejection.reason}")
        latencies_ns: list[int] = []
        next_order = 0
        rejected = 0

        async def worker() -> None:
            nonlocal next_order, rejected
            while next_order < orders:
                order = _order(next_order)
                next_order += 1
                started = time.perf_counter_ns()
                ack = await bridge.submit(order)
                latencies_ns.append(time.perf_counter_ns() - started)
                rejected += ack.rejection() is not None

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    finally:
        bridge.close()
    latencies_ns.sort()
    return {
        "orders": orders,
        "concurrency": concurrency,
        "elapsed_s": round(elapsed, 3),
        "orders_per_s": round(orders / elapsed, 1),
        "p50_us": round(_percentile(latencies_ns, 0.50), 1),
        "p99_us": round(_percentile(latencies_ns, 0.99), 1),
        "max_us": round(latencies_ns[-1] / 1e3, 1) if latencies_ns else 0.0,
        "rejected": rejected,
    }


def run(orders: int, concurrency: int, policy: str = "fsync") -> dict[str, Any]:
    """Run the benchmark on a fresh node with durability ``policy``; the report."""
    with tempfile.TemporaryDirectory(prefix="bourse-bench-bridge-") as data_dir:
        node = Node({"data_dir": data_dir, "durability": cast(Durability, policy)})
        try:
            report = uvloop.run(_run(node, orders, concurrency))
        finally:
            node.stop()
    return {"bench": "bridge", "policy": policy, **report}
