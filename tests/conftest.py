"""Shared fixtures: a small BTC/USDT exchange and the shared market data directory.

Units (see controlplane.engine_types): BTC and USDT have 8 decimals; market 1 quotes BTC in
USDT with 2 price decimals, tick 1 and lot 1000 atoms, so one tick on one lot is worth
``1 * 1000 * 10**8 / 10**(2 + 8) = 10`` USDT atoms. A price of 3_000_000 is 30,000.00 USDT.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controlplane import Command, Engine, Event
from controlplane.engine_types import PlaceOrderCommand, Side

ROOT = Path(__file__).resolve().parents[1]

BTC, USDT = 1, 2
MARKET = 1
ALICE, BOB = 1, 2  # account 0 is the fee account
COIN = 10**8  # atoms per whole BTC or USDT
TICK_VALUE = 10

SETUP: list[Command] = [
    {"type": "list_asset", "asset": BTC, "decimals": 8},
    {"type": "list_asset", "asset": USDT, "decimals": 8},
    {
        "type": "list_market",
        "market": MARKET,
        "base": BTC,
        "quote": USDT,
        "price_decimals": 2,
        "tick_size": 1,
        "lot_size": 1000,
        "min_notional": 0,
    },
    {"type": "create_account", "account": ALICE, "fee_tier": 0},
    {"type": "create_account", "account": BOB, "fee_tier": 0},
    {"type": "deposit", "account": ALICE, "asset": USDT, "amount": 1_000 * COIN},
    {"type": "deposit", "account": BOB, "asset": BTC, "amount": 1 * COIN},
]


def limit(
    account: int, side: Side, price: int, quantity: int, client_order_id: int = 0
) -> PlaceOrderCommand:
    """A GTC limit order on the BTC/USDT market."""
    return {
        "type": "place_order",
        "account": account,
        "market": MARKET,
        "client_order_id": client_order_id,
        "side": side,
        "order_type": "limit",
        "price": price,
        "quantity": quantity,
    }


def apply_all(engine: Engine, commands: list[Command]) -> list[Event]:
    """Apply commands in order, asserting none is rejected; returns all their events."""
    events: list[Event] = []
    for command in commands:
        out = engine.apply(command)
        rejected = [e for e in out if e["type"] == "rejected"]
        assert not rejected, (command, rejected)
        events.extend(out)
    return events


def new_exchange() -> Engine:
    """An engine with the BTC/USDT market listed and both accounts funded."""
    engine = Engine()
    apply_all(engine, SETUP)
    return engine


@pytest.fixture
def exchange() -> Engine:
    return new_exchange()


def data_dir() -> Path | None:
    """The shared market data (read-only, never copied into the repo): ``$BOURSE_DATA_DIR``,
    else ``../shared/data`` next to the repo."""
    configured = os.environ.get("BOURSE_DATA_DIR")
    path = Path(configured) if configured else ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture
def lobster_zip() -> Path:
    data = data_dir()
    if data is None:
        pytest.skip("shared market data not found; set BOURSE_DATA_DIR")
    return data / "lobster" / "LOBSTER_SampleFile_AAPL_2012-06-21_1.zip"
