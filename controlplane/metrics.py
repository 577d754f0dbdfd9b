"""``GET /metrics``: the exchange's figures for Prometheus (text exposition format).

The metric names are a contract with the alerting rules and dashboards (all prefixed
``bourse_``); every figure lives in a per-app :class:`~prometheus_client.CollectorRegistry`, so
several servers can run in one process. Four sources:

* **HTTP** — :func:`setup` puts a middleware first in the app's chain (outside the error
  middleware, so it sees the final status of every request, Binance-style errors and 404s
  included): ``bourse_http_requests_total{route,method,code}`` and
  ``bourse_http_request_duration_seconds{route,method}``. ``route`` is the canonical route
  (``/api/v3/order``; a parametrised one keeps its ``{name}``), ``unmatched`` for requests
  no route matched (404, 405), so a scanner cannot blow up the label set. A request whose
  client went away before the answer counts as code ``499``. A WebSocket upgrade is counted
  but not timed (its handler runs as long as the connection).
* **WebSocket** — ``bourse_ws_clients``, ``bourse_ws_messages_sent_total{stream}``,
  ``bourse_ws_delivery_lag_seconds``: :class:`StreamCollector` reads the stream hub's
  counters (:class:`controlplane.streams.hub.HubCounters`, plain integers the hub keeps as
  it sends) at scrape time. ``stream`` is the kind of frame in snake case (``depth``,
  ``depth_partial``, ``trade``, ``agg_trade``, ``kline``, ``book_ticker``, ``ticker``,
  ``mini_ticker``, ``response``), and ``user`` for every user-data-stream event.
* **Node, gateway, control plane** — :class:`NodeCollector` reads ``Node.stats()`` and
  ``Node.gateway_stats()`` at scrape time (relaxed atomics in the node: nothing is polled
  between scrapes); the gateway's figures are left out while no gateway runs. The latency
  histograms come from the node's fixed log-scale buckets (``bourse_node::latency``:
  powers of two from 128 ns to about 1.07 s), converted to seconds. Event lag, the feed's
  position and the data directory's filesystem (free and total bytes) are read here too.
* **Business** — :class:`BusinessFigures`, an event-feed consumer: accepted orders, trades
  and volume per market, deposits and withdrawals per asset, rejects per reason (counters
  since this process started), and two gauges kept exact by absolute values:

  - ``bourse_open_orders{market}``: every ``Book`` event carries its price level's order
    count after the change, so the figures keep each level's count (seeded from
    ``Node.depth``, whose levels are ``(price, quantity, orders)``) and sum them. Because
    the values are absolute, reading the book at any moment after the feed position the
    consumer starts from is exact: an event already reflected in the seed sets its level to
    the value it had then, and the events after it bring it up to date.
  - ``bourse_balances_held{asset}``: every ``Balance`` event carries an account's absolute
    ``held``; the figures keep each (account, asset) and sum per asset. Accounts created
    after start begin at 0 and every change reaches the feed, so they are exact; an account
    that existed before is counted from its first ``Balance`` event after start, or from
    the start if it was named to :func:`track_accounts` (the fee account and the demo
    accounts are named at setup). The node has no account listing in its Python bindings
    yet; until it has, an account with open orders from before start that nobody names and
    that does not trade is missing from the sum.

  Amounts are integers (atoms) internally and written in whole units at scrape time.

Security: with ``[http] metrics_token`` set, ``/metrics`` answers only a request carrying
``Authorization: Bearer <token>`` (compared in constant time; anything else is 401 with
Binance's ``-1002``, and the token is never logged). Without it the endpoint is open, as
Prometheus's convention has it: it shows aggregate figures only, but then firewall it or
keep the HTTP server on localhost behind a proxy that does not route it.

Cost: the middleware does two dict lookups and two metric updates per request; the
consumer is O(events) with O(1) dict updates per event; memory O(price levels + active
(account, asset) pairs). A scrape is O(markets + assets + levels touched) plus two node
calls; it runs on the event loop (a few hundred microseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import shutil
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from controlplane import Node, NodeError
from controlplane.api import EXCHANGE, Exchange
from controlplane.api.errors import UNAUTHORIZED, ApiError, Handler
from controlplane.engine_types import LatencyHistogram
from controlplane.listing import Listing
from controlplane.messages import (
    Accepted,
    Balance,
    Book,
    Deposited,
    Entry,
    Rejected,
    Side,
    Trade,
    Withdrawn,
)
from controlplane.streams.hub import LAG_BUCKETS_SECONDS, HubCounters

UNMATCHED = "unmatched"
"""The ``route`` label of requests that matched no route (404, 405)."""
CLIENT_GONE = "499"
"""The ``code`` label of requests whose client disconnected before the answer."""
STREAM_KINDS = ("depth", "depth_partial", "trade", "kline", "book_ticker", "user")
HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
ALL_LEVELS = 1 << 31
"""``Node.depth`` levels argument meaning "the whole side"."""
SIDES: tuple[Side, Side] = ("buy", "sell")


# --- business figures (event feed) ----------------------------------------------------------


class BusinessFigures:
    """Counters and gauges kept from the event stream (see the module docstring). Runs on
    the loop thread only: :meth:`consume` is an :class:`~controlplane.bridge.EventFeed`
    consumer, and the collector reads it on the same thread."""

    def __init__(self) -> None:
        self.from_seq = 0
        """The first sequence number counted (the feed position the consumer starts at)."""
        self.orders: defaultdict[int, int] = defaultdict(int)
        self.trades: defaultdict[int, int] = defaultdict(int)
        self.volume_base: defaultdict[int, int] = defaultdict(int)
        """Base atoms traded per market."""
        self.volume_quote: defaultdict[int, int] = defaultdict(int)
        """Quote atoms traded per market."""
        self.deposits: defaultdict[int, int] = defaultdict(int)
        self.withdrawals: defaultdict[int, int] = defaultdict(int)
        self.rejects: defaultdict[str, int] = defaultdict(int)
        self.level_orders: dict[tuple[int, Side, int], int] = {}
        """(market, side, price) → resting orders at that level (levels with none absent)."""
        self.open_orders: defaultdict[int, int] = defaultdict(int)
        """Market → sum of its levels' order counts."""
        self.held_by_account: dict[tuple[int, int], int] = {}
        """(account, asset) → atoms held by open orders."""
        self.held: defaultdict[int, int] = defaultdict(int)
        """Asset → sum over accounts."""

    def seed(self, node: Node, accounts: Iterable[int]) -> int:
        """Read the books and the named accounts' holds from the engine; the feed position
        (``applied_seq + 1`` read first) the consumer must start from for the absolute
        values to be exact."""
        self.from_seq = node.stats()["applied_seq"] + 1
        for view in node.markets():
            market = view["market"]
            self.orders[market] += 0
            self.trades[market] += 0
            self.volume_base[market] += 0
            self.volume_quote[market] += 0
            self.open_orders[market] += 0
            for side in SIDES:
                for price, _quantity, count in node.depth(market, side, ALL_LEVELS):
                    self._set_level(market, side, price, count)
        assets = [asset for asset, _ in node.assets()]
        for asset in assets:
            self.held[asset] += 0
            self.deposits[asset] += 0
            self.withdrawals[asset] += 0
        self.track(node, accounts, assets)
        return self.from_seq

    def track(self, node: Node, accounts: Iterable[int], assets: Sequence[int]) -> None:
        """Read the accounts' current holds (exact at any time: see the module docstring)."""
        for account in accounts:
            for asset in assets:
                balance = node.balance(account, asset)
                if balance is not None:
                    self._set_held(account, asset, balance[1])

    def _set_level(self, market: int, side: Side, price: int, count: int) -> None:
        key = (market, side, price)
        old = self.level_orders.pop(key, 0)
        if count:
            self.level_orders[key] = count
        self.open_orders[market] += count - old

    def _set_held(self, account: int, asset: int, held: int) -> None:
        key = (account, asset)
        old = self.held_by_account.pop(key, 0)
        if held:
            self.held_by_account[key] = held
        self.held[asset] += held - old

    def consume(self, entries: Sequence[Entry]) -> None:
        """The event-feed consumer."""
        for entry in entries:
            for event in entry.events:
                match event:
                    case Book():
                        self._set_level(event.market, event.side, event.price, event.level_orders)
                    case Balance():
                        self._set_held(event.account, event.asset, event.held)
                    case Trade():
                        self.trades[event.market] += 1
                        self.volume_base[event.market] += event.quantity
                        self.volume_quote[event.market] += event.quote_quantity
                    case Accepted():
                        self.orders[event.market] += 1
                    case Rejected():
                        self.rejects[event.reason] += 1
                    case Deposited():
                        self.deposits[event.asset] += event.amount
                    case Withdrawn():
                        self.withdrawals[event.asset] += event.amount
                    case _:
                        pass


class BusinessCollector(Collector):
    """Writes :class:`BusinessFigures` with names from the listing (a market or asset not
    named yet is labelled by its number; an amount of an asset whose decimals are unknown
    is left out until it is named)."""

    def __init__(self, figures: BusinessFigures, listing: Listing) -> None:
        self.figures = figures
        self.listing = listing

    def _market(self, market: int) -> str:
        named = self.listing.markets.get(market)
        return named.symbol if named is not None else str(market)

    def _asset(self, asset: int) -> str:
        named = self.listing.assets.get(asset)
        return named.name if named is not None else str(asset)

    def _decimals(self, asset: int) -> int | None:
        named = self.listing.assets.get(asset)
        return named.decimals if named is not None else None

    def collect(self) -> Iterator[Metric]:
        f = self.figures
        markets = self.listing.markets

        def per_market(name: str, doc: str, values: dict[int, int]) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=["market"])
            for market, value in sorted(values.items()):
                family.add_metric([self._market(market)], value)
            return family

        yield per_market("bourse_orders", "Orders accepted by the engine.", f.orders)
        yield per_market("bourse_trades", "Trades.", f.trades)
        base = CounterMetricFamily(
            "bourse_volume_base", "Base volume traded, whole units.", labels=["market"]
        )
        quote = CounterMetricFamily(
            "bourse_volume_quote", "Quote volume traded, whole units.", labels=["market"]
        )
        for market, atoms in sorted(f.volume_base.items()):
            named = markets.get(market)
            if named is not None:
                base.add_metric([named.symbol], atoms / 10**named.base.decimals)
                quote_atoms = f.volume_quote[market]
                quote.add_metric([named.symbol], quote_atoms / 10**named.quote.decimals)
        yield base
        yield quote
        open_orders = GaugeMetricFamily(
            "bourse_open_orders", "Orders resting in the book.", labels=["market"]
        )
        for market, count in sorted(f.open_orders.items()):
            open_orders.add_metric([self._market(market)], count)
        yield open_orders

        def per_asset(
            family: CounterMetricFamily | GaugeMetricFamily, values: dict[int, int]
        ) -> None:
            for asset, atoms in sorted(values.items()):
                decimals = self._decimals(asset)
                if decimals is not None:
                    family.add_metric([self._asset(asset)], atoms / 10**decimals)

        held = GaugeMetricFamily(
            "bourse_balances_held", "Held by open orders, whole units.", labels=["asset"]
        )
        per_asset(held, f.held)
        yield held
        deposits = CounterMetricFamily(
            "bourse_deposits", "Deposits, whole units.", labels=["asset"]
        )
        per_asset(deposits, f.deposits)
        yield deposits
        withdrawals = CounterMetricFamily(
            "bourse_withdrawals", "Withdrawals, whole units.", labels=["asset"]
        )
        per_asset(withdrawals, f.withdrawals)
        yield withdrawals
        rejects = CounterMetricFamily(
            "bourse_engine_rejects", "Commands the engine refused.", labels=["reason"]
        )
        for reason, count in sorted(f.rejects.items()):
            rejects.add_metric([reason], count)
        yield rejects


# --- node, gateway and control plane (read at scrape time) ----------------------------------


def histogram_family(name: str, doc: str, h: LatencyHistogram) -> HistogramMetricFamily:
    """A node latency histogram (ns buckets, cumulative) as a Prometheus one in seconds."""
    buckets: list[tuple[str, float]] = [
        (repr(bound / 1e9), float(count))
        for bound, count in zip(h["bounds_ns"], h["cumulative"], strict=True)
    ]
    buckets.append(("+Inf", float(h["count"])))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=h["sum_ns"] / 1e9)


def _counter(name: str, doc: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class NodeCollector(Collector):
    """The node's and the gateway's counters, the event feed's position and the data
    directory's filesystem, read when Prometheus scrapes."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.data_dir = Path(exchange.config.server.data_dir)

    def collect(self) -> Iterator[Metric]:
        node = self.exchange.node
        feed = self.exchange.feed
        delivered = feed.next_seq - 1
        yield _gauge("bourse_feed_seq", "Last sequence number the event feed delivered.", delivered)
        try:
            stats = node.stats()
        except NodeError:  # stopped
            stats = None
        if stats is not None:
            applied = stats["applied_seq"]
            yield _gauge("bourse_engine_applied_seq", "Last command applied.", applied)
            yield _gauge("bourse_engine_durable_seq", "Last command durable.", stats["durable_seq"])
            yield _gauge(
                "bourse_engine_published_seq",
                "Last command whose events are published.",
                stats["published_seq"],
            )
            yield _counter("bourse_engine_commands", "Commands applied.", applied)
            yield histogram_family(
                "bourse_engine_match_seconds",
                "Engine time per command (apply and hand-off to the publisher).",
                stats["engine_apply_ns"],
            )
            yield _counter("bourse_journal_commits", "Journal group commits.", stats["commits"])
            yield histogram_family(
                "bourse_journal_commit_seconds",
                "Write and sync of one journal group commit.",
                stats["journal_commit_ns"],
            )
            rings = GaugeMetricFamily(
                "bourse_ring_depth", "Commands waiting for each stage.", labels=["ring"]
            )
            rings.add_metric(["sequencer"], stats["sequencer_ring_depth"])
            rings.add_metric(["engine"], stats["engine_ring_depth"])
            rings.add_metric(["publisher"], stats["publisher_ring_depth"])
            yield rings
            yield _counter("bourse_snapshots", "Snapshots taken.", stats["snapshots"])
            yield _gauge(
                "bourse_snapshot_last_seq",
                "Sequence number of the last snapshot.",
                stats["last_snapshot_seq"],
            )
            yield _counter(
                "bourse_node_busy_rejections",
                "Submissions refused because a submission ring was full.",
                stats["busy_rejections"],
            )
            yield _gauge(
                "bourse_event_lag_commands",
                "Commands applied by the node that the event feed has not delivered.",
                max(0, applied - delivered),
            )
        try:
            gateway = node.gateway_stats()
        except NodeError:  # no gateway running (or the node stopped)
            gateway = None
        if gateway is not None:
            yield _gauge("bourse_gateway_sessions", "Gateway sessions open.", gateway["active"])
            for name, doc, value in (
                ("messages_in", "Messages received by the gateway.", gateway["messages_in"]),
                ("messages_out", "Messages sent by the gateway.", gateway["messages_out"]),
                ("login_failures", "Failed gateway logins.", gateway["login_failures"]),
                ("protocol_errors", "Gateway protocol errors.", gateway["protocol_errors"]),
                ("slow_consumers", "Gateway sessions cut as slow.", gateway["slow_consumers"]),
                (
                    "cancel_on_disconnect",
                    "Sessions whose orders were cancelled on disconnect.",
                    gateway["cancel_on_disconnect"],
                ),
            ):
                yield _counter(f"bourse_gateway_{name}", doc, value)
        try:
            usage = shutil.disk_usage(self.data_dir)
        except OSError:
            return
        yield _gauge(
            "bourse_data_dir_free_bytes",
            "Free bytes on the data directory's filesystem.",
            usage.free,
        )
        yield _gauge(
            "bourse_data_dir_size_bytes",
            "Size of the data directory's filesystem, bytes.",
            usage.total,
        )


# --- the app's metrics ----------------------------------------------------------------------


USER_EVENTS = frozenset(
    {"executionReport", "outboundAccountPosition", "balanceUpdate", "listenKeyExpired"}
)


def stream_label(kind: str) -> str:
    """The ``stream`` label of a hub frame kind: ``user`` for the user data stream's
    events, else the kind in snake case (``partialDepth`` → ``depth_partial``)."""
    if kind in USER_EVENTS:
        return "user"
    if kind == "partialDepth":
        return "depth_partial"
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in kind)


class StreamCollector(Collector):
    """The WebSocket figures, read from the stream hub's counters at scrape time (no hub
    yet, or none in this app: zeros). Lag buckets are the hub's, made cumulative."""

    def __init__(self) -> None:
        self.counters: HubCounters | None = None

    def collect(self) -> Iterator[Metric]:
        c = self.counters
        clients = GaugeMetricFamily("bourse_ws_clients", "WebSocket clients connected.")
        clients.add_metric([], 0 if c is None else c.clients)
        yield clients
        sent = CounterMetricFamily(
            "bourse_ws_messages_sent", "WebSocket frames sent, by stream kind.", labels=["stream"]
        )
        totals = dict.fromkeys(STREAM_KINDS, 0)
        if c is not None:
            for kind, n in c.messages_sent.items():
                label = stream_label(kind)
                totals[label] = totals.get(label, 0) + n
        for label, n in sorted(totals.items()):
            sent.add_metric([label], n)
        yield sent
        buckets: list[tuple[str, float]] = []
        running = 0
        per_bucket = [0] * (len(LAG_BUCKETS_SECONDS) + 1) if c is None else c.delivery_lag_buckets
        for bound, n in zip(LAG_BUCKETS_SECONDS, per_bucket, strict=False):
            running += n
            buckets.append((repr(bound), running))
        buckets.append(("+Inf", running + per_bucket[-1]))
        lag = HistogramMetricFamily(
            "bourse_ws_delivery_lag_seconds",
            "From the engine's timestamp of an event to its frame being written.",
        )
        lag.add_metric([], buckets, 0.0 if c is None else c.delivery_lag_seconds_sum)
        yield lag


class Metrics:
    """Every figure of one app, in its own registry."""

    def __init__(self, exchange: Exchange) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "bourse_http_requests",
            "HTTP requests by canonical route, method and status code.",
            ["route", "method", "code"],
            registry=r,
        )
        self.http_duration = Histogram(
            "bourse_http_request_duration_seconds",
            "HTTP request handling time (WebSocket upgrades excluded).",
            ["route", "method"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.streams = StreamCollector()
        r.register(self.streams)
        self.business = BusinessFigures()
        r.register(NodeCollector(exchange))
        r.register(BusinessCollector(self.business, exchange.listing))

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The registry in the format the ``Accept`` header asks for (text by default)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


METRICS = web.AppKey("metrics", Metrics)


def _route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return UNMATCHED if resource is None else resource.canonical


def _middleware(metrics: Metrics) -> Middleware:
    requests, duration = metrics.http_requests, metrics.http_duration

    @web.middleware
    async def http_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = _route_of(request)
        started = time.perf_counter()
        code = "500"
        timed = True
        try:
            response = await handler(request)
            code = str(response.status)
            timed = not isinstance(response, web.WebSocketResponse)
            return response
        except web.HTTPException as exc:
            code = str(exc.status)
            raise
        except asyncio.CancelledError:
            code = CLIENT_GONE
            raise
        finally:
            requests.labels(route, request.method, code).inc()
            if timed:
                duration.labels(route, request.method).observe(time.perf_counter() - started)

    return http_metrics


def _authorized(request: web.Request, token: str | None) -> bool:
    """Whether the request may read the metrics: no token configured, or its bearer token."""
    if token is None:
        return True
    given = request.headers.get("Authorization", "")
    scheme, _, credentials = given.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credentials.strip().encode(), token.encode())


async def metrics_endpoint(request: web.Request) -> web.Response:
    if not _authorized(request, request.app[EXCHANGE].config.http.metrics_token):
        raise ApiError(
            UNAUTHORIZED,
            "You are not authorized to execute this request.",
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    body, content_type = request.app[METRICS].exposition(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})


def setup(app: web.Application, exchange: Exchange) -> None:
    """Create the app's metrics, put the HTTP middleware outermost, add ``GET /metrics``,
    seed the business figures from the engine and subscribe them to the feed."""
    from controlplane.demo import DEMO_ACCOUNTS, demo_listed

    metrics = Metrics(exchange)
    app[METRICS] = metrics
    app.middlewares.insert(0, _middleware(metrics))
    app.router.add_get("/metrics", metrics_endpoint)
    known = [0]  # the fee account
    if demo_listed(exchange.node):
        known.extend(DEMO_ACCOUNTS.values())
    from_seq = metrics.business.seed(exchange.node, known)
    exchange.feed.subscribe("metrics", metrics.business.consume, from_seq)
    app.on_startup.append(_attach_stream_hub)


async def _attach_stream_hub(app: web.Application) -> None:
    """The stream hub is set up after this module; its counters are found at start."""
    from controlplane.api.streams import STREAM_HUB

    hub = app.get(STREAM_HUB)
    if hub is not None:
        app[METRICS].streams.counters = hub.counters


# --- helpers for other modules --------------------------------------------------------------


def track_accounts(app: web.Application, accounts: Iterable[int]) -> None:
    """Count these accounts' holds in ``bourse_balances_held`` from now on (for accounts
    that existed before this process started; exact whenever it is called, on the loop
    thread)."""
    metrics = app.get(METRICS)
    exchange = app.get(EXCHANGE)
    if metrics is None or exchange is None:
        return
    with contextlib.suppress(NodeError):
        assets = [asset for asset, _ in exchange.node.assets()]
        metrics.business.track(exchange.node, accounts, assets)
