"""The SQLite projections against a real node: orders, trades and ledger equal the engine's
state, a restart resumes from the cursor without duplicates, a rebuild from seq 1 gives the
same tables, a failed batch changes nothing, and u64 values beyond SQLite's signed range
round-trip.

:func:`running` is the harness the market-data API tests share: a real node, the database,
the listing, the command bridge and the event feed, the public and market API modules on an
aiohttp test server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
import uvloop
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from controlplane import Node
from controlplane import messages as m
from controlplane.api import EXCHANGE, Exchange, market, public
from controlplane.api.errors import error_middleware
from controlplane.bridge import EngineBridge, EventFeed
from controlplane.config import load_config
from controlplane.db import Database
from controlplane.listing import Asset, Listing, Market
from controlplane.projections import PROJECTIONS, Projections

BTC = Asset(1, "BTC", 8)
USDT = Asset(2, "USDT", 8)
ETH = Asset(3, "ETH", 18)
BTCUSDT = Market(1, "BTCUSDT", BTC, USDT, 2, 1, 1_000, 0)
ETHUSDT = Market(2, "ETHUSDT", ETH, USDT, 2, 1, 10**12, 0)
ALICE, BOB, CAROL = 1, 2, 3
COIN = 10**8
LOT = 1_000
MAKER_BPS, TAKER_BPS = 10, 20

SETUP: list[m.Command] = [
    m.ListAsset(asset=BTC.id, decimals=8),
    m.ListAsset(asset=USDT.id, decimals=8),
    m.ListAsset(asset=ETH.id, decimals=18),
    m.ListMarket(
        market=1, base=1, quote=2, price_decimals=2, tick_size=1, lot_size=1_000, min_notional=0
    ),
    m.ListMarket(
        market=2, base=3, quote=2, price_decimals=2, tick_size=1, lot_size=10**12, min_notional=0
    ),
    m.SetFeeTier(tier=1, maker_bps=MAKER_BPS, taker_bps=TAKER_BPS),
    *[m.CreateAccount(account=a, fee_tier=1) for a in (ALICE, BOB, CAROL)],
    *[
        m.Deposit(account=a, asset=asset, amount=amount)
        for a in (ALICE, BOB, CAROL)
        for asset, amount in ((BTC.id, 10 * COIN), (USDT.id, 10_000_000 * COIN))
    ],
    # More ETH atoms than SQLite's signed 64 bits hold in total (18 decimals).
    m.Deposit(account=ALICE, asset=ETH.id, amount=2**63 + 10**13),
]


def limit(
    account: int,
    side: m.Side,
    price: int,
    lots: int,
    *,
    market_id: int = 1,
    lot: int = LOT,
    tif: m.TimeInForce = "gtc",
    client_order_id: int = 0,
    stp: m.StpMode = "none",
) -> m.PlaceOrder:
    return m.PlaceOrder(
        account=account,
        market=market_id,
        side=side,
        order_type="limit",
        price=price,
        quantity=lots * lot,
        time_in_force=tif,
        client_order_id=client_order_id,
        stp=stp,
    )


def market_order(account: int, side: m.Side, lots: int, market_id: int = 1) -> m.PlaceOrder:
    return m.PlaceOrder(
        account=account, market=market_id, side=side, order_type="market", quantity=lots * LOT
    )


@dataclass
class Harness:
    exchange: Exchange
    client: TestClient[Any, Any]
    acks: list[m.Ack] = field(default_factory=list)

    @property
    def node(self) -> Node:
        return self.exchange.node

    @property
    def projections(self) -> Projections:
        projections: Projections = self.client.app[PROJECTIONS]
        return projections

    async def submit(self, *commands: m.Command) -> list[m.Ack]:
        """Submit commands in order; wait until the projections have applied them."""
        acks = await self.exchange.bridge.submit_many(commands)
        for command, ack in zip(commands, acks, strict=True):
            assert ack.rejection() is None, (command, ack.rejection())
        self.acks.extend(acks)
        await self.exchange.feed.wait_for(acks[-1].seq)
        return acks

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.client.get(path) as response:
            return response.status, await response.json()

    async def ok(self, path: str) -> Any:
        status, body = await self.get(path)
        assert status == 200, (path, body)
        return body

    def trades(self) -> list[m.Trade]:
        """Every trade of the acks this harness collected, in order."""
        return [e for a in self.acks for e in a.events if isinstance(e, m.Trade)]

    def trade_times(self) -> dict[int, int]:
        return {
            e.trade_id: a.timestamp_ns
            for a in self.acks
            for e in a.events
            if isinstance(e, m.Trade)
        }


@contextlib.asynccontextmanager
async def running(data_dir: Path) -> AsyncIterator[Harness]:
    """The real node and the API modules on a test server; the listing on first start."""
    config = load_config(None, env={}, overrides={"server": {"data_dir": str(data_dir)}})
    node = await asyncio.to_thread(Node, {"data_dir": str(data_dir), "durability": "write"})
    db = Database.in_data_dir(data_dir)
    listing = Listing(db)
    exchange = Exchange(config, node, db, listing, EngineBridge(node), EventFeed(node))
    first_start = node.stats()["applied_seq"] == 0
    if first_start:
        acks = await exchange.bridge.submit_many(SETUP)
        assert all(a.rejection() is None for a in acks)
        for asset in (BTC, USDT, ETH):
            listing.record_asset(asset)
        for mk in (BTCUSDT, ETHUSDT):
            listing.record_market(mk)
    app = web.Application(middlewares=[error_middleware])
    app[EXCHANGE] = exchange
    public.setup(app, exchange)
    market.setup(app, exchange)
    exchange.feed.start()
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        await exchange.feed.wait_for(node.stats()["applied_seq"])
        yield Harness(exchange, client)
    finally:
        await client.close()
        await exchange.feed.stop()
        exchange.bridge.close()
        await asyncio.to_thread(node.stop)
        db.close()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        await asyncio.wait_for(scenario(), 60)

    uvloop.run(main())


# --- the engine's state, as the projections must show it -------------------------------------


def assert_matches_engine(h: Harness) -> None:
    """Open orders equal the engine's books level by level; ledger and balances equal the
    engine's balances; every open order's leaves plus executed is its quantity."""
    p = h.projections
    for mk in (BTCUSDT, ETHUSDT):
        open_orders = [o for a in (ALICE, BOB, CAROL) for o in p.open_orders(a, mk.id)]
        for side in ("buy", "sell"):
            levels: dict[int, tuple[int, int]] = {}
            for o in open_orders:
                if o.side == side:
                    qty, count = levels.get(o.price, (0, 0))
                    levels[o.price] = (qty + o.leaves, count + 1)
            depth = h.node.depth(mk.id, side, 10_000)
            assert sorted(levels.items()) == sorted((p_, (q, n)) for p_, q, n in depth), (
                mk.symbol,
                side,
            )
        for o in open_orders:
            assert o.leaves > 0
            assert o.executed_qty + o.leaves == o.quantity
    totals = p.ledger_totals()
    balances = p.balances()
    for account in (0, ALICE, BOB, CAROL):
        for asset in (BTC.id, USDT.id, ETH.id):
            engine = h.node.balance(account, asset)
            free, held = engine if engine is not None else (0, 0)
            assert totals.get((account, asset), 0) == free + held, (account, asset)
            assert balances.get((account, asset), (0, 0)) == (free, held)
    # Conservation: fees move between accounts, deposits minus withdrawals is the total.
    for asset in (BTC.id, USDT.id, ETH.id):
        rows = [r for a in (0, ALICE, BOB, CAROL) for r in p.ledger(a, asset, limit=1000)]
        flows = sum(r.delta for r in rows if r.reason in ("deposit", "withdrawal"))
        assert flows == sum(sum(h.node.balance(a, asset) or (0, 0)) for a in (0, ALICE, BOB, CAROL))


async def trade_a_while(h: Harness, rounds: int, base_price: int = 3_000_000) -> None:
    """Deterministic churn: resting orders on both sides, crossing orders, amends, cancels,
    self-trade prevention, a withdrawal."""
    for r in range(rounds):
        p = base_price + (r % 5) * 10
        await h.submit(
            limit(ALICE, "sell", p + 20, 3 + r % 4),
            limit(ALICE, "sell", p + 30, 2),
            limit(BOB, "buy", p - 20, 2 + r % 3),
            limit(CAROL, "buy", p + 25, 4, tif="ioc"),
            market_order(BOB, "sell", 1 + r % 2),
            limit(CAROL, "sell", p - 25, 3, tif="gtc"),
        )
        open_alice = h.projections.open_orders(ALICE, 1)
        if open_alice:
            target = open_alice[0]
            await h.submit(m.CancelOrder(account=ALICE, order=m.OrderRef(id=target.order_id)))
        open_bob = h.projections.open_orders(BOB, 1)
        if open_bob and open_bob[-1].leaves > LOT:
            await h.submit(
                m.AmendOrder(
                    account=BOB,
                    order=m.OrderRef(id=open_bob[-1].order_id),
                    new_quantity=open_bob[-1].leaves - LOT,
                )
            )
    await h.submit(
        limit(CAROL, "sell", base_price + 1_000, 1, client_order_id=77),
        limit(CAROL, "buy", base_price + 1_000, 1, stp="expire_taker"),
        m.Withdraw(account=CAROL, asset=USDT.id, amount=5 * COIN),
        m.CancelAll(account=CAROL),
    )


# --- tests -----------------------------------------------------------------------------------


def test_order_lifecycle_statuses_and_ledger(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as h:
            a1, a2, a3 = await h.submit(
                limit(ALICE, "sell", 3_000_000, 2, client_order_id=11),
                limit(ALICE, "sell", 3_000_100, 3, client_order_id=12),
                limit(ALICE, "sell", 3_000_100, 1, client_order_id=13),
            )
            ids = [
                next(e.order_id for e in a.events if isinstance(e, m.Accepted))
                for a in (a1, a2, a3)
            ]
            p = h.projections
            assert [o.status for o in p.open_orders(ALICE, 1)] == ["NEW"] * 3
            (ioc,) = await h.submit(limit(BOB, "buy", 3_000_100, 4, tif="ioc"))
            (mkt,) = await h.submit(market_order(BOB, "buy", 3))
            ioc_id = next(e.order_id for e in ioc.events if isinstance(e, m.Accepted))
            mkt_id = next(e.order_id for e in mkt.events if isinstance(e, m.Accepted))
            # Bob's IOC took 2 lots at 30000.00 and 2 at 30001.00, his market order the two
            # lots left at 30001.00 and expired with one lot unfilled.
            o1, o2, o3 = (p.order(ALICE, i) for i in ids)
            assert o1 is not None
            assert (o1.status, o1.executed_qty, o1.leaves) == (
                "FILLED",
                2 * LOT,
                0,
            )
            assert o2 is not None
            assert (o2.status, o2.executed_qty) == ("FILLED", 3 * LOT)
            assert o3 is not None
            assert o3.status == "FILLED"
            bob_ioc = p.order(BOB, ioc_id)
            assert bob_ioc is not None
            assert (bob_ioc.status, bob_ioc.executed_qty) == ("FILLED", 4 * LOT)
            assert bob_ioc.cumulative_quote_qty == BTCUSDT.notional(3_000_000, 2 * LOT) + (
                BTCUSDT.notional(3_000_100, 2 * LOT)
            )
            bob_mkt = p.order(BOB, mkt_id)
            assert bob_mkt is not None
            assert (bob_mkt.status, bob_mkt.executed_qty, bob_mkt.leaves) == ("EXPIRED", 2 * LOT, 0)
            assert p.order(ALICE, mkt_id) is None  # another account's order is not found
            assert p.order_by_client_id(ALICE, 11) == o1
            assert p.open_orders(ALICE) == []

            # Cancel → CANCELED; self-trade prevention → EXPIRED_IN_MATCH; amend.
            (rest,) = await h.submit(limit(CAROL, "sell", 3_100_000, 5, client_order_id=11))
            (self_trade,) = await h.submit(
                limit(CAROL, "buy", 3_100_000, 1, stp="expire_taker", client_order_id=12)
            )
            rest_id = next(e.order_id for e in rest.events if isinstance(e, m.Accepted))
            st_id = next(e.order_id for e in self_trade.events if isinstance(e, m.Accepted))
            st = p.order(CAROL, st_id)
            assert st is not None
            assert st.status == "EXPIRED_IN_MATCH"
            await h.submit(
                m.AmendOrder(account=CAROL, order=m.OrderRef(client=11), new_quantity=3 * LOT)
            )
            amended = p.order(CAROL, rest_id)
            assert amended is not None
            assert (amended.quantity, amended.leaves, amended.status) == (3 * LOT, 3 * LOT, "NEW")
            await h.submit(limit(BOB, "buy", 3_100_000, 1))
            partial = p.order(CAROL, rest_id)
            assert partial is not None
            assert (partial.status, partial.executed_qty, partial.leaves) == (
                "PARTIALLY_FILLED",
                LOT,
                2 * LOT,
            )
            assert p.order_by_client_id(CAROL, 11) == partial
            await h.submit(m.CancelOrder(account=CAROL, order=m.OrderRef(id=rest_id)))
            cancelled = p.order(CAROL, rest_id)
            assert cancelled is not None
            assert (cancelled.status, cancelled.executed_qty, cancelled.leaves) == (
                "CANCELED",
                LOT,
                0,
            )
            assert [o.order_id for o in p.all_orders(CAROL, 1)] == [rest_id, st_id]

            # myTrades: Alice was maker in all four of her trades, Bob taker; fees in quote.
            alice = p.account_trades(ALICE, 1)
            assert [t.trade.trade_id for t in alice] == [t.trade_id for t in h.trades()[:4]]
            assert all(t.is_maker and not t.is_buyer for t in alice)
            assert all(t.fee == t.trade.quote_quantity * MAKER_BPS // 10_000 for t in alice)
            bob = p.account_trades(BOB, 1, order_id=mkt_id)
            assert [t.trade.quantity for t in bob] == [LOT, LOT]
            assert all(t.is_buyer and not t.is_maker for t in bob)
            assert p.account_trades(BOB, 1, from_trade_id=bob[1].trade.trade_id, limit=1) == [
                bob[1]
            ]

            # The ledger: deposit, trade legs, fees, fee income to account 0.
            fee_income = p.ledger(0, USDT.id)
            assert {r.reason for r in fee_income} == {"fee_income"}
            assert sum(r.delta for r in fee_income) == sum(
                t.maker_fee + t.taker_fee for t in h.trades()
            )
            alice_btc = p.ledger(ALICE, BTC.id)
            assert [r.reason for r in alice_btc] == ["deposit"] + ["trade"] * 4
            assert alice_btc[-1].free + alice_btc[-1].held == sum(r.delta for r in alice_btc)
            assert p.ledger(ALICE, BTC.id, limit=2) == alice_btc[-2:]
            assert p.ledger(ALICE, BTC.id, from_id=alice_btc[1].id, limit=2) == alice_btc[1:3]
            assert_matches_engine(h)

    run(scenario)


def test_projection_equals_engine_after_churn(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as h:
            await trade_a_while(h, 12)
            assert h.trades()
            assert_matches_engine(h)
            p = h.projections
            statuses = {
                o.status for a in (ALICE, BOB, CAROL) for o in p.all_orders(a, 1, limit=1000)
            }
            assert {"FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH"} <= statuses
            withdrawals = [
                r for r in p.ledger(CAROL, USDT.id, limit=1000) if r.reason == "withdrawal"
            ]
            assert [r.delta for r in withdrawals] == [-5 * COIN]

    run(scenario)


def test_restart_resumes_from_the_cursor_and_rebuild_is_identical(tmp_path: Path) -> None:
    dumps: list[dict[str, list[tuple[Any, ...]]]] = []
    trades_before: list[int] = []

    async def first() -> None:
        async with running(tmp_path) as h:
            await trade_a_while(h, 4)
            trades_before.append(len(h.trades()))
            dumps.append(h.projections.dump())

    async def second() -> None:
        async with running(tmp_path) as h:
            p = h.projections
            assert p.dump() == dumps[0]  # nothing applied twice, nothing lost
            assert p.cursor == h.node.stats()["applied_seq"]
            await trade_a_while(h, 3, base_price=3_000_500)
            new_trades = h.trades()
            assert new_trades
            after = p.dump()
            assert len(after["trades"]) == trades_before[0] + len(new_trades)
            assert after["trades"][: len(dumps[0]["trades"])] == dumps[0]["trades"]
            assert [r[0] for r in after["trades"][trades_before[0] :]] == [
                t.trade_id for t in new_trades
            ]
            assert_matches_engine(h)

            # A second projection over its own database, replayed from seq 1: identical.
            other = Projections(Database(tmp_path / "replayed.sqlite3"))
            await other.rebuild(h.node)
            assert other.dump() == after
            other.db.close()

            # Rebuilding the live projection while the feed runs: identical, and it goes on.
            await asyncio.gather(
                p.rebuild(h.node, h.exchange.feed),
                h.submit(limit(BOB, "buy", 2_999_000, 1)),
            )
            await h.exchange.feed.wait_for(h.node.stats()["applied_seq"])
            replayed = Projections(Database(tmp_path / "again.sqlite3"))
            await replayed.rebuild(h.node)
            assert p.dump() == replayed.dump()
            replayed.db.close()
            await h.submit(market_order(ALICE, "sell", 1))
            assert_matches_engine(h)

    run(first)
    run(second)


def test_failed_batch_changes_nothing_and_gaps_are_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as h:
            await trade_a_while(h, 2)
            p = h.projections
            before, cursor = p.dump(), p.cursor
            good = h.acks[-1]
            # An entry whose trade names an order the stream never accepted: the batch (a
            # valid deposit first) is rolled back whole.
            real_trade = next(e for a in h.acks for e in a.events if isinstance(e, m.Trade))
            bogus_trade = msgspec.structs.replace(real_trade, trade_id=10**9, maker_order_id=10**9)
            deposit = m.Entry(
                seq=cursor + 1,
                timestamp_ns=good.timestamp_ns,
                origin=m.Origin(source=0, reference=0),
                command=m.Deposit(account=ALICE, asset=BTC.id, amount=1),
                events=[
                    m.Deposited(account=ALICE, asset=BTC.id, amount=1),
                    m.Balance(account=ALICE, asset=BTC.id, free=1, held=0),
                ],
            )
            broken = m.Entry(
                seq=cursor + 2,
                timestamp_ns=good.timestamp_ns,
                origin=m.Origin(source=0, reference=0),
                command=m.Deposit(account=ALICE, asset=BTC.id, amount=1),
                events=[bogus_trade],
            )
            with pytest.raises(RuntimeError, match="unknown order"):
                p.apply([deposit, broken])
            assert (p.dump(), p.cursor) == (before, cursor)
            gap = m.Entry(
                seq=cursor + 5,
                timestamp_ns=good.timestamp_ns,
                origin=m.Origin(source=0, reference=0),
                command=deposit.command,
                events=deposit.events,
            )
            with pytest.raises(RuntimeError, match="gap"):
                p.apply([gap])
            p.apply([])  # nothing to do
            assert (p.dump(), p.cursor) == (before, cursor)
            # The live feed still applies real entries after the refused ones.
            await h.submit(limit(BOB, "buy", 2_999_000, 1))
            assert p.cursor == cursor + 1
            assert_matches_engine(h)

    run(scenario)


def test_values_beyond_sqlite_integers_round_trip(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as h:
            big_lot = 10**12
            huge_client_id = 2**64 - 1
            # A quantity above 2**63 wei (about 9.2 ETH).
            lots = 2**63 // big_lot + 3
            (sell,) = await h.submit(
                limit(
                    ALICE,
                    "sell",
                    1,
                    lots,
                    market_id=2,
                    lot=big_lot,
                    client_order_id=huge_client_id,
                )
            )
            order_id = next(e.order_id for e in sell.events if isinstance(e, m.Accepted))
            p = h.projections
            order = p.order_by_client_id(ALICE, huge_client_id)
            assert order is not None
            assert (order.order_id, order.quantity) == (order_id, lots * big_lot)
            assert order.quantity > 2**63
            await h.submit(limit(BOB, "buy", 1, lots, market_id=2, lot=big_lot, tif="ioc"))
            (trade,) = p.recent_trades(2)
            assert trade.quantity == lots * big_lot
            assert trade.maker_client_order_id == huge_client_id
            filled = p.order(ALICE, order_id)
            assert filled is not None
            assert filled.status == "FILLED"
            assert p.ledger_totals()[(BOB, ETH.id)] == lots * big_lot
            (kline,) = p.klines(2, "1m")
            assert kline.volume == lots * big_lot
            assert_matches_engine(h)

    run(scenario)
