"""The command bridge and the event feed against a real node: acknowledgements decode into
the message Structs, the feed delivers every entry once, in order, from each consumer's
start, and ``wait_for`` gives read-your-writes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest
import uvloop

from controlplane import Node
from controlplane import messages as m
from controlplane.bridge import EngineBridge, EventFeed

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
