"""The control plane's two connections to the node: commands in, the event stream out.

:class:`EngineBridge` submits commands (:mod:`controlplane.messages` Structs) and resolves
each with its :class:`~controlplane.messages.Ack`; the asyncio loop never blocks on the node.

:class:`EventFeed` reads the node's event stream in sequence order on its own thread and
hands each batch of :class:`~controlplane.messages.Entry` to its consumers on the loop
thread, in order, every entry exactly once. Consumers are synchronous callables (a
projection writes its SQLite rows, a stream hub queues frames) and must not block. The
feed never holds up the engine: the node keeps a window of events and re-derives older
ones from the journal; a slow control plane only falls behind (see :attr:`EventFeed.lag`).
At most :data:`MAX_BATCHES_IN_FLIGHT` batches wait for the loop, so a stalled loop bounds
the feed's memory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence

import msgspec

from controlplane import Node, NodeStopped
from controlplane.messages import Ack, Command, Entry, to_wire

log = logging.getLogger("bourse.bridge")

Consumer = Callable[[Sequence[Entry]], None]
"""Called on the loop thread with each batch, in sequence order."""

MAX_BATCHES_IN_FLIGHT = 4
BATCH = 1000
POLL_SECONDS = 0.05
"""How long the feed thread waits for new events per call (bounds how long stop takes)."""


class EngineBridge:
    """Submits commands to the node from the asyncio loop (on a small thread pool, so that
    several commands are in flight at once)."""

    def __init__(self, node: Node, *, threads: int = 4) -> None:
        self.node = node
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, "bourse-submit")

    async def submit(self, command: Command, *, timeout: float = 10.0) -> Ack:
        """Submit one command; its acknowledgement (journaled under the node's policy and
        applied). Raises NodeBusy / NodeStopped from the node."""
        wire = to_wire(command)
        loop = asyncio.get_running_loop()
        raw = await loop.run_in_executor(
            self._pool,
            lambda: self.node.submit(wire, timeout=timeout),  # type: ignore[arg-type]
        )
        return msgspec.convert(raw, Ack)

    async def submit_many(self, commands: Sequence[Command]) -> list[Ack]:
        """Submit commands in order (pipelined); their acknowledgements in order."""
        wires = [to_wire(c) for c in commands]
        loop = asyncio.get_running_loop()
        raws = await loop.run_in_executor(
            self._pool,
            lambda: self.node.submit_many(wires),  # type: ignore[arg-type]
        )
        return msgspec.convert(raws, list[Ack])

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


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
            await asyncio.wait_for(asyncio.shield(future), timeout)
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove((seq, future))

    def _run(self) -> None:
        seq = self.next_seq
        loop = self._loop
        assert loop is not None
        while not self._stopping.is_set():
            try:
                raw = self.node.events(seq, BATCH, POLL_SECONDS)
            except NodeStopped:
                return
            except Exception as err:  # EventsGone and the like: nothing more to read
                loop.call_soon_threadsafe(self._fail, err)
                return
            if not raw:
                continue
            try:
                batch = msgspec.convert(raw, list[Entry])
            except msgspec.ValidationError as err:
                loop.call_soon_threadsafe(self._fail, err)
                return
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
