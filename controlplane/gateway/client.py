"""An asyncio client of the Bourse gateway's binary protocol (``docs/protocol.md``).

Two levels:

* :func:`connect` logs in (Challenge -> signed Login -> LoginAccepted) and returns a
  :class:`GatewaySession`: a background reader, automatic heartbeats, ``last_seq`` tracking
  for resume, a ``client_ref`` allocator, order-entry and market-data helpers and replies
  matched to requests by ``client_ref``.
* :func:`connect_raw` returns a :class:`RawConnection` that does nothing on its own: send
  any message or raw bytes, receive decoded messages. For negative tests (a bad signature, a
  replayed nonce, malformed frames, no heartbeats).

Usage::

    s = await connect(host, port, key_id=1, secret=b"...", cancel_on_disconnect=True)
    acc = await s.new_order(market=1, side=Side.BUY, quantity=1000, price=3_000_000).ok()
    t = s.cancel(OrderRef.by_order_id(acc.order_id))   # sent now; `await t` for the reply
    fill = await s.wait_for(OrderExecuted, timeout=5)  # leaves other messages queued
    end = await s.logout()                             # clean: no cancel-on-disconnect

Invariants of a :class:`GatewaySession`:

* The inbox holds every message the server sent after ``LoginAccepted``, in arrival order
  (heartbeats excepted unless ``deliver_heartbeats``), replay first; :meth:`recv` /
  ``async for`` / :meth:`wait_for` take from it. Matching a reply to a request does not take
  it from the inbox: the inbox is the complete stream.
* ``last_seq`` is the highest ``seq`` of the sequenced messages (templates 20-25) received;
  unsequenced rejects (``seq`` 0) never change it. Resume with ``next_seq=s.resume_seq``.
* ``client_ref``s from :meth:`GatewaySession.next_client_ref` strictly increase. Unless the
  caller seeds them (``client_ref_start``), each is ``max(previous + 1, time.time_ns())``, so
  a later session of the same API key (one order-entry session per key at a time) keeps
  exceeding the key's last one without any state, as long as the clock does not go back by
  more than the refs used. A request sent with an explicit ``client_ref`` raises the
  allocator's floor past it.
* Every request sent through the session gets a :class:`Ticket`; it resolves with the first
  reply carrying its ``client_ref`` (for a ``MassCancel``: its ``MassCancelReport`` or
  ``OrderRejected``), or fails with :class:`SessionClosedError` when the session ends first.
* A heartbeat is sent whenever nothing was sent for one granted interval; the session is
  declared dead (and closed) after three intervals with nothing received.
* After the session closes (``EndOfSession``, ``ProtocolError``, EOF, :meth:`close`, a
  decode error), the remaining inbox can still be read; then :meth:`recv` raises
  :class:`SessionClosedError` and ``async for`` stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, overload

from controlplane.gateway.book import LevelBook, OrderBook, TopOfBook
from controlplane.gateway.codec import (
    REPLY_TYPES,
    SEQUENCED_TYPES,
    AmendOrder,
    CancelOrder,
    Challenge,
    EndOfSession,
    FeedKind,
    FrameDecoder,
    Heartbeat,
    LoginAccepted,
    LoginFlags,
    LoginRejected,
    LoginRejectReason,
    Logout,
    MassCancel,
    MassCancelReport,
    MdRetransmitRequest,
    MdSubscribe,
    MdUnsubscribe,
    Message,
    NewOrder,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderRef,
    OrderRejected,
    OrderType,
    ProtocolDecodeError,
    ProtocolError,
    Reply,
    Request,
    SessionKind,
    Side,
    SideFilter,
    StpMode,
    TimeInForce,
    encode,
    schema_name,
    signed_login,
)

__all__ = [
    "ClientRefAllocator",
    "GatewayError",
    "GatewaySession",
    "LoginRejectedError",
    "OrderRejectedError",
    "RawConnection",
    "SessionClosedError",
    "Ticket",
    "connect",
    "connect_raw",
]

_READ_CHUNK = 1 << 16
_MAX_OPEN_TICKETS = 100_000
"""Unanswered tickets kept; beyond it the oldest is cancelled (a server that never answers)."""

_T = TypeVar("_T")
_R = TypeVar("_R", bound=Reply)


# ---- Errors -------------------------------------------------------------------------------


# Timeouts use ``asyncio.timeout`` rather than ``asyncio.wait_for``: on Python 3.11,
# ``wait_for`` loses a cancellation that arrives as the awaited reply does, so a task
# cancelled while waiting for a reply could go on running.
CLOSE_WAIT_SECONDS = 1.0
"""How long :meth:`GatewaySession.close` waits for the socket to finish closing."""


class GatewayError(Exception):
    """Base class of the client's errors."""


class LoginRejectedError(GatewayError):
    """The server answered the Login with ``LoginRejected``; ``reason`` says why."""

    def __init__(self, reason: LoginRejectReason) -> None:
        super().__init__(f"login rejected: {schema_name(reason)}")
        self.reason = reason


class SessionClosedError(GatewayError):
    """The session or connection has ended. ``end`` is the server's ``EndOfSession`` or
    ``ProtocolError`` when it sent one; ``detail`` says what happened."""

    def __init__(self, detail: str, end: EndOfSession | ProtocolError | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.end = end


class OrderRejectedError(GatewayError):
    """A request expected to succeed was answered with ``OrderRejected`` (``reject``)."""

    def __init__(self, reject: OrderRejected) -> None:
        super().__init__(
            f"request client_ref={reject.client_ref} rejected: {schema_name(reject.reason)}"
        )
        self.reject = reject


def _describe_end(end: EndOfSession | ProtocolError) -> str:
    if isinstance(end, EndOfSession):
        return f"EndOfSession {schema_name(end.reason)}"
    return (
        f"ProtocolError {schema_name(end.reason)} (template {end.template_id}, offset {end.offset})"
    )


# ---- client_ref allocation ----------------------------------------------------------------


class ClientRefAllocator:
    """Strictly increasing ``client_ref``s.

    Seeded (``start`` given): ``start, start + 1, …``. Unseeded: each value is
    ``max(previous + 1, clock())`` with ``clock`` = :func:`time.time_ns`, which exceeds every
    value an earlier session of the key allocated the same way (a key has at most one
    order-entry session at a time). :meth:`observe` raises the floor past a value used
    explicitly.
    """

    __slots__ = ("_clock", "_last")

    def __init__(
        self, start: int | None = None, *, clock: Callable[[], int] = time.time_ns
    ) -> None:
        if start is not None and start < 1:
            raise ValueError("client_ref start must be at least 1")
        self._last = 0 if start is None else start - 1
        self._clock: Callable[[], int] | None = clock if start is None else None

    @property
    def last(self) -> int:
        """The last value handed out or observed (0 if none)."""
        return self._last

    def next(self) -> int:
        """A value greater than every earlier one."""
        nxt = self._last + 1
        if self._clock is not None:
            nxt = max(nxt, self._clock())
        self._last = nxt
        return nxt

    def observe(self, client_ref: int) -> None:
        """Make later values exceed ``client_ref``."""
        self._last = max(self._last, client_ref)


# ---- Tickets ------------------------------------------------------------------------------


class Ticket(Generic[_R]):
    """A request that was sent, and its reply to come.

    ``await ticket`` returns the reply (the success type or ``OrderRejected``) within the
    session's ``reply_timeout``; :meth:`wait` takes an explicit timeout; :meth:`ok` returns the
    success type or raises :class:`OrderRejectedError`. ``replies`` lists every message with
    this ``client_ref`` received while the ticket was open (for a mass cancel: the
    ``OrderCancelled`` messages, then the report).
    """

    __slots__ = ("_future", "_timeout", "replies", "request")

    def __init__(
        self, request: Request, future: asyncio.Future[Reply], replies: list[Reply], timeout: float
    ) -> None:
        self.request = request
        self.replies = replies
        self._future = future
        self._timeout = timeout

    @property
    def client_ref(self) -> int:
        """The request's ``client_ref``."""
        return self.request.client_ref

    def done(self) -> bool:
        """Whether the reply arrived (or the session ended)."""
        return self._future.done()

    async def wait(self, timeout: float | None = None) -> _R | OrderRejected:
        """The reply; ``TimeoutError`` after ``timeout`` s (default: the session's)."""
        t = self._timeout if timeout is None else timeout
        async with asyncio.timeout(t):
            reply = await asyncio.shield(self._future)
        return reply  # type: ignore[return-value]

    async def ok(self, timeout: float | None = None) -> _R:
        """The successful reply; :class:`OrderRejectedError` if the request was rejected."""
        reply = await self.wait(timeout)
        if isinstance(reply, OrderRejected):
            raise OrderRejectedError(reply)
        return reply

    def __await__(self) -> Generator[Any, None, _R | OrderRejected]:
        return self.wait().__await__()


class _Pending:
    __slots__ = ("future", "mass_cancel", "replies")

    def __init__(self, future: asyncio.Future[Reply], mass_cancel: bool) -> None:
        self.future = future
        self.mass_cancel = mass_cancel
        self.replies: list[Reply] = []


# ---- Raw connection -----------------------------------------------------------------------


class RawConnection:
    """A TCP connection that speaks frames and nothing else: no login, no heartbeats.

    :meth:`recv` returns decoded messages in order; a decode error is raised once the
    messages before it were returned, and poisons the connection.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder()
        self._pending: deque[Message] = deque()
        self._error: BaseException | None = None
        self._eof = False

    def send(self, msg: Message) -> None:
        """Write one message (buffered; :meth:`flush` waits for the socket)."""
        self.writer.write(encode(msg))

    def send_bytes(self, data: bytes) -> None:
        """Write raw bytes (for malformed-frame tests)."""
        self.writer.write(data)

    async def flush(self) -> None:
        """Wait until the socket's write buffer drains."""
        await self.writer.drain()

    async def recv(self, timeout: float | None = None) -> Message:
        """The next message; ``SessionClosedError`` at EOF, ``TimeoutError`` after
        ``timeout`` s."""
        async with asyncio.timeout(timeout):
            return await self._recv()

    async def _recv(self) -> Message:
        while not self._pending:
            if self._error is not None:
                raise self._error
            if self._eof:
                raise SessionClosedError("connection closed by the server")
            data = await self.reader.read(_READ_CHUNK)
            if not data:
                self._eof = True
                continue
            try:
                self._pending.extend(self.decoder.feed(data))
            except ProtocolDecodeError as e:
                self._pending.extend(e.decoded)
                self._error = e
        return self._pending.popleft()

    @property
    def error(self) -> BaseException | None:
        """The decode error that ended the stream, if any."""
        return self._error

    def take_buffered(self) -> list[Message]:
        """The messages already decoded and not yet returned (emptying the buffer)."""
        out = list(self._pending)
        self._pending.clear()
        return out

    async def close(self) -> None:
        """Close the socket (a disconnect, from the server's point of view)."""
        self.writer.close()
        with contextlib.suppress(OSError, ConnectionError, TimeoutError):
            async with asyncio.timeout(CLOSE_WAIT_SECONDS):
                await self.writer.wait_closed()


async def connect_raw(host: str, port: int, *, timeout: float = 5.0) -> RawConnection:
    """Open a TCP connection (no login): the server's ``Challenge`` is the first message."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
    return RawConnection(reader, writer)


# ---- Session ------------------------------------------------------------------------------


async def connect(
    host: str,
    port: int,
    *,
    key_id: int,
    secret: bytes,
    kind: SessionKind = SessionKind.ORDER_ENTRY,
    heartbeat_ms: int = 1000,
    cancel_on_disconnect: bool = False,
    next_seq: int = 0,
    client_ref_start: int | None = None,
    timeout: float = 5.0,
    reply_timeout: float = 10.0,
    auto_heartbeat: bool = True,
    deliver_heartbeats: bool = False,
    clock: Callable[[], int] = time.time_ns,
) -> GatewaySession:
    """Connect and log in; return the logged-in session.

    Reads the ``Challenge``, sends a ``Login`` signed with HMAC-SHA256 of the 62-byte signing
    payload under ``secret`` (timestamp from ``clock``, ns since the epoch), and waits up to
    ``timeout`` s for ``LoginAccepted``. ``next_seq``: 0 for new messages only, or the last
    ``seq`` seen + 1 to have the server replay from there. ``client_ref_start`` seeds the
    ``client_ref`` allocator (default: time-based, see :class:`ClientRefAllocator`).
    ``auto_heartbeat=False`` stops the session from sending heartbeats (to test the server's
    timeout).

    Raises :class:`LoginRejectedError` on ``LoginRejected``, :class:`SessionClosedError` if
    the server ends the connection otherwise (e.g. ``ProtocolError LoginTimeout``).
    """
    conn = await connect_raw(host, port, timeout=timeout)
    try:
        challenge = await conn.recv(timeout)
        if not isinstance(challenge, Challenge):
            raise SessionClosedError(f"expected Challenge, got {challenge!r}")
        flags = LoginFlags.CANCEL_ON_DISCONNECT if cancel_on_disconnect else LoginFlags.NONE
        login = signed_login(
            challenge,
            key_id=key_id,
            secret=secret,
            timestamp_ns=clock(),
            session_kind=kind,
            heartbeat_ms=heartbeat_ms,
            flags=flags,
            next_seq=next_seq,
        )
        conn.send(login)
        await conn.flush()
        reply = await conn.recv(timeout)
        if isinstance(reply, LoginRejected):
            raise LoginRejectedError(reply.reason)
        if isinstance(reply, EndOfSession | ProtocolError):
            raise SessionClosedError(f"login failed: {_describe_end(reply)}", reply)
        if not isinstance(reply, LoginAccepted):
            raise SessionClosedError(f"expected LoginAccepted, got {reply!r}")
    except BaseException:
        await conn.close()
        raise
    return GatewaySession(
        conn,
        reply,
        kind=kind,
        cancel_on_disconnect=cancel_on_disconnect,
        client_refs=ClientRefAllocator(client_ref_start),
        reply_timeout=reply_timeout,
        auto_heartbeat=auto_heartbeat,
        deliver_heartbeats=deliver_heartbeats,
        clock=clock,
    )


class GatewaySession:
    """A logged-in session (see the module docstring for its invariants).

    Build it with :func:`connect`. Attributes from the login: ``session_id``, ``account``,
    ``heartbeat_ms`` (granted), ``login_next_seq`` (``LoginAccepted.next_seq``), ``kind``,
    ``cancel_on_disconnect``.
    """

    def __init__(
        self,
        conn: RawConnection,
        accepted: LoginAccepted,
        *,
        kind: SessionKind,
        cancel_on_disconnect: bool,
        client_refs: ClientRefAllocator,
        reply_timeout: float,
        auto_heartbeat: bool,
        deliver_heartbeats: bool,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.conn = conn
        self.accepted = accepted
        self.session_id = accepted.session_id
        self.account = accepted.account
        self.heartbeat_ms = accepted.heartbeat_ms
        self.login_next_seq = accepted.next_seq
        self.kind = kind
        self.cancel_on_disconnect = cancel_on_disconnect
        self.client_refs = client_refs
        self.reply_timeout = reply_timeout
        self.deliver_heartbeats = deliver_heartbeats
        self.last_seq = 0
        self.end: EndOfSession | ProtocolError | None = None
        self.close_detail: str | None = None
        self.messages_received = 0
        self._clock = clock
        self._inbox: deque[Message] = deque()
        self._arrived = asyncio.Event()
        self._pending: dict[int, _Pending] = {}
        self._closed = False
        self._ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()
        self._last_sent = loop.time()
        self._last_recv = loop.time()
        self._dispatch(conn.take_buffered())
        if conn.error is not None:
            self.close_detail = f"undecodable data from the server: {conn.error}"
        self._reader = asyncio.create_task(
            self._read_loop(), name=f"gateway-read-{self.session_id}"
        )
        self._heartbeat = asyncio.create_task(
            self._heartbeat_loop(auto_heartbeat), name=f"gateway-hb-{self.session_id}"
        )

    # -- state --

    @property
    def closed(self) -> bool:
        """Whether the connection has ended (the inbox may still hold messages)."""
        return self._closed

    @property
    def resume_seq(self) -> int:
        """The ``next_seq`` to log in with to resume after this session without a gap or a
        duplicate: ``last_seq + 1``, or ``LoginAccepted.next_seq`` if nothing sequenced
        arrived (0 for market data)."""
        if self.last_seq:
            return self.last_seq + 1
        return self.login_next_seq

    def next_client_ref(self) -> int:
        """A fresh ``client_ref`` (strictly greater than every earlier one)."""
        return self.client_refs.next()

    # -- receiving --

    def _dispatch(self, msgs: list[Message]) -> None:
        for m in msgs:
            self.messages_received += 1
            if isinstance(m, SEQUENCED_TYPES) and m.seq > self.last_seq:
                self.last_seq = m.seq
            if isinstance(m, REPLY_TYPES) and m.client_ref:
                self._resolve(m)
            elif isinstance(m, Heartbeat) and not self.deliver_heartbeats:
                continue
            elif isinstance(m, EndOfSession | ProtocolError):
                self.end = m
                if not self._ended.done():
                    self._ended.set_result(None)
            self._inbox.append(m)
        if msgs:
            self._arrived.set()

    def _resolve(self, m: Reply) -> None:
        p = self._pending.get(m.client_ref)
        if p is None:
            return
        p.replies.append(m)
        if p.mass_cancel and not isinstance(m, MassCancelReport | OrderRejected):
            return
        del self._pending[m.client_ref]
        if not p.future.done():
            p.future.set_result(m)

    async def _read_loop(self) -> None:
        detail = "connection closed by the server"
        try:
            while self.conn.error is None:
                data = await self.conn.reader.read(_READ_CHUNK)
                if not data:
                    break
                self._last_recv = asyncio.get_running_loop().time()
                try:
                    msgs = self.conn.decoder.feed(data)
                except ProtocolDecodeError as e:
                    self._dispatch(e.decoded)
                    detail = f"undecodable data from the server: {e}"
                    break
                self._dispatch(msgs)
        except (OSError, ConnectionError) as e:
            detail = f"connection lost: {e!r}"
        except asyncio.CancelledError:
            detail = self.close_detail or "closed by the client"
        finally:
            if self.end is not None:
                detail = _describe_end(self.end)
            self._finish(detail)

    def _finish(self, detail: str) -> None:
        if self._closed:
            return
        self._closed = True
        if self.close_detail is None:
            self.close_detail = detail
        self.conn.writer.close()
        self._heartbeat.cancel()
        err = SessionClosedError(self.close_detail, self.end)
        for p in self._pending.values():
            if not p.future.done():
                p.future.set_exception(err)
                p.future.exception()  # retrieved: no "never retrieved" warning if unawaited
        self._pending.clear()
        if not self._ended.done():
            self._ended.set_result(None)
        self._arrived.set()

    def _closed_error(self) -> SessionClosedError:
        return SessionClosedError(self.close_detail or "session closed", self.end)

    async def recv(self, timeout: float | None = None) -> Message:
        """The next message; ``TimeoutError`` after ``timeout`` s; ``SessionClosedError``
        once the session has ended and the inbox is empty."""
        async with asyncio.timeout(timeout):
            return await self._next()

    async def _next(self) -> Message:
        while not self._inbox:
            if self._closed:
                raise self._closed_error()
            self._arrived.clear()
            await self._arrived.wait()
        return self._inbox.popleft()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            try:
                yield await self._next()
            except SessionClosedError:
                return

    def take_all(self) -> list[Message]:
        """Every message in the inbox now, without waiting (emptying it)."""
        out = list(self._inbox)
        self._inbox.clear()
        return out

    @overload
    async def wait_for(
        self,
        match: Callable[[Message], bool],
        predicate: None = None,
        *,
        timeout: float | None = None,
    ) -> Message: ...

    @overload
    async def wait_for(
        self,
        match: type[_T],
        predicate: Callable[[_T], bool] | None = None,
        *,
        timeout: float | None = None,
    ) -> _T: ...

    async def wait_for(
        self,
        match: type[Any] | Callable[[Message], bool],
        predicate: Callable[[Any], bool] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Take the first message (already queued or to come) that is an instance of
        ``match`` (and satisfies ``predicate``), or for which ``match(msg)`` is true; every
        other message stays in the inbox, in order. ``TimeoutError`` after ``timeout`` s
        (default: the session's ``reply_timeout``); ``SessionClosedError`` if the session
        ends first."""

        def hit(m: Message) -> bool:
            if isinstance(match, type):
                return isinstance(m, match) and (predicate is None or predicate(m))
            return match(m)

        async def scan() -> Message:
            while True:
                for i, m in enumerate(self._inbox):
                    if hit(m):
                        del self._inbox[i]
                        return m
                if self._closed:
                    raise self._closed_error()
                self._arrived.clear()
                await self._arrived.wait()

        t = self.reply_timeout if timeout is None else timeout
        async with asyncio.timeout(t):
            return await scan()

    async def recv_until(
        self, match: type[Any] | Callable[[Message], bool], *, timeout: float | None = None
    ) -> list[Message]:
        """Take messages in order up to and including the first that is an instance of
        ``match`` (or satisfies it); returns them all."""
        out: list[Message] = []
        t = self.reply_timeout if timeout is None else timeout
        deadline = asyncio.get_running_loop().time() + t
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            m = await self.recv(timeout=max(remaining, 0.0))
            out.append(m)
            if (isinstance(match, type) and isinstance(m, match)) or (
                not isinstance(match, type) and match(m)
            ):
                return out

    # -- sending --

    def send(self, msg: Message) -> None:
        """Write one message now (no reply tracking). ``SessionClosedError`` if closed."""
        if self._closed:
            raise self._closed_error()
        self.conn.writer.write(encode(msg))
        self._last_sent = asyncio.get_running_loop().time()

    async def flush(self) -> None:
        """Wait until the socket's write buffer drains (backpressure for bulk senders)."""
        await self.conn.writer.drain()

    @overload
    def request(self, msg: NewOrder) -> Ticket[OrderAccepted]: ...
    @overload
    def request(self, msg: CancelOrder) -> Ticket[OrderCancelled]: ...
    @overload
    def request(self, msg: AmendOrder) -> Ticket[OrderAmended]: ...
    @overload
    def request(self, msg: MassCancel) -> Ticket[MassCancelReport]: ...
    @overload
    def request(self, msg: Request) -> Ticket[Reply]: ...

    def request(self, msg: Request) -> Ticket[Any]:
        """Send an order-entry request and return its :class:`Ticket`; ``await
        session.request(msg)`` is the first reply carrying ``msg.client_ref`` (for a
        ``MassCancel``: the ``MassCancelReport`` or ``OrderRejected``). The request may reuse
        a ``client_ref`` (an idempotent resend); the allocator moves past it."""
        data = encode(msg)
        if self._closed:
            raise self._closed_error()
        self.client_refs.observe(msg.client_ref)
        p = self._pending.get(msg.client_ref)
        if p is None:
            future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
            p = _Pending(future, isinstance(msg, MassCancel))
            if len(self._pending) >= _MAX_OPEN_TICKETS:
                # Give up on the oldest unanswered ticket (dicts keep insertion order).
                oldest = next(iter(self._pending))
                self._pending.pop(oldest).future.cancel()
            self._pending[msg.client_ref] = p
        self.conn.writer.write(data)
        self._last_sent = asyncio.get_running_loop().time()
        return Ticket(msg, p.future, p.replies, self.reply_timeout)

    def new_order(
        self,
        market: int,
        side: Side,
        quantity: int,
        price: int = 0,
        *,
        order_type: OrderType = OrderType.LIMIT,
        time_in_force: TimeInForce = TimeInForce.GTC,
        post_only: bool = False,
        stp: StpMode = StpMode.NONE,
        client_order_id: int = 0,
        quote_quantity: int = 0,
        reserve_price: int = 0,
        client_ref: int | None = None,
    ) -> Ticket[OrderAccepted]:
        """Send a ``NewOrder`` (sent immediately); ``await`` the ticket for ``OrderAccepted``
        or ``OrderRejected``. A market order: ``order_type=OrderType.MARKET`` with ``price``
        the protection price (0 = none); a market buy by quote amount: ``quantity=0`` and
        ``quote_quantity``."""
        return self.request(
            NewOrder(
                client_ref=self.next_client_ref() if client_ref is None else client_ref,
                market=market,
                client_order_id=client_order_id,
                side=side,
                order_type=order_type,
                time_in_force=time_in_force,
                post_only=post_only,
                stp=stp,
                price=price,
                quantity=quantity,
                quote_quantity=quote_quantity,
                reserve_price=reserve_price,
            )
        )

    def cancel(
        self, order: OrderRef | int, *, client_ref: int | None = None
    ) -> Ticket[OrderCancelled]:
        """Send a ``CancelOrder`` for ``order`` (an :class:`OrderRef`, or an engine order id);
        ``await`` the ticket for ``OrderCancelled`` or ``OrderRejected``."""
        ref = order if isinstance(order, OrderRef) else OrderRef.by_order_id(order)
        return self.request(
            CancelOrder(
                client_ref=self.next_client_ref() if client_ref is None else client_ref,
                order=ref,
            )
        )

    def amend(
        self,
        order: OrderRef | int,
        *,
        new_price: int = 0,
        new_quantity: int = 0,
        client_ref: int | None = None,
    ) -> Ticket[OrderAmended]:
        """Send an ``AmendOrder`` (0 = keep); ``await`` for ``OrderAmended`` or
        ``OrderRejected``."""
        ref = order if isinstance(order, OrderRef) else OrderRef.by_order_id(order)
        return self.request(
            AmendOrder(
                client_ref=self.next_client_ref() if client_ref is None else client_ref,
                order=ref,
                new_price=new_price,
                new_quantity=new_quantity,
            )
        )

    def mass_cancel(
        self,
        market: int | None = None,
        side: SideFilter = SideFilter.BOTH,
        *,
        client_ref: int | None = None,
    ) -> Ticket[MassCancelReport]:
        """Send a ``MassCancel`` (every market if ``market`` is None); ``await`` for the
        ``MassCancelReport`` (the ``OrderCancelled`` messages are in ``ticket.replies``) or
        ``OrderRejected``."""
        return self.request(
            MassCancel(
                client_ref=self.next_client_ref() if client_ref is None else client_ref,
                market=market,
                side=side,
            )
        )

    def subscribe(
        self, market: int, feed: FeedKind = FeedKind.ORDER_BY_ORDER, depth: int = 0
    ) -> None:
        """Send ``MdSubscribe``; the snapshot (or ``MdSubscribeRejected``) arrives in the
        inbox."""
        self.send(MdSubscribe(market=market, feed=feed, depth=depth))

    def unsubscribe(self, market: int) -> None:
        """Send ``MdUnsubscribe``."""
        self.send(MdUnsubscribe(market=market))

    def retransmit(self, market: int, from_book_seq: int, count: int) -> None:
        """Send ``MdRetransmitRequest`` for book changes ``[from_book_seq, from_book_seq +
        count)``; the ``MdRetransmitReply`` and the changes arrive in the inbox."""
        self.send(MdRetransmitRequest(market=market, from_book_seq=from_book_seq, count=count))

    async def sync_book(
        self,
        book: OrderBook | LevelBook | TopOfBook,
        *,
        book_seq: int | None = None,
        until: Callable[[], bool] | None = None,
        timeout: float | None = None,
        retransmit: bool = True,
    ) -> list[Message]:
        """Take messages from the inbox and apply them to ``book`` until it is synced with
        nothing missing (and at ``book_seq`` or later, if given), or until ``until()`` is
        true. Each gap the book reports is requested with ``MdRetransmitRequest`` (unless
        ``retransmit=False``). Returns the messages taken; ``TimeoutError`` after ``timeout``
        s (default: the session's ``reply_timeout``). Subscribe first."""

        def done() -> bool:
            if until is not None:
                return until()
            if not book.synced or (book_seq is not None and book.book_seq < book_seq):
                return False
            return isinstance(book, TopOfBook) or book.in_sync

        taken: list[Message] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.reply_timeout if timeout is None else timeout)
        while not done():
            m = await self.recv(timeout=max(deadline - loop.time(), 0.0))
            taken.append(m)
            gap = book.apply(m)
            if gap is not None and retransmit:
                for req in gap.requests():
                    self.send(req)
        return taken

    # -- ending --

    async def logout(self, timeout: float | None = None) -> EndOfSession:
        """Send ``Logout`` and wait for ``EndOfSession`` (the messages owed before it are in
        the inbox); then the connection is closed. No cancel-on-disconnect.
        ``SessionClosedError`` if the session ends otherwise."""
        self.send(Logout())
        t = self.reply_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(t):
                await asyncio.shield(self._ended)
        finally:
            if not self._closed:
                await self.close()
        if not isinstance(self.end, EndOfSession):
            raise self._closed_error()
        return self.end

    async def close(self) -> None:
        """Close the socket abruptly, without ``Logout``: a disconnect for the server (so
        cancel-on-disconnect applies). Idempotent; the inbox stays readable."""
        if not self._closed:
            self.close_detail = "closed by the client"
            self.conn.writer.close()
            self._reader.cancel()
        self._heartbeat.cancel()
        # ``asyncio.wait`` neither raises the tasks' CancelledError nor swallows a
        # cancellation of the caller (a suppressed CancelledError here would make a
        # cancelled ``wait_for(logout(), t)`` wait for ever).
        await asyncio.wait([self._reader, self._heartbeat])
        with contextlib.suppress(OSError, ConnectionError, TimeoutError):
            async with asyncio.timeout(CLOSE_WAIT_SECONDS):
                await self.conn.writer.wait_closed()

    async def wait_closed(self, timeout: float | None = None) -> None:
        """Wait until the server ends the session (``EndOfSession``, ``ProtocolError``,
        EOF)."""
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._ended)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- heartbeats --

    async def _heartbeat_loop(self, send: bool) -> None:
        loop = asyncio.get_running_loop()
        interval = max(self.heartbeat_ms, 1) / 1000
        tick = interval / 4
        while not self._closed:
            await asyncio.sleep(tick)
            now = loop.time()
            if send and now - self._last_sent >= interval:
                try:
                    self.send(Heartbeat(timestamp_ns=self._clock()))
                except SessionClosedError:
                    return
            if now - self._last_recv > 3 * interval:
                # Let a reader that was starved (a blocked loop) catch up before deciding.
                for _ in range(3):
                    await asyncio.sleep(0)
                if loop.time() - self._last_recv > 3 * interval:
                    self.close_detail = "heartbeat timeout: nothing received for 3 intervals"
                    self.conn.writer.close()
                    self._reader.cancel()
                    return

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<GatewaySession {schema_name(self.kind)} session_id={self.session_id} "
            f"account={self.account} last_seq={self.last_seq} {state}>"
        )
