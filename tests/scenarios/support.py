"""Engine helpers shared by the scenario suites: apply-and-check, and typed event filters."""

from __future__ import annotations

from controlplane import Command, Engine, Event
from controlplane.engine_types import (
    AcceptedEvent,
    AmendedEvent,
    OrderDoneEvent,
    RejectedEvent,
    TradeEvent,
)


class Driver:
    """An engine that checks its invariants after every command and keeps the last events."""

    def __init__(self) -> None:
        self.engine = Engine()
        self.last: list[Event] = []

    def apply(self, command: Command) -> list[Event]:
        """Apply one command (which may be rejected); returns and remembers its events."""
        events = self.engine.apply(command)
        self.engine.check_invariants()
        self.last = events
        return events

    def apply_ok(self, command: Command) -> list[Event]:
        """Apply one command that must not be rejected."""
        events = self.apply(command)
        assert not rejections(events), (command, rejections(events))
        return events


def rejections(events: list[Event]) -> list[RejectedEvent]:
    """The ``rejected`` events."""
    out: list[RejectedEvent] = []
    for e in events:
        if e["type"] == "rejected":
            out.append(e)
    return out


def accepted(events: list[Event]) -> list[AcceptedEvent]:
    """The ``accepted`` events."""
    out: list[AcceptedEvent] = []
    for e in events:
        if e["type"] == "accepted":
            out.append(e)
    return out


def trades(events: list[Event]) -> list[TradeEvent]:
    """The ``trade`` events, in the order they happened."""
    out: list[TradeEvent] = []
    for e in events:
        if e["type"] == "trade":
            out.append(e)
    return out


def amended(events: list[Event]) -> list[AmendedEvent]:
    """The ``amended`` events."""
    out: list[AmendedEvent] = []
    for e in events:
        if e["type"] == "amended":
            out.append(e)
    return out


def done(events: list[Event]) -> list[OrderDoneEvent]:
    """The ``order_done`` events."""
    out: list[OrderDoneEvent] = []
    for e in events:
        if e["type"] == "order_done":
            out.append(e)
    return out
