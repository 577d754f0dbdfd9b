"""Bourse control plane.

The matching engine is the compiled module ``controlplane._engine`` (Rust, ``rust/python``);
this package re-exports its API together with the typed shapes of commands and events.
"""

from controlplane._engine import (
    CommandError,
    Engine,
    EngineError,
    InvariantViolation,
    ToolError,
    bench_engine,
    encode_command,
    replay_lobster,
)
from controlplane.engine_types import Command, Event, MarketView, OrderView

__all__ = [
    "Command",
    "CommandError",
    "Engine",
    "EngineError",
    "Event",
    "InvariantViolation",
    "MarketView",
    "OrderView",
    "ToolError",
    "bench_engine",
    "encode_command",
    "replay_lobster",
]
