"""The stream hub: one live event-feed consumer that turns entries into Binance stream frames
and fans them out to WebSocket connections.

Data flow. :meth:`StreamHub.consume` runs on the loop thread for every batch of
:class:`~controlplane.messages.Entry` (it never blocks and never awaits). It keeps, per
market, the book's price levels (from ``Book`` events, which carry each level's total after
the change), the pending diff-depth changes of each update speed, the current kline of each
interval and the one-minute buckets of the rolling 24-hour window. Trades, aggregate trades
and book tickers are published at once; diff depth, partial depth, klines and tickers by the
hub's timer (:meth:`StreamHub.run_timer`, every 100 ms). Publishing encodes a frame once and
appends it to the bounded queue of each subscribed :class:`Connection`; each connection's
writer task sends its queue, so a slow client only delays itself. A client whose queue
exceeds :attr:`StreamHub.max_queue_bytes` is disconnected, so memory per client is bounded.

Depth update ids. Every frame of a diff-depth stream covers a contiguous range ``[U, u]`` of
node sequence numbers (``Entry.seq``): ``U`` is the previous frame's ``u`` + 1 and ``u`` the
last command the hub had seen when the frame was cut; its levels are every level of this
market that a command in the range changed, with its absolute quantity after the range
("0": removed). A range may hold commands that did not touch the market. Together with REST
``GET /api/v3/depth`` (``lastUpdateId`` = the node's applied sequence number read before the
book), Binance's local order book algorithm works unchanged: drop frames with
``u <= lastUpdateId``, the first kept one has ``U <= lastUpdateId + 1 <= u``, and each next
``U`` is the previous ``u`` + 1. A frame is sent only when the range changed the market.

The hub's own book (for ``bookTicker`` and the ticker's best bid/ask) is seeded from the
node's full depth when the hub starts (applied sequence number ``S`` read first) and then
follows the ``Book`` events of commands after ``S``; as the quantities are absolute it is
exact once the feed has passed the point where the seed was read.

Private streams. Subscription keys are strings: public stream names (:mod:`.names`) or
private keys (any string containing ``:``, e.g. :func:`account_key`), which no client can
subscribe to by name. A user-data module registers an entry listener
(:meth:`StreamHub.add_listener`), subscribes its connections to a private key
(:meth:`StreamHub.subscribe_key`, with the name combined frames show as ``"stream"``) and
sends with :meth:`StreamHub.publish`. It also sets :attr:`StreamHub.resolve_private`, which
turns a URL segment (a listen key) into a :class:`PrivateStream`; the hub never stores how
a private stream was named beyond the display name its subscribers already know.

Complexity: consuming an entry is O(events) plus, for each trade, O(intervals) candle
updates; recomputing a best price after its level empties is O(levels of that side).
Publishing is O(subscribers of the stream). Counters (:class:`HubCounters`) are plain
attributes for ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from controlplane.api import Exchange
from controlplane.listing import Market, change_percent, fmt
from controlplane.messages import Book, Entry, MarketListed, Trade
from controlplane.streams.candles import Candle, RollingWindow
from controlplane.streams.names import KLINE_INTERVALS_MS, PARTIAL_DEPTH_LEVELS, StreamSpec

log = logging.getLogger("bourse.streams")

TICK_SECONDS = 0.1
"""The hub's timer: 100 ms depth frames every tick, 1000 ms ones every tenth tick."""
SLOW_TICKS = 10
STATS_EVERY_TICKS = 10
"""Klines and tickers are sent at most once a second (and a kline when it closes)."""
FULL_BOOK_LEVELS = 1 << 30
LAG_BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

MAX_STREAMS_PER_CONNECTION = 1024
MAX_CONNECTIONS = 10_000
MAX_QUEUE_BYTES = 4 * 1024 * 1024
MAX_MESSAGES_PER_SECOND = 5
PING_INTERVAL_SECONDS = 20.0
PONG_TIMEOUT_SECONDS = 60.0

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013


def account_key(account: int) -> str:
    """The private subscription key of an account's user data stream."""
    return f"account:{account}"


def _ms(ns: int) -> int:
    return ns // 1_000_000


@dataclass(frozen=True)
class PrivateStream:
    """A private stream a URL segment stands for: the subscription ``key`` (contains ``:``)
    and the ``name`` combined frames show as ``"stream"`` (Binance: the listen key)."""

    key: str
    name: str = field(repr=False)
    """A bearer secret for listen keys: never logged."""


def _no_private_streams(segment: str) -> PrivateStream | None:
    return None


@dataclass
class HubCounters:
    """What ``/metrics`` reads (``bourse_ws_clients``, ``bourse_ws_messages_sent_total``,
    ``bourse_ws_delivery_lag_seconds``)."""

    clients: int = 0
    messages_sent: dict[str, int] = field(default_factory=dict)
    """Frames sent, by stream kind (``trade``, ``depth``, ``partialDepth``, ``aggTrade``,
    ``kline``, ``bookTicker``, ``ticker``, ``miniTicker``, ``response`` for control replies;
    private kinds as their publisher names them)."""
    delivery_lag_buckets: list[int] = field(
        default_factory=lambda: [0] * (len(LAG_BUCKETS_SECONDS) + 1)
    )
    """Frames by delivery lag (now - the oldest ``Entry.timestamp_ns`` in the frame, at
    send), per bucket of :data:`LAG_BUCKETS_SECONDS` (not cumulative; the last is +Inf)."""
    delivery_lag_seconds_sum: float = 0.0
    delivery_lag_count: int = 0
    last_delivery_lag_seconds: float = 0.0
    disconnects: dict[str, int] = field(default_factory=dict)
    """Connections the server closed, by reason (``slow``, ``rate``, ``pong``, ...)."""

    def sent(self, kind: str, timestamp_ns: int) -> None:
        self.messages_sent[kind] = self.messages_sent.get(kind, 0) + 1
        if timestamp_ns <= 0:
            return
        lag = max(0.0, (time.time_ns() - timestamp_ns) / 1e9)
        self.last_delivery_lag_seconds = lag
        self.delivery_lag_seconds_sum += lag
        self.delivery_lag_count += 1
        for i, bound in enumerate(LAG_BUCKETS_SECONDS):
            if lag <= bound:
                self.delivery_lag_buckets[i] += 1
                return
        self.delivery_lag_buckets[-1] += 1


class Connection:
    """One WebSocket client: its subscriptions, its bounded send queue and its writer."""

    def __init__(self, hub: StreamHub, ws: web.WebSocketResponse, combined: bool) -> None:
        self.hub = hub
        self.ws = ws
        self.combined = combined
        self.streams: dict[str, StreamSpec | None] = {}
        """Subscribed keys in subscription order (None: a private key)."""
        self.queue: deque[tuple[str, str, int]] = deque()
        """Frames to send: (text, kind, oldest entry timestamp ns or 0)."""
        self.queued_bytes = 0
        self.wake = asyncio.Event()
        self.closing = False
        self.close_reason = ""
        self.received: deque[float] = deque()
        self.last_pong = time.monotonic()
        self.transport: asyncio.Transport | None = None
        self.max_queue_bytes = hub.max_queue_bytes
        """This client's bound on unsent frames (the hub's when it connected)."""
        self.close_task: asyncio.Task[None] | None = None

    def enqueue(self, text: str, kind: str, timestamp_ns: int = 0) -> None:
        if self.closing:
            return
        if self.queued_bytes + len(text) > self.max_queue_bytes:
            self.kill("slow", CLOSE_POLICY, "Send buffer full: the client reads too slowly")
            return
        self.queue.append((text, kind, timestamp_ns))
        self.queued_bytes += len(text)
        self.wake.set()

    def kill(self, why: str, code: int, reason: str) -> None:
        """Disconnect (never blocks): unsubscribe now, close in a task."""
        if self.closing:
            return
        self.closing = True
        self.close_reason = reason
        self.hub.counters.disconnects[why] = self.hub.counters.disconnects.get(why, 0) + 1
        self.hub.unsubscribe_all(self)
        self.queue.clear()
        self.queued_bytes = 0
        self.wake.set()
        self.close_task = self.hub.spawn(self.close(code, reason))

    async def close(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()[:123]), 2)
        except (TimeoutError, ConnectionError, RuntimeError):
            if self.transport is not None:
                self.transport.abort()

    async def write(self) -> None:
        """The writer task: send the queue in order until closing."""
        counters = self.hub.counters
        while not self.closing:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
                continue
            text, kind, timestamp_ns = self.queue.popleft()
            self.queued_bytes -= len(text)
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return
            counters.sent(kind, timestamp_ns)

    async def keep_alive(self) -> None:
        """Ping every :attr:`StreamHub.ping_interval`; disconnect a client that has not
        answered any ping (with a pong) for :attr:`StreamHub.pong_timeout`."""
        while not self.closing:
            await asyncio.sleep(self.hub.ping_interval)
            if time.monotonic() - self.last_pong > self.hub.pong_timeout:
                self.kill("pong", CLOSE_POLICY, "Pong timeout")
                return
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.ping(b"")

    def count_message(self) -> bool:
        """Count one incoming message (text, binary, ping or pong); False if it is over
        the limit of :attr:`StreamHub.max_messages_per_second`."""
        now = time.monotonic()
        received = self.received
        received.append(now)
        while received and received[0] <= now - 1.0:
            received.popleft()
        return len(received) <= self.hub.max_messages_per_second


@dataclass
class PendingDiff:
    """Changed levels of one market for one diff-depth speed since its last frame."""

    last_u: int
    bids: dict[int, int] = field(default_factory=dict)
    asks: dict[int, int] = field(default_factory=dict)
    oldest_ns: int = 0


@dataclass
class AggTrade:
    market: int
    taker_order_id: int
    price: int
    quantity: int
    first_id: int
    last_id: int
    buyer_maker: bool


class MarketState:
    """What the hub keeps for one market."""

    def __init__(self, market: int, covered_seq: int) -> None:
        self.market = market
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.best_bid: int | None = None
        self.best_ask: int | None = None
        self.book_from_seq = 0
        """Book events of commands up to this one are already in the seeded book."""
        self.diffs = {100: PendingDiff(covered_seq), 1000: PendingDiff(covered_seq)}
        self.partial_dirty = {100: True, 1000: True}
        self.partial_oldest_ns = {100: 0, 1000: 0}
        self.candles: dict[str, Candle] = {}
        self.candles_dirty: set[str] = set()
        self.window = RollingWindow()
        self.ticker_dirty = False
        self.ticker_ns = 0

    def set_level(self, side: str, price: int, quantity: int) -> None:
        if side == "buy":
            if quantity:
                self.bids[price] = quantity
                if self.best_bid is None or price > self.best_bid:
                    self.best_bid = price
            else:
                self.bids.pop(price, None)
                if price == self.best_bid:
                    self.best_bid = max(self.bids) if self.bids else None
        else:
            if quantity:
                self.asks[price] = quantity
                if self.best_ask is None or price < self.best_ask:
                    self.best_ask = price
            else:
                self.asks.pop(price, None)
                if price == self.best_ask:
                    self.best_ask = min(self.asks) if self.asks else None

    def top(self) -> tuple[int, int, int, int]:
        """(bid price, bid qty, ask price, ask qty); zeros for an empty side."""
        bid = self.best_bid
        ask = self.best_ask
        return (
            bid or 0,
            self.bids[bid] if bid is not None else 0,
            ask or 0,
            self.asks[ask] if ask is not None else 0,
        )


Listener = Callable[[Sequence[Entry]], None]


class StreamHub:
    """The hub (see the module docstring). One per app, under ``STREAM_HUB``."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.counters = HubCounters()
        self.max_streams_per_connection = MAX_STREAMS_PER_CONNECTION
        self.max_connections = MAX_CONNECTIONS
        self.max_queue_bytes = MAX_QUEUE_BYTES
        self.max_messages_per_second = MAX_MESSAGES_PER_SECOND
        self.ping_interval = PING_INTERVAL_SECONDS
        self.pong_timeout = PONG_TIMEOUT_SECONDS
        self.connections: set[Connection] = set()
        self.subscribers: dict[str, set[Connection]] = {}
        self.markets: dict[int, MarketState] = {}
        self.covered_seq = -1
        """The last command the hub has consumed (-1 before it is seeded)."""
        self.covered_ns = 0
        self.seeded = False
        self.listeners: list[Listener] = []
        self.resolve_private: Callable[[str], PrivateStream | None] = _no_private_streams
        """What a URL segment without ``@`` stands for (set by the user-data module)."""
        self.stream_names: dict[str, str] = {}
        """Display names of the private keys that have subscribers (for combined frames)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticks = 0

    # --- subscriptions ------------------------------------------------------------------

    def connect(self, ws: web.WebSocketResponse, combined: bool) -> Connection:
        conn = Connection(self, ws, combined)
        self.connections.add(conn)
        self.counters.clients = len(self.connections)
        return conn

    def disconnect(self, conn: Connection) -> None:
        conn.closing = True
        conn.wake.set()
        self.unsubscribe_all(conn)
        self.connections.discard(conn)
        self.counters.clients = len(self.connections)

    def subscribe(self, conn: Connection, spec: StreamSpec) -> None:
        if spec.kind == "partialDepth":
            self.markets_state(spec.market).partial_dirty[spec.speed_ms] = True
        self._add(conn, spec.name, spec)

    def subscribe_key(self, conn: Connection, key: str, name: str | None = None) -> None:
        """Subscribe a connection to a private key (``account_key``); combined frames show
        ``name`` (default: the key) as their ``"stream"``."""
        if ":" not in key:
            raise ValueError(f"{key!r} is not a private key")
        if name is not None:
            self.stream_names[key] = name
        self._add(conn, key, None)

    def _add(self, conn: Connection, key: str, spec: StreamSpec | None) -> None:
        if conn.closing:
            return
        conn.streams[key] = spec
        self.subscribers.setdefault(key, set()).add(conn)

    def unsubscribe(self, conn: Connection, key: str) -> None:
        conn.streams.pop(key, None)
        subs = self.subscribers.get(key)
        if subs is not None:
            subs.discard(conn)
            if not subs:
                del self.subscribers[key]
                self.stream_names.pop(key, None)

    def unsubscribe_all(self, conn: Connection) -> None:
        for key in list(conn.streams):
            self.unsubscribe(conn, key)

    def add_listener(self, listener: Listener) -> None:
        """Also hand every batch the hub consumes to ``listener`` (after the market data)."""
        self.listeners.append(listener)

    def publish(self, key: str, kind: str, payload: Any, timestamp_ns: int = 0) -> None:
        """Send ``payload`` (a JSON-encodable value) to the subscribers of ``key``; encoded
        once, wrapped once for combined connections."""
        subs = self.subscribers.get(key)
        if not subs:
            return
        raw = msgspec.json.encode(payload).decode()
        wrapped = ""
        for conn in list(subs):
            if conn.combined:
                if not wrapped:
                    name = msgspec.json.encode(self.stream_names.get(key, key)).decode()
                    wrapped = f'{{"stream":{name},"data":{raw}}}'
                conn.enqueue(wrapped, kind, timestamp_ns)
            else:
                conn.enqueue(raw, kind, timestamp_ns)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- the book and the feed ----------------------------------------------------------

    def markets_state(self, market: int) -> MarketState:
        state = self.markets.get(market)
        if state is None:
            state = MarketState(market, self.covered_seq)
            self.markets[market] = state
        return state

    def seed(self) -> None:
        """Load every market's book from the node (once; see the module docstring)."""
        if self.seeded:
            return
        self.seeded = True
        node = self.exchange.node
        self.covered_seq = self.exchange.feed.next_seq - 1
        applied = node.stats()["applied_seq"]
        for state in self.markets.values():
            state.diffs = {speed: PendingDiff(self.covered_seq) for speed in state.diffs}
        for view in node.markets():
            state = self.markets_state(view["market"])
            state.book_from_seq = applied
            for price, quantity, _ in node.depth(state.market, "buy", FULL_BOOK_LEVELS):
                state.set_level("buy", price, quantity)
            for price, quantity, _ in node.depth(state.market, "sell", FULL_BOOK_LEVELS):
                state.set_level("sell", price, quantity)

    def consume(self, batch: Sequence[Entry]) -> None:
        """The feed consumer (loop thread, never blocks). A failure here must not stop the
        feed (the projections share it): it is logged, every client is disconnected (1011,
        so that it resyncs) and the hub starts afresh from the node's book."""
        try:
            if not self.seeded:
                self.seed()
            self._consume(batch)
        except Exception:
            log.exception("stream hub failed at seq %d; reconnecting every client", batch[0].seq)
            for conn in list(self.connections):
                conn.kill("error", CLOSE_INTERNAL_ERROR, "Internal error")
            self.markets.clear()
            self.seeded = False
        for listener in self.listeners:
            listener(batch)

    def _consume(self, batch: Sequence[Entry]) -> None:
        listing = self.exchange.listing.markets
        for entry in batch:
            touched: dict[int, tuple[int, int, int, int]] = {}
            agg: AggTrade | None = None
            for event in entry.events:
                if isinstance(event, Book):
                    state = self.markets_state(event.market)
                    if event.market not in touched:
                        touched[event.market] = state.top()
                    if entry.seq > state.book_from_seq:
                        state.set_level(event.side, event.price, event.level_quantity)
                    for diff in state.diffs.values():
                        book = diff.bids if event.side == "buy" else diff.asks
                        book[event.price] = event.level_quantity
                        if not diff.oldest_ns:
                            diff.oldest_ns = entry.timestamp_ns
                    for speed in state.partial_dirty:
                        if not state.partial_dirty[speed]:
                            state.partial_oldest_ns[speed] = entry.timestamp_ns
                        state.partial_dirty[speed] = True
                elif isinstance(event, Trade):
                    market = listing.get(event.market)
                    state = self.markets_state(event.market)
                    self._on_trade(state, market, entry, event)
                    same = (
                        agg is not None
                        and agg.market == event.market
                        and agg.taker_order_id == event.taker_order_id
                        and agg.price == event.price
                    )
                    if agg is not None and same:
                        agg.quantity += event.quantity
                        agg.last_id = event.trade_id
                    else:
                        if agg is not None:
                            self._publish_agg(agg, entry)
                        agg = AggTrade(
                            event.market,
                            event.taker_order_id,
                            event.price,
                            event.quantity,
                            event.trade_id,
                            event.trade_id,
                            event.aggressor == "sell",
                        )
                elif isinstance(event, MarketListed):
                    self.markets_state(event.market)
            if agg is not None:
                self._publish_agg(agg, entry)
            for mid, before in touched.items():
                state = self.markets[mid]
                after = state.top()
                market = listing.get(mid)
                if after != before and market is not None:
                    self._publish_book_ticker(market, state, entry.seq, entry.timestamp_ns)
                    state.ticker_dirty = True
            self.covered_seq = entry.seq
            self.covered_ns = entry.timestamp_ns

    def _on_trade(self, state: MarketState, market: Market | None, entry: Entry, t: Trade) -> None:
        ts_ms = _ms(entry.timestamp_ns)
        taker_buys = t.aggressor == "buy"
        for interval in KLINE_INTERVALS_MS:
            candle = state.candles.get(interval)
            if candle is not None and ts_ms > candle.close_ms:
                if market is not None:
                    self._publish_kline(market, candle, closed=True)
                state.candles_dirty.discard(interval)
                candle = None
            if candle is None:
                candle = Candle.start(interval, ts_ms, t.trade_id, t.price)
                state.candles[interval] = candle
            candle.add(t.trade_id, t.price, t.quantity, t.quote_quantity, taker_buys)
            state.candles_dirty.add(interval)
        state.window.add(ts_ms, t.trade_id, t.price, t.quantity, t.quote_quantity)
        state.ticker_dirty = True
        if not state.ticker_ns:
            state.ticker_ns = entry.timestamp_ns
        if market is None:
            return
        key = f"{market.symbol.lower()}@trade"
        if key in self.subscribers:
            self.publish(
                key,
                "trade",
                {
                    "e": "trade",
                    "E": _ms(time.time_ns()),
                    "s": market.symbol,
                    "t": t.trade_id,
                    "p": market.price_str(t.price),
                    "q": market.qty_str(t.quantity),
                    "T": ts_ms,
                    "m": t.aggressor == "sell",
                    "M": True,
                },
                entry.timestamp_ns,
            )

    def _publish_agg(self, agg: AggTrade, entry: Entry) -> None:
        market = self.exchange.listing.markets.get(agg.market)
        if market is None:
            return
        key = f"{market.symbol.lower()}@aggTrade"
        if key not in self.subscribers:
            return
        self.publish(
            key,
            "aggTrade",
            {
                "e": "aggTrade",
                "E": _ms(time.time_ns()),
                "s": market.symbol,
                "a": agg.first_id,
                "p": market.price_str(agg.price),
                "q": market.qty_str(agg.quantity),
                "f": agg.first_id,
                "l": agg.last_id,
                "T": _ms(entry.timestamp_ns),
                "m": agg.buyer_maker,
                "M": True,
            },
            entry.timestamp_ns,
        )

    def _publish_book_ticker(
        self, market: Market, state: MarketState, seq: int, timestamp_ns: int
    ) -> None:
        key = f"{market.symbol.lower()}@bookTicker"
        if key not in self.subscribers:
            return
        bid, bid_qty, ask, ask_qty = state.top()
        self.publish(
            key,
            "bookTicker",
            {
                "u": seq,
                "s": market.symbol,
                "b": market.price_str(bid),
                "B": market.qty_str(bid_qty),
                "a": market.price_str(ask),
                "A": market.qty_str(ask_qty),
            },
            timestamp_ns,
        )

    def _publish_kline(self, market: Market, candle: Candle, *, closed: bool) -> None:
        key = f"{market.symbol.lower()}@kline_{candle.interval}"
        if key not in self.subscribers:
            return
        self.publish(
            key,
            "kline",
            {
                "e": "kline",
                "E": _ms(time.time_ns()),
                "s": market.symbol,
                "k": {
                    "t": candle.open_ms,
                    "T": candle.close_ms,
                    "s": market.symbol,
                    "i": candle.interval,
                    "f": candle.first_trade_id,
                    "L": candle.last_trade_id,
                    "o": market.price_str(candle.open),
                    "c": market.price_str(candle.close),
                    "h": market.price_str(candle.high),
                    "l": market.price_str(candle.low),
                    "v": market.qty_str(candle.volume),
                    "n": candle.trades,
                    "x": closed,
                    "q": market.quote_str(candle.quote_volume),
                    "V": market.qty_str(candle.taker_buy_volume),
                    "Q": market.quote_str(candle.taker_buy_quote_volume),
                    "B": "0",
                },
            },
        )

    # --- the timer ----------------------------------------------------------------------

    async def run_timer(self) -> None:
        """Every :data:`TICK_SECONDS`: diff and partial depth frames (100 ms every tick,
        1000 ms every tenth), klines and tickers once a second."""
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                await self.tick()
            except Exception:
                log.exception("stream hub tick failed")

    async def tick(self) -> None:
        self._ticks += 1
        speeds = [100] if self._ticks % SLOW_TICKS else [100, 1000]
        if not self.seeded:
            return
        for speed in speeds:
            self.flush_diffs(speed)
        for speed in speeds:
            await self.flush_partial(speed)
        if self._ticks % STATS_EVERY_TICKS == 0:
            self.flush_stats(time.time_ns())

    def flush_diffs(self, speed: int) -> None:
        """Cut the diff-depth frame of every market changed since its last frame."""
        listing = self.exchange.listing.markets
        u = self.covered_seq
        for mid, state in self.markets.items():
            diff = state.diffs[speed]
            if not diff.bids and not diff.asks:
                continue
            market = listing.get(mid)
            if market is not None:
                name = f"{market.symbol.lower()}@depth" + ("@100ms" if speed == 100 else "")
                if name in self.subscribers:
                    self.publish(
                        name,
                        "depth",
                        {
                            "e": "depthUpdate",
                            "E": _ms(time.time_ns()),
                            "s": market.symbol,
                            "U": diff.last_u + 1,
                            "u": u,
                            "b": _levels(market, diff.bids, reverse=True),
                            "a": _levels(market, diff.asks, reverse=False),
                        },
                        diff.oldest_ns,
                    )
            state.diffs[speed] = PendingDiff(u)

    async def flush_partial(self, speed: int) -> None:
        """Partial depth frames for the markets whose book changed (read from the node)."""
        listing = self.exchange.listing.markets
        wanted: list[tuple[Market, list[str], int]] = []
        for mid, state in self.markets.items():
            if not state.partial_dirty[speed]:
                continue
            market = listing.get(mid)
            if market is None:
                continue
            suffix = "@100ms" if speed == 100 else ""
            symbol = market.symbol.lower()
            names = [f"{symbol}@depth{n}{suffix}" for n in PARTIAL_DEPTH_LEVELS]
            names = [n for n in names if n in self.subscribers]
            if names:
                state.partial_dirty[speed] = False
                wanted.append((market, names, state.partial_oldest_ns[speed]))
                state.partial_oldest_ns[speed] = 0
        if not wanted:
            return
        node = self.exchange.node
        top = max(PARTIAL_DEPTH_LEVELS)

        def read() -> list[tuple[int, list[tuple[int, int, int]], list[tuple[int, int, int]]]]:
            out = []
            for market, _, _ in wanted:
                applied = node.stats()["applied_seq"]
                bids = node.depth(market.id, "buy", top)
                asks = node.depth(market.id, "sell", top)
                out.append((applied, bids, asks))
            return out

        books = await asyncio.to_thread(read)
        for (market, names, oldest_ns), (applied, bids, asks) in zip(wanted, books, strict=True):
            bid_rows = [[market.price_str(p), market.qty_str(q)] for p, q, _ in bids]
            ask_rows = [[market.price_str(p), market.qty_str(q)] for p, q, _ in asks]
            for name in names:
                levels = int(name.split("@")[1][5:])
                self.publish(
                    name,
                    "partialDepth",
                    {
                        "lastUpdateId": applied,
                        "bids": bid_rows[:levels],
                        "asks": ask_rows[:levels],
                    },
                    oldest_ns,
                )

    def flush_stats(self, now_ns: int) -> None:
        """Klines (changed ones; closing ones with ``x`` true) and 24-hour tickers."""
        listing = self.exchange.listing.markets
        now_ms = _ms(now_ns)
        for mid, state in self.markets.items():
            market = listing.get(mid)
            for interval, candle in list(state.candles.items()):
                closed = now_ms > candle.close_ms
                if market is not None and (closed or interval in state.candles_dirty):
                    self._publish_kline(market, candle, closed=closed)
                state.candles_dirty.discard(interval)
                if closed:
                    del state.candles[interval]
            if state.window.expire(now_ms):
                state.ticker_dirty = True
            if market is None or not state.ticker_dirty:
                continue
            state.ticker_dirty = False
            self._publish_tickers(market, state, now_ms, state.ticker_ns)
            state.ticker_ns = 0

    def _publish_tickers(
        self, market: Market, state: MarketState, now_ms: int, timestamp_ns: int
    ) -> None:
        symbol = market.symbol.lower()
        full, mini = f"{symbol}@ticker", f"{symbol}@miniTicker"
        if full not in self.subscribers and mini not in self.subscribers:
            return
        summary = state.window.summary()
        if summary is None:
            return
        price, qty, quote = market.price_str, market.qty_str, market.quote_str
        if mini in self.subscribers:
            self.publish(
                mini,
                "miniTicker",
                {
                    "e": "24hrMiniTicker",
                    "E": now_ms,
                    "s": market.symbol,
                    "c": price(summary.close),
                    "o": price(summary.open),
                    "h": price(summary.high),
                    "l": price(summary.low),
                    "v": qty(summary.volume),
                    "q": quote(summary.quote_volume),
                },
                timestamp_ns,
            )
        if full not in self.subscribers:
            return
        change = summary.close - summary.open
        percent = change_percent(summary.open, summary.close)
        weighted = 0
        if summary.volume:
            weighted = summary.quote_volume * 10**market.base.decimals // summary.volume
        bid, bid_qty, ask, ask_qty = state.top()
        self.publish(
            full,
            "ticker",
            {
                "e": "24hrTicker",
                "E": now_ms,
                "s": market.symbol,
                "p": price(change),
                "P": percent,
                "w": fmt(weighted, market.quote.decimals, market.quote.decimals),
                "x": price(summary.price_before),
                "c": price(summary.close),
                "Q": qty(summary.last_quantity),
                "b": price(bid),
                "B": qty(bid_qty),
                "a": price(ask),
                "A": qty(ask_qty),
                "o": price(summary.open),
                "h": price(summary.high),
                "l": price(summary.low),
                "v": qty(summary.volume),
                "q": quote(summary.quote_volume),
                "O": now_ms - 24 * 3600 * 1000,
                "C": now_ms,
                "F": summary.first_trade_id,
                "L": summary.last_trade_id,
                "n": summary.trades,
            },
            timestamp_ns,
        )

    async def close_all(self) -> None:
        """Close every connection (server shutdown)."""
        for conn in list(self.connections):
            conn.kill("shutdown", CLOSE_GOING_AWAY, "Server shutdown")
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=3)


def _levels(market: Market, levels: dict[int, int], *, reverse: bool) -> list[list[str]]:
    return [
        [market.price_str(p), market.qty_str(levels[p])] for p in sorted(levels, reverse=reverse)
    ]


def streams_of(conn: Connection) -> Iterable[str]:
    """The public streams a connection is subscribed to, in subscription order."""
    return [key for key, spec in conn.streams.items() if spec is not None]
