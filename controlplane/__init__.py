"""Bourse control plane.

The matching engine is the compiled module ``controlplane._engine`` (Rust, ``rust/python``);
this package re-exports its API together with the typed shapes of commands and events.
"""

from controlplane._engine import (
    CommandError,
    Engine,
    EngineError,
    EventsGone,
    InvariantViolation,
    Node,
    NodeBusy,
    NodeError,
    NodeStopped,
    RecoveryError,
    ToolError,
    bench_engine,
    bench_pipeline,
    bench_replay,
    encode_command,
    read_journal,
    replay_journal,
    replay_lobster,
)
from controlplane.engine_types import (
    Ack,
    Command,
    Event,
    JournalRecord,
    MarketView,
    NodeConfig,
    NodeStats,
    OrderView,
    RecoveryReport,
    ReplayReport,
)

__all__ = [
    "Ack",
    "Command",
    "CommandError",
    "Engine",
    "EngineError",
    "Event",
    "EventsGone",
    "InvariantViolation",
    "JournalRecord",
    "MarketView",
    "Node",
    "NodeBusy",
    "NodeConfig",
    "NodeError",
    "NodeStats",
    "NodeStopped",
    "OrderView",
    "RecoveryError",
    "RecoveryReport",
    "ReplayReport",
    "ToolError",
    "bench_engine",
    "bench_pipeline",
    "bench_replay",
    "encode_command",
    "read_journal",
    "replay_journal",
    "replay_lobster",
]
