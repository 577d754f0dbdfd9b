"""The compiled engine (``rust/python``). Import it through ``controlplane``, not directly."""

import os
from typing import final

from controlplane.engine_types import Command, Event, MarketView, OrderView, Side

__all__ = [
    "CommandError",
    "Engine",
    "EngineError",
    "InvariantViolation",
    "ToolError",
    "bench_engine",
    "encode_command",
    "replay_lobster",
]

class EngineError(Exception):
    """Base class of every error raised by the engine bindings."""

class CommandError(EngineError):
    """A dict or byte string that does not describe a command; the message says which field."""

class InvariantViolation(EngineError):
    """The engine's state broke one of its invariants."""

class ToolError(EngineError):
    """A benchmark or replay tool failed."""

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
