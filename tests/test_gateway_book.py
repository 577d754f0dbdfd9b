"""The local books of ``controlplane.gateway.book`` fed synthetic market data: snapshots, the
apply rule (duplicates, gaps, retransmits), the amend patterns, consistency checks, the
levels and top-of-book variants, and a model-based property test where a lossy, duplicating
delivery healed by retransmits always ends in the model's book."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.gateway.book import (
    BookError,
    BookOrder,
    Gap,
    Level,
    LevelBook,
    OrderBook,
    TopOfBook,
)
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
    OrderAccepted,
    Side,
)

M = 1
BUY, SELL = Side.BUY, Side.SELL


def add(seq: int, oid: int, side: Side, price: int, qty: int, market: int = M) -> MdAdd:
    return MdAdd(market, seq, 0, oid, side, price, qty)


def exe(seq: int, oid: int, side: Side, price: int, executed: int, remaining: int) -> MdExecute:
    return MdExecute(M, seq, 0, oid, side, price, executed, remaining, 1000 + seq)


def reduce(seq: int, oid: int, side: Side, price: int, by: int, remaining: int) -> MdReduce:
    return MdReduce(M, seq, 0, oid, side, price, by, remaining)


def delete(seq: int, oid: int, side: Side, price: int, qty: int) -> MdDelete:
    return MdDelete(M, seq, 0, oid, side, price, qty)


def snapshot(
    book_seq: int,
    orders: list[tuple[int, Side, int, int]],
    status: MarketStatus = MarketStatus.TRADING,
) -> list[Message]:
    return [
        MdSnapshotStart(M, book_seq, FeedKind.ORDER_BY_ORDER, status, len(orders)),
        *(MdSnapshotOrder(M, oid, side, price, qty) for oid, side, price, qty in orders),
        MdSnapshotEnd(M, book_seq),
    ]


def synced_book(book_seq: int = 5) -> OrderBook:
    """Bids 101: [1 (10), 2 (5)], 100: [3 (7)]; asks 103: [4 (4)]."""
    book = OrderBook(M)
    assert (
        book.apply_all(
            snapshot(
                book_seq, [(1, BUY, 101, 10), (2, BUY, 101, 5), (3, BUY, 100, 7), (4, SELL, 103, 4)]
            )
        )
        == []
    )
    return book


def test_snapshot_builds_the_book() -> None:
    book = synced_book()
    assert book.synced
    assert book.in_sync
    assert book.book_seq == 5
    assert book.status == MarketStatus.TRADING
    assert book.bids() == [(101, 15, 2), (100, 7, 1)]
    assert book.asks() == [Level(103, 4, 1)]
    assert book.best_bid() == (101, 15, 2)
    assert book.best_ask() == (103, 4, 1)
    assert book.bids(1) == [(101, 15, 2)]
    assert book.orders(BUY) == [
        BookOrder(1, BUY, 101, 10),
        BookOrder(2, BUY, 101, 5),
        BookOrder(3, BUY, 100, 7),
    ]
    assert book.order(4) == BookOrder(4, SELL, 103, 4)
    assert book.order(99) is None
    assert len(book) == 4
    assert 3 in book


def test_incrementals_apply_in_order_and_duplicates_are_ignored() -> None:
    book = synced_book()
    assert book.apply(add(6, 5, SELL, 102, 3)) is None
    assert book.apply(exe(7, 1, BUY, 101, 4, 6)) is None
    assert book.apply(exe(8, 4, SELL, 103, 4, 0)) is None
    assert book.apply(delete(9, 3, BUY, 100, 7)) is None
    assert book.bids() == [(101, 11, 2)]
    assert book.asks() == [(102, 3, 1)]
    assert book.book_seq == 9
    # Everything at or below L is a duplicate, including stale snapshot-era changes.
    for dup in (add(6, 5, SELL, 102, 3), exe(7, 1, BUY, 101, 4, 6), add(2, 77, BUY, 1, 1)):
        assert book.apply(dup) is None
    assert book.duplicates == 3
    assert book.applied == 4
    assert book.bids() == [(101, 11, 2)]


def test_a_gap_is_reported_once_and_healed_by_the_retransmit() -> None:
    book = synced_book()
    gap = book.apply(add(7, 6, BUY, 99, 1))
    assert gap == Gap(M, 6, 1)
    assert gap.request() == MdRetransmitRequest(market=M, from_book_seq=6, count=1)
    # Later changes are buffered without a new report; the book does not move.
    assert book.apply(add(8, 7, BUY, 99, 2)) is None
    assert book.apply(add(8, 7, BUY, 99, 2)) is None  # a duplicate of a buffered change
    assert book.book_seq == 5
    assert book.buffered == 2
    assert book.gap == Gap(M, 6, 1)
    assert (book.in_sync, book.synced) == (False, True)
    assert book.bids() == [(101, 15, 2), (100, 7, 1)]
    # The retransmit (6, and 7 again) fills the hole; the buffer drains.
    assert book.apply(add(6, 5, BUY, 100, 3)) is None
    assert book.apply(add(7, 6, BUY, 99, 1)) is None
    assert book.book_seq == 8
    assert book.in_sync
    assert book.buffered == 0
    assert book.bids() == [(101, 15, 2), (100, 10, 2), (99, 3, 2)]


def test_each_hole_is_reported_when_the_change_above_it_arrives() -> None:
    book = synced_book()
    assert book.apply(add(8, 10, BUY, 90, 1)) == Gap(M, 6, 2)
    assert book.apply(add(9, 11, BUY, 90, 1)) is None
    assert book.apply(add(12, 12, BUY, 90, 1)) == Gap(M, 10, 2)
    assert book.gap == Gap(M, 6, 2)
    assert book.apply(add(6, 20, BUY, 91, 1)) is None
    assert book.apply(add(7, 21, BUY, 91, 1)) is None
    assert book.book_seq == 9
    assert book.gap == Gap(M, 10, 2)  # still missing: ask again with book.gap if needed
    assert book.apply(add(10, 22, BUY, 92, 1)) is None
    assert book.apply(add(11, 23, BUY, 92, 1)) is None
    assert book.book_seq == 12
    assert book.in_sync


def test_changes_before_the_snapshot_are_buffered() -> None:
    book = OrderBook(M)
    assert book.apply(add(5, 9, BUY, 50, 1)) is None  # already in the snapshot (S = 5)
    assert book.apply(add(6, 10, BUY, 51, 2)) is None
    assert book.apply(add(8, 11, BUY, 52, 3)) is None  # 7 is missing
    assert book.gap is None  # unknown until the snapshot completes
    gap = book.apply_all(snapshot(5, [(9, BUY, 50, 1)]))
    assert gap == [Gap(M, 7, 1)]
    assert book.book_seq == 6
    assert book.bids() == [(51, 2, 1), (50, 1, 1)]
    book.apply(add(7, 12, SELL, 60, 1))
    assert book.book_seq == 8
    assert book.in_sync


def test_amend_patterns_keep_or_lose_priority() -> None:
    book = synced_book()
    # Amend down: MdReduce keeps the queue position.
    book.apply(reduce(6, 1, BUY, 101, 4, 6))
    assert book.queue_position(1) == 0
    assert book.order(1) == BookOrder(1, BUY, 101, 6)
    # Amend up (or a new price): MdDelete then MdAdd of the same order id: back of the queue.
    book.apply(delete(7, 1, BUY, 101, 6))
    assert book.order(1) is None
    book.apply(add(8, 1, BUY, 101, 20))
    assert [o.order_id for o in book.orders(BUY)] == [2, 1, 3]
    assert book.queue_position(1) == 1
    assert book.bids() == [(101, 25, 2), (100, 7, 1)]
    # New price: the order moves level.
    book.apply(delete(9, 1, BUY, 101, 20))
    book.apply(add(10, 1, BUY, 102, 20))
    assert book.bids() == [(102, 20, 1), (101, 5, 1), (100, 7, 1)]
    # A self-trade decrement to zero and a full execute both empty the order.
    book.apply(reduce(11, 2, BUY, 101, 5, 0))
    book.apply(exe(12, 1, BUY, 102, 20, 0))
    assert book.bids() == [(100, 7, 1)]
    assert book.queue_position(1) is None


@pytest.mark.parametrize(
    "bad",
    [
        add(6, 1, BUY, 101, 1),  # order 1 already rests
        add(6, 9, BUY, 101, 0),  # empty order
        exe(6, 99, BUY, 101, 1, 0),  # unknown order
        exe(6, 1, BUY, 100, 1, 9),  # wrong price
        exe(6, 1, SELL, 101, 1, 9),  # wrong side
        exe(6, 1, BUY, 101, 1, 8),  # 10 - 1 != 8
        exe(6, 1, BUY, 101, 11, 0),  # more than open
        exe(6, 1, BUY, 101, 0, 10),  # executes nothing
        reduce(6, 1, BUY, 101, 2, 9),
        reduce(6, 1, BUY, 101, 0, 10),
        delete(6, 1, BUY, 101, 9),  # removes a different quantity
        delete(6, 99, BUY, 101, 1),
    ],
)
def test_inconsistent_changes_raise(bad: Message) -> None:
    book = synced_book()
    with pytest.raises(BookError):
        book.apply(bad)


def test_bad_snapshots_raise() -> None:
    book = OrderBook(M)
    with pytest.raises(BookError, match="announced"):
        book.apply_all(
            [
                MdSnapshotStart(M, 1, FeedKind.ORDER_BY_ORDER, MarketStatus.TRADING, 2),
                MdSnapshotEnd(M, 1),
            ]
        )
    with pytest.raises(BookError, match="ended at"):
        book.apply_all(
            [
                MdSnapshotStart(M, 1, FeedKind.ORDER_BY_ORDER, MarketStatus.TRADING, 0),
                MdSnapshotEnd(M, 2),
            ]
        )
    with pytest.raises(BookError, match="outside a snapshot"):
        OrderBook(M).apply(MdSnapshotOrder(M, 1, BUY, 1, 1))
    with pytest.raises(BookError, match="without"):
        OrderBook(M).apply(MdSnapshotEnd(M, 1))
    with pytest.raises(BookError, match="feed"):
        OrderBook(M).apply(MdSnapshotStart(M, 1, FeedKind.LEVELS, MarketStatus.TRADING, 0))
    for orders in (
        [(1, BUY, 100, 1), (2, BUY, 101, 1)],  # bids worst first
        [(1, SELL, 101, 1), (2, SELL, 100, 1)],  # asks worst first
        [(1, SELL, 101, 1), (2, BUY, 100, 1)],  # a bid after the asks
        [(1, BUY, 101, 1), (2, BUY, 101, 1), (1, BUY, 100, 1)],  # an order twice
    ):
        with pytest.raises(BookError):
            OrderBook(M).apply_all(snapshot(3, orders))


def test_other_markets_trades_and_status() -> None:
    book = synced_book()
    assert book.apply(add(6, 50, BUY, 1, 1, market=2)) is None
    assert book.apply(OrderAccepted.__new__(OrderAccepted)) is None  # not market data: ignored
    assert book.book_seq == 5
    trade = MdTrade(M, 6, 0, 77, 103, 4, BUY)
    book.apply(exe(6, 4, SELL, 103, 4, 0))
    book.apply(trade)
    book.apply(trade)  # deduplicated by trade id
    assert list(book.trades) == [trade]
    book.apply(MdMarketStatus(M, 6, 0, MarketStatus.HALTED))
    assert book.status == MarketStatus.HALTED


def test_resubscribe_replaces_the_book() -> None:
    book = synced_book()
    book.apply(add(7, 6, BUY, 99, 1))  # a gap
    book.reset()
    assert not book.synced
    assert book.bids() == []
    book.apply_all(snapshot(20, [(8, SELL, 200, 2)]))
    assert book.book_seq == 20
    assert book.asks() == [(200, 2, 1)]
    assert book.bids() == []
    # A snapshot also replaces a synced book without reset().
    book.apply_all(snapshot(21, [(9, BUY, 150, 1)]))
    assert book.bids() == [(150, 1, 1)]
    assert book.asks() == []


def test_gap_requests_are_split_at_the_server_limit() -> None:
    reqs = Gap(M, 100, 25_000).requests()
    assert [(r.from_book_seq, r.count) for r in reqs] == [
        (100, 10_000),
        (10_100, 10_000),
        (20_100, 5_000),
    ]


# ---- Levels and top of book --------------------------------------------------------------


def level_snapshot(book_seq: int, levels: list[tuple[Side, int, int, int]]) -> list[Message]:
    return [
        MdSnapshotStart(M, book_seq, FeedKind.LEVELS, MarketStatus.TRADING, len(levels)),
        *(MdSnapshotLevel(M, side, price, qty, n) for side, price, qty, n in levels),
        MdSnapshotEnd(M, book_seq),
    ]


def test_level_book_applies_levels_and_heals_gaps() -> None:
    book = LevelBook(M)
    book.apply_all(level_snapshot(10, [(BUY, 101, 15, 2), (BUY, 100, 7, 1), (SELL, 103, 4, 1)]))
    assert book.bids() == [(101, 15, 2), (100, 7, 1)]
    assert book.apply(MdLevel(M, 11, 0, SELL, 102, 3, 1)) is None
    assert book.apply(MdLevel(M, 13, 0, BUY, 100, 0, 0)) == Gap(M, 12, 1)
    assert book.bids() == [(101, 15, 2), (100, 7, 1)]
    assert book.apply(MdLevel(M, 12, 0, BUY, 101, 10, 1)) is None
    assert book.book_seq == 13
    assert book.bids() == [(101, 10, 1)]
    assert book.asks() == [(102, 3, 1), (103, 4, 1)]
    assert book.apply(MdLevel(M, 12, 0, BUY, 101, 99, 9)) is None  # duplicate
    assert book.bids() == [(101, 10, 1)]
    with pytest.raises(BookError):
        book.apply(MdLevel(M, 14, 0, BUY, 55, 0, 0))  # removes a level that is not there
    with pytest.raises(BookError):
        LevelBook(M).apply_all(level_snapshot(1, [(BUY, 1, 0, 0)]))


def test_top_of_book_takes_newer_states_only() -> None:
    top = TopOfBook(M)
    top.apply_all(
        [
            MdSnapshotStart(M, 4, FeedKind.TOP_OF_BOOK, MarketStatus.TRADING, 1),
            MdSnapshotLevel(M, BUY, 100, 5, 1),
            MdSnapshotEnd(M, 4),
        ]
    )
    assert top.bids() == [(100, 5, 1)]
    assert top.asks() == []
    top.apply(MdTopOfBook(M, 9, 0, 101, 1, 1, 103, 2, 1))
    assert (top.bid, top.ask, top.book_seq) == (Level(101, 1, 1), Level(103, 2, 1), 9)
    top.apply(MdTopOfBook(M, 7, 0, 1, 1, 1, 2, 2, 2))  # older: ignored
    assert top.book_seq == 9
    top.apply(MdTopOfBook(M, 12, 0, 0, 0, 0, 103, 2, 1))  # bid side empty
    assert top.bids() == []
    assert top.best_bid() is None
    assert top.best_ask() == (103, 2, 1)
    top.apply(MdMarketStatus(M, 12, 0, MarketStatus.HALTED))
    assert top.status == MarketStatus.HALTED
    with pytest.raises(BookError):
        TopOfBook(M).apply(MdSnapshotStart(M, 1, FeedKind.LEVELS, MarketStatus.TRADING, 0))


# ---- Model-based: lossy delivery healed by retransmits -----------------------------------


@dataclass
class Model:
    """A reference order-by-order book and the feed it produced (book_seq = index + 1)."""

    levels: dict[tuple[Side, int], list[list[int]]] = field(default_factory=dict)
    feed: list[MdAdd | MdExecute | MdReduce | MdDelete] = field(default_factory=list)
    next_id: int = 1

    def orders(self) -> list[tuple[int, Side, int, int]]:
        return [(oid, s, p, q) for (s, p), lvl in self.levels.items() for oid, q in lvl]

    def step(self, op: int, pick: int, side: Side, price: int, qty: int) -> None:
        seq = len(self.feed) + 1
        resting = self.orders()
        if op == 0 or not resting:
            oid = self.next_id
            self.next_id += 1
            self.levels.setdefault((side, price), []).append([oid, qty])
            self.feed.append(add(seq, oid, side, price, qty))
            return
        oid, s, p, q = resting[pick % len(resting)]
        lvl = self.levels[(s, p)]
        entry = next(e for e in lvl if e[0] == oid)
        if op == 1:  # execute
            n = min(qty, q)
            entry[1] -= n
            self.feed.append(exe(seq, oid, s, p, n, q - n))
        elif op == 2 and q > 1:  # reduce
            n = min(qty, q - 1)
            entry[1] -= n
            self.feed.append(reduce(seq, oid, s, p, n, q - n))
        elif op == 3:  # amend that loses priority: delete + add, same id
            lvl.remove(entry)
            self.feed.append(delete(seq, oid, s, p, q))
            self.levels.setdefault((s, price), []).append([oid, q + qty])
            self.feed.append(add(seq + 1, oid, s, price, q + qty))
        else:  # delete
            entry[1] = 0
            self.feed.append(delete(seq, oid, s, p, q))
        for key in [k for k, lvl in self.levels.items() if not any(e[1] for e in lvl)]:
            del self.levels[key]
        for lvl in self.levels.values():
            lvl[:] = [e for e in lvl if e[1]]

    def bids(self) -> list[tuple[int, int, int]]:
        return self._side(BUY)

    def asks(self) -> list[tuple[int, int, int]]:
        return self._side(SELL)

    def _side(self, side: Side) -> list[tuple[int, int, int]]:
        prices = sorted((p for s, p in self.levels if s == side), reverse=side == BUY)
        return [
            (p, sum(q for _, q in self.levels[(side, p)]), len(self.levels[(side, p)]))
            for p in prices
        ]


OPS = st.tuples(
    st.integers(0, 4),
    st.integers(0, 1000),
    st.sampled_from([BUY, SELL]),
    st.integers(95, 105),
    st.integers(1, 9),
)


@settings(max_examples=150)
@given(
    st.lists(OPS, min_size=1, max_size=80),
    st.integers(0, 80),
    st.lists(st.sampled_from(["deliver", "drop", "dup"]), min_size=200, max_size=200),
)
def test_lossy_feed_healed_by_retransmits_matches_the_model(
    ops: list[tuple[int, int, Side, int, int]], snap_at: int, fate: list[str]
) -> None:
    model = Model()
    snap_at = min(snap_at, len(ops))
    for op in ops[:snap_at]:
        model.step(*op)
    snap_seq = len(model.feed)
    # A snapshot in queue order: bids best first, then asks, each level oldest first.
    snap = sorted(model.orders(), key=lambda o: (o[1] == SELL, -o[2] if o[1] == BUY else o[2]))
    for op in ops[snap_at:]:
        model.step(*op)
    log = model.feed

    book = OrderBook(M)
    book.apply_all(snapshot(snap_seq, snap))
    pending: list[Gap] = []
    for i, msg in enumerate(log[snap_seq:]):
        what = fate[i % len(fate)]
        if what == "drop":
            continue
        for _ in range(2 if what == "dup" else 1):
            gap = book.apply(msg)
            if gap is not None:
                pending.append(gap)
    # Each missing number is reported once: the gaps reported are disjoint.
    covered = [n for g in pending for n in range(g.from_book_seq, g.from_book_seq + g.count)]
    assert len(covered) == len(set(covered))
    assert all(snap_seq < n <= len(log) for n in covered)
    # Heal: answer every request from the log; a dropped tail (nothing after it revealed the
    # gap) is asked for from book_seq + 1, as a client would after a quiet interval.
    rounds = 0
    while book.book_seq < len(log):
        gaps = pending or [book.gap or Gap(M, book.book_seq + 1, len(log) - book.book_seq)]
        pending = []
        for gap in gaps:
            for req in gap.requests():
                for n in range(req.from_book_seq, req.from_book_seq + req.count):
                    g = book.apply(log[n - 1])
                    if g is not None:
                        pending.append(g)
        rounds += 1
        assert rounds < 100
    assert book.book_seq == len(log)
    assert book.in_sync
    assert book.bids() == model.bids()
    assert book.asks() == model.asks()
    assert sorted(book.orders(BUY) + book.orders(SELL)) == sorted(
        BookOrder(oid, s, p, q) for oid, s, p, q in model.orders()
    )
    # Queue order within each level matches the model.
    for (side, price), lvl in model.levels.items():
        assert [o.order_id for o in book.orders(side) if o.price == price] == [e[0] for e in lvl]
