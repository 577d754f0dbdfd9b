"""SQLite projections of the node's event stream: orders, trades, 1-minute klines, ledger.

:class:`Projections` consumes :class:`~controlplane.bridge.EventFeed` batches (subscribed in
:func:`setup` from its persisted cursor + 1) and applies each batch in ONE SQLite
transaction together with the new cursor (table ``projection_cursor``): a crash either keeps
the whole batch and its cursor or neither, so restart resumes exactly where it stopped — no
entry is applied twice or skipped. An entry at or below the cursor is ignored; an entry past
cursor + 1 is a gap and fails the feed loudly. :meth:`Projections.rebuild` drops the tables
and replays the node's stream from seq 1 (the events must still be in the node's window or
journal; it checks before dropping anything).

Tables (all amounts are engine integers: atoms, price units, base atoms):

* ``orders`` — every order the engine accepted (rejected ones are not stored, as Binance
  does not), with its Binance status (NEW, PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED,
  EXPIRED_IN_MATCH), executed quantity, cumulative quote, leaves (open quantity), created /
  updated seq and time. Indexed by (account, market, order_id), (account, client_order_id,
  order_id) and a partial index over the open ones.
* ``trades`` — one row per engine ``Trade``, with ``agg_id`` (the first trade id of its run of
  consecutive trades of the same taker order at the same price: Binance's aggregate trade).
  Indexed by (market, trade_id), (market, time_ns), (maker_account, market, trade_id),
  (taker_account, market, trade_id), (market, agg_id).
* ``klines`` — 1-minute candles per market keyed by (market, open_ms); larger intervals are
  folded from them at query time (:meth:`Projections.klines`), empty intervals carry the
  previous close with zero volume, as Binance's do.
* ``ledger`` — every change of an account's total (free + held) balance: ``deposit``,
  ``withdrawal``, ``trade`` (base and quote legs), ``fee`` (paid, negative) and ``fee_income``
  (account 0), each with ``ref`` (trade id, or the command's seq for deposits/withdrawals) and
  the engine's free/held for that account and asset after the command. So for every
  (account, asset): sum(delta) == free + held, and summed over all accounts the fee rows
  cancel: deposits - withdrawals == Σ balances (money conservation).
* ``balances`` — the engine's latest free/held per (account, asset) from ``balance`` events.
* ``projected_markets`` — market → base/quote assets (from ``market_listed``), for the
  ledger's legs.

Storage of u64: engine values are unsigned 64-bit; SQLite integers are signed. A value that
does not fit (possible with 18-decimal assets or a huge client order id) is stored as its
decimal text in the same untyped column (:func:`_db`), read back with :func:`_int`. Such
columns are compared only for equality in SQL; sums, maxima and folds happen in Python with
exact integers.

Complexity: applying an entry is O(events) statements (open orders, the current candle and
the last trade per market are cached in memory; the cache is reloaded if a batch fails). Id-
and time-range queries are index range scans, O(log n + rows returned); a kline query reads
the 1-minute rows of its window; the 24-hour ticker reads ≤ 1,440 minute rows plus the trades
of at most two partial minutes.

All methods run on the asyncio loop thread (the :class:`~controlplane.db.Database` rule).
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from aiohttp import web

from controlplane import Node
from controlplane import messages as m
from controlplane.bridge import EventFeed
from controlplane.db import Database

log = logging.getLogger("bourse.projections")

MODULE = "projections"
NS_PER_MS = 1_000_000
MINUTE_MS = 60_000
DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
REPLAY_BATCH = 1000
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1

OrderStatus = Literal[
    "NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH"
]
OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")
DONE_STATUS: dict[str, OrderStatus] = {
    "filled": "FILLED",
    "cancelled": "CANCELED",
    "delisted": "CANCELED",
    "expired": "EXPIRED",
    "fok_unfilled": "EXPIRED",
    "protection_limit": "EXPIRED",
    "budget_exhausted": "EXPIRED",
    "self_trade": "EXPIRED_IN_MATCH",
}
"""Binance's final status for each engine done reason."""

INTERVAL_MS: dict[str, int] = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": 60 * MINUTE_MS,
    "2h": 120 * MINUTE_MS,
    "4h": 240 * MINUTE_MS,
    "6h": 360 * MINUTE_MS,
    "8h": 480 * MINUTE_MS,
    "12h": 720 * MINUTE_MS,
    "1d": DAY_MS,
    "3d": 3 * DAY_MS,
    "1w": WEEK_MS,
}
INTERVALS = (*INTERVAL_MS, "1M")
"""The kline intervals served (Binance's, less ``1s``)."""
_WEEK_ORIGIN_MS = 4 * DAY_MS
"""Weekly candles open on Mondays (1970-01-01 was a Thursday)."""

# Binance's defaults and maxima for the history queries.
TRADES_DEFAULT, TRADES_MAX = 500, 1000
KLINES_DEFAULT, KLINES_MAX = 500, 1000
ORDERS_DEFAULT, ORDERS_MAX = 500, 1000
MY_TRADES_DEFAULT, MY_TRADES_MAX = 500, 1000
LEDGER_DEFAULT, LEDGER_MAX = 500, 1000


def _db(value: int) -> int | str:
    """An engine integer as stored: itself if it fits SQLite's signed 64 bits, else text."""
    return value if _I64_MIN <= value <= _I64_MAX else str(value)


def _int(value: Any) -> int:
    """An engine integer as read back (see :func:`_db`)."""
    return value if isinstance(value, int) else int(value)


# --- rows returned to callers ----------------------------------------------------------------


class OrderRow(msgspec.Struct, frozen=True, kw_only=True):
    """One order as projected. ``leaves`` is its open quantity (0 once done);
    ``quantity`` is as last set by amend; times are ns since the Unix epoch."""

    order_id: int
    account: int
    market: int
    client_order_id: int
    side: m.Side
    order_type: m.OrderType
    time_in_force: m.TimeInForce
    post_only: bool
    stp: m.StpMode
    price: int
    quantity: int
    quote_quantity: int
    reserve_price: int
    status: OrderStatus
    executed_qty: int
    cumulative_quote_qty: int
    leaves: int
    created_seq: int
    created_ns: int
    updated_seq: int
    updated_ns: int
    working_ns: int

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


class TradeRow(msgspec.Struct, frozen=True, kw_only=True):
    """One engine trade. ``aggressor`` is the taker's side; fees are quote atoms."""

    trade_id: int
    market: int
    price: int
    quantity: int
    quote_quantity: int
    aggressor: m.Side
    maker_order_id: int
    taker_order_id: int
    maker_account: int
    taker_account: int
    maker_client_order_id: int
    taker_client_order_id: int
    maker_fee: int
    taker_fee: int
    agg_id: int
    seq: int
    time_ns: int

    @property
    def time_ms(self) -> int:
        return self.time_ns // NS_PER_MS

    @property
    def is_buyer_maker(self) -> bool:
        return self.aggressor == "sell"


class AccountTrade(msgspec.Struct, frozen=True):
    """A trade seen from one account's side (a self-trade appears twice: maker and taker)."""

    trade: TradeRow
    is_maker: bool

    @property
    def order_id(self) -> int:
        return self.trade.maker_order_id if self.is_maker else self.trade.taker_order_id

    @property
    def is_buyer(self) -> bool:
        return (self.trade.aggressor == "buy") != self.is_maker

    @property
    def fee(self) -> int:
        """Quote atoms this side paid."""
        return self.trade.maker_fee if self.is_maker else self.trade.taker_fee


class AggTrade(msgspec.Struct, frozen=True):
    """Consecutive trades of one taker order at one price (Binance's aggregate trade)."""

    agg_id: int
    price: int
    quantity: int
    first_trade_id: int
    last_trade_id: int
    time_ns: int
    is_buyer_maker: bool


class Kline(msgspec.Struct, frozen=True, kw_only=True):
    """One candle; ``close_ms`` is the last millisecond of its interval. An interval without
    trades has ``count`` 0 and open = high = low = close = the previous close."""

    open_ms: int
    close_ms: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote_volume: int
    count: int
    taker_buy_volume: int
    taker_buy_quote_volume: int
    first_trade_id: int
    last_trade_id: int


class WindowStats(msgspec.Struct, frozen=True, kw_only=True):
    """A market's trades in a time window (the 24-hour ticker, the average price).
    ``count`` 0: no trade in the window (ids -1, prices 0, volumes 0)."""

    open_ms: int
    close_ms: int
    open: int
    high: int
    low: int
    last: int
    last_qty: int
    volume: int
    quote_volume: int
    count: int
    first_id: int
    last_id: int
    last_time_ns: int
    prev_close: int
    """The last price before the window (0 if none)."""


class LedgerRow(msgspec.Struct, frozen=True, kw_only=True):
    """One change of an account's total balance of an asset; ``free``/``held`` are the
    engine's balance after the command."""

    id: int
    seq: int
    time_ns: int
    account: int
    asset: int
    delta: int
    reason: Literal["deposit", "withdrawal", "trade", "fee", "fee_income"]
    ref: int
    free: int
    held: int


# --- schema ----------------------------------------------------------------------------------

TABLES = ("projection_cursor", "projected_markets", "orders", "trades", "klines", "ledger",
          "balances")  # fmt: skip

# Columns without a declared type hold engine u64 values (see _db).
SCHEMA = [
    [
        """CREATE TABLE projection_cursor (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            seq INTEGER NOT NULL
        )""",
        "INSERT INTO projection_cursor (id, seq) VALUES (1, 0)",
        """CREATE TABLE projected_markets (
            market INTEGER PRIMARY KEY,
            base INTEGER NOT NULL,
            quote INTEGER NOT NULL
        )""",
        """CREATE TABLE orders (
            order_id INTEGER PRIMARY KEY,
            account NOT NULL,
            market INTEGER NOT NULL,
            client_order_id NOT NULL,
            side TEXT NOT NULL,
            order_type TEXT NOT NULL,
            time_in_force TEXT NOT NULL,
            post_only INTEGER NOT NULL,
            stp TEXT NOT NULL,
            price NOT NULL,
            quantity NOT NULL,
            quote_quantity NOT NULL,
            reserve_price NOT NULL,
            status TEXT NOT NULL,
            executed_qty NOT NULL,
            cumulative_quote_qty NOT NULL,
            leaves NOT NULL,
            created_seq INTEGER NOT NULL,
            created_ns INTEGER NOT NULL,
            updated_seq INTEGER NOT NULL,
            updated_ns INTEGER NOT NULL,
            working_ns INTEGER NOT NULL
        )""",
        "CREATE INDEX orders_by_account ON orders (account, market, order_id)",
        "CREATE INDEX orders_by_client_id ON orders (account, client_order_id, order_id)",
        "CREATE INDEX orders_open ON orders (account, market, order_id) "
        "WHERE status IN ('NEW', 'PARTIALLY_FILLED')",
        """CREATE TABLE trades (
            trade_id INTEGER PRIMARY KEY,
            market INTEGER NOT NULL,
            price NOT NULL,
            quantity NOT NULL,
            quote_quantity NOT NULL,
            aggressor TEXT NOT NULL,
            maker_order_id INTEGER NOT NULL,
            taker_order_id INTEGER NOT NULL,
            maker_account NOT NULL,
            taker_account NOT NULL,
            maker_client_order_id NOT NULL,
            taker_client_order_id NOT NULL,
            maker_fee NOT NULL,
            taker_fee NOT NULL,
            agg_id INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            time_ns INTEGER NOT NULL
        )""",
        "CREATE INDEX trades_by_market ON trades (market, trade_id)",
        "CREATE INDEX trades_by_time ON trades (market, time_ns)",
        "CREATE INDEX trades_by_agg ON trades (market, agg_id)",
        "CREATE INDEX trades_by_maker ON trades (maker_account, market, trade_id)",
        "CREATE INDEX trades_by_taker ON trades (taker_account, market, trade_id)",
        """CREATE TABLE klines (
            market INTEGER NOT NULL,
            open_ms INTEGER NOT NULL,
            open NOT NULL,
            high NOT NULL,
            low NOT NULL,
            close NOT NULL,
            volume NOT NULL,
            quote_volume NOT NULL,
            count INTEGER NOT NULL,
            taker_buy_volume NOT NULL,
            taker_buy_quote_volume NOT NULL,
            first_trade_id INTEGER NOT NULL,
            last_trade_id INTEGER NOT NULL,
            PRIMARY KEY (market, open_ms)
        )""",
        """CREATE TABLE ledger (
            id INTEGER PRIMARY KEY,
            seq INTEGER NOT NULL,
            time_ns INTEGER NOT NULL,
            account NOT NULL,
            asset INTEGER NOT NULL,
            delta NOT NULL,
            reason TEXT NOT NULL,
            ref INTEGER NOT NULL,
            free NOT NULL,
            held NOT NULL
        )""",
        "CREATE INDEX ledger_by_account ON ledger (account, asset, id)",
        "CREATE INDEX ledger_by_time ON ledger (account, time_ns)",
        """CREATE TABLE balances (
            account NOT NULL,
            asset INTEGER NOT NULL,
            free NOT NULL,
            held NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (account, asset)
        )""",
    ],
    # When each balance last changed (holds and releases included), for an account's
    # updateTime; 0 for a balance not touched since this column was added.
    ["ALTER TABLE balances ADD COLUMN time_ns INTEGER NOT NULL DEFAULT 0"],
]


# --- in-memory working state -----------------------------------------------------------------


@dataclass
class _Order:
    """An order touched by the batch being applied (or still open)."""

    row: dict[str, Any]
    inserted: bool


@dataclass
class _Candle:
    market: int
    open_ms: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote_volume: int
    count: int
    taker_buy_volume: int
    taker_buy_quote_volume: int
    first_trade_id: int
    last_trade_id: int

    def add(self, t: m.Trade) -> None:
        self.high = max(self.high, t.price)
        self.low = min(self.low, t.price)
        self.close = t.price
        self.volume += t.quantity
        self.quote_volume += t.quote_quantity
        self.count += 1
        if t.aggressor == "buy":
            self.taker_buy_volume += t.quantity
            self.taker_buy_quote_volume += t.quote_quantity
        self.last_trade_id = t.trade_id


@dataclass
class _LastTrade:
    taker_order_id: int
    price: int
    agg_id: int


_ORDER_COLUMNS = tuple(OrderRow.__struct_fields__)
_TRADE_COLUMNS = tuple(TradeRow.__struct_fields__)
_LEDGER_COLUMNS = tuple(LedgerRow.__struct_fields__)
_U64_ORDER_FIELDS = frozenset(
    {
        "account",
        "client_order_id",
        "price",
        "quantity",
        "quote_quantity",
        "reserve_price",
        "executed_qty",
        "cumulative_quote_qty",
        "leaves",
    }
)
_U64_TRADE_FIELDS = frozenset(
    {
        "price",
        "quantity",
        "quote_quantity",
        "maker_account",
        "taker_account",
        "maker_client_order_id",
        "taker_client_order_id",
        "maker_fee",
        "taker_fee",
    }
)


def _order_from(row: Any) -> OrderRow:
    values = {c: row[c] for c in _ORDER_COLUMNS}
    for c in _U64_ORDER_FIELDS:
        values[c] = _int(values[c])
    values["post_only"] = bool(values["post_only"])
    return msgspec.convert(values, OrderRow)


def _trade_from(row: Any) -> TradeRow:
    values = {c: row[c] for c in _TRADE_COLUMNS}
    for c in _U64_TRADE_FIELDS:
        values[c] = _int(values[c])
    return msgspec.convert(values, TradeRow)


def _ledger_from(row: Any) -> LedgerRow:
    values = {c: row[c] for c in _LEDGER_COLUMNS}
    for c in ("account", "delta", "free", "held"):
        values[c] = _int(values[c])
    return msgspec.convert(values, LedgerRow)


def _candle_from(market: int, row: Any) -> _Candle:
    return _Candle(
        market,
        row["open_ms"],
        _int(row["open"]),
        _int(row["high"]),
        _int(row["low"]),
        _int(row["close"]),
        _int(row["volume"]),
        _int(row["quote_volume"]),
        row["count"],
        _int(row["taker_buy_volume"]),
        _int(row["taker_buy_quote_volume"]),
        row["first_trade_id"],
        row["last_trade_id"],
    )


def _time_bounds(column: str, start_ms: int | None, end_ms: int | None) -> tuple[str, list[int]]:
    """SQL conditions for ``start_ms <= column (ns) / 1e6 <= end_ms`` (inclusive, in ms)."""
    sql, args = "", []
    if start_ms is not None:
        sql += f" AND {column} >= ?"
        args.append(min(max(start_ms, 0) * NS_PER_MS, _I64_MAX))
    if end_ms is not None:
        sql += f" AND {column} < ?"
        args.append(min((end_ms + 1) * NS_PER_MS, _I64_MAX))
    return sql, args


# --- interval arithmetic ---------------------------------------------------------------------


def bucket_open(interval: str, t_ms: int, tz_ms: int = 0) -> int:
    """The open time (UTC ms) of the ``interval`` candle holding ``t_ms``, with candle
    boundaries in the time zone ``tz_ms`` ahead of UTC."""
    local = t_ms + tz_ms
    if interval == "1M":
        y, mo, *_ = time.gmtime(local // 1000)
        return calendar.timegm((y, mo, 1, 0, 0, 0)) * 1000 - tz_ms
    size = INTERVAL_MS[interval]
    origin = _WEEK_ORIGIN_MS if interval == "1w" else 0
    return (local - origin) // size * size + origin - tz_ms


def bucket_next(interval: str, open_ms: int, tz_ms: int = 0) -> int:
    """The open time of the candle after the one opening at ``open_ms``."""
    if interval == "1M":
        y, mo, *_ = time.gmtime((open_ms + tz_ms) // 1000)
        y, mo = (y + 1, 1) if mo == 12 else (y, mo + 1)
        return calendar.timegm((y, mo, 1, 0, 0, 0)) * 1000 - tz_ms
    return open_ms + INTERVAL_MS[interval]


def bucket_prev(interval: str, open_ms: int, tz_ms: int = 0) -> int:
    """The open time of the candle before the one opening at ``open_ms``."""
    if interval == "1M":
        return bucket_open(interval, open_ms - 1, tz_ms)
    return open_ms - INTERVAL_MS[interval]


# --- the service -----------------------------------------------------------------------------


class Projections:
    """The projections over one :class:`Database`; :meth:`apply` is the feed consumer."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate(MODULE, SCHEMA)
        self._load()

    # -- state ------------------------------------------------------------------------------

    @property
    def cursor(self) -> int:
        """The last sequence number applied (0: nothing yet)."""
        return self._cursor

    def _load(self) -> None:
        conn = self.db.conn
        self._cursor = int(conn.execute("SELECT seq FROM projection_cursor").fetchone()[0])
        self._markets: dict[int, tuple[int, int]] = {
            r["market"]: (r["base"], r["quote"])
            for r in conn.execute("SELECT market, base, quote FROM projected_markets")
        }
        self._open: dict[int, _Order] = {}
        for row in conn.execute("SELECT * FROM orders WHERE status IN ('NEW', 'PARTIALLY_FILLED')"):
            self._open[row["order_id"]] = _Order(msgspec.to_builtins(_order_from(row)), True)
        self._candles: dict[int, _Candle] = {}
        self._last_trade: dict[int, _LastTrade] = {}
        for market in self._markets:
            row = conn.execute(
                "SELECT * FROM klines WHERE market = ? ORDER BY open_ms DESC LIMIT 1", (market,)
            ).fetchone()
            if row is not None:
                self._candles[market] = _candle_from(market, row)
            trade = conn.execute(
                "SELECT taker_order_id, price, agg_id FROM trades WHERE market = ? "
                "ORDER BY trade_id DESC LIMIT 1",
                (market,),
            ).fetchone()
            if trade is not None:
                self._last_trade[market] = _LastTrade(
                    trade["taker_order_id"], _int(trade["price"]), trade["agg_id"]
                )

    def subscribe(self, feed: EventFeed) -> None:
        """Subscribe :meth:`consume` to the feed from the cursor on (before it starts)."""
        feed.subscribe(MODULE, self.consume, from_seq=self._cursor + 1)

    # -- applying the stream ----------------------------------------------------------------

    def apply(self, batch: Sequence[m.Entry]) -> None:
        """Apply a batch of consecutive entries and the new cursor in one transaction.
        Entries at or below the cursor are skipped; a gap raises RuntimeError."""
        entries = [e for e in batch if e.seq > self._cursor]
        if not entries:
            return
        if entries[0].seq != self._cursor + 1:
            raise RuntimeError(
                f"projections: entry {entries[0].seq} follows cursor {self._cursor} (a gap)"
            )
        dirty_candles: dict[tuple[int, int], _Candle] = {}
        try:
            with self.db.transaction() as conn:
                for entry in entries:
                    self._apply_entry(conn, entry, dirty_candles)
                for c in dirty_candles.values():
                    conn.execute(
                        "INSERT OR REPLACE INTO klines (market, open_ms, open, high, low, close, "
                        "volume, quote_volume, count, taker_buy_volume, taker_buy_quote_volume, "
                        "first_trade_id, last_trade_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (
                            c.market,
                            c.open_ms,
                            _db(c.open),
                            _db(c.high),
                            _db(c.low),
                            _db(c.close),
                            _db(c.volume),
                            _db(c.quote_volume),
                            c.count,
                            _db(c.taker_buy_volume),
                            _db(c.taker_buy_quote_volume),
                            c.first_trade_id,
                            c.last_trade_id,
                        ),
                    )
                conn.execute("UPDATE projection_cursor SET seq = ?", (entries[-1].seq,))
        except BaseException:
            self._load()  # the caches may hold the failed batch's changes
            raise
        self._cursor = entries[-1].seq

    def _apply_entry(
        self, conn: Any, entry: m.Entry, dirty_candles: dict[tuple[int, int], _Candle]
    ) -> None:
        seq, now = entry.seq, entry.timestamp_ns
        touched: dict[int, _Order] = {}
        ledger: list[tuple[int, int, int, str, int]] = []  # account, asset, delta, reason, ref
        balances: dict[tuple[int, int], tuple[int, int]] = {}

        def order(order_id: int) -> _Order:
            state = self._open.get(order_id)
            if state is None:  # not open: an engine event about an unknown order
                raise RuntimeError(f"projections: seq {seq} names unknown order {order_id}")
            touched[order_id] = state
            return state

        reduced: tuple[int, int] | None = None  # the previous event's book reduce
        for ev in entry.events:
            previous, reduced = reduced, None
            if isinstance(ev, m.Book) and ev.action == "reduce":
                reduced = (ev.order_id, ev.delta)
            if isinstance(ev, m.Accepted):
                row: dict[str, Any] = {
                    "order_id": ev.order_id,
                    "account": ev.account,
                    "market": ev.market,
                    "client_order_id": ev.client_order_id,
                    "side": ev.side,
                    "order_type": ev.order_type,
                    "time_in_force": ev.time_in_force,
                    "post_only": ev.post_only,
                    "stp": ev.stp,
                    "price": ev.price,
                    "quantity": ev.quantity,
                    "quote_quantity": ev.quote_quantity,
                    "reserve_price": ev.reserve_price,
                    "status": "NEW",
                    "executed_qty": 0,
                    "cumulative_quote_qty": 0,
                    "leaves": ev.quantity,
                    "created_seq": seq,
                    "created_ns": now,
                    "updated_seq": seq,
                    "updated_ns": now,
                    "working_ns": now,
                }
                state = _Order(row, False)
                self._open[ev.order_id] = state
                touched[ev.order_id] = state
            elif isinstance(ev, m.Trade):
                self._apply_trade(conn, ev, seq, now, dirty_candles, ledger)
                for order_id, leaves in (
                    (ev.maker_order_id, ev.maker_leaves_quantity),
                    (ev.taker_order_id, ev.taker_leaves_quantity),
                ):
                    row = order(order_id).row
                    row["executed_qty"] += ev.quantity
                    row["cumulative_quote_qty"] += ev.quote_quantity
                    row["leaves"] = leaves
                    row["status"] = "PARTIALLY_FILLED"
            elif isinstance(ev, m.Amended):
                row = order(ev.order_id).row
                # The open quantity before the amend (a kept-priority amend's book reduce
                # came just before and already lowered ``leaves``).
                before = row["leaves"]
                if previous is not None and previous[0] == ev.order_id:
                    before += previous[1]
                row["price"] = ev.price
                row["quantity"] += ev.leaves_quantity - before
                row["leaves"] = ev.leaves_quantity
            elif isinstance(ev, m.OrderDone):
                row = order(ev.order_id).row
                row["status"] = DONE_STATUS[ev.reason]
                row["leaves"] = 0
                row["executed_qty"] = ev.filled_quantity
            elif isinstance(ev, m.Book):
                # An add gives a resting order's open quantity; a reduce (self-trade
                # prevention's decrement, or an amend's) lowers it without a trade.
                if ev.action in ("add", "reduce") and ev.order_id in self._open:
                    order(ev.order_id).row["leaves"] = ev.order_quantity
            elif isinstance(ev, m.Deposited):
                ledger.append((ev.account, ev.asset, ev.amount, "deposit", seq))
            elif isinstance(ev, m.Withdrawn):
                ledger.append((ev.account, ev.asset, -ev.amount, "withdrawal", seq))
            elif isinstance(ev, m.Balance):
                balances[(ev.account, ev.asset)] = (ev.free, ev.held)
            elif isinstance(ev, m.MarketListed):
                conn.execute(
                    "INSERT INTO projected_markets (market, base, quote) VALUES (?, ?, ?)",
                    (ev.market, ev.base, ev.quote),
                )
                self._markets[ev.market] = (ev.base, ev.quote)

        for order_id, state in touched.items():
            row = state.row
            row["updated_seq"], row["updated_ns"] = seq, now
            values = [_db(row[c]) if c in _U64_ORDER_FIELDS else row[c] for c in _ORDER_COLUMNS]
            if state.inserted:
                conn.execute(
                    "UPDATE orders SET "
                    + ", ".join(f"{c} = ?" for c in _ORDER_COLUMNS[1:])
                    + " WHERE order_id = ?",
                    (*values[1:], order_id),
                )
            else:
                conn.execute(
                    f"INSERT INTO orders ({', '.join(_ORDER_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(_ORDER_COLUMNS))})",
                    values,
                )
                state.inserted = True
            if row["status"] not in OPEN_STATUSES:
                del self._open[order_id]

        for account, asset, delta, reason, ref in ledger:
            free, held = balances.get((account, asset), (0, 0))
            if (account, asset) not in balances:  # every change comes with its balance event
                raise RuntimeError(
                    f"projections: seq {seq} changes account {account} asset {asset} "
                    "without a balance event"
                )
            conn.execute(
                "INSERT INTO ledger (seq, time_ns, account, asset, delta, reason, ref, free, "
                "held) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, now, _db(account), asset, _db(delta), reason, ref, _db(free), _db(held)),
            )
        for (account, asset), (free, held) in balances.items():
            conn.execute(
                "INSERT OR REPLACE INTO balances (account, asset, free, held, seq, time_ns) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (_db(account), asset, _db(free), _db(held), seq, now),
            )

    def _apply_trade(
        self,
        conn: Any,
        t: m.Trade,
        seq: int,
        now: int,
        dirty_candles: dict[tuple[int, int], _Candle],
        ledger: list[tuple[int, int, int, str, int]],
    ) -> None:
        last = self._last_trade.get(t.market)
        if last is not None and last.taker_order_id == t.taker_order_id and last.price == t.price:
            agg_id = last.agg_id
        else:
            agg_id = t.trade_id
        self._last_trade[t.market] = _LastTrade(t.taker_order_id, t.price, agg_id)
        conn.execute(
            f"INSERT INTO trades ({', '.join(_TRADE_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(_TRADE_COLUMNS))})",
            (
                t.trade_id,
                t.market,
                _db(t.price),
                _db(t.quantity),
                _db(t.quote_quantity),
                t.aggressor,
                t.maker_order_id,
                t.taker_order_id,
                _db(t.maker_account),
                _db(t.taker_account),
                _db(t.maker_client_order_id),
                _db(t.taker_client_order_id),
                _db(t.maker_fee),
                _db(t.taker_fee),
                agg_id,
                seq,
                now,
            ),
        )
        # The 1-minute candle.
        minute = now // NS_PER_MS // MINUTE_MS * MINUTE_MS
        candle = self._candle(conn, t.market, minute, dirty_candles)
        if candle is None:
            candle = _Candle(
                t.market, minute, t.price, t.price, t.price, t.price, 0, 0, 0, 0, 0,
                t.trade_id, t.trade_id,
            )  # fmt: skip
        candle.add(t)
        dirty_candles[(t.market, minute)] = candle
        latest = self._candles.get(t.market)
        if latest is None or latest.open_ms <= minute:
            self._candles[t.market] = candle
        # The ledger: the buyer pays quote value + fee, the seller gets quote value - fee.
        base, quote = self._markets[t.market]
        if t.aggressor == "buy":
            buyer, seller, buyer_fee, seller_fee = (
                t.taker_account, t.maker_account, t.taker_fee, t.maker_fee
            )  # fmt: skip
        else:
            buyer, seller, buyer_fee, seller_fee = (
                t.maker_account, t.taker_account, t.maker_fee, t.taker_fee
            )  # fmt: skip
        ref = t.trade_id
        ledger.append((buyer, base, t.quantity, "trade", ref))
        ledger.append((buyer, quote, -t.quote_quantity, "trade", ref))
        if buyer_fee:
            ledger.append((buyer, quote, -buyer_fee, "fee", ref))
        ledger.append((seller, base, -t.quantity, "trade", ref))
        ledger.append((seller, quote, t.quote_quantity, "trade", ref))
        if seller_fee:
            ledger.append((seller, quote, -seller_fee, "fee", ref))
        if t.maker_fee + t.taker_fee:
            ledger.append((0, quote, t.maker_fee + t.taker_fee, "fee_income", ref))

    def _candle(
        self,
        conn: Any,
        market: int,
        minute: int,
        dirty_candles: dict[tuple[int, int], _Candle],
    ) -> _Candle | None:
        candle = dirty_candles.get((market, minute))
        if candle is not None:
            return candle
        latest = self._candles.get(market)
        if latest is not None and latest.open_ms == minute:
            return latest
        row = conn.execute(
            "SELECT * FROM klines WHERE market = ? AND open_ms = ?", (market, minute)
        ).fetchone()
        return None if row is None else _candle_from(market, row)

    # -- rebuilding -------------------------------------------------------------------------

    async def rebuild(self, node: Node, feed: EventFeed | None = None) -> None:
        """Drop the tables and replay the node's stream from seq 1 (the feed, if given and
        running, keeps delivering meanwhile: its entries are skipped until the replay has
        caught up with it; until then the feed's ``wait_for`` may return before the
        projections show an entry). Raises EventsGone, before dropping anything, if the node
        no longer has seq 1."""
        first = await asyncio.to_thread(node.events, 1, 1, 0.0)
        if not first and node.stats()["applied_seq"] > 0:
            raise RuntimeError("projections: the node did not return seq 1")
        with self.db.transaction() as conn:
            for table in TABLES:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute("DELETE FROM schema_versions WHERE module = ?", (MODULE,))
        self.db.migrate(MODULE, SCHEMA)
        self._load()
        # Reads that would find the feed's next entries already applied simply skip them.
        self._cursor = 0
        self._rebuilding = True
        try:
            target = node.stats()["applied_seq"]
            while True:
                if feed is not None:
                    target = max(target, feed.next_seq - 1)
                if self._cursor >= target:
                    break
                raw = await asyncio.to_thread(node.events, self._cursor + 1, REPLAY_BATCH, 0.0)
                if not raw:
                    break
                self.apply(msgspec.convert(raw, list[m.Entry]))
        finally:
            self._rebuilding = False

    _rebuilding = False

    def consume(self, batch: Sequence[m.Entry]) -> None:
        """The feed consumer: :meth:`apply`, except while :meth:`rebuild` replays (it reads
        the same entries itself, so they are skipped here)."""
        if self._rebuilding:
            return
        self.apply(batch)

    # -- orders -----------------------------------------------------------------------------

    def order(self, account: int, order_id: int) -> OrderRow | None:
        """The account's order with this engine id, or None."""
        row = self.db.conn.execute(
            "SELECT * FROM orders WHERE order_id = ? AND account = ?", (order_id, _db(account))
        ).fetchone()
        return None if row is None else _order_from(row)

    def order_by_client_id(self, account: int, client_order_id: int) -> OrderRow | None:
        """The account's latest order with this engine client order id, or None."""
        row = self.db.conn.execute(
            "SELECT * FROM orders WHERE account = ? AND client_order_id = ? "
            "ORDER BY order_id DESC LIMIT 1",
            (_db(account), _db(client_order_id)),
        ).fetchone()
        return None if row is None else _order_from(row)

    def open_orders(self, account: int, market: int | None = None) -> list[OrderRow]:
        """The account's open orders (NEW, PARTIALLY_FILLED), oldest first; one market's or
        all."""
        sql = "SELECT * FROM orders WHERE account = ? AND status IN ('NEW', 'PARTIALLY_FILLED')"
        args: list[Any] = [_db(account)]
        if market is not None:
            sql += " AND market = ?"
            args.append(market)
        return [_order_from(r) for r in self.db.conn.execute(sql + " ORDER BY order_id", args)]

    def all_orders(
        self,
        account: int,
        market: int,
        from_order_id: int | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = ORDERS_DEFAULT,
    ) -> list[OrderRow]:
        """The account's orders in one market, ascending by id: from ``from_order_id`` on if
        given (Binance's ``orderId``), else created within [start_ms, end_ms] from the
        oldest if ``start_ms`` is given, else the most recent ``limit``."""
        return self._ranged(
            "SELECT * FROM orders WHERE account = ? AND market = ?",
            [_db(account), market],
            "order_id",
            "created_ns",
            from_order_id,
            start_ms,
            end_ms,
            limit,
            _order_from,
        )

    def _ranged(
        self,
        sql: str,
        args: list[Any],
        id_column: str,
        time_column: str,
        from_id: int | None,
        start_ms: int | None,
        end_ms: int | None,
        limit: int,
        convert: Any,
    ) -> list[Any]:
        time_sql, time_args = _time_bounds(time_column, start_ms, end_ms)
        sql += time_sql
        args = args + time_args
        if from_id is not None:
            sql += f" AND {id_column} >= ?"
            args.append(min(from_id, _I64_MAX))
        ascending = from_id is not None or start_ms is not None
        sql += f" ORDER BY {id_column} {'ASC' if ascending else 'DESC'} LIMIT ?"
        rows = [convert(r) for r in self.db.conn.execute(sql, (*args, limit))]
        return rows if ascending else rows[::-1]

    # -- trades -----------------------------------------------------------------------------

    def recent_trades(self, market: int, limit: int = TRADES_DEFAULT) -> list[TradeRow]:
        """The market's last ``limit`` trades, oldest first."""
        rows = self.db.conn.execute(
            "SELECT * FROM trades WHERE market = ? ORDER BY trade_id DESC LIMIT ?",
            (market, limit),
        )
        return [_trade_from(r) for r in rows][::-1]

    def trades_from(self, market: int, from_id: int, limit: int = TRADES_DEFAULT) -> list[TradeRow]:
        """The market's trades with id ≥ ``from_id``, oldest first, at most ``limit``."""
        rows = self.db.conn.execute(
            "SELECT * FROM trades WHERE market = ? AND trade_id >= ? ORDER BY trade_id LIMIT ?",
            (market, min(from_id, _I64_MAX), limit),
        )
        return [_trade_from(r) for r in rows]

    def last_trade(self, market: int) -> TradeRow | None:
        """The market's latest trade, or None."""
        row = self.db.conn.execute(
            "SELECT * FROM trades WHERE market = ? ORDER BY trade_id DESC LIMIT 1", (market,)
        ).fetchone()
        return None if row is None else _trade_from(row)

    def account_trades(
        self,
        account: int,
        market: int,
        from_trade_id: int | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = MY_TRADES_DEFAULT,
        order_id: int | None = None,
    ) -> list[AccountTrade]:
        """The account's trades in one market (Binance's myTrades), ascending by trade id,
        selected as :meth:`all_orders` selects orders; ``order_id``: only that order's."""
        time_sql, time_args = _time_bounds("time_ns", start_ms, end_ms)
        parts, args = [], []
        for role, is_maker in (("maker", 1), ("taker", 0)):
            sql = (
                f"SELECT *, {is_maker} AS is_maker FROM trades "
                f"WHERE {role}_account = ? AND market = ?{time_sql}"
            )
            part_args: list[Any] = [_db(account), market, *time_args]
            if from_trade_id is not None:
                sql += " AND trade_id >= ?"
                part_args.append(min(from_trade_id, _I64_MAX))
            if order_id is not None:
                sql += f" AND {role}_order_id = ?"
                part_args.append(min(order_id, _I64_MAX))
            parts.append(sql)
            args.extend(part_args)
        ascending = from_trade_id is not None or start_ms is not None
        direction = "ASC" if ascending else "DESC"
        sql = (
            " UNION ALL ".join(parts)
            + f" ORDER BY trade_id {direction}, is_maker {direction} LIMIT ?"
        )
        rows = [
            AccountTrade(_trade_from(r), bool(r["is_maker"]))
            for r in self.db.conn.execute(sql, (*args, limit))
        ]
        return rows if ascending else rows[::-1]

    def agg_trades(
        self,
        market: int,
        from_id: int | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = TRADES_DEFAULT,
    ) -> list[AggTrade]:
        """Aggregate trades, oldest first: from aggregate id ``from_id`` on, and/or those
        whose time (their first trade's) is in [start_ms, end_ms] from the oldest, else the
        most recent ``limit``. An aggregate's id is its first trade's id."""
        conn = self.db.conn
        time_sql, time_args = _time_bounds("time_ns", start_ms, end_ms)
        if from_id is None:
            # The first aggregate to return: the oldest in the window, or the limit-th last.
            if start_ms is not None:
                sql = (
                    "SELECT MIN(trade_id) FROM trades WHERE market = ? AND trade_id = agg_id"
                    + time_sql
                )
                row = conn.execute(sql, (market, *time_args)).fetchone()
            else:
                sql = (
                    "SELECT MIN(trade_id) FROM (SELECT trade_id FROM trades WHERE market = ? "
                    f"AND trade_id = agg_id{time_sql} ORDER BY trade_id DESC LIMIT ?)"
                )
                row = conn.execute(sql, (market, *time_args, limit)).fetchone()
            if row is None or row[0] is None:
                return []
            from_id = int(row[0])
        start_ns = None if start_ms is None else start_ms * NS_PER_MS
        end_ns = None if end_ms is None else (end_ms + 1) * NS_PER_MS
        out: list[AggTrade] = []
        current: dict[str, Any] | None = None
        rows = conn.execute(
            "SELECT * FROM trades WHERE market = ? AND trade_id >= ? ORDER BY trade_id",
            (market, min(from_id, _I64_MAX)),
        )
        for r in rows:  # lazily: stops reading once the answer is complete
            trade = _trade_from(r)
            if current is not None and current["agg_id"] == trade.agg_id:
                current["quantity"] += trade.quantity
                current["last_trade_id"] = trade.trade_id
                continue
            if current is not None:
                out.append(msgspec.convert(current, AggTrade))
                current = None
                if len(out) == limit:
                    break
            if trade.agg_id != trade.trade_id:
                continue  # the rest of an aggregate not returned (it began before from_id)
            if end_ns is not None and trade.time_ns >= end_ns:
                break
            if start_ns is not None and trade.time_ns < start_ns:
                continue
            current = {
                "agg_id": trade.agg_id,
                "price": trade.price,
                "quantity": trade.quantity,
                "first_trade_id": trade.trade_id,
                "last_trade_id": trade.trade_id,
                "time_ns": trade.time_ns,
                "is_buyer_maker": trade.is_buyer_maker,
            }
        if current is not None and len(out) < limit:
            out.append(msgspec.convert(current, AggTrade))
        return out

    # -- klines and statistics --------------------------------------------------------------

    def klines(
        self,
        market: int,
        interval: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = KLINES_DEFAULT,
        tz_ms: int = 0,
        now_ms: int | None = None,
    ) -> list[Kline]:
        """Candles of ``interval`` (one of :data:`INTERVALS`), oldest first: those opening in
        [start_ms, end_ms] from the oldest if ``start_ms`` is given, else the last ``limit``
        opening at or before ``end_ms`` (default now). Candles start at the market's first
        trade; boundaries are in the time zone ``tz_ms`` ahead of UTC."""
        conn = self.db.conn
        first = conn.execute(
            "SELECT MIN(open_ms) FROM klines WHERE market = ?", (market,)
        ).fetchone()[0]
        if first is None:
            return []
        now_ms = time.time_ns() // NS_PER_MS if now_ms is None else now_ms
        earliest = bucket_open(interval, first, tz_ms)
        upper = now_ms if end_ms is None else min(end_ms, now_ms)
        last_open = bucket_open(interval, upper, tz_ms)
        opens: list[int] = []
        if start_ms is not None and start_ms > upper:
            return []
        if start_ms is not None:
            b = bucket_open(interval, max(start_ms, earliest), tz_ms)
            if b < start_ms:
                b = bucket_next(interval, b, tz_ms)
            while b <= last_open and len(opens) < limit:
                opens.append(b)
                b = bucket_next(interval, b, tz_ms)
        else:
            b = last_open
            while b >= earliest and len(opens) < limit:
                opens.append(b)
                b = bucket_prev(interval, b, tz_ms)
            opens.reverse()
        if not opens:
            return []
        window_end = bucket_next(interval, opens[-1], tz_ms)
        prev = conn.execute(
            "SELECT close FROM klines WHERE market = ? AND open_ms < ? "
            "ORDER BY open_ms DESC LIMIT 1",
            (market, opens[0]),
        ).fetchone()
        close = 0 if prev is None else _int(prev[0])
        minutes = [
            _candle_from(market, r)
            for r in conn.execute(
                "SELECT * FROM klines WHERE market = ? AND open_ms >= ? AND open_ms < ? "
                "ORDER BY open_ms",
                (market, opens[0], window_end),
            )
        ]
        out: list[Kline] = []
        i = 0
        for n, b in enumerate(opens):
            end = opens[n + 1] if n + 1 < len(opens) else window_end
            group: list[_Candle] = []
            while i < len(minutes) and minutes[i].open_ms < end:
                group.append(minutes[i])
                i += 1
            out.append(_fold(b, end - 1, group, close))
            close = out[-1].close
        return out

    def window(self, market: int, start_ns: int, end_ns: int) -> WindowStats:
        """Statistics of the market's trades with time in [start_ns, end_ns]: whole minutes
        from the 1-minute candles, the partial minutes at either end from the trades."""
        conn = self.db.conn
        head_end = -(-start_ns // (MINUTE_MS * NS_PER_MS)) * MINUTE_MS * NS_PER_MS
        tail_start = end_ns // (MINUTE_MS * NS_PER_MS) * MINUTE_MS * NS_PER_MS
        pieces: list[tuple[int, int, int, int, int, int, int, int, int, int]] = []
        # (first_id, last_id, open, high, low, close, volume, quote, count, last_time_ns)

        def add_trades(lo: int, hi: int) -> None:
            for r in conn.execute(
                "SELECT * FROM trades WHERE market = ? AND time_ns >= ? AND time_ns < ? "
                "ORDER BY trade_id",
                (market, lo, hi),
            ):
                t = _trade_from(r)
                pieces.append(
                    (t.trade_id, t.trade_id, t.price, t.price, t.price, t.price, t.quantity,
                     t.quote_quantity, 1, t.time_ns)
                )  # fmt: skip

        if head_end >= tail_start:  # within one minute
            add_trades(start_ns, end_ns + 1)
        else:
            add_trades(start_ns, head_end)
            for r in conn.execute(
                "SELECT * FROM klines WHERE market = ? AND open_ms >= ? AND open_ms < ? "
                "ORDER BY open_ms",
                (market, head_end // NS_PER_MS, tail_start // NS_PER_MS),
            ):
                c = _candle_from(market, r)
                close_ns = (c.open_ms + MINUTE_MS) * NS_PER_MS - 1
                pieces.append(
                    (c.first_trade_id, c.last_trade_id, c.open, c.high, c.low, c.close, c.volume,
                     c.quote_volume, c.count, close_ns)
                )  # fmt: skip
            add_trades(tail_start, end_ns + 1)
        prev = conn.execute(
            "SELECT price FROM trades WHERE market = ? AND time_ns < ? "
            "ORDER BY time_ns DESC, trade_id DESC LIMIT 1",
            (market, start_ns),
        ).fetchone()
        prev_close = 0 if prev is None else _int(prev[0])
        base = {"open_ms": start_ns // NS_PER_MS, "close_ms": end_ns // NS_PER_MS}
        if not pieces:
            return WindowStats(
                **base, open=0, high=0, low=0, last=0, last_qty=0, volume=0, quote_volume=0,
                count=0, first_id=-1, last_id=-1, last_time_ns=0, prev_close=prev_close,
            )  # fmt: skip
        last_id = pieces[-1][1]
        last = conn.execute(
            "SELECT quantity, time_ns FROM trades WHERE trade_id = ?", (last_id,)
        ).fetchone()
        return WindowStats(
            **base,
            open=pieces[0][2],
            high=max(p[3] for p in pieces),
            low=min(p[4] for p in pieces),
            last=pieces[-1][5],
            last_qty=_int(last["quantity"]),
            volume=sum(p[6] for p in pieces),
            quote_volume=sum(p[7] for p in pieces),
            count=sum(p[8] for p in pieces),
            first_id=pieces[0][0],
            last_id=last_id,
            last_time_ns=last["time_ns"],
            prev_close=prev_close,
        )

    def ticker_24h(self, market: int, now_ns: int | None = None) -> WindowStats:
        """The rolling 24-hour window ending at ``now_ns`` (default now)."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        return self.window(market, now_ns - DAY_MS * NS_PER_MS, now_ns)

    # -- ledger -----------------------------------------------------------------------------

    def ledger(
        self,
        account: int,
        asset: int | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = LEDGER_DEFAULT,
        from_id: int | None = None,
    ) -> list[LedgerRow]:
        """The account's balance changes (one asset's or all), ascending by id, selected as
        :meth:`all_orders` selects orders."""
        sql = "SELECT * FROM ledger WHERE account = ?"
        args: list[Any] = [_db(account)]
        if asset is not None:
            sql += " AND asset = ?"
            args.append(asset)
        return self._ranged(
            sql, args, "id", "time_ns", from_id, start_ms, end_ms, limit, _ledger_from
        )

    def last_balance_change_ms(self, account: int) -> int:
        """When any of the account's balances last changed, funds held or released by an
        order included (UTC ms; 0 if never). A primary-key range: one row per asset."""
        row = self.db.conn.execute(
            "SELECT MAX(time_ns) FROM balances WHERE account = ?", (_db(account),)
        ).fetchone()
        return 0 if row[0] is None else int(row[0]) // 1_000_000

    def ledger_totals(self) -> dict[tuple[int, int], int]:
        """Σ delta per (account, asset) over the whole ledger (exact integers): equals the
        engine's free + held for each (the conservation check)."""
        totals: dict[tuple[int, int], int] = {}
        for r in self.db.conn.execute("SELECT account, asset, delta FROM ledger"):
            key = (_int(r["account"]), r["asset"])
            totals[key] = totals.get(key, 0) + _int(r["delta"])
        return totals

    def balances(self) -> dict[tuple[int, int], tuple[int, int]]:
        """The engine's latest (free, held) per (account, asset), from its balance events."""
        return {
            (_int(r["account"]), r["asset"]): (_int(r["free"]), _int(r["held"]))
            for r in self.db.conn.execute("SELECT account, asset, free, held FROM balances")
        }

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every projection table's rows in key order (for comparing two projections)."""
        keys = {
            "projection_cursor": "id",
            "projected_markets": "market",
            "orders": "order_id",
            "trades": "trade_id",
            "klines": "market, open_ms",
            "ledger": "id",
            "balances": "account, asset",
        }
        return {
            table: [tuple(r) for r in self.db.conn.execute(f"SELECT * FROM {table} ORDER BY {k}")]
            for table, k in keys.items()
        }


def _fold(open_ms: int, close_ms: int, group: Iterable[_Candle], prev_close: int) -> Kline:
    rows = list(group)
    if not rows:
        return Kline(
            open_ms=open_ms, close_ms=close_ms, open=prev_close, high=prev_close,
            low=prev_close, close=prev_close, volume=0, quote_volume=0, count=0,
            taker_buy_volume=0, taker_buy_quote_volume=0, first_trade_id=-1, last_trade_id=-1,
        )  # fmt: skip
    return Kline(
        open_ms=open_ms,
        close_ms=close_ms,
        open=rows[0].open,
        high=max(r.high for r in rows),
        low=min(r.low for r in rows),
        close=rows[-1].close,
        volume=sum(r.volume for r in rows),
        quote_volume=sum(r.quote_volume for r in rows),
        count=sum(r.count for r in rows),
        taker_buy_volume=sum(r.taker_buy_volume for r in rows),
        taker_buy_quote_volume=sum(r.taker_buy_quote_volume for r in rows),
        first_trade_id=rows[0].first_trade_id,
        last_trade_id=rows[-1].last_trade_id,
    )


PROJECTIONS = web.AppKey("projections", Projections)


def setup(app: web.Application, exchange: Any) -> Projections:
    """Create the service once per app (``app[PROJECTIONS]``) and subscribe it to the
    exchange's feed from its cursor; later calls return the same service."""
    if PROJECTIONS in app:
        return app[PROJECTIONS]
    projections = Projections(exchange.db)
    projections.subscribe(exchange.feed)
    app[PROJECTIONS] = projections
    return projections
