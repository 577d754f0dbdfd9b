"""The binary gateway end to end from Python: a real node, the real gateway on a loopback
port, and the asyncio client library (``controlplane.gateway``)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from controlplane import Command, Node
from controlplane.gateway import codec as c
from controlplane.gateway.book import LevelBook, OrderBook
from controlplane.gateway.client import (
    GatewaySession,
    LoginRejectedError,
    OrderRejectedError,
    SessionClosedError,
    connect,
    connect_raw,
)
from tests.conftest import ALICE, BOB, MARKET
from tests.nodeutil import Flow, small_config

PE = c.ProtocolErrorCode
CAROL = 3
KEYS = {11: ALICE, 12: BOB, 13: CAROL}
PRICE = 3_000_000  # 30,000.00 USDT per BTC
LOT = 1000


def secret(key: int) -> bytes:
    return f"secret-{key}".encode()


class Venue:
    """A node with the demo market and three funded accounts, and its gateway."""

    def __init__(self, data_dir: Path, **gateway: object) -> None:
        self.data_dir = data_dir
        self.node = Node(small_config(data_dir, durability="write", segment_bytes=1 << 20))
        flow = Flow(seed=1)
        while flow.pending:
            self.node.submit(next(flow))
        self.start_gateway(**gateway)

    def start_gateway(self, **gateway: object) -> None:
        config: dict[str, object] = {"listen": "127.0.0.1:0", **gateway}
        address = self.node.start_gateway(config)  # type: ignore[arg-type]
        self.host, self.port = address["host"], address["port"]
        for key, account in KEYS.items():
            self.node.add_api_key(key, secret(key), account)

    def restart(self) -> None:
        self.node.stop()
        self.node = Node(small_config(self.data_dir, durability="write", segment_bytes=1 << 20))
        self.start_gateway()

    async def login(self, key: int, **kw: object) -> GatewaySession:
        return await connect(self.host, self.port, key_id=key, secret=secret(key), **kw)  # type: ignore[arg-type]

    def book(self) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        return self.node.depth(MARKET, "buy", 1000), self.node.depth(MARKET, "sell", 1000)


@pytest.fixture
def venue(tmp_path: Path) -> Iterator[Venue]:
    v = Venue(tmp_path / "node")
    yield v
    v.node.stop()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        await asyncio.wait_for(scenario(), 30)

    asyncio.run(main())


def test_two_sessions_trade_and_a_subscriber_keeps_the_engines_book(venue: Venue) -> None:
    async def scenario() -> None:
        alice = await venue.login(11, client_ref_start=1)
        bob = await venue.login(12)
        for i in range(4):
            await alice.new_order(
                MARKET, c.Side.BUY, 2 * LOT, PRICE - i, client_order_id=10 + i
            ).ok()
            await bob.new_order(MARKET, c.Side.SELL, 3 * LOT, PRICE + 5 + i).ok()
        md = await venue.login(13, kind=c.SessionKind.MARKET_DATA)
        md.subscribe(MARKET)
        book = OrderBook(MARKET)
        await md.sync_book(book, timeout=5)
        assert (book.bids(), book.asks()) == venue.book()

        # Bob sweeps two of Alice's levels.
        accepted = await bob.new_order(MARKET, c.Side.SELL, 3 * LOT, PRICE - 1).ok()
        fills = [await bob.wait_for(c.OrderExecuted, timeout=5) for _ in range(2)]
        assert [(f.price, f.quantity, f.liquidity) for f in fills] == [
            (PRICE, 2 * LOT, c.Liquidity.TAKER),
            (PRICE - 1, LOT, c.Liquidity.TAKER),
        ]
        assert fills[-1].leaves_quantity == 0
        assert all(f.order_id == accepted.order_id for f in fills)
        mine = [await alice.wait_for(c.OrderExecuted, timeout=5) for _ in range(2)]
        assert [(m.client_order_id, m.leaves_quantity) for m in mine] == [(10, 0), (11, LOT)]
        assert [m.trade_id for m in mine] == [f.trade_id for f in fills]

        # Amend down keeps priority; a cancel by client order id.
        amended = await alice.amend(c.OrderRef.by_client_order_id(12), new_quantity=LOT).ok()
        assert amended.kept_priority
        assert amended.leaves_quantity == LOT
        cancelled = await alice.cancel(c.OrderRef.by_client_order_id(13)).ok()
        assert cancelled.reason == c.CancelReason.USER_CANCEL

        target = venue.node.stats()["published_seq"]
        assert target > 0
        await md.sync_book(
            book, until=lambda: (book.bids(), book.asks()) == venue.book(), timeout=5
        )
        assert len(book.trades) == 2

        # Errors are precise: an unknown market is the engine's reject, nothing else changes.
        with pytest.raises(OrderRejectedError) as info:
            await alice.new_order(99, c.Side.BUY, LOT, PRICE).ok()
        assert info.value.reject.reason == c.RejectCode.UNKNOWN_MARKET
        end = await alice.logout()
        assert end.reason == c.EndReason.LOGGED_OUT
        await bob.logout()
        await md.logout()

    run(scenario)


def test_cancel_on_disconnect_fires_and_the_resumed_session_sees_it(venue: Venue) -> None:
    seen: dict[str, int] = {}

    async def disconnect() -> None:
        # A clean logout leaves the orders alone.
        alice = await venue.login(11, cancel_on_disconnect=True)
        await alice.new_order(MARKET, c.Side.BUY, LOT, PRICE - 10).ok()
        await alice.logout()
        assert len(venue.node.depth(MARKET, "buy", 10)) == 1
        # A lost connection cancels every open order of the account.
        alice = await venue.login(11, cancel_on_disconnect=True)
        for i in range(2):
            await alice.new_order(MARKET, c.Side.BUY, LOT, PRICE - 11 - i).ok()
        seen["resume"] = alice.resume_seq
        await alice.close()
        for _ in range(500):
            if not venue.node.depth(MARKET, "buy", 10):
                break
            await asyncio.sleep(0.01)
        assert venue.node.depth(MARKET, "buy", 10) == []

    run(disconnect)
    venue.restart()

    async def resume() -> None:
        alice = await venue.login(11, next_seq=seen["resume"])
        report = await alice.wait_for(c.MassCancelReport, timeout=5)
        assert (report.count, report.client_ref) == (3, 0)
        cancels = [m for m in alice.take_all() if isinstance(m, c.OrderCancelled)]
        assert len(cancels) == 3
        assert {m.reason for m in cancels} == {c.CancelReason.CANCEL_ON_DISCONNECT}
        assert {m.client_ref for m in cancels} == {0}
        await alice.logout()

    run(resume)


def test_resume_replays_the_missed_stream_and_the_drop_copy_sees_every_fill(venue: Venue) -> None:
    seen: dict[str, int] = {}

    async def first() -> None:
        alice = await venue.login(11)
        drop_copy = await venue.login(11, kind=c.SessionKind.DROP_COPY)
        await alice.new_order(MARKET, c.Side.SELL, 4 * LOT, PRICE + 50, client_order_id=1).ok()
        seen["resume"] = alice.resume_seq
        await alice.close()
        bob = await venue.login(12)
        await bob.new_order(MARKET, c.Side.BUY, 3 * LOT, PRICE + 50).ok()
        fill = await drop_copy.wait_for(c.OrderExecuted, timeout=5)
        assert (fill.client_order_id, fill.quantity, fill.leaves_quantity) == (1, 3 * LOT, LOT)
        assert fill.liquidity == c.Liquidity.MAKER
        seen["fill_seq"] = fill.seq
        await bob.logout()
        await drop_copy.logout()

    run(first)
    venue.restart()

    async def resumed() -> None:
        alice = await venue.login(11, next_seq=seen["resume"])
        assert alice.login_next_seq == seen["resume"]
        fill = await alice.wait_for(c.OrderExecuted, timeout=5)
        assert fill.seq == seen["fill_seq"], "the replay is the same stream, from the journal"
        assert fill.client_order_id == 1
        # The key's client_refs stay increasing across the restart: an old one is refused.
        stale = await alice.new_order(MARKET, c.Side.SELL, LOT, PRICE + 60, client_ref=1)
        assert isinstance(stale, c.OrderRejected)
        assert stale.reason == c.RejectCode.DUPLICATE_CLIENT_REF
        assert stale.seq == 0
        await alice.logout()

    run(resumed)


def test_a_levels_subscriber_heals_a_gap_with_a_retransmit(venue: Venue) -> None:
    async def scenario() -> None:
        md = await venue.login(13, kind=c.SessionKind.MARKET_DATA)
        md.subscribe(MARKET, c.FeedKind.LEVELS)
        book = LevelBook(MARKET)
        await md.sync_book(book, timeout=5)
        alice = await venue.login(11)
        for i in range(6):
            await alice.new_order(MARKET, c.Side.BUY, LOT, PRICE - 100 - i).ok()
        # Take the six level updates and drop the third: the book reports the gap.
        updates = [await md.wait_for(c.MdLevel, timeout=5) for _ in range(6)]
        gaps = [book.apply(m) for i, m in enumerate(updates) if i != 2]
        gap = next(g for g in gaps if g is not None)
        assert (gap.from_book_seq, gap.count) == (updates[2].book_seq, 1)
        md.send(gap.request())
        await md.sync_book(book, timeout=5)
        assert book.bids() == venue.book()[0]
        await md.logout()
        await alice.logout()

    run(scenario)


def test_bad_logins_and_malformed_frames_get_precise_errors(venue: Venue) -> None:
    async def scenario() -> None:
        before = venue.node.stats()["published_seq"]
        with pytest.raises(LoginRejectedError) as rejected:
            await connect(venue.host, venue.port, key_id=11, secret=b"wrong")
        assert rejected.value.reason == c.LoginRejectReason.BAD_SIGNATURE
        with pytest.raises(LoginRejectedError) as rejected:
            await venue.login(11, clock=lambda: 1_000_000_000)
        assert rejected.value.reason == c.LoginRejectReason.STALE_TIMESTAMP
        with pytest.raises(LoginRejectedError) as rejected:
            await connect(venue.host, venue.port, key_id=77, secret=b"x")
        assert rejected.value.reason == c.LoginRejectReason.UNKNOWN_KEY

        # A malformed frame ends that session with a protocol error; others carry on.
        bystander = await venue.login(12)
        raw = await connect_raw(venue.host, venue.port)
        challenge = await raw.recv(5)
        assert isinstance(challenge, c.Challenge)
        raw.send(
            c.signed_login(challenge, key_id=11, secret=secret(11), timestamp_ns=time.time_ns())
        )
        assert isinstance(await raw.recv(5), c.LoginAccepted)
        raw.send_bytes(b"\x08\x00\x00\x00\x63\x00\x42\x53\x01\x00")  # template 99
        error = await raw.recv(5)
        assert isinstance(error, c.ProtocolError)
        assert (error.reason, error.template_id) == (PE.UNKNOWN_TEMPLATE, 99)
        with pytest.raises(SessionClosedError):
            await raw.recv(5)
        await raw.close()
        assert venue.node.stats()["published_seq"] == before
        await bystander.new_order(MARKET, c.Side.BUY, LOT, PRICE - 500).ok()

        # A client that stops sending is timed out after three heartbeat intervals.
        quiet = await venue.login(13, heartbeat_ms=100, auto_heartbeat=False)
        await asyncio.wait_for(quiet.wait_closed(), 5)
        assert isinstance(quiet.end, c.ProtocolError)
        assert quiet.end.reason == PE.HEARTBEAT_TIMEOUT
        await bystander.logout()

    run(scenario)


def test_a_slow_consumer_is_cut_and_nobody_else_waits(tmp_path: Path) -> None:
    venue = Venue(tmp_path / "node", outbound_buffer_bytes=65536)
    try:
        # A market-data client with a tiny receive buffer that stops reading.
        slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect((venue.host, venue.port))
        slow.settimeout(5)
        decoder = c.FrameDecoder()

        def read_one() -> c.Message:
            while True:
                msgs = decoder.feed(slow.recv(4096))
                if msgs:
                    assert len(msgs) == 1
                    return msgs[0]

        challenge = read_one()
        assert isinstance(challenge, c.Challenge)
        login = c.signed_login(
            challenge,
            key_id=13,
            secret=secret(13),
            timestamp_ns=time.time_ns(),
            session_kind=c.SessionKind.MARKET_DATA,
            heartbeat_ms=60_000,
        )
        slow.sendall(c.encode(login))
        assert isinstance(read_one(), c.LoginAccepted)
        slow.sendall(
            c.encode(c.MdSubscribe(market=MARKET, feed=c.FeedKind.ORDER_BY_ORDER, depth=0))
        )

        # Once the gateway has cut it, the slow client reads what it was sent: the frames
        # already in flight, whole, then the reason.
        tail: list[c.Message] = []

        def read_when_cut() -> None:
            deadline = time.monotonic() + 30
            while venue.node.gateway_stats()["slow_consumers"] == 0:
                assert time.monotonic() < deadline
                time.sleep(0.005)
            slow.settimeout(10)
            while data := slow.recv(1 << 20):
                tail.extend(decoder.feed(data))

        reader = threading.Thread(target=read_when_cut)
        reader.start()

        async def scenario() -> None:
            # Others are not held back: a trader and a top-of-book subscriber (the flood is
            # below the best bid, so the top of book does not move) carry on.
            trader = await venue.login(12)
            await trader.new_order(MARKET, c.Side.BUY, LOT, PRICE - 500).ok()
            top = await venue.login(11, kind=c.SessionKind.MARKET_DATA)
            top.subscribe(MARKET, c.FeedKind.TOP_OF_BOOK)
            start = await top.wait_for(c.MdSnapshotLevel, timeout=5)
            assert (start.side, start.price) == (c.Side.BUY, PRICE - 500)
            # Orders placed and cancelled at once: 120,000 book changes (~6.6 MB of feed),
            # far beyond the slow client's 64 KiB allowance and the kernel's buffers.
            orders: list[Command] = []
            for i in range(1, 60_001):
                orders.append(
                    {
                        "type": "place_order",
                        "account": ALICE,
                        "market": MARKET,
                        "client_order_id": i,
                        "side": "buy",
                        "order_type": "limit",
                        "time_in_force": "gtc",
                        "price": PRICE - 1000 - i % 500,
                        "quantity": LOT,
                    }
                )
                orders.append(
                    {
                        "type": "cancel_order",
                        "account": ALICE,
                        "order": {"client": i},
                    }
                )
            await asyncio.to_thread(venue.node.submit_many, orders)
            assert venue.node.gateway_stats()["slow_consumers"] == 1
            accepted = await trader.new_order(MARKET, c.Side.SELL, LOT, PRICE + 500).ok()
            moved = await top.wait_for(c.MdTopOfBook, timeout=5)
            assert (moved.bid_price, moved.ask_price) == (PRICE - 500, accepted.price)
            await trader.logout()
            await top.logout()

        run(scenario)
        reader.join(15)
        assert not reader.is_alive()
        assert tail, "the slow client received its feed"
        last = tail[-1]
        assert isinstance(last, c.ProtocolError)
        assert last.reason == PE.SLOW_CONSUMER
        slow.close()
    finally:
        venue.node.stop()
