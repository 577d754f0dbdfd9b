"""Klines and rolling 24-hour statistics kept in memory from the live trades.

:class:`Candle` is one kline (OHLCV, trade ids, taker-buy volumes) in integer units;
:func:`open_time` gives the open time of the candle a trade time falls in (intervals are
aligned as Binance aligns them: to the Unix epoch, weeks to Monday 00:00 UTC, months to the
first of the calendar month). :class:`RollingWindow` keeps one-minute buckets of trades for
the rolling 24-hour ticker.

Invariants: amounts are integers (price units, base atoms, quote atoms); a candle's ``low``
<= ``open``, ``close`` <= ``high``; buckets are in time order, none older than the window.
Memory: one candle per (market, interval) and at most :data:`WINDOW_BUCKETS` buckets (of a
fixed size) per market, whatever the trade rate. Updating on a trade is O(1) per candle;
summarising the window is O(:data:`WINDOW_BUCKETS`).

Only trades seen live are counted: after a restart the current candle and the 24-hour
window start from the first trade after the restart (REST klines come from the SQLite
projection, which has the full history).
"""

from __future__ import annotations

import datetime
from collections import deque
from dataclasses import dataclass

from controlplane.streams.names import DAY_MS, KLINE_INTERVALS_MS, MINUTE_MS

MONDAY_OFFSET_MS = 4 * DAY_MS
"""1970-01-01 was a Thursday: weeks start 4 days after the epoch, on Mondays."""
WINDOW_MS = DAY_MS
BUCKET_MS = MINUTE_MS
WINDOW_BUCKETS = WINDOW_MS // BUCKET_MS


def open_time(interval: str, ts_ms: int) -> int:
    """The open time (ms) of the ``interval`` candle that ``ts_ms`` falls in."""
    if interval == "1M":
        day = datetime.datetime.fromtimestamp(ts_ms // 1000, datetime.UTC)
        first = datetime.datetime(day.year, day.month, 1, tzinfo=datetime.UTC)
        return int(first.timestamp()) * 1000
    length = KLINE_INTERVALS_MS[interval]
    if interval == "1w":
        return (ts_ms - MONDAY_OFFSET_MS) // length * length + MONDAY_OFFSET_MS
    return ts_ms // length * length


def close_time(interval: str, opened_ms: int) -> int:
    """The close time (ms, inclusive) of the candle that opened at ``opened_ms``."""
    if interval == "1M":
        day = datetime.datetime.fromtimestamp(opened_ms // 1000, datetime.UTC)
        year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
        nxt = datetime.datetime(year, month, 1, tzinfo=datetime.UTC)
        return int(nxt.timestamp()) * 1000 - 1
    return opened_ms + KLINE_INTERVALS_MS[interval] - 1


@dataclass
class Candle:
    interval: str
    open_ms: int
    close_ms: int
    first_trade_id: int
    last_trade_id: int
    open: int
    high: int
    low: int
    close: int
    volume: int = 0
    quote_volume: int = 0
    taker_buy_volume: int = 0
    taker_buy_quote_volume: int = 0
    trades: int = 0

    @classmethod
    def start(cls, interval: str, ts_ms: int, trade_id: int, price: int) -> Candle:
        opened = open_time(interval, ts_ms)
        return cls(
            interval,
            opened,
            close_time(interval, opened),
            trade_id,
            trade_id,
            price,
            price,
            price,
            price,
        )

    def add(self, trade_id: int, price: int, qty: int, quote: int, taker_buys: bool) -> None:
        self.last_trade_id = trade_id
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.close = price
        self.volume += qty
        self.quote_volume += quote
        self.trades += 1
        if taker_buys:
            self.taker_buy_volume += qty
            self.taker_buy_quote_volume += quote


@dataclass
class Bucket:
    """The trades of one minute."""

    start_ms: int
    first_trade_id: int
    last_trade_id: int
    open: int
    high: int
    low: int
    close: int
    last_quantity: int
    volume: int
    quote_volume: int
    trades: int


@dataclass(frozen=True)
class WindowSummary:
    open: int
    high: int
    low: int
    close: int
    last_quantity: int
    volume: int
    quote_volume: int
    first_trade_id: int
    last_trade_id: int
    trades: int
    price_before: int
    """The last price before the window (0 if none was seen)."""


class RollingWindow:
    """The last 24 hours of trades of one market, in one-minute buckets (the window is
    rounded to whole minutes)."""

    def __init__(self) -> None:
        self.buckets: deque[Bucket] = deque()
        self.price_before = 0

    def add(self, ts_ms: int, trade_id: int, price: int, qty: int, quote: int) -> None:
        start = ts_ms // BUCKET_MS * BUCKET_MS
        last = self.buckets[-1] if self.buckets else None
        if last is None or start > last.start_ms:
            self.buckets.append(
                Bucket(start, trade_id, trade_id, price, price, price, price, qty, qty, quote, 1)
            )
            self.expire(ts_ms)
            return
        last.last_trade_id = trade_id
        last.high = max(last.high, price)
        last.low = min(last.low, price)
        last.close = price
        last.last_quantity = qty
        last.volume += qty
        last.quote_volume += quote
        last.trades += 1

    def expire(self, now_ms: int) -> bool:
        """Drop the buckets that left the window; whether any did."""
        oldest = now_ms // BUCKET_MS * BUCKET_MS - (WINDOW_BUCKETS - 1) * BUCKET_MS
        dropped = False
        while self.buckets and self.buckets[0].start_ms < oldest:
            self.price_before = self.buckets.popleft().close
            dropped = True
        return dropped

    def summary(self) -> WindowSummary | None:
        """The window's statistics, or None if it holds no trade."""
        if not self.buckets:
            return None
        first, last = self.buckets[0], self.buckets[-1]
        return WindowSummary(
            open=first.open,
            high=max(b.high for b in self.buckets),
            low=min(b.low for b in self.buckets),
            close=last.close,
            last_quantity=last.last_quantity,
            volume=sum(b.volume for b in self.buckets),
            quote_volume=sum(b.quote_volume for b in self.buckets),
            first_trade_id=first.first_trade_id,
            last_trade_id=last.last_trade_id,
            trades=sum(b.trades for b in self.buckets),
            price_before=self.price_before,
        )
