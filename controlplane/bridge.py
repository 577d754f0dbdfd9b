"""The control plane's two connections to the node: commands in, the event stream out, both
as msgpack (:mod:`controlplane.messages` Structs) in versioned envelopes.

:class:`EngineBridge` submits commands and resolves each with its
:class:`~controlplane.messages.Ack`, pipelined: commands are encoded with one
``msgspec.msgpack.Encoder`` (the Structs carry their ``type`` tag) and handed to the node's
ring from the loop thread by a non-blocking ``NodeClient.send`` (``Node.open_client()``: the
client's own rings, not shared with anything else); one receiver thread per bridge waits for
acknowledgements (``NodeClient.wait_acks``, GIL released, asleep until the node's publisher
rings it after a burst with acknowledgements for this client: ``Node::client_with_notify``,
no polling), decodes each batch and resolves its futures on the loop with one
``call_soon_threadsafe``. So many commands are in flight at once and share the
journal's group commits, and the asyncio loop never waits on the node. A full ring is
back-pressure: :meth:`EngineBridge.submit` retries with short sleeps until its timeout, then
raises ``NodeBusy``; nothing is dropped.

:class:`EventFeed` reads the node's event stream (``Node.events_packed``) in sequence order on
its own thread and hands each batch of :class:`~controlplane.messages.Entry` to its consumers
on the loop thread, in order, every entry exactly once. Consumers are synchronous callables
(a projection writes its SQLite rows, a stream hub queues frames) and must not block. The
feed never holds up the engine: the node keeps a window of events and re-derives older ones
from the journal; a slow control plane only falls behind (see :attr:`EventFeed.lag`). At
most :data:`MAX_BATCHES_IN_FLIGHT` batches wait for the loop, so a stalled loop bounds the
feed's memory.

Every envelope is ``[version, payload]``; a version other than
:data:`controlplane.messages.VERSION` raises :class:`MessageVersionError` (the bridge refuses
to start against a node of another version, and a feed that meets one stops).

Cost: a submit is one encode, one ring push and one future, O(command size); the receiver
decodes each acknowledgement once, O(events).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence

import msgspec

from controlplane import EngineError, Node, NodeBusy, NodeError, NodeStopped
from controlplane._engine import MESSAGE_VERSION
from controlplane.messages import VERSION, Ack, Command, Entry

log = logging.getLogger("bourse.bridge")

Consumer = Callable[[Sequence[Entry]], None]
"""Called on the loop thread with each batch, in sequence order."""

MAX_BATCHES_IN_FLIGHT = 4
BATCH = 1000
POLL_SECONDS = 0.05
"""How long the feed thread waits for new events per call (bounds how long stop takes)."""
MAX_ACKS = 4096
"""The most acknowledgements the receiver takes per wake-up."""
RECEIVE_SECONDS = 1.0
"""How long one ``wait_acks`` call waits (close and node stop wake it sooner)."""
BUSY_RETRY_SECONDS = 0.0005
"""How long a submission waits before retrying when the node's ring is full."""


class MessageVersionError(EngineError):
    """An envelope from the node carries another message version than
    :data:`controlplane.messages.VERSION`."""


_ENCODER = msgspec.msgpack.Encoder()
_ENVELOPE = msgspec.msgpack.Decoder(tuple[int, msgspec.Raw])
_ENTRIES = msgspec.msgpack.Decoder(list[Entry])
_ACKS = msgspec.msgpack.Decoder(list[tuple[int, Ack]])


def _check_version(version: int) -> None:
    if version != VERSION:
        raise MessageVersionError(
            f"the node speaks message version {version}; this control plane speaks {VERSION}"
        )


def _payload(packed: bytes) -> msgspec.Raw:
    version, payload = _ENVELOPE.decode(packed)
    _check_version(version)
    return payload


def encode_command(command: Command) -> bytes:
    """A command as the msgpack map ``NodeClient.send`` takes."""
    return _ENCODER.encode(command)


def decode_entries(packed: bytes) -> list[Entry]:
    """The entries of an ``events_packed`` envelope. MessageVersionError for another
    version, msgspec.ValidationError / DecodeError for anything else that does not fit."""
    return _ENTRIES.decode(_payload(packed))


def decode_acks(packed: bytes) -> list[tuple[int, Ack]]:
    """The ``(correlation, Ack)`` pairs of a ``wait_acks`` envelope (errors as
    :func:`decode_entries`)."""
    return _ACKS.decode(_payload(packed))


class EngineBridge:
    """Submits commands to the node from one asyncio loop, pipelined (see the module docs).
    Bound to the loop of its first submission; :meth:`close` may be called from any thread."""

    def __init__(self, node: Node) -> None:
        _check_version(MESSAGE_VERSION)
        self.node = node
        self._client = node.open_client()
        self._waiting: dict[int, tuple[asyncio.Future[Ack], asyncio.TimerHandle]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._receiver: threading.Thread | None = None
        self._closed = False
        self.failure: BaseException | None = None
        """Why the receiver stopped (the node stopped, the bridge closed, a bad envelope)."""
        self._backlog = asyncio.Lock()
        self._backlogged = 0
        """Submissions waiting for room in the ring (queued on ``_backlog``)."""
        self.busy_retries = 0
        """How many times a submission found the ring full and waited to retry."""

    async def submit(
        self, command: Command, *, timeout: float = 10.0, source: int = 0, reference: int = 0
    ) -> Ack:
        """Submit one command; its acknowledgement (journaled under the node's policy and
        applied). ``source`` / ``reference`` are journaled as its origin (a named source's
        highest reference is ``Node.last_reference``: idempotent retries). Raises NodeBusy if
        the ring stays full for ``timeout`` seconds, NodeError if no acknowledgement came
        within ``timeout`` of sending (the command may still be applied), CommandError if the
        node cannot decode it, NodeStopped if the node or the bridge stopped."""
        future = await self._send(encode_command(command), source, reference, timeout)
        return await future

    async def submit_many(self, commands: Sequence[Command], *, timeout: float = 30.0) -> list[Ack]:
        """Submit commands in order (pipelined); their acknowledgements in order. ``timeout``
        bounds each wait for room in the ring and each acknowledgement."""
        packed = [encode_command(c) for c in commands]
        futures = [await self._send(p, 0, 0, timeout) for p in packed]
        return [await f for f in futures]

    def close(self) -> None:
        """Stop the receiver; submissions still waiting raise NodeStopped. Idempotent, and
        callable from any thread (commands already sent are still applied by the node)."""
        self._closed = True
        self._client.close()
        receiver = self._receiver
        if receiver is not None and receiver is not threading.current_thread():
            receiver.join()

    @property
    def in_flight(self) -> int:
        """Commands sent whose acknowledgement the receiver has not taken yet."""
        return self._client.in_flight()

    async def _send(
        self, packed: bytes, source: int, reference: int, timeout: float
    ) -> asyncio.Future[Ack]:
        """Hand one packed command to the node and return the future its acknowledgement
        resolves. While the ring is full, submissions queue (first come, first sent) and the
        head retries every :data:`BUSY_RETRY_SECONDS`; so commands are sequenced in the order
        ``submit`` was called, back-pressure or not."""
        loop = self._bind()
        if self._backlogged == 0:
            with contextlib.suppress(NodeBusy):
                return self._send_now(loop, packed, source, reference, timeout)
        deadline = loop.time() + timeout
        self._backlogged += 1
        try:
            async with asyncio.timeout_at(deadline):
                await self._backlog.acquire()
        except BaseException as err:  # timed out, or the submitter was cancelled
            self._backlogged -= 1
            if isinstance(err, TimeoutError):
                raise NodeBusy(
                    f"node busy: the submission ring stayed full for {timeout:.3f} s"
                ) from None
            raise
        try:
            while True:
                try:
                    return self._send_now(loop, packed, source, reference, timeout)
                except NodeBusy:
                    if loop.time() >= deadline:
                        raise
                    self.busy_retries += 1
                await asyncio.sleep(BUSY_RETRY_SECONDS)
        finally:
            self._backlogged -= 1
            self._backlog.release()

    def _send_now(
        self,
        loop: asyncio.AbstractEventLoop,
        packed: bytes,
        source: int,
        reference: int,
        timeout: float,
    ) -> asyncio.Future[Ack]:
        if self.failure is not None:
            raise NodeStopped(f"the bridge stopped: {self.failure}") from self.failure
        correlation = self._client.send(packed, source, reference)
        # Registered before the loop runs anything else, so before its ack can resolve.
        future: asyncio.Future[Ack] = loop.create_future()
        timer = loop.call_later(timeout, self._expire, correlation, timeout)
        self._waiting[correlation] = (future, timer)
        return future

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            if self._closed:
                raise NodeStopped("the bridge is closed")
            self._loop = loop
            self._receiver = threading.Thread(
                target=self._receive, args=(loop,), name="bourse-acks", daemon=True
            )
            self._receiver.start()
        elif self._loop is not loop:
            raise RuntimeError("an EngineBridge serves the one event loop it started on")
        return loop

    def _receive(self, loop: asyncio.AbstractEventLoop) -> None:
        """The receiver thread: acknowledgements, decoded here, resolved on the loop."""
        while True:
            try:
                acks = decode_acks(self._client.wait_acks(MAX_ACKS, RECEIVE_SECONDS))
            except Exception as err:
                failure = NodeStopped("the bridge is closed") if self._closed else err
                if not isinstance(failure, NodeStopped):
                    log.error("command bridge stopped: %r", failure)
                with contextlib.suppress(RuntimeError):  # the loop closed
                    loop.call_soon_threadsafe(self._fail, failure)
                return
            if acks:
                try:
                    loop.call_soon_threadsafe(self._resolve, acks)
                except RuntimeError:  # the loop closed: nobody is waiting any more
                    return

    def _resolve(self, acks: list[tuple[int, Ack]]) -> None:
        for correlation, ack in acks:
            waiting = self._waiting.pop(correlation, None)
            if waiting is None:  # timed out
                continue
            future, timer = waiting
            timer.cancel()
            if not future.done():  # not cancelled
                future.set_result(ack)

    def _expire(self, correlation: int, timeout: float) -> None:
        waiting = self._waiting.pop(correlation, None)
        if waiting is not None and not waiting[0].done():
            waiting[0].set_exception(
                NodeError(
                    f"no acknowledgement within {timeout:.3f} s; the command may still be applied"
                )
            )

    def _fail(self, err: BaseException) -> None:
        if self.failure is None:
            self.failure = err
        waiting, self._waiting = self._waiting, {}
        for future, timer in waiting.values():
            timer.cancel()
            if not future.done():
                stopped = NodeStopped(
                    f"the command bridge stopped before the acknowledgement came: {err}; the "
                    "command may or may not be applied"
                )
                future.set_exception(stopped)


class EventFeed:
    """The node's event stream delivered to consumers in order, each from its own start."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.next_seq = 0
        """The next sequence number to deliver (everything before it has been delivered)."""
        self._consumers: list[tuple[str, Consumer, int]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._slots = threading.Semaphore(MAX_BATCHES_IN_FLIGHT)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.failure: BaseException | None = None
        """Why the feed stopped on its own (a consumer raised, the events are gone)."""

    def subscribe(self, name: str, consumer: Consumer, from_seq: int | None = None) -> None:
        """Add a consumer (before :meth:`start`) that sees every entry from ``from_seq`` on
        (a projection passes the position it has persisted); None: only entries applied
        after the feed starts (live consumers such as stream hubs)."""
        if self._thread is not None:
            raise RuntimeError("subscribe before the feed starts")
        self._consumers.append((name, consumer, -1 if from_seq is None else max(1, from_seq)))

    def start(self) -> None:
        """Start reading at the earliest position a consumer asked for."""
        live = self.node.stats()["applied_seq"] + 1
        self._consumers = [(n, c, live if s < 0 else s) for n, c, s in self._consumers]
        self.next_seq = min([s for _, _, s in self._consumers], default=live)
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="bourse-feed", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop reading (batches already handed to the loop are still delivered)."""
        self._stopping.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(NodeStopped("the event feed stopped"))
        self._waiters.clear()

    @property
    def lag(self) -> int:
        """How many commands the node has applied that the consumers have not seen."""
        try:
            applied = self.node.stats()["applied_seq"]
        except NodeStopped:
            return 0
        return max(0, applied + 1 - self.next_seq)

    async def wait_for(self, seq: int, timeout: float = 10.0) -> None:
        """Return once the consumers have seen command ``seq`` (read-your-writes after an
        acknowledgement). TimeoutError after ``timeout`` seconds."""
        if self._thread is None:
            raise RuntimeError("the event feed has not started")
        if seq < self.next_seq:
            return
        if self.failure is not None:
            raise RuntimeError("the event feed stopped") from self.failure
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, future))
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(future)
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove((seq, future))

    def _run(self) -> None:
        seq = self.next_seq
        loop = self._loop
        assert loop is not None
        while not self._stopping.is_set():
            try:
                packed = self.node.events_packed(seq, BATCH, POLL_SECONDS)
            except NodeStopped:
                return
            except Exception as err:  # EventsGone and the like: nothing more to read
                loop.call_soon_threadsafe(self._fail, err)
                return
            try:
                batch = decode_entries(packed)
            except (MessageVersionError, msgspec.ValidationError, msgspec.DecodeError) as err:
                loop.call_soon_threadsafe(self._fail, err)
                return
            if not batch:
                continue
            seq = batch[-1].seq + 1
            while not self._slots.acquire(timeout=POLL_SECONDS):
                if self._stopping.is_set():
                    return
            try:
                loop.call_soon_threadsafe(self._deliver, batch)
            except RuntimeError:  # the loop closed
                return

    def _deliver(self, batch: list[Entry]) -> None:
        self._slots.release()
        if self.failure is not None:
            return
        for name, consumer, from_seq in self._consumers:
            part: Sequence[Entry] = batch
            if batch[0].seq < from_seq:
                if batch[-1].seq < from_seq:
                    continue
                part = [e for e in batch if e.seq >= from_seq]
            try:
                consumer(part)
            except Exception as err:
                log.exception("event consumer %s failed at seq %d", name, batch[0].seq)
                self._fail(err)
                return
        self.next_seq = batch[-1].seq + 1
        still: list[tuple[int, asyncio.Future[None]]] = []
        for seq, future in self._waiters:
            if seq < self.next_seq:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((seq, future))
        self._waiters = still

    def _fail(self, err: BaseException) -> None:
        if self.failure is None:
            self.failure = err
            log.error("event feed stopped: %r", err)
        self._stopping.set()
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(RuntimeError(f"the event feed stopped: {err!r}"))
