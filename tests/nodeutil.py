"""Helpers for the node tests: a small node config, a deterministic random command flow on
the demo BTC/USDT market (``tests.conftest``), and journal-file surgery."""

from __future__ import annotations

import random
from pathlib import Path

from controlplane import Command, Engine, JournalRecord, NodeConfig, encode_command
from controlplane.engine_types import OrderByClientId
from tests.conftest import BTC, COIN, MARKET, SETUP, USDT

ORDER_CAPACITY = 4096
LEVELS_PER_SIDE = 256
ACCOUNTS = (1, 2, 3, 4)
MID = 3_000_000  # 30,000.00 USDT per BTC


def small_config(data_dir: Path, **overrides: object) -> NodeConfig:
    """A node config for tests: small engine, small segments, no time-based snapshots."""
    config: dict[str, object] = {
        "data_dir": str(data_dir),
        "durability": "fsync",
        "segment_bytes": 4096,
        "snapshot_every_commands": 0,
        "snapshot_every_secs": 0,
        "keep_snapshots": 2,
        "ring_capacity": 1024,
        "wait": {"spin_then_park": {"spins": 100, "park_timeout_us": 200}},
        "order_capacity": ORDER_CAPACITY,
        "levels_per_side": LEVELS_PER_SIDE,
        "event_window": 1000,
    }
    config.update(overrides)
    return config  # type: ignore[return-value]


def fresh_engine() -> Engine:
    return Engine(order_capacity=ORDER_CAPACITY, levels_per_side=LEVELS_PER_SIDE)


class Flow:
    """A deterministic stream of commands: the demo market's setup, more accounts, then
    random deposits, limit orders, cancels, amends and withdrawals (some of which the engine
    rejects, which is fine: a rejection is journaled like anything else)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.pending: list[Command] = list(SETUP)
        for account in ACCOUNTS[2:]:
            self.pending.append({"type": "create_account", "account": account, "fee_tier": 0})
        for account in ACCOUNTS:
            self.pending.append(
                {"type": "deposit", "account": account, "asset": BTC, "amount": 10 * COIN}
            )
            self.pending.append(
                {"type": "deposit", "account": account, "asset": USDT, "amount": 10**6 * COIN}
            )
        self.client_order_id = 0
        self.orders: dict[int, list[int]] = {a: [] for a in ACCOUNTS}

    def __iter__(self) -> Flow:
        return self

    def __next__(self) -> Command:
        if self.pending:
            return self.pending.pop(0)
        rng = self.rng
        account = rng.choice(ACCOUNTS)
        asset = rng.choice((BTC, USDT))
        r = rng.random()
        mine = self.orders[account]
        if r < 0.45 or not mine:
            self.client_order_id += 1
            mine.append(self.client_order_id)
            return {
                "type": "place_order",
                "account": account,
                "market": MARKET,
                "client_order_id": self.client_order_id,
                "side": rng.choice(("buy", "sell")),
                "order_type": "limit",
                "price": MID + rng.randint(-25, 25),
                "quantity": 1000 * rng.randint(1, 60),
            }
        if r < 0.60:
            return {
                "type": "cancel_order",
                "account": account,
                "order": {"client": rng.choice(mine)},
            }
        if r < 0.72:
            order: OrderByClientId = {"client": rng.choice(mine)}
            if rng.random() < 0.5:
                return {
                    "type": "amend_order",
                    "account": account,
                    "order": order,
                    "new_quantity": 1000 * rng.randint(1, 60),
                }
            return {
                "type": "amend_order",
                "account": account,
                "order": order,
                "new_price": MID + rng.randint(-25, 25),
            }
        if r < 0.86:
            amount = rng.randint(1, 10**6)
            return {"type": "deposit", "account": account, "asset": asset, "amount": amount}
        amount = rng.randint(1, 10 * COIN)
        return {"type": "withdraw", "account": account, "asset": asset, "amount": amount}

    def take(self, n: int) -> list[Command]:
        return [next(self) for _ in range(n)]


def same_command(a: Command, b: Command) -> bool:
    """Equal as commands (the journal's dicts spell out defaulted fields)."""
    return encode_command(a) == encode_command(b)


def replay(records: list[JournalRecord]) -> Engine:
    """A fresh engine with the records applied in order."""
    engine = fresh_engine()
    for record in records:
        engine.apply(record["command"])
    return engine


def segments(data_dir: Path) -> list[Path]:
    return sorted(data_dir.glob("*.journal"))


def snapshots(data_dir: Path) -> list[Path]:
    return sorted(data_dir.glob("snapshot-*.snap"))


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
