"""Local books built from the Bourse market-data feed (``docs/protocol.md`` §6). Pure: feed
messages in with :meth:`apply`, read the book out; no I/O.

* :class:`OrderBook` — the order-by-order feed (``MdSnapshotOrder``; ``MdAdd``,
  ``MdExecute``, ``MdReduce``, ``MdDelete``).
* :class:`LevelBook` — the levels feed (``MdSnapshotLevel``; ``MdLevel``).
* :class:`TopOfBook` — the top-of-book feed (``MdSnapshotLevel``; ``MdTopOfBook``).

Apply rule (order-by-order and levels), with *L* the last applied ``book_seq``:

* a snapshot (``MdSnapshotStart`` *S* … ``MdSnapshotEnd`` *S*) replaces the book; *L* = *S*;
* a change with ``book_seq`` ≤ *L* is a duplicate and is ignored;
* ``book_seq`` = *L* + 1 is applied, then every buffered change that now follows in order;
* ``book_seq`` > *L* + 1 is buffered, and :meth:`apply` returns a :class:`Gap` — the range not
  yet reported, below that change — for the caller to send as ``MdRetransmitRequest``
  (``gap.request()``). Each missing number is reported once; :attr:`gap` always gives the
  first range still missing (to ask again, e.g. after ``NotYet``).
* Changes that arrive before the first snapshot completes are buffered too; those at or
  below *S* are dropped when it does.

Invariants (checked; a violation raises :class:`BookError`, which means the feed — or the
routing of messages to books — is wrong):

* An order id rests at most once; executes, reduces and deletes name a resting order with
  its side and price, and their quantities add up (``quantity - executed == remaining``,
  ``removed_quantity`` = the open quantity).
* A snapshot has exactly ``entries`` entries, bids best to worst then asks best to worst,
  and ends with the ``book_seq`` it started with.
* Levels never hold zero quantity; :meth:`bids` and :meth:`asks` are best first.

Messages of other markets, and message types a book does not use, are ignored, so every
message of a session may be given to every book. ``MdTrade`` (deduplicated by trade id) and
``MdMarketStatus`` are recorded as they come (they do not take a ``book_seq``).

Complexity: applying a change is O(1) (amortised; a level is a dict in queue order);
:meth:`bids`/:meth:`asks` sort the prices, O(P log P) for P levels on the side.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from controlplane.gateway.codec import (
    FeedKind,
    MarketStatus,
    MdAdd,
    MdDelete,
    MdExecute,
    MdLevel,
    MdMarketStatus,
    MdReduce,
    MdRetransmitRequest,
    MdSnapshotEnd,
    MdSnapshotLevel,
    MdSnapshotOrder,
    MdSnapshotStart,
    MdTopOfBook,
    MdTrade,
    Message,
    Side,
)

__all__ = [
    "BookError",
    "BookOrder",
    "Gap",
    "Level",
    "LevelBook",
    "OrderBook",
    "TopOfBook",
]

_MAX_RETRANSMIT = 10_000
"""The server's largest retransmit count (``TooMany`` above it)."""


class BookError(Exception):
    """The feed contradicts the book (see the module invariants)."""


class Level(NamedTuple):
    """A price level: ``(price, quantity, orders)`` — compares equal to a plain tuple."""

    price: int
    quantity: int
    orders: int


class BookOrder(NamedTuple):
    """A resting order as the feed shows it."""

    order_id: int
    side: Side
    price: int
    quantity: int


@dataclass(frozen=True, slots=True)
class Gap:
    """Missing book changes ``[from_book_seq, from_book_seq + count)`` of ``market``."""

    market: int
    from_book_seq: int
    count: int

    def request(self) -> MdRetransmitRequest:
        """The ``MdRetransmitRequest`` for this range."""
        return MdRetransmitRequest(
            market=self.market, from_book_seq=self.from_book_seq, count=self.count
        )

    def requests(self, max_count: int = _MAX_RETRANSMIT) -> list[MdRetransmitRequest]:
        """The range as requests of at most ``max_count`` (the server's limit) each."""
        out = []
        start, end = self.from_book_seq, self.from_book_seq + self.count
        while start < end:
            n = min(max_count, end - start)
            out.append(MdRetransmitRequest(market=self.market, from_book_seq=start, count=n))
            start += n
        return out


_Change = MdAdd | MdExecute | MdReduce | MdDelete | MdLevel


class _SequencedBook:
    """The apply rule, snapshots, the gap buffer, trades and status — shared by the dense
    feeds. Subclasses say which messages are their snapshot entries and changes."""

    FEED: ClassVar[FeedKind]
    _ENTRY: ClassVar[type[MdSnapshotOrder | MdSnapshotLevel]]
    _CHANGES: ClassVar[tuple[type[_Change], ...]]

    def __init__(self, market: int, *, max_buffer: int = 1_000_000, max_trades: int = 100_000):
        self.market = market
        self.book_seq = 0
        """*L*: the last applied ``book_seq`` (valid once :attr:`synced`)."""
        self.synced = False
        """Whether a snapshot has completed."""
        self.status: MarketStatus | None = None
        self.trades: deque[MdTrade] = deque(maxlen=max_trades)
        """The recent trades, oldest first."""
        self.applied = 0
        """Changes applied since the last snapshot."""
        self.duplicates = 0
        """Changes ignored as duplicates (``book_seq`` ≤ *L*)."""
        self._trade_ids: set[int] = set()
        self._max_buffer = max_buffer
        self._buffer: dict[int, _Change] = {}
        self._reported_to = 0
        self._snapshot: list[MdSnapshotOrder | MdSnapshotLevel] | None = None
        self._snapshot_start: MdSnapshotStart | None = None

    # -- the apply rule --

    def apply(self, msg: Message) -> Gap | None:
        """Apply one message; a newly detected :class:`Gap` to request, else None."""
        market = getattr(msg, "market", None)
        if market != self.market:
            return None
        if isinstance(msg, self._CHANGES):
            return self._on_change(msg)
        if isinstance(msg, self._ENTRY):
            if self._snapshot is None:
                raise BookError(f"{type(msg).__name__} outside a snapshot")
            self._snapshot.append(msg)
        elif isinstance(msg, MdSnapshotStart):
            if msg.feed != self.FEED:
                raise BookError(
                    f"snapshot of the {msg.feed.name} feed given to a {self.FEED.name} book"
                )
            self._snapshot_start = msg
            self._snapshot = []
        elif isinstance(msg, MdSnapshotEnd):
            return self._on_snapshot_end(msg)
        elif isinstance(msg, MdTrade):
            self._on_trade(msg)
        elif isinstance(msg, MdMarketStatus):
            self.status = msg.status
        return None

    def apply_all(self, msgs: list[Message]) -> list[Gap]:
        """Apply messages in order; the gaps detected."""
        gaps = []
        for m in msgs:
            g = self.apply(m)
            if g is not None:
                gaps.append(g)
        return gaps

    def _on_change(self, msg: _Change) -> Gap | None:
        s = msg.book_seq
        if not self.synced:
            self._buffer_change(msg)
            return None
        if s <= self.book_seq:
            self.duplicates += 1
            return None
        if s == self.book_seq + 1:
            self._apply_change(msg)
            self.book_seq = s
            self.applied += 1
            self._drain()
            return None
        self._buffer_change(msg)
        lo = max(self.book_seq + 1, self._reported_to)
        self._reported_to = max(self._reported_to, s + 1)
        if lo < s:
            return Gap(self.market, lo, s - lo)
        return None

    def _buffer_change(self, msg: _Change) -> None:
        if msg.book_seq in self._buffer:
            self.duplicates += 1
            return
        if len(self._buffer) >= self._max_buffer:
            raise BookError(
                f"market {self.market}: more than {self._max_buffer} changes buffered behind "
                f"a gap at {self.book_seq + 1}"
            )
        self._buffer[msg.book_seq] = msg

    def _drain(self) -> None:
        buf = self._buffer
        while buf:
            nxt = buf.pop(self.book_seq + 1, None)
            if nxt is None:
                break
            self._apply_change(nxt)
            self.book_seq += 1
            self.applied += 1

    def _on_snapshot_end(self, msg: MdSnapshotEnd) -> Gap | None:
        start, entries = self._snapshot_start, self._snapshot
        if start is None or entries is None:
            raise BookError("MdSnapshotEnd without MdSnapshotStart")
        if msg.book_seq != start.book_seq:
            raise BookError(
                f"snapshot started at book_seq {start.book_seq}, ended at {msg.book_seq}"
            )
        if len(entries) != start.entries:
            raise BookError(f"snapshot announced {start.entries} entries, sent {len(entries)}")
        self._snapshot = None
        self._snapshot_start = None
        self._install_snapshot(entries)
        self.book_seq = start.book_seq
        self.status = start.status
        self.synced = True
        self.applied = 0
        self._reported_to = 0
        for s in [s for s in self._buffer if s <= self.book_seq]:
            del self._buffer[s]
        self._drain()
        if not self._buffer:
            return None
        # Changes that came before the snapshot with holes among them: ask for everything
        # below the last one (the ones already buffered come back as duplicates).
        last = max(self._buffer)
        self._reported_to = last + 1
        return Gap(self.market, self.book_seq + 1, last - self.book_seq - 1)

    def _on_trade(self, msg: MdTrade) -> None:
        if msg.trade_id in self._trade_ids:
            return
        if len(self.trades) == self.trades.maxlen and self.trades:
            self._trade_ids.discard(self.trades[0].trade_id)
        self.trades.append(msg)
        self._trade_ids.add(msg.trade_id)

    # -- state --

    @property
    def gap(self) -> Gap | None:
        """The first range still missing before the buffered changes, if any."""
        if not self.synced or not self._buffer:
            return None
        first = min(self._buffer)
        return Gap(self.market, self.book_seq + 1, first - self.book_seq - 1)

    @property
    def buffered(self) -> int:
        """Changes held back behind a gap (or waiting for the snapshot)."""
        return len(self._buffer)

    @property
    def in_sync(self) -> bool:
        """Snapshot done and nothing missing."""
        return self.synced and not self._buffer

    def reset(self) -> None:
        """Forget everything (e.g. before subscribing again after ``TooOld``)."""
        self.book_seq = 0
        self.synced = False
        self.applied = 0
        self._buffer.clear()
        self._reported_to = 0
        self._snapshot = None
        self._snapshot_start = None
        self._install_snapshot([])

    # -- the subclass's part --

    def _install_snapshot(self, entries: list[MdSnapshotOrder | MdSnapshotLevel]) -> None:
        raise NotImplementedError

    def _apply_change(self, msg: _Change) -> None:
        raise NotImplementedError

    def bids(self, depth: int | None = None) -> list[Level]:
        """Bid levels, best (highest) first; at most ``depth``."""
        raise NotImplementedError

    def asks(self, depth: int | None = None) -> list[Level]:
        """Ask levels, best (lowest) first; at most ``depth``."""
        raise NotImplementedError

    def best_bid(self) -> Level | None:
        """The best bid level, if any."""
        b = self.bids(1)
        return b[0] if b else None

    def best_ask(self) -> Level | None:
        """The best ask level, if any."""
        a = self.asks(1)
        return a[0] if a else None

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} market={self.market} book_seq={self.book_seq} "
            f"synced={self.synced} buffered={self.buffered} bids={self.bids(3)} "
            f"asks={self.asks(3)}>"
        )


def _check_snapshot_order(entries: list[tuple[Side, int]]) -> None:
    """Bids best to worst (prices non-increasing), then asks best to worst (non-decreasing),
    each level contiguous."""
    seen_ask = False
    prev: tuple[Side, int] | None = None
    done: set[tuple[Side, int]] = set()
    for side, price in entries:
        if side == Side.SELL:
            seen_ask = True
        elif seen_ask:
            raise BookError("snapshot: a bid after the asks")
        if prev is not None and prev[0] == side:
            worse = price < prev[1] if side == Side.BUY else price > prev[1]
            if price != prev[1] and not worse:
                raise BookError(f"snapshot: {side.name} level {price} after {prev[1]}")
        if (side, price) != prev:
            if (side, price) in done:
                raise BookError(f"snapshot: {side.name} level {price} is not contiguous")
            done.add((side, price))
        prev = (side, price)


class _OrderLevel:
    __slots__ = ("orders", "quantity")

    def __init__(self) -> None:
        self.quantity = 0
        self.orders: dict[int, int] = {}  # order id -> open quantity, in queue order


class OrderBook(_SequencedBook):
    """The order-by-order book of one market (see the module docstring)."""

    FEED = FeedKind.ORDER_BY_ORDER
    _ENTRY = MdSnapshotOrder
    _CHANGES = (MdAdd, MdExecute, MdReduce, MdDelete)

    def __init__(self, market: int, *, max_buffer: int = 1_000_000, max_trades: int = 100_000):
        self._sides: dict[Side, dict[int, _OrderLevel]] = {Side.BUY: {}, Side.SELL: {}}
        self._where: dict[int, tuple[Side, int]] = {}
        super().__init__(market, max_buffer=max_buffer, max_trades=max_trades)

    def _install_snapshot(self, entries: list[MdSnapshotOrder | MdSnapshotLevel]) -> None:
        orders = [e for e in entries if isinstance(e, MdSnapshotOrder)]
        _check_snapshot_order([(e.side, e.price) for e in orders])
        self._sides = {Side.BUY: {}, Side.SELL: {}}
        self._where = {}
        for e in orders:
            self._add(e.order_id, e.side, e.price, e.quantity)

    def _add(self, order_id: int, side: Side, price: int, quantity: int) -> None:
        if order_id in self._where:
            raise BookError(f"order {order_id} added twice")
        if quantity == 0:
            raise BookError(f"order {order_id} added with quantity 0")
        level = self._sides[side].get(price)
        if level is None:
            level = self._sides[side][price] = _OrderLevel()
        level.orders[order_id] = quantity
        level.quantity += quantity
        self._where[order_id] = (side, price)

    def _level_of(self, order_id: int, side: Side, price: int, what: str) -> _OrderLevel:
        where = self._where.get(order_id)
        if where is None:
            raise BookError(f"{what} of order {order_id}, which is not in the book")
        if where != (side, price):
            raise BookError(
                f"{what} of order {order_id} at {side.name} {price}, but it rests at "
                f"{where[0].name} {where[1]}"
            )
        return self._sides[side][price]

    def _set_quantity(
        self, order_id: int, side: Side, price: int, level: _OrderLevel, q: int
    ) -> None:
        old = level.orders[order_id]
        level.quantity += q - old
        if q:
            level.orders[order_id] = q
            return
        del level.orders[order_id]
        del self._where[order_id]
        if not level.orders:
            del self._sides[side][price]

    def _apply_change(self, msg: _Change) -> None:
        if isinstance(msg, MdAdd):
            self._add(msg.order_id, msg.side, msg.price, msg.quantity)
        elif isinstance(msg, MdExecute):
            level = self._level_of(msg.order_id, msg.side, msg.price, "MdExecute")
            q = level.orders[msg.order_id]
            if msg.executed_quantity == 0 or q - msg.executed_quantity != msg.remaining_quantity:
                raise BookError(
                    f"MdExecute of order {msg.order_id} (open {q}): executed "
                    f"{msg.executed_quantity}, remaining {msg.remaining_quantity}"
                )
            self._set_quantity(msg.order_id, msg.side, msg.price, level, msg.remaining_quantity)
        elif isinstance(msg, MdReduce):
            level = self._level_of(msg.order_id, msg.side, msg.price, "MdReduce")
            q = level.orders[msg.order_id]
            if msg.reduced_by == 0 or q - msg.reduced_by != msg.remaining_quantity:
                raise BookError(
                    f"MdReduce of order {msg.order_id} (open {q}): reduced by "
                    f"{msg.reduced_by}, remaining {msg.remaining_quantity}"
                )
            self._set_quantity(msg.order_id, msg.side, msg.price, level, msg.remaining_quantity)
        elif isinstance(msg, MdDelete):
            level = self._level_of(msg.order_id, msg.side, msg.price, "MdDelete")
            q = level.orders[msg.order_id]
            if msg.removed_quantity != q:
                raise BookError(
                    f"MdDelete of order {msg.order_id}: removed {msg.removed_quantity}, open {q}"
                )
            self._set_quantity(msg.order_id, msg.side, msg.price, level, 0)
        else:  # pragma: no cover - _CHANGES guards this
            raise BookError(f"{type(msg).__name__} is not an order-by-order change")

    # -- views --

    def _levels(self, side: Side, depth: int | None) -> list[Level]:
        levels = self._sides[side]
        prices = sorted(levels, reverse=side == Side.BUY)
        if depth is not None:
            prices = prices[:depth]
        return [Level(p, levels[p].quantity, len(levels[p].orders)) for p in prices]

    def bids(self, depth: int | None = None) -> list[Level]:
        """Bid levels ``(price, quantity, orders)``, best (highest) first."""
        return self._levels(Side.BUY, depth)

    def asks(self, depth: int | None = None) -> list[Level]:
        """Ask levels ``(price, quantity, orders)``, best (lowest) first."""
        return self._levels(Side.SELL, depth)

    def orders(self, side: Side) -> list[BookOrder]:
        """The resting orders of one side, best level first, each level in queue order."""
        levels = self._sides[side]
        return [
            BookOrder(oid, side, p, q)
            for p in sorted(levels, reverse=side == Side.BUY)
            for oid, q in levels[p].orders.items()
        ]

    def order(self, order_id: int) -> BookOrder | None:
        """One resting order, or None."""
        where = self._where.get(order_id)
        if where is None:
            return None
        side, price = where
        return BookOrder(order_id, side, price, self._sides[side][price].orders[order_id])

    def queue_position(self, order_id: int) -> int | None:
        """0 for the oldest order of its level, 1 for the next, …; None if not resting."""
        where = self._where.get(order_id)
        if where is None:
            return None
        return list(self._sides[where[0]][where[1]].orders).index(order_id)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._where


class LevelBook(_SequencedBook):
    """The price-level book of one market, from the levels feed."""

    FEED = FeedKind.LEVELS
    _ENTRY = MdSnapshotLevel
    _CHANGES = (MdLevel,)

    def __init__(self, market: int, *, max_buffer: int = 1_000_000, max_trades: int = 100_000):
        self._sides: dict[Side, dict[int, tuple[int, int]]] = {Side.BUY: {}, Side.SELL: {}}
        super().__init__(market, max_buffer=max_buffer, max_trades=max_trades)

    def _install_snapshot(self, entries: list[MdSnapshotOrder | MdSnapshotLevel]) -> None:
        levels = [e for e in entries if isinstance(e, MdSnapshotLevel)]
        _check_snapshot_order([(e.side, e.price) for e in levels])
        self._sides = {Side.BUY: {}, Side.SELL: {}}
        for e in levels:
            if e.price in self._sides[e.side]:
                raise BookError(f"snapshot: {e.side.name} level {e.price} twice")
            if e.quantity == 0 or e.orders == 0:
                raise BookError(f"snapshot: empty {e.side.name} level {e.price}")
            self._sides[e.side][e.price] = (e.quantity, e.orders)

    def _apply_change(self, msg: _Change) -> None:
        if not isinstance(msg, MdLevel):  # pragma: no cover - _CHANGES guards this
            raise BookError(f"{type(msg).__name__} is not a levels change")
        side = self._sides[msg.side]
        if msg.quantity == 0:
            if msg.orders != 0:
                raise BookError(f"MdLevel {msg.book_seq}: quantity 0 with {msg.orders} orders")
            if side.pop(msg.price, None) is None:
                raise BookError(f"MdLevel {msg.book_seq} removes absent level {msg.price}")
        else:
            if msg.orders == 0:
                raise BookError(f"MdLevel {msg.book_seq}: quantity {msg.quantity}, 0 orders")
            side[msg.price] = (msg.quantity, msg.orders)

    def _levels(self, side: Side, depth: int | None) -> list[Level]:
        levels = self._sides[side]
        prices = sorted(levels, reverse=side == Side.BUY)
        if depth is not None:
            prices = prices[:depth]
        return [Level(p, *levels[p]) for p in prices]

    def bids(self, depth: int | None = None) -> list[Level]:
        """Bid levels ``(price, quantity, orders)``, best (highest) first."""
        return self._levels(Side.BUY, depth)

    def asks(self, depth: int | None = None) -> list[Level]:
        """Ask levels ``(price, quantity, orders)``, best (lowest) first."""
        return self._levels(Side.SELL, depth)


class TopOfBook:
    """The best bid and ask of one market, from the top-of-book feed. Each ``MdTopOfBook`` is
    a complete state: one with a ``book_seq`` above the last applied replaces it, older ones
    are ignored, and gaps need no repair."""

    FEED: ClassVar[FeedKind] = FeedKind.TOP_OF_BOOK

    def __init__(self, market: int) -> None:
        self.market = market
        self.book_seq = 0
        self.synced = False
        self.status: MarketStatus | None = None
        self.bid: Level | None = None
        self.ask: Level | None = None
        self._snapshot: list[MdSnapshotLevel] | None = None
        self._snapshot_start: MdSnapshotStart | None = None

    def apply(self, msg: Message) -> None:
        """Apply one message (other markets and types are ignored)."""
        if getattr(msg, "market", None) != self.market:
            return
        if isinstance(msg, MdTopOfBook):
            if self.synced and msg.book_seq <= self.book_seq:
                return
            self.bid = (
                Level(msg.bid_price, msg.bid_quantity, msg.bid_orders) if msg.bid_quantity else None
            )
            self.ask = (
                Level(msg.ask_price, msg.ask_quantity, msg.ask_orders) if msg.ask_quantity else None
            )
            self.book_seq = msg.book_seq
            self.synced = True
        elif isinstance(msg, MdSnapshotStart):
            if msg.feed != self.FEED:
                raise BookError(f"snapshot of the {msg.feed.name} feed given to a TopOfBook")
            self._snapshot_start = msg
            self._snapshot = []
        elif isinstance(msg, MdSnapshotLevel):
            if self._snapshot is None:
                raise BookError("MdSnapshotLevel outside a snapshot")
            self._snapshot.append(msg)
        elif isinstance(msg, MdSnapshotEnd):
            start, entries = self._snapshot_start, self._snapshot
            if start is None or entries is None or msg.book_seq != start.book_seq:
                raise BookError("MdSnapshotEnd does not close the snapshot started")
            if len(entries) != start.entries or len({e.side for e in entries}) != len(entries):
                raise BookError("top-of-book snapshot: at most one level per side, as announced")
            self.bid = self.ask = None
            for e in entries:
                level = Level(e.price, e.quantity, e.orders)
                if e.side == Side.BUY:
                    self.bid = level
                else:
                    self.ask = level
            self.book_seq = start.book_seq
            self.status = start.status
            self.synced = True
            self._snapshot = self._snapshot_start = None
        elif isinstance(msg, MdMarketStatus):
            self.status = msg.status

    def apply_all(self, msgs: list[Message]) -> None:
        """Apply messages in order."""
        for m in msgs:
            self.apply(m)

    def best_bid(self) -> Level | None:
        """The best bid level, if any."""
        return self.bid

    def best_ask(self) -> Level | None:
        """The best ask level, if any."""
        return self.ask

    def bids(self, depth: int | None = None) -> list[Level]:
        """``[best bid]`` or ``[]``."""
        return [self.bid] if self.bid is not None and depth != 0 else []

    def asks(self, depth: int | None = None) -> list[Level]:
        """``[best ask]`` or ``[]``."""
        return [self.ask] if self.ask is not None and depth != 0 else []

    def __repr__(self) -> str:
        return (
            f"<TopOfBook market={self.market} book_seq={self.book_seq} bid={self.bid} "
            f"ask={self.ask}>"
        )
