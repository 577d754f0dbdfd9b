"""Binance's user data stream: listen keys over REST and each account's events on the
WebSocket server (``/ws/<listenKey>``, ``/stream?streams=<listenKey>``, alone or next to
market streams).

REST (USER_STREAM: the ``X-MBX-APIKEY`` header only, no signature; ``-2014`` / ``-2015`` as
:func:`controlplane.api.auth.api_key_only`; weight 1 each):

==========================================  =================================================
``POST   /api/v3/userDataStream``           ``{"listenKey": <60 letters/digits>}``; while the
                                            API key has an active listen key, that same key
                                            again, its validity extended
``PUT    /api/v3/userDataStream``           ``listenKey`` (query or form body): keep-alive,
                                            valid for :data:`VALIDITY_SECONDS` from now; ``{}``
``DELETE /api/v3/userDataStream``           ``listenKey``: close it (its subscribers stop
                                            receiving, no event); ``{}``
==========================================  =================================================

``listenKey`` missing or empty → ``-1102``; sent twice → ``-1101``; any other parameter
(POST takes none) → ``-1104``; a key that is unknown, expired, closed or another account's
→ ``-1125`` "This listenKey does not exist." (400). A key expires :data:`VALIDITY_SECONDS`
after its creation or last keep-alive, and also when its API key is revoked (checked every
:data:`SWEEP_SECONDS`); then its subscribers get Binance's ``{"e": "listenKeyExpired", "E":
"<ms>", "listenKey": <key>}`` (``E`` a string, as Binance sends it) and are unsubscribed
(the connection stays open; a lone ``/ws/<expired key>`` later is a plain connection, see
:mod:`controlplane.api.streams`).

Secrets. A listen key is a bearer secret for reading an account's activity: 60 characters
from :mod:`secrets`. Listen keys live in memory only (never on disk, never logged; lost on a
restart, as every WebSocket is, and clients then POST again, as after an expiry) and are
looked up by their SHA-256 digest. The plain key is kept beside its digest only because
Binance returns the same key on a second POST; the hub shows it as the ``"stream"`` of
combined frames to the connections that named it.

Events (from the event feed: a listener on the stream hub, so orders placed over REST, the
binary gateway or by the operator all appear), each entry's events in order, Binance
payloads:

* ``executionReport`` for each change of one of the account's orders: ``NEW`` (accepted),
  ``TRADE`` (each fill, ``X`` ``FILLED`` on the fill that completes it, with ``l``/``L``/
  ``Y``/``n``/``N``/``t``/``m`` of that fill; fees are in the quote asset, as REST's
  ``myTrades``), ``REPLACED`` (an amend, as Binance sends for ``amend/keepPriority``),
  ``CANCELED`` (cancel or delisting), ``EXPIRED`` (IOC/FOK/market remainders, protection
  limit, quote budget) and ``TRADE_PREVENTION`` (``X`` ``EXPIRED_IN_MATCH``). Statuses, types,
  time in force, ``q`` and the client order id string ``c`` are computed by the same code as
  the REST answers (:mod:`controlplane.orders`, :class:`~controlplane.orders.ClientOrderIds`).
  ``w`` is whether the order is still open after the report; ``W`` is its working time (as
  REST's ``workingTime``); ``T`` the command's time, ``E`` the time the frame was made, ``I``
  the command's sequence number. Not offered: the cancel request's own client order id (the event
  feed does not carry it: a ``CANCELED`` report has the order's id in both ``c`` and ``C``),
  STP's prevented-match fields (``v``, ``A``, ``B``, ``u``, ``U``, ``pl``, ``pL``, ``pY``) and
  the ``REJECTED`` type of cancel-replace.
* ``balanceUpdate`` for each deposit (``d`` positive) and withdrawal (negative); ``T`` is the
  command's time.
* ``outboundAccountPosition`` after each command that changed the account's balances, with
  the engine's free/locked of exactly the assets it changed (its ``balance`` events).

Order state. A report needs each order's state at that event (cumulative quantities,
status). :class:`OrderTracker` keeps the open orders of every account that has a listen key
and follows them event by event exactly as :class:`~controlplane.projections.Projections`
does, as a listener of the stream hub (so after the market data frames of the same batch).
It starts following an account when the account's first listen key is created: a request
handler runs between two feed batches, when the projections have applied exactly the
entries every consumer has seen, so the projections' open orders are the right start. It
stops when the account's last listen key goes. Should following ever fail, every listen key
expires (clients POST again, which starts afresh) rather than report a wrong state.

Complexity: following an entry is O(events) dict operations; a listening account's report
also reads its client order id string (one indexed SQLite read per order and batch). Creating
an account's first listen key reads its open orders (an index range scan); the other REST
calls are O(1). Memory: one listen key per API key, and the tracked accounts' open orders.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from controlplane import messages as m
from controlplane.accounts import Accounts
from controlplane.api import Exchange
from controlplane.api.auth import (
    ACCOUNTS,
    API_KEY_HEADER,
    api_key_only,
    form_pairs,
    unread_parameters,
    weighted,
)
from controlplane.api.errors import (
    ILLEGAL_CHARS,
    INVALID_LISTEN_KEY,
    TOO_MANY_PARAMETERS,
    ApiError,
    mandatory,
)
from controlplane.api.streams import STREAM_HUB
from controlplane.api.trading import CLIENT_IDS
from controlplane.listing import Listing, Market, fmt
from controlplane.orders import ClientOrderIds, order_type, orig_qty, time_in_force
from controlplane.projections import (
    DONE_STATUS,
    OPEN_STATUSES,
    PROJECTIONS,
    OrderRow,
    Projections,
)
from controlplane.streams.hub import PrivateStream, StreamHub

log = logging.getLogger("bourse.userstream")

LISTEN_KEY_LENGTH = 60
LISTEN_KEY_ALPHABET = string.ascii_letters + string.digits
VALIDITY_SECONDS = 3600
"""A listen key lives this long after its creation or last keep-alive (Binance: 60 min)."""
SWEEP_SECONDS = 1.0
"""How often expired listen keys (and those of revoked API keys) are closed."""
NS_PER_MS = 1_000_000
PATH = "/api/v3/userDataStream"

DONE_EXECUTION_TYPE: dict[str, str] = {
    "cancelled": "CANCELED",
    "delisted": "CANCELED",
    "expired": "EXPIRED",
    "fok_unfilled": "EXPIRED",
    "protection_limit": "EXPIRED",
    "budget_exhausted": "EXPIRED",
    "self_trade": "TRADE_PREVENTION",
}
"""``x`` of the report for each engine done reason (``filled`` has none of its own: the
fill that completes an order is its ``TRADE`` report with ``X`` ``FILLED``)."""


def no_such_listen_key() -> ApiError:
    return ApiError(INVALID_LISTEN_KEY, "This listenKey does not exist.")


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def _now_ms() -> int:
    return time.time_ns() // NS_PER_MS


@dataclass(eq=False)
class ListenKey:
    """One active listen key (compared by identity)."""

    secret: str = field(repr=False)
    """The listen key itself: memory only, never logged."""
    digest: bytes = field(repr=False)
    stream: PrivateStream = field(repr=False)
    """The hub's private subscription (``listenKey:<serial>``), shown as the key."""
    account: int
    api_key_id: int
    api_key: str = field(repr=False)
    """The API key string, to notice its revocation (the key is public, its secret is not)."""
    expires_ns: int


class ListenKeys:
    """The listen keys and the account events they stream (see the module docstring)."""

    def __init__(
        self,
        exchange: Exchange,
        hub: StreamHub,
        accounts: Accounts,
        projections: Projections,
        ids: ClientOrderIds,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.exchange = exchange
        self.hub = hub
        self.accounts = accounts
        self.projections = projections
        self.ids = ids
        self.clock_ns = clock_ns
        self.validity_ns = VALIDITY_SECONDS * 1_000_000_000
        self.sweep_seconds = SWEEP_SECONDS
        self._by_digest: dict[bytes, ListenKey] = {}
        self._by_api_key: dict[int, ListenKey] = {}
        self._by_account: dict[int, set[ListenKey]] = {}
        self._serial = 0
        self.tracker = OrderTracker(exchange.listing, projections, ids)
        hub.resolve_private = self.resolve
        hub.add_listener(self.on_entries)

    # --- listen keys --------------------------------------------------------------------

    def _active(self, digest: bytes) -> ListenKey | None:
        found = self._by_digest.get(digest)
        if found is None:
            return None
        if found.expires_ns <= self.clock_ns():
            self._expire(found)
            return None
        return found

    def open(self, account: int, api_key_id: int, api_key: str) -> ListenKey:
        """The API key's active listen key (validity extended), or a new one."""
        now = self.clock_ns()
        current = self._by_api_key.get(api_key_id)
        if current is not None and current.expires_ns > now:
            current.expires_ns = now + self.validity_ns
            return current
        if current is not None:
            self._expire(current)
        secret = "".join(secrets.choice(LISTEN_KEY_ALPHABET) for _ in range(LISTEN_KEY_LENGTH))
        self._serial += 1
        key = ListenKey(
            secret=secret,
            digest=_digest(secret),
            stream=PrivateStream(f"listenKey:{self._serial}", secret),
            account=account,
            api_key_id=api_key_id,
            api_key=api_key,
            expires_ns=now + self.validity_ns,
        )
        self.tracker.track(account)
        self._by_digest[key.digest] = key
        self._by_api_key[api_key_id] = key
        self._by_account.setdefault(account, set()).add(key)
        return key

    def find(self, account: int, text: str) -> ListenKey:
        """The account's active listen key ``text``; -1125 otherwise."""
        found = self._active(_digest(text))
        if found is None or found.account != account:
            raise no_such_listen_key()
        return found

    def keep_alive(self, key: ListenKey) -> None:
        key.expires_ns = self.clock_ns() + self.validity_ns

    def close(self, key: ListenKey) -> None:
        """Invalidate a key (DELETE): its subscribers are unsubscribed, no event."""
        self._forget(key)
        for conn in list(self.hub.subscribers.get(key.stream.key, ())):
            self.hub.unsubscribe(conn, key.stream.key)

    def _forget(self, key: ListenKey) -> None:
        self._by_digest.pop(key.digest, None)
        if self._by_api_key.get(key.api_key_id) is key:
            del self._by_api_key[key.api_key_id]
        keys = self._by_account.get(key.account)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_account[key.account]
                self.tracker.untrack(key.account)

    def _expire(self, key: ListenKey) -> None:
        """Binance's ``listenKeyExpired`` to the key's subscribers, who are unsubscribed."""
        self._forget(key)
        event = {"e": "listenKeyExpired", "E": str(_now_ms()), "listenKey": key.secret}
        self.hub.publish(key.stream.key, "listenKeyExpired", event)
        for conn in list(self.hub.subscribers.get(key.stream.key, ())):
            self.hub.unsubscribe(conn, key.stream.key)

    def sweep(self) -> None:
        """Expire the keys past their validity and those whose API key was revoked."""
        now = self.clock_ns()
        for key in list(self._by_digest.values()):
            if key.expires_ns <= now or self.accounts.credentials(key.api_key) is None:
                self._expire(key)

    async def run_sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_seconds)
            try:
                self.sweep()
            except Exception:
                log.exception("listen key sweep failed")

    def resolve(self, segment: str) -> PrivateStream | None:
        """The hub's hook: the private stream of an active listen key, else None."""
        if len(segment) != LISTEN_KEY_LENGTH or not segment.isascii() or not segment.isalnum():
            return None
        found = self._active(_digest(segment))
        return None if found is None else found.stream

    # --- account events -----------------------------------------------------------------

    def _listening(self) -> dict[int, list[PrivateStream]]:
        """The accounts with at least one subscribed listen key, and those streams."""
        subscribers = self.hub.subscribers
        out: dict[int, list[PrivateStream]] = {}
        for account, keys in self._by_account.items():
            streams = [k.stream for k in keys if k.stream.key in subscribers]
            if streams:
                out[account] = streams
        return out

    def on_entries(self, batch: Sequence[m.Entry]) -> None:
        """The hub listener (loop thread, never blocks; never fails the feed). Should the
        tracker fail, every listen key expires (its state can no longer be trusted); a new
        POST seeds afresh."""
        if not self._by_account:
            return
        listening = self._listening()
        try:
            frames = self.tracker.apply(batch, set(listening))
        except Exception:
            log.exception("user data stream: events of seq %d..%d", batch[0].seq, batch[-1].seq)
            for key in list(self._by_digest.values()):
                self._expire(key)
            return
        for account, kind, payload, timestamp_ns in frames:
            for stream in listening[account]:
                self.hub.publish(stream.key, kind, payload, timestamp_ns)


Frame = tuple[int, str, dict[str, Any], int]
"""(account, kind, payload, the entry's timestamp ns)."""


class OrderTracker:
    """The open orders of the accounts that have a listen key, followed event by event, and
    the frames of the listening ones (see the module docstring: "Order state")."""

    def __init__(self, listing: Listing, projections: Projections, ids: ClientOrderIds) -> None:
        self.listing = listing
        self.projections = projections
        self.ids = ids
        self.accounts: set[int] = set()
        self.orders: dict[int, OrderRow] = {}
        """The tracked accounts' open orders, as of the last entry applied."""
        self._by_account: dict[int, set[int]] = {}

    def track(self, account: int) -> None:
        """Start following an account: its open orders from the projections. Called between
        two feed batches (from a request handler), when the projections have applied exactly
        the entries the tracker has seen."""
        if account in self.accounts:
            return
        self.accounts.add(account)
        rows = self.projections.open_orders(account)
        self._by_account[account] = {r.order_id for r in rows}
        for row in rows:
            self.orders[row.order_id] = row

    def untrack(self, account: int) -> None:
        self.accounts.discard(account)
        for order_id in self._by_account.pop(account, set()):
            self.orders.pop(order_id, None)

    def _set(self, row: OrderRow) -> None:
        if row.status in OPEN_STATUSES:
            self.orders[row.order_id] = row
            self._by_account.setdefault(row.account, set()).add(row.order_id)
        else:
            self.orders.pop(row.order_id, None)
            self._by_account.get(row.account, set()).discard(row.order_id)

    def _order(self, order_id: int) -> OrderRow:
        row = self.orders.get(order_id)
        if row is None:
            raise RuntimeError(f"user data stream: order {order_id} is not tracked")
        return row

    def apply(self, batch: Sequence[m.Entry], listening: set[int]) -> list[Frame]:
        """Follow a batch; the frames for the ``listening`` accounts (a subset of the
        tracked ones, each frame tagged with its account)."""
        out = _Frames(self, listening)
        for entry in batch:
            self._entry(entry, out)
        return out.frames

    def _entry(self, entry: m.Entry, out: _Frames) -> None:
        tracked, orders = self.accounts, self.orders
        events = entry.events
        last_trade: dict[int, int] = {}
        done_reason: dict[int, str] = {}
        for i, ev in enumerate(events):
            if isinstance(ev, m.Trade):
                last_trade[ev.maker_order_id] = i
                last_trade[ev.taker_order_id] = i
            elif isinstance(ev, m.OrderDone):
                done_reason[ev.order_id] = ev.reason
        balances: dict[int, dict[int, tuple[int, int]]] = {}
        reduced: tuple[int, int] | None = None
        for i, ev in enumerate(events):
            previous, reduced = reduced, None
            if isinstance(ev, m.Book):
                if ev.action == "reduce":
                    reduced = (ev.order_id, ev.delta)
                # An add gives a resting order's open quantity; a reduce (self-trade
                # prevention's decrement, or an amend's) lowers it without a trade.
                if ev.action in ("add", "reduce") and ev.order_id in orders:
                    row = msgspec.structs.replace(orders[ev.order_id], leaves=ev.order_quantity)
                    self._set(row)
            elif isinstance(ev, m.Accepted):
                if ev.account in tracked:
                    row = OrderRow(
                        order_id=ev.order_id,
                        account=ev.account,
                        market=ev.market,
                        client_order_id=ev.client_order_id,
                        side=ev.side,
                        order_type=ev.order_type,
                        time_in_force=ev.time_in_force,
                        post_only=ev.post_only,
                        stp=ev.stp,
                        price=ev.price,
                        quantity=ev.quantity,
                        quote_quantity=ev.quote_quantity,
                        reserve_price=ev.reserve_price,
                        status="NEW",
                        executed_qty=0,
                        cumulative_quote_qty=0,
                        leaves=ev.quantity,
                        created_seq=entry.seq,
                        created_ns=entry.timestamp_ns,
                        updated_seq=entry.seq,
                        updated_ns=entry.timestamp_ns,
                        working_ns=entry.timestamp_ns,
                    )
                    self._set(row)
                    out.report(entry, row, "NEW")
            elif isinstance(ev, m.Trade):
                for is_maker in (True, False):
                    account = ev.maker_account if is_maker else ev.taker_account
                    if account not in tracked:
                        continue
                    order_id = ev.maker_order_id if is_maker else ev.taker_order_id
                    found = self._order(order_id)
                    completes = last_trade[order_id] == i and done_reason.get(order_id) == "filled"
                    row = msgspec.structs.replace(
                        found,
                        executed_qty=found.executed_qty + ev.quantity,
                        cumulative_quote_qty=found.cumulative_quote_qty + ev.quote_quantity,
                        leaves=ev.maker_leaves_quantity if is_maker else ev.taker_leaves_quantity,
                        status="FILLED" if completes else "PARTIALLY_FILLED",
                    )
                    self._set(row)
                    out.report(entry, row, "TRADE", trade=ev, is_maker=is_maker)
            elif isinstance(ev, m.Amended):
                if ev.account in tracked:
                    found = self._order(ev.order_id)
                    # The open quantity before the amend (a kept-priority amend's book
                    # reduce came just before and already lowered it), as the projections.
                    before = found.leaves
                    if previous is not None and previous[0] == ev.order_id:
                        before += previous[1]
                    row = msgspec.structs.replace(
                        found,
                        price=ev.price,
                        quantity=found.quantity + ev.leaves_quantity - before,
                        leaves=ev.leaves_quantity,
                    )
                    self._set(row)
                    out.report(entry, row, "REPLACED")
            elif isinstance(ev, m.OrderDone):
                if ev.account in tracked:
                    open_row = orders.get(ev.order_id)
                    if open_row is None:  # its completing fill was just reported (FILLED)
                        continue
                    row = msgspec.structs.replace(
                        open_row,
                        status=DONE_STATUS[ev.reason],
                        leaves=0,
                        executed_qty=ev.filled_quantity,
                    )
                    self._set(row)
                    if ev.reason != "filled":
                        out.report(entry, row, DONE_EXECUTION_TYPE[ev.reason])
            elif isinstance(ev, m.Deposited | m.Withdrawn):
                if ev.account in out.listening:
                    asset = self.listing.assets[ev.asset]
                    delta = ev.amount if isinstance(ev, m.Deposited) else -ev.amount
                    payload = {
                        "e": "balanceUpdate",
                        "E": _now_ms(),
                        "a": asset.name,
                        "d": fmt(delta, asset.decimals, asset.decimals),
                        "T": entry.timestamp_ns // NS_PER_MS,
                    }
                    out.frames.append((ev.account, "balanceUpdate", payload, entry.timestamp_ns))
            elif isinstance(ev, m.Balance) and ev.account in out.listening:
                balances.setdefault(ev.account, {})[ev.asset] = (ev.free, ev.held)
        for account, changed in balances.items():
            rows = []
            for asset_id, (free, held) in changed.items():
                asset = self.listing.assets[asset_id]
                rows.append(
                    {
                        "a": asset.name,
                        "f": fmt(free, asset.decimals, asset.decimals),
                        "l": fmt(held, asset.decimals, asset.decimals),
                    }
                )
            payload = {
                "e": "outboundAccountPosition",
                "E": _now_ms(),
                "u": entry.timestamp_ns // NS_PER_MS,
                "B": rows,
            }
            out.frames.append((account, "outboundAccountPosition", payload, entry.timestamp_ns))


class _Frames:
    """The frames of one batch, for the listening accounts only."""

    def __init__(self, tracker: OrderTracker, listening: set[int]) -> None:
        self.tracker = tracker
        self.listening = listening
        self.frames: list[Frame] = []
        self._texts: dict[tuple[int, int], str] = {}

    def report(
        self,
        entry: m.Entry,
        row: OrderRow,
        execution_type: str,
        *,
        trade: m.Trade | None = None,
        is_maker: bool = False,
    ) -> None:
        if row.account not in self.listening:
            return
        mk = self.tracker.listing.markets[row.market]
        id_key = (row.account, row.client_order_id)
        client = self._texts.get(id_key)
        if client is None:
            client = self.tracker.ids.text(row.account, row.client_order_id)
            self._texts[id_key] = client
        payload = execution_report(mk, row, client, execution_type, entry, trade, is_maker)
        self.frames.append((row.account, "executionReport", payload, entry.timestamp_ns))


def execution_report(
    mk: Market,
    row: OrderRow,
    client_order_id: str,
    execution_type: str,
    entry: m.Entry,
    trade: m.Trade | None,
    is_maker: bool,
) -> dict[str, Any]:
    """Binance's ``executionReport`` of ``row`` (its state after this event)."""
    fee = 0
    if trade is not None:
        fee = trade.maker_fee if is_maker else trade.taker_fee
    return {
        "e": "executionReport",
        "E": _now_ms(),
        "s": mk.symbol,
        "c": client_order_id,
        "S": row.side.upper(),
        "o": order_type(row),
        "f": time_in_force(row),
        "q": mk.qty_str(orig_qty(row)),
        "p": mk.price_str(row.price if row.order_type == "limit" else 0),
        "P": mk.price_str(0),
        "F": mk.qty_str(0),
        "g": -1,
        "C": client_order_id if execution_type == "CANCELED" else "",
        "x": execution_type,
        "X": row.status,
        "r": "NONE",
        "i": row.order_id,
        "l": mk.qty_str(trade.quantity if trade is not None else 0),
        "z": mk.qty_str(row.executed_qty),
        "L": mk.price_str(trade.price if trade is not None else 0),
        "n": mk.quote_str(fee) if trade is not None else "0",
        "N": mk.quote.name if trade is not None else None,
        "T": entry.timestamp_ns // NS_PER_MS,
        "t": trade.trade_id if trade is not None else -1,
        "I": entry.seq,
        "w": row.status in OPEN_STATUSES,
        "m": is_maker,
        "M": trade is not None,
        "O": row.created_ns // NS_PER_MS,
        "Z": mk.quote_str(row.cumulative_quote_qty),
        "Y": mk.quote_str(trade.quote_quantity if trade is not None else 0),
        "Q": mk.quote_str(row.quote_quantity),
        "W": row.working_ns // NS_PER_MS,
        "V": row.stp.upper(),
    }


# --- REST ---------------------------------------------------------------------------------

LISTEN_KEYS = web.AppKey("listen_keys", ListenKeys)
_SWEEPER = web.AppKey("listen_key_sweeper", asyncio.Task[None])


async def _listen_key_param(request: web.Request) -> str:
    """``listenKey`` from the query string or the form body (see the module docstring)."""
    try:
        body = (await request.read()).decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(ILLEGAL_CHARS, "Illegal characters found in a parameter.") from None
    values: list[str] = []
    sent = 0
    for raw in (request.rel_url.raw_query_string, body):
        for name, value, _ in form_pairs(raw):
            sent += 1
            if name == "listenKey":
                values.append(value)
    if len(values) > 1:
        raise ApiError(TOO_MANY_PARAMETERS, "Duplicate values for a parameter detected.")
    if sent > len(values):
        raise unread_parameters(len(values), sent)
    if not values or not values[0]:
        raise mandatory("listenKey")
    return values[0]


def _json(data: Any) -> web.Response:
    return web.Response(body=msgspec.json.encode(data), content_type="application/json")


@weighted(1)
async def create_listen_key(request: web.Request) -> web.Response:
    caller = api_key_only(request)
    body = (await request.read()).decode("utf-8", "replace")
    sent = [p for raw in (request.rel_url.raw_query_string, body) for p in raw.split("&") if p]
    if sent:
        raise unread_parameters(0, len(sent))
    keys = request.app[LISTEN_KEYS]
    key = keys.open(caller.account, caller.key_id, request.headers[API_KEY_HEADER])
    return _json({"listenKey": key.secret})


@weighted(1)
async def keep_alive_listen_key(request: web.Request) -> web.Response:
    caller = api_key_only(request)
    keys = request.app[LISTEN_KEYS]
    keys.keep_alive(keys.find(caller.account, await _listen_key_param(request)))
    return _json({})


@weighted(1)
async def close_listen_key(request: web.Request) -> web.Response:
    caller = api_key_only(request)
    keys = request.app[LISTEN_KEYS]
    keys.close(keys.find(caller.account, await _listen_key_param(request)))
    return _json({})


def setup(app: web.Application, exchange: Exchange) -> None:
    """The listen keys over the stream hub (``streams``), the accounts (``auth``), the
    projections and client order ids (``trading``): set up after those."""
    keys = ListenKeys(exchange, app[STREAM_HUB], app[ACCOUNTS], app[PROJECTIONS], app[CLIENT_IDS])
    app[LISTEN_KEYS] = keys
    app.router.add_post(PATH, create_listen_key)
    app.router.add_put(PATH, keep_alive_listen_key)
    app.router.add_delete(PATH, close_listen_key)

    async def start(app: web.Application) -> None:
        app[_SWEEPER] = asyncio.create_task(keys.run_sweeper(), name="listen-key-sweeper")

    async def cleanup(app: web.Application) -> None:
        task = app.get(_SWEEPER)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.on_startup.append(start)
    app.on_cleanup.append(cleanup)


__all__ = ["LISTEN_KEYS", "ListenKey", "ListenKeys", "execution_report", "setup"]
