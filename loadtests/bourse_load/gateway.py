"""A blocking binary-gateway client for Locust: stdlib sockets, so gevent makes it cooperative.

One :class:`GatewayClient` is one logged-in order-entry session (``docs/protocol.md``). It
reuses the project's pure codec (``controlplane.gateway.codec``) for every frame, so what it
sends is exactly what the asyncio client sends. Requests are matched to their replies by
``client_ref``; each reply calls ``on_reply(kind, client_ref, elapsed_s, reply)`` with the time
from the send to the reply's arrival (send-to-ack), from the reader greenlet. Executions and
other unsolicited messages go to ``on_message``.

Invariants: ``client_ref`` strictly increases (the server refuses a repeat); at most one
reader greenlet per client; a closed socket fails every pending request exactly once with
``ConnectionError``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import gevent

from controlplane.gateway.codec import (
    AmendOrder,
    CancelOrder,
    Challenge,
    EndOfSession,
    FrameDecoder,
    Heartbeat,
    LoginAccepted,
    LoginFlags,
    LoginRejected,
    Logout,
    MassCancel,
    MassCancelReport,
    Message,
    NewOrder,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderRef,
    OrderRejected,
    OrderType,
    ProtocolError,
    Side,
    SideFilter,
    StpMode,
    TimeInForce,
    encode,
    signed_login,
)

Reply = OrderAccepted | OrderRejected | OrderCancelled | OrderAmended | MassCancelReport
ReplyCallback = Callable[[str, int, float, Reply | None, BaseException | None], None]


@dataclass
class _Pending:
    kind: str
    sent_at: float


class GatewayClient:
    """A logged-in order-entry session over a blocking socket (see the module docstring)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        key_id: int,
        secret: bytes,
        on_reply: ReplyCallback,
        on_message: Callable[[Message], None] | None = None,
        cancel_on_disconnect: bool = True,
        heartbeat_ms: int = 1000,
        timeout: float = 5.0,
    ) -> None:
        self.on_reply = on_reply
        self.on_message = on_message
        self.heartbeat_ms = heartbeat_ms
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = FrameDecoder()
        self.pending: dict[int, _Pending] = {}
        self.next_ref = time.time_ns() // 1000
        self.last_sent = time.monotonic()
        self.closed = False
        challenge = self._recv_one()
        if not isinstance(challenge, Challenge):
            raise ConnectionError(f"expected Challenge, got {challenge!r}")
        flags = LoginFlags.CANCEL_ON_DISCONNECT if cancel_on_disconnect else LoginFlags.NONE
        login = signed_login(
            challenge,
            key_id=key_id,
            secret=secret,
            timestamp_ns=time.time_ns(),
            heartbeat_ms=heartbeat_ms,
            flags=flags,
        )
        self.sock.sendall(encode(login))
        accepted = self._recv_one()
        if isinstance(accepted, LoginRejected):
            raise ConnectionError(f"login rejected: {accepted.reason.name}")
        if not isinstance(accepted, LoginAccepted):
            raise ConnectionError(f"expected LoginAccepted, got {accepted!r}")
        self.account = accepted.account
        self.sock.settimeout(None)
        self._reader = gevent.spawn(self._read_loop)
        self._heartbeat = gevent.spawn(self._heartbeat_loop)

    def _recv_one(self) -> Message:
        while True:
            messages = self.decoder.feed(self._recv_chunk())
            if messages:
                if len(messages) > 1:
                    raise ConnectionError("unexpected messages during login")
                return messages[0]

    def _recv_chunk(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the gateway closed the connection")
        return chunk

    def _send(self, kind: str, message: Message, client_ref: int) -> int:
        if self.closed:
            raise ConnectionError("session closed")
        self.pending[client_ref] = _Pending(kind, time.perf_counter())
        self.last_sent = time.monotonic()
        self.sock.sendall(encode(message))
        return client_ref

    def _ref(self) -> int:
        self.next_ref += 1
        return self.next_ref

    def new_order(
        self,
        market: int,
        side: Side,
        quantity: int,
        price: int,
        *,
        client_order_id: int = 0,
        order_type: OrderType = OrderType.LIMIT,
        time_in_force: TimeInForce = TimeInForce.GTC,
        post_only: bool = False,
    ) -> int:
        """Send a NewOrder; its ``client_ref``."""
        ref = self._ref()
        message = NewOrder(
            client_ref=ref,
            market=market,
            client_order_id=client_order_id,
            side=side,
            order_type=order_type,
            time_in_force=time_in_force,
            post_only=post_only,
            stp=StpMode.NONE,
            price=price,
            quantity=quantity,
            quote_quantity=0,
            reserve_price=0,
        )
        return self._send("new_order", message, ref)

    def cancel(self, order_id: int) -> int:
        ref = self._ref()
        return self._send(
            "cancel", CancelOrder(client_ref=ref, order=OrderRef.by_order_id(order_id)), ref
        )

    def amend(self, order_id: int, *, new_price: int = 0, new_quantity: int = 0) -> int:
        ref = self._ref()
        message = AmendOrder(
            client_ref=ref,
            order=OrderRef.by_order_id(order_id),
            new_price=new_price,
            new_quantity=new_quantity,
        )
        return self._send("amend", message, ref)

    def mass_cancel(self, market: int | None = None) -> int:
        ref = self._ref()
        return self._send(
            "mass_cancel", MassCancel(client_ref=ref, market=market, side=SideFilter.BOTH), ref
        )

    def _read_loop(self) -> None:
        error: BaseException | None = None
        try:
            while True:
                for message in self.decoder.feed(self._recv_chunk()):
                    self._dispatch(message)
                    if isinstance(message, EndOfSession | ProtocolError):
                        raise ConnectionError(f"session ended: {message!r}")
        except (OSError, ConnectionError, ValueError) as err:
            error = err
        finally:
            self._fail_pending(error or ConnectionError("session closed"))

    def _dispatch(self, message: Message) -> None:
        ref = getattr(message, "client_ref", 0)
        if isinstance(message, Reply) and ref and ref in self.pending:
            pending = self.pending.pop(ref)
            elapsed = time.perf_counter() - pending.sent_at
            self.on_reply(pending.kind, ref, elapsed, message, None)
        elif self.on_message is not None:
            self.on_message(message)

    def _fail_pending(self, error: BaseException) -> None:
        self.closed = True
        pending, self.pending = self.pending, {}
        for ref, p in pending.items():
            self.on_reply(p.kind, ref, time.perf_counter() - p.sent_at, None, error)

    def _heartbeat_loop(self) -> None:
        interval = self.heartbeat_ms / 1000
        while not self.closed:
            gevent.sleep(interval / 2)
            if time.monotonic() - self.last_sent >= interval / 2 and not self.closed:
                try:
                    self.sock.sendall(encode(Heartbeat(timestamp_ns=time.time_ns())))
                    self.last_sent = time.monotonic()
                except OSError:
                    return

    def close(self, *, logout: bool = True) -> None:
        """Log out (the server drains what it owes, then ends the session) and close."""
        if logout and not self.closed:
            try:
                self.sock.sendall(encode(Logout()))
                self._reader.join(timeout=2)
            except OSError:
                pass
        self.closed = True
        self._heartbeat.kill(block=False)
        self._reader.kill(block=False)
        self.sock.close()
