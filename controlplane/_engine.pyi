"""The compiled engine (``rust/python``). Import it through ``controlplane``, not directly."""

import os
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self, final

from controlplane.engine_types import (
    Ack,
    Command,
    Event,
    EventLogEntry,
    GatewayAddress,
    GatewayConfig,
    GatewayStats,
    JournalRecord,
    MarketView,
    NodeConfig,
    NodeStats,
    OrderView,
    RecoveryReport,
    ReplayReport,
    Side,
)

__all__ = [
    "MESSAGE_VERSION",
    "CommandError",
    "Engine",
    "EngineError",
    "EventsGone",
    "InvariantViolation",
    "Node",
    "NodeBusy",
    "NodeClient",
    "NodeError",
    "NodeStopped",
    "RecoveryError",
    "ToolError",
    "bench_engine",
    "bench_gateway",
    "bench_pipeline",
    "bench_replay",
    "encode_command",
    "read_journal",
    "replay_journal",
    "replay_lobster",
]

MESSAGE_VERSION: int
"""The version of the msgpack message shapes (``controlplane.messages.VERSION``), first in
every envelope the node sends."""

class EngineError(Exception):
    """Base class of every error raised by the engine bindings."""

class CommandError(EngineError):
    """A dict or byte string that does not describe a command; the message says which field."""

class InvariantViolation(EngineError):
    """The engine's state broke one of its invariants."""

class ToolError(EngineError):
    """A benchmark or replay tool failed."""

class NodeError(EngineError):
    """The durable node failed: a bad config, an I/O error, a failed snapshot."""

class RecoveryError(NodeError):
    """Journal or snapshot damage that recovery will not guess about; names file and offset."""

class NodeBusy(NodeError):
    """The node's submission ring stayed full for the whole timeout; nothing was submitted."""

class NodeStopped(NodeError):
    """The node is stopped, or stopped before acknowledging a command."""

class EventsGone(NodeError):
    """The events or journal records asked for were compacted away after a snapshot."""

@final
class Engine:
    """The matching engine: a deterministic state machine over commands.

    A command the engine refuses is not an exception: it returns a ``rejected`` event.
    """

    def __new__(cls, order_capacity: int = 65536, levels_per_side: int = 1024) -> Engine: ...
    def apply(self, command: Command) -> list[Event]:
        """Apply one command dict; returns its events. Raises CommandError if it is not one."""
    def apply_bytes(self, data: bytes) -> list[Event]:
        """Apply one binary-encoded command; raises CommandError if it does not decode."""
    def state_hash(self) -> str:
        """The 128-bit state hash as 32 lowercase hex digits."""
    def balance(self, account: int, asset: int) -> tuple[int, int] | None:
        """``(free, held)`` atoms, or None if the account or asset is unknown."""
    def order(self, order_id: int) -> OrderView | None:
        """One open order, or None."""
    def open_orders(self, account: int) -> list[OrderView]:
        """The account's open orders, oldest first."""
    def depth(self, market: int, side: Side, levels: int) -> list[tuple[int, int, int]]:
        """Up to ``levels`` levels as ``(price, quantity, orders)``, best first."""
    def book_orders(self, market: int, side: Side) -> list[OrderView]:
        """Every resting order of one side, best level first, FIFO within a level."""
    def market(self, market: int) -> MarketView | None:
        """The market's specification and status, or None."""
    def check_invariants(self) -> None:
        """Raise InvariantViolation if the engine's state is inconsistent."""

def encode_command(command: Command) -> bytes:
    """The binary form of a command dict; raises CommandError if it is not one."""

def bench_engine(workload: str, ops: int, seed: int) -> str:
    """Run the engine benchmark (GIL released); returns its JSON line. Raises ToolError."""

def replay_lobster(path: str | os.PathLike[str], max_messages: int | None = None) -> str:
    """Replay a LOBSTER sample zip (GIL released); returns its JSON line. Raises ToolError."""

@final
class Node:
    """A durable node: the engine behind a sequencer and a journal, on its own threads.

    ``Node(config)`` recovers from ``config["data_dir"]`` (newest valid snapshot + journal)
    and starts; raises RecoveryError on damage it will not guess about, NodeError on a bad
    config (unknown keys are rejected) or I/O trouble. Every waiting call releases the GIL; a
    node may be shared between threads. As a context manager it stops on exit.
    """

    def __new__(cls, config: NodeConfig) -> Node: ...
    def recovery(self) -> RecoveryReport:
        """What recovery found and did when the node started (also after stop)."""
    def submit(self, command: Command, *, timeout: float = 30.0) -> Ack:
        """Submit one command and wait until it is acknowledged (journaled under the policy,
        applied). Retries while the ring is full; NodeBusy after ``timeout`` seconds of no
        progress, NodeStopped if the node stops first, CommandError if it is not a command."""
    def submit_many(
        self, commands: Iterable[Command], *, window: int = 1024, timeout: float = 30.0
    ) -> list[Ack]:
        """Submit commands in order, up to ``window`` in flight; their acks, in order.
        Every command is checked before any is submitted. ``timeout`` bounds each wait."""
    def events(self, from_seq: int, max: int = 1000, timeout: float = 0.0) -> list[EventLogEntry]:
        """Up to ``max`` commands' events from ``from_seq`` on, in order; waits up to
        ``timeout`` seconds for the first. EventsGone if they were compacted away."""
    def events_packed(self, from_seq: int, max: int = 1000, timeout: float = 0.0) -> bytes:
        """The entries of :meth:`events` as msgpack with field names in the versioned envelope
        ``[MESSAGE_VERSION, [{seq, timestamp_ns, origin, command, events}, ...]]`` (decode
        with ``controlplane.bridge.decode_entries``); GIL released while waiting."""
    def open_client(self) -> NodeClient:
        """A new pipelined submission client with its own rings (see :class:`NodeClient`)."""
    def last_reference(self, source: int) -> int:
        """The highest ``Origin.reference`` applied for ``source`` (0 if none; source 0 is
        never tracked). Commands still in flight are not counted."""
    def stats(self) -> NodeStats:
        """The node's counters."""
    def state_hash(self) -> str:
        """The engine's state hash (32 hex digits), between two commands."""
    def balance(self, account: int, asset: int) -> tuple[int, int] | None:
        """``(free, held)`` atoms, or None if the account has never held the asset."""
    def fee_rates(self, account: int) -> tuple[int, int, int] | None:
        """The account's fee tier and its rates, ``(tier, maker_bps, taker_bps)``, or None if
        the account does not exist."""
    def depth(self, market: int, side: Side, levels: int) -> list[tuple[int, int, int]]:
        """Up to ``levels`` levels as ``(price, quantity, orders)``, best first."""
    def markets(self) -> list[MarketView]:
        """Every listed market's specification and status, in listing order."""
    def assets(self) -> list[tuple[int, int]]:
        """Listed assets as ``(asset, decimals)``, in listing order."""
    def snapshot(self) -> int:
        """Take a snapshot now; its sequence number once written. NodeError if it fails."""
    def start_gateway(self, config: GatewayConfig | None = None) -> GatewayAddress:
        """Start the binary gateway in front of this node; where it listens. NodeError if
        one already runs or the config is invalid."""
    def add_api_key(
        self, key_id: int, secret: bytes, account: int, kinds: list[str] | None = None
    ) -> None:
        """Add or replace a gateway API key (kinds: order_entry, drop_copy, market_data)."""
    def revoke_api_key(self, key_id: int) -> bool:
        """Revoke a gateway API key and end its sessions; whether it existed."""
    def gateway_stats(self) -> GatewayStats:
        """The gateway's counters."""
    def stop_gateway(self) -> GatewayStats:
        """End every gateway session (cancel-on-disconnect fires) and stop the gateway."""
    def stop(self) -> NodeStats:
        """Drain, take a final snapshot, join the threads; the final counters. Idempotent;
        every other method raises NodeStopped afterwards."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> bool:
        """Stop the node (see stop)."""

@final
class NodeClient:
    """A pipelined submission client of a node (``Node.open_client()``): commands go in as
    msgpack maps (``controlplane.bridge.encode_command``), acknowledgements come back in
    batches. One thread sends, one thread waits for acknowledgements; at most the node's
    ``ring_capacity`` commands are in flight."""

    def send(self, packed_command: bytes, source: int = 0, reference: int = 0) -> int:
        """Hand in one command, journaled with ``Origin(source, reference)``; its correlation
        number (1, 2, … per client). Never blocks: NodeBusy if the ring is full, CommandError
        for bytes that are not one command (nothing submitted), NodeStopped if the node or
        the client stopped."""
    def wait_acks(self, max: int = 1024, timeout: float = 1.0) -> bytes:
        """Wait (GIL released) up to ``timeout`` seconds for acknowledgements; up to ``max``
        as msgpack ``[MESSAGE_VERSION, [[correlation, {seq, timestamp_ns, events}], ...]]``
        (an empty list on timeout). NodeStopped once the node stopped with nothing left to
        return, or the client was closed."""
    def in_flight(self) -> int:
        """Commands sent whose acknowledgement ``wait_acks`` has not returned yet."""
    def close(self) -> None:
        """Close: later calls, and a ``wait_acks`` in progress, raise NodeStopped. Commands in
        flight are still applied. Idempotent."""

def replay_journal(config: NodeConfig) -> ReplayReport:
    """Replay a node's data directory (newest valid snapshot + journal) into a fresh engine in
    this process, changing nothing on disk; the report plus the invariant check. Raises
    RecoveryError on damage (a torn tail is only not replayed, not cut off)."""

def read_journal(data_dir: str | os.PathLike[str], from_seq: int = 0) -> list[JournalRecord]:
    """The journal's records from ``from_seq`` on (0: the first still present). A torn last
    record ends the list quietly (where recovery would cut it); other damage raises
    RecoveryError, records compacted away raise EventsGone."""

def bench_pipeline(policy: str, ops: int, window: int, seed: int) -> str:
    """The pipeline benchmark (GIL released); its JSON line. ValueError for an unknown
    policy, ToolError if it fails."""

def bench_replay(ops: int, seed: int, fsync_samples: int) -> str:
    """The replay-speed benchmark (GIL released); its JSON line. Raises ToolError."""

def bench_gateway(
    rate: int,
    duration: float,
    policy: str = "fsync",
    sessions: int = 8,
    warmup: float = 1.0,
    seed: int = 1,
    max_resting: int = 256,
    client_threads: int = 1,
    drain: float = 5.0,
    gateway_core: int | None = None,
    node_core: int | None = None,
    node_wait: str | None = None,
    node_pipeline: str = "threads",
    client_spin_core: int | None = None,
    gateway_embedded: bool = False,
    preallocate: bool = True,
) -> dict[str, Any]:
    """The gateway benchmark (GIL released): a node (``policy``) and a gateway in process,
    ``sessions`` order-entry sessions offering ``rate`` requests/s in total, open loop, for
    ``warmup`` + ``duration`` seconds; latency from each request's scheduled send time to its
    first response. The report: ``offered_rate``, ``achieved_rate``, ``p50_us`` … ``max_us``,
    ``sent``, ``answered``, ``unanswered``, ``rejects``, ``reject_codes``, ``trades``, the
    ``gateway`` and ``node`` counters, and more. ``gateway_core`` / ``node_core`` pin the
    gateway's I/O thread / the node's three pipeline threads; ``node_wait`` is the node's wait
    strategy (``busy-spin``, ``yield``, ``spin-then-park[:SPINS:PARK_US]``), ``node_pipeline``
    its pipeline mode (``threads`` or ``single``); ``client_spin_core`` runs the load
    generator as one thread pinned to that core that never sleeps (instead of
    ``client_threads`` sender/receiver pairs); ``gateway_embedded`` runs the gateway's I/O on
    the node's single pipeline thread (implies ``node_pipeline="single"``); ``preallocate``
    zero-fills journal segments before use, as the shipped configuration does. ValueError for
    a bad argument, ToolError if it fails."""
