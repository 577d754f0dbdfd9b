"""The command bridge and the event feed against a real node: acknowledgements decode into
the message Structs, the feed delivers every entry once, in order, from each consumer's
start, and ``wait_for`` gives read-your-writes; the msgpack path (``NodeClient``,
``events_packed``) pipelines many commands, refuses bad bytes without journaling anything,
turns a full ring into retries rather than loss, decodes every command and event kind
exactly as the dict path does, and refuses an envelope of another version."""

from __future__ import annotations

import asyncio
import typing
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest
import uvloop

from controlplane import CommandError, Node, NodeBusy, NodeStopped, read_journal
from controlplane import messages as m
from controlplane.bridge import (
    EngineBridge,
    EventFeed,
    MessageVersionError,
    decode_acks,
    decode_entries,
    encode_command,
)
from controlplane.cli import main

SETUP: list[m.Command] = [
    m.ListAsset(asset=1, decimals=8),
    m.ListAsset(asset=2, decimals=8),
    m.ListMarket(
        market=1, base=1, quote=2, price_decimals=2, tick_size=1, lot_size=1000, min_notional=0
    ),
    m.CreateAccount(account=1),
    m.CreateAccount(account=2),
    m.Deposit(account=1, asset=2, amount=10**12),
    m.Deposit(account=2, asset=1, amount=10**9),
]


def test_bridge_and_feed_deliver_typed_entries_in_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = Node({"data_dir": str(tmp_path), "durability": "write"})
        bridge = EngineBridge(node)
        try:
            acks = await bridge.submit_many(SETUP)
            assert [a.seq for a in acks] == list(range(1, len(SETUP) + 1))
            assert all(a.rejection() is None for a in acks)

            feed = EventFeed(node)
            everything: list[m.Entry] = []
            from_four: list[int] = []
            live: list[int] = []
            feed.subscribe("all", lambda batch: everything.extend(batch), from_seq=1)
            feed.subscribe("from-4", lambda batch: from_four.extend(e.seq for e in batch), 4)

            def on_live(batch: Sequence[m.Entry]) -> None:
                live.extend(e.seq for e in batch)

            feed.subscribe("live", on_live)
            feed.start()

            buy = m.PlaceOrder(
                account=1,
                market=1,
                side="buy",
                order_type="limit",
                price=100,
                quantity=2000,
                client_order_id=7,
            )
            ack = await bridge.submit(buy)
            accepted = [e for e in ack.events if isinstance(e, m.Accepted)]
            assert accepted
            assert accepted[0].client_order_id == 7
            sell = m.PlaceOrder(
                account=2, market=1, side="sell", order_type="market", quantity=1000
            )
            trade_ack = await bridge.submit(sell)
            await feed.wait_for(trade_ack.seq)
            assert [e.seq for e in everything] == list(range(1, trade_ack.seq + 1))
            assert from_four == list(range(4, trade_ack.seq + 1))
            assert live == [ack.seq, trade_ack.seq]
            last = everything[-1]
            assert isinstance(last.command, m.PlaceOrder)
            assert last.command.side == "sell"
            trades = [e for e in last.events if isinstance(e, m.Trade)]
            assert [(t.price, t.quantity, t.maker_client_order_id) for t in trades] == [
                (100, 1000, 7)
            ]
            rejected = await bridge.submit(m.CancelOrder(account=1, order=m.OrderRef(client=99)))
            reason = rejected.rejection()
            assert reason is not None
            assert reason.reason == "order_not_found"
            await feed.wait_for(rejected.seq)
            cancel = everything[-1].command
            assert isinstance(cancel, m.CancelOrder)
            assert cancel.order.client == 99
            await feed.stop()
            with pytest.raises(asyncio.TimeoutError):
                await feed.wait_for(10**9, timeout=0.05)
        finally:
            bridge.close()
            node.stop()

    uvloop.run(asyncio.wait_for(scenario(), 30))


def test_messages_reject_unknown_tags_and_wrong_types() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"type": "teleport", "account": 1}, m.Command)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"type": "deposit", "account": "1", "asset": 1, "amount": 1}, m.Command)
    deposit = msgspec.convert({"type": "deposit", "account": 1, "asset": 2, "amount": 3}, m.Command)
    assert deposit == m.Deposit(account=1, asset=2, amount=3)
    assert m.to_wire(deposit) == {"type": "deposit", "account": 1, "asset": 2, "amount": 3}


def _limit(account: int, side: m.Side, price: int, quantity: int, client: int) -> m.PlaceOrder:
    return m.PlaceOrder(
        account=account,
        market=1,
        side=side,
        order_type="limit",
        price=price,
        quantity=quantity,
        client_order_id=client,
    )


def test_many_concurrent_submits_are_acked_in_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = Node({"data_dir": str(tmp_path), "durability": "write"})
        bridge = EngineBridge(node)
        try:
            await bridge.submit_many(SETUP)
            orders = [
                _limit(1 + i % 2, "buy" if i % 2 == 0 else "sell", 100 + i % 3, 1000, i + 1)
                for i in range(500)
            ]
            acks = await asyncio.gather(*(bridge.submit(o) for o in orders))
            # One client, one ring: sent in task order, sequenced in the same order.
            seqs = [a.seq for a in acks]
            assert seqs == list(range(len(SETUP) + 1, len(SETUP) + 1 + len(orders)))
            for order, ack in zip(orders, acks, strict=True):
                assert ack.rejection() is None
                accepted = [e for e in ack.events if isinstance(e, m.Accepted)]
                assert [(a.account, a.client_order_id, a.side, a.price) for a in accepted] == [
                    (order.account, order.client_order_id, order.side, order.price)
                ]
            assert bridge.in_flight == 0
            entries = decode_entries(node.events_packed(len(SETUP) + 1, 1000))
            assert [e.command for e in entries] == orders
            assert [e.events for e in entries] == [a.events for a in acks]
        finally:
            bridge.close()
            node.stop()

    uvloop.run(asyncio.wait_for(scenario(), 30))


def test_malformed_packed_commands_are_refused_and_nothing_is_journaled(tmp_path: Path) -> None:
    with Node({"data_dir": str(tmp_path), "durability": "write"}) as node:
        client = node.open_client()
        good = encode_command(m.Deposit(account=1, asset=1, amount=5))
        malformed = [
            b"",
            b"\xc1",  # never used in msgpack
            good[:-1],  # truncated
            good + b"\x00",  # trailing bytes
            msgspec.msgpack.encode({"type": "teleport", "account": 1}),
            msgspec.msgpack.encode({"type": "deposit", "account": 1, "asset": 1}),
            msgspec.msgpack.encode({"type": "deposit", "account": -1, "asset": 1, "amount": 5}),
            msgspec.msgpack.encode({"type": "list_asset", "asset": 1, "decimals": 300}),
            msgspec.msgpack.encode([1, 2, 3]),
            msgspec.msgpack.encode(["deposit", 1, 1, 5]),  # a command is a map …
            msgspec.msgpack.encode({"type": 7, "account": 1, "asset": 1, "amount": 5}),  # … named
        ]
        for packed in malformed:
            with pytest.raises(CommandError, match="invalid msgpack command"):
                client.send(packed)
        assert client.in_flight() == 0
        assert node.stats()["applied_seq"] == 0
        # The bridge raises the same for a Struct the engine's types cannot hold.
        bridge = EngineBridge(node)

        async def oversized() -> None:
            with pytest.raises(CommandError):
                await bridge.submit(m.ListAsset(asset=2**40, decimals=8))

        uvloop.run(oversized())
        bridge.close()
        # A good command after them is the first thing in the journal.
        client.send(good, source=9, reference=1)
        (correlation, ack), *_ = decode_acks(client.wait_acks(10, 10.0))
        assert (correlation, ack.seq) == (1, 1)
        assert [r["seq"] for r in read_journal(tmp_path)] == [1]


def test_a_full_ring_is_back_pressure_not_loss(tmp_path: Path) -> None:
    config = {"data_dir": str(tmp_path), "durability": "write", "ring_capacity": 2}
    with Node(config) as node:  # type: ignore[arg-type]
        # NodeClient: once the ring's capacity is in flight, send refuses at once …
        client = node.open_client()
        deposit = encode_command(m.Deposit(account=1, asset=1, amount=5))
        assert [client.send(deposit), client.send(deposit)] == [1, 2]
        with pytest.raises(NodeBusy):
            client.send(deposit)
        acks: list[tuple[int, m.Ack]] = []
        while len(acks) < 2:
            acks += decode_acks(client.wait_acks(10, 10.0))
        assert [c for c, _ in acks] == [1, 2]
        assert client.send(deposit) == 3  # … and takes commands again once they are acked
        client.close()
        with pytest.raises(NodeStopped):
            client.send(deposit)

        # The bridge: every one of many concurrent submissions is retried until it fits.
        async def scenario() -> None:
            bridge = EngineBridge(node)
            try:
                await bridge.submit_many(SETUP)
                deposits = [m.Deposit(account=1, asset=2, amount=i + 1) for i in range(300)]
                acks = await asyncio.gather(*(bridge.submit(d) for d in deposits))
                assert bridge.busy_retries > 0
                # Queued in submission order while the ring was full: nothing lost or
                # overtaken.
                first = acks[0].seq
                assert [a.seq for a in acks] == list(range(first, first + len(deposits)))
                amounts = [e.amount for a in acks for e in a.events if isinstance(e, m.Deposited)]
                assert amounts == [d.amount for d in deposits]
            finally:
                bridge.close()

        uvloop.run(asyncio.wait_for(scenario(), 30))


EVERY_KIND: list[m.Command] = [
    *SETUP,
    m.SetFeeTier(tier=1, maker_bps=2, taker_bps=5),
    m.CreateAccount(account=3, fee_tier=1),
    m.SetAccountFeeTier(account=2, fee_tier=1),
    m.Deposit(account=3, asset=2, amount=10**9),
    m.Withdraw(account=3, asset=2, amount=10**6),
    _limit(1, "buy", 100, 3000, 11),
    _limit(1, "buy", 99, 2000, 12),
    m.AmendOrder(account=1, order=m.OrderRef(client=11), new_quantity=2000),
    m.AmendOrder(account=1, order=m.OrderRef(client=12), new_price=98),
    m.PlaceOrder(account=2, market=1, side="sell", order_type="market", quantity=1000),
    m.CancelOrder(account=1, order=m.OrderRef(client=12)),
    m.CancelOrder(account=1, order=m.OrderRef(id=10**6)),
    _limit(1, "buy", 97, 1000, 13),
    m.CancelAll(account=1, market=1, side="buy"),
    m.CancelAll(account=1),
    m.SetMarketStatus(market=1, status="halted"),
    m.SetMarketStatus(market=1, status="trading"),
    m.SetAccountStatus(account=3, status="frozen"),
    m.Withdraw(account=3, asset=2, amount=1),
    m.SetAccountStatus(account=3, status="active"),
    m.PlaceOrder(
        account=1,
        market=1,
        side="buy",
        order_type="market",
        quote_quantity=10**6,
        reserve_price=200,
        time_in_force="ioc",
        stp="expire_both",
    ),
]


def _tag(kind: object) -> str:
    info = msgspec.inspect.type_info(kind)
    assert isinstance(info, msgspec.inspect.StructType)
    assert isinstance(info.tag, str)
    return info.tag


def _tags(union: object) -> set[str]:
    return {_tag(kind) for kind in typing.get_args(union)}


def test_packed_feed_decodes_every_kind_exactly_as_the_dict_path(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = Node({"data_dir": str(tmp_path), "durability": "write"})
        bridge = EngineBridge(node)
        try:
            acks = await bridge.submit_many(EVERY_KIND)
            source_ack = await bridge.submit(
                m.Deposit(account=2, asset=2, amount=1), source=7, reference=42
            )
            last = source_ack.seq
            packed = decode_entries(node.events_packed(1, 10_000))
            via_dicts = msgspec.convert(node.events(1, 10_000), list[m.Entry])
            assert packed == via_dicts
            assert [e.seq for e in packed] == list(range(1, last + 1))
            assert [e.command for e in packed[: len(EVERY_KIND)]] == EVERY_KIND
            assert [e.events for e in packed[: len(EVERY_KIND)]] == [a.events for a in acks]
            assert packed[-1].origin == m.Origin(source=7, reference=42)
            assert node.last_reference(7) == 42
            seen_events = {type(e) for entry in packed for e in entry.events}
            assert {_tag(t) for t in seen_events} == _tags(m.Event)
            seen_commands = {type(entry.command) for entry in packed}
            assert {_tag(t) for t in seen_commands} == _tags(m.Command)
            # The event feed delivers the same decoded entries.
            feed = EventFeed(node)
            delivered: list[m.Entry] = []
            feed.subscribe("all", delivered.extend, from_seq=1)
            feed.start()
            await feed.wait_for(last)
            await feed.stop()
            assert delivered == packed
        finally:
            bridge.close()
            node.stop()

    uvloop.run(asyncio.wait_for(scenario(), 30))


def test_an_envelope_of_another_version_is_refused(tmp_path: Path) -> None:
    with Node({"data_dir": str(tmp_path), "durability": "write"}) as node:
        client = node.open_client()
        client.send(encode_command(m.ListAsset(asset=1, decimals=8)))
        packed_acks = client.wait_acks(10, 10.0)
        packed_entries = node.events_packed(1)
    for packed, decode in ((packed_acks, decode_acks), (packed_entries, decode_entries)):
        version, payload = msgspec.msgpack.decode(packed)
        assert version == m.VERSION
        assert decode(packed)
        with pytest.raises(MessageVersionError, match=f"version {m.VERSION + 1}"):
            decode(msgspec.msgpack.encode([m.VERSION + 1, payload]))


def test_the_bridge_reports_a_stopped_node(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = Node({"data_dir": str(tmp_path), "durability": "write"})
        bridge = EngineBridge(node)
        try:
            await bridge.submit(m.ListAsset(asset=1, decimals=8))
            await asyncio.to_thread(node.stop)
            with pytest.raises(NodeStopped):
                await bridge.submit(m.ListAsset(asset=2, decimals=8))
        finally:
            bridge.close()
            node.stop()

    uvloop.run(asyncio.wait_for(scenario(), 30))


def test_bench_bridge_prints_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["bench", "bridge", "--orders", "300", "--concurrency", "8", "--policy", "none"]) == 0
    )
    report = msgspec.json.decode(capsys.readouterr().out)
    assert (report["bench"], report["orders"], report["concurrency"]) == ("bridge", 300, 8)
    assert report["rejected"] == 0
    assert report["orders_per_s"] > 0
    assert 0 < report["p50_us"] <= report["p99_us"] <= report["max_us"]
