"""Step definitions for exchange-core's Gherkin scenarios (``exchange-core/*.feature``).

exchange-core (a Java engine) states sizes in lots and prices in ticks of a symbol whose
``baseScaleK`` is the lot (base atoms per lot) and whose ``quoteScaleK`` is the quote atoms one
tick of one lot is worth. We list each symbol as an engine market with exactly that lot and
tick value (``tick_value = tick * lot * 10**quote_dec / 10**(price_dec + base_dec)``):

========  =========  ===========  ==========  ===============  ====  ======  ==========
symbol    base       quote        baseScaleK  quoteScaleK      tick  lot     price dec.
========  =========  ===========  ==========  ===============  ====  ======  ==========
ETH_XBT   ETH (6)    XBT (8)      100_000     10               1     100000  6
EUR_USD   EUR (2)    USD (2)      1           1                1     1       0
========  =========  ===========  ==========  ===============  ====  ======  ==========

(ETH in szabo and XBT in satoshi, as exchange-core's test constants have them.) So a feature
price ``P`` is ``P * tick`` price units, a size ``S`` is ``S * lot`` base atoms, and balances
are compared in atoms as written. Fees are zero (fee tier 0), as in both symbols.

Other mappings, each a deliberate reading of exchange-core's step definitions
(``OrderStepdefs.java``):

* Order ids in the features are chosen by the client: they become ``client_order_id``.
* ``reservePrice`` is the bid's hold price: it becomes ``reserve_price`` on bids. exchange-core
  accepts and ignores it on asks (while still reporting it in the user's order list); our
  engine refuses a reserve price on a sell, so it is not sent for asks, and the ``orders``
  table's ``reservePrice`` of an ask is checked against the value the feature placed it with.
* ``RISK_NSF`` is our ``insufficient_balance`` and ``MATCHING_MOVE_FAILED_PRICE_OVER_RISK_LIMIT``
  our ``price_above_reserve``; "moves a price" is an amend of the price only.
* A client's "balance" is the free balance (exchange-core debits holds from the account).
* exchange-core trades EUR_USD as a *margin* futures contract, where a sell needs USD margin;
  our engine is spot, where a sell delivers the base asset. Every new client is therefore
  also credited :data:`EUR_GRANT` EUR atoms (a currency the features cannot name), so EUR_USD
  asks can be placed; no balance step looks at EUR.
* Where exchange-core checks *some* property, we check it exactly: an order book table is the
  whole book (one order per level, as exchange-core's ``L2MarketDataHelper`` builds it), and
  an orders table lists exactly the client's open orders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from controlplane.engine_types import OrderView, Side, TimeInForce
from tests.scenarios.gherkin import Table
from tests.scenarios.steps import StepRegistry
from tests.scenarios.support import Driver, accepted, amended, done, rejections, trades

#: Currency code -> (asset id, decimals).
CURRENCIES: dict[str, tuple[int, int]] = {
    "USD": (1, 2),
    "XBT": (2, 8),
    "ETH": (3, 6),
    "EUR": (4, 2),
}
#: EUR atoms credited to every new client (see the module docs).
EUR_GRANT = 10**12


@dataclass(frozen=True)
class SymbolSpec:
    """An exchange-core symbol and the engine market it is listed as."""

    market: int
    base: str
    quote: str
    base_scale_k: int
    quote_scale_k: int
    price_decimals: int
    tick_size: int = 1

    @property
    def lot_size(self) -> int:
        return self.base_scale_k


SYMBOLS: dict[str, SymbolSpec] = {
    "EUR_USD": SymbolSpec(
        market=1, base="EUR", quote="USD", base_scale_k=1, quote_scale_k=1, price_decimals=0
    ),
    "ETH_XBT": SymbolSpec(
        market=2, base="ETH", quote="XBT", base_scale_k=100_000, quote_scale_k=10, price_decimals=6
    ),
}

#: exchange-core result codes -> our reject reasons.
RESULT_CODES = {
    "RISK_NSF": "insufficient_balance",
    "MATCHING_MOVE_FAILED_PRICE_OVER_RISK_LIMIT": "price_above_reserve",
}
SIDES: dict[str, Side] = {"BID": "buy", "ASK": "sell"}
TIFS: dict[str, TimeInForce] = {"GTC": "gtc", "IOC": "ioc"}


@dataclass
class OrderRecord:
    """An order as the feature placed it (feature ids are per-client client order ids)."""

    client: str
    account: int
    client_order_id: int
    symbol: SymbolSpec
    side: Side
    reserve: int
    engine_id: int | None = None


class ExchangeCoreWorld:
    """One scenario's exchange: markets listed, clients and orders by their feature names."""

    def __init__(self) -> None:
        self.driver = Driver()
        self.accounts: dict[str, int] = {}
        self.orders: dict[int, OrderRecord] = {}
        #: Open orders by engine id just before the last command.
        self.before: dict[int, OrderView] = {}
        for asset, decimals in CURRENCIES.values():
            self.driver.apply_ok({"type": "list_asset", "asset": asset, "decimals": decimals})
        for spec in SYMBOLS.values():
            events = self.driver.apply_ok(
                {
                    "type": "list_market",
                    "market": spec.market,
                    "base": CURRENCIES[spec.base][0],
                    "quote": CURRENCIES[spec.quote][0],
                    "price_decimals": spec.price_decimals,
                    "tick_size": spec.tick_size,
                    "lot_size": spec.lot_size,
                    "min_notional": 0,
                }
            )
            tick_values = [e["tick_value"] for e in events if e["type"] == "market_listed"]
            assert tick_values == [spec.quote_scale_k], (spec, events)

    def check(self) -> None:
        self.driver.engine.check_invariants()

    def account(self, client: str) -> int:
        assert client in self.accounts, f"client {client} was never created"
        return self.accounts[client]

    def snapshot(self) -> None:
        """Remember every open order, for steps that look at the state before a command."""
        self.before = {
            o["order_id"]: o
            for account in self.accounts.values()
            for o in self.driver.engine.open_orders(account)
        }

    def record(self, order_id: int, client: str) -> OrderRecord:
        assert order_id in self.orders, f"order {order_id} was never placed"
        record = self.orders[order_id]
        assert record.client == client, f"order {order_id} belongs to {record.client}"
        return record


registry: StepRegistry[ExchangeCoreWorld] = StepRegistry()


def _balance_rows(table: Table | None) -> list[tuple[str, int]]:
    assert table is not None, "the step needs a table"
    rows = []
    for row in table:
        assert len(row) == 2, row
        assert row[0] in CURRENCIES, f"unknown currency {row[0]}"
        rows.append((row[0], int(row[1])))
    return rows


@registry.step(r"New client (\w+) has a balance:")
def new_client(world: ExchangeCoreWorld, m: re.Match[str], table: Table | None) -> None:
    client = m.group(1)
    assert client not in world.accounts, f"client {client} exists"
    account = len(world.accounts) + 1
    world.driver.apply_ok({"type": "create_account", "account": account, "fee_tier": 0})
    world.accounts[client] = account
    grants = [*_balance_rows(table), ("EUR", EUR_GRANT)]
    for currency, amount in grants:
        if amount:
            asset = CURRENCIES[currency][0]
            world.driver.apply_ok(
                {"type": "deposit", "account": account, "asset": asset, "amount": amount}
            )


@registry.step(r"(\d+) (\w+) is added to the balance of a client (\w+)")
def add_balance(world: ExchangeCoreWorld, m: re.Match[str], table: Table | None) -> None:
    amount, currency, client = int(m.group(1)), m.group(2), m.group(3)
    asset = CURRENCIES[currency][0]
    account = world.account(client)
    free, held = world.driver.engine.balance(account, asset) or (0, 0)
    world.driver.apply_ok({"type": "deposit", "account": account, "asset": asset, "amount": amount})
    assert world.driver.engine.balance(account, asset) == (free + amount, held)


_ORDER = (
    r"an (ASK|BID) order (\d+) at (\d+)@(\d+) \(type: (GTC|IOC), symbol: (\w+)"
    r"(?:, reservePrice: (\d+))?\)"
)


def _place(world: ExchangeCoreWorld, m: re.Match[str]) -> tuple[OrderRecord, int, int]:
    """Send the order of an ``_ORDER`` match; returns its record, engine price and quantity."""
    client, side_word, order_id = m.group(1), m.group(2), int(m.group(3))
    price, size, tif, symbol = int(m.group(4)), int(m.group(5)), m.group(6), m.group(7)
    reserve = int(m.group(8) or 0)
    spec = SYMBOLS[symbol]
    side = SIDES[side_word]
    record = OrderRecord(client, world.account(client), order_id, spec, side, reserve)
    world.orders[order_id] = record
    engine_price, quantity = price * spec.tick_size, size * spec.lot_size
    world.snapshot()
    world.driver.apply(
        {
            "type": "place_order",
            "account": record.account,
            "market": spec.market,
            "client_order_id": order_id,
            "side": side,
            "order_type": "limit",
            "time_in_force": TIFS[tif],
            "price": engine_price,
            "quantity": quantity,
            "reserve_price": reserve * spec.tick_size if side == "buy" else 0,
        }
    )
    return record, engine_price, quantity


@registry.step(r"A client (\w+) places " + _ORDER)
def place(world: ExchangeCoreWorld, m: re.Match[str], table: Table | None) -> None:
    record, price, quantity = _place(world, m)
    events = world.driver.last
    assert not rejections(events), rejections(events)
    acks = accepted(events)
    assert len(acks) == 1, events
    ack = acks[0]
    assert (ack["account"], ack["market"], ack["client_order_id"]) == (
        record.account,
        record.symbol.market,
        record.client_order_id,
    )
    assert (ack["side"], ack["price"], ack["quantity"]) == (record.side, price, quantity)
    assert ack["time_in_force"] == TIFS[m.group(6)]
    record.engine_id = ack["order_id"]


@registry.step(r"A client (\w+) could not place " + _ORDER + r" due to (\w+)")
def place_rejected(world: ExchangeCoreWorld, m: re.Match[str], table: Table | None) -> None:
    record, _, _ = _place(world, m)
    events = world.driver.last
    assert [e["type"] for e in events] == ["rejected"], events
    reject = rejections(events)[0]
    assert reject["reason"] == RESULT_CODES[m.group(9)], reject
    assert (reject["command"], reject["account"], reject["client_order_id"]) == (
        "place_order",
        record.account,
        record.client_order_id,
    )


def _move(world: ExchangeCoreWorld, m: re.Match[str]) -> OrderRecord:
    client, price, order_id = m.group(1), int(m.group(2)), int(m.group(3))
    record = world.record(order_id, client)
    world.snapshot()
    world.driver.apply(
        {
            "type": "amend_order",
            "account": record.account,
            "order": {"client": order_id},
            "new_price": price * record.symbol.tick_size,
        }
    )
    return record


@registry.step(r"A client (\w+) moves a price to (\d+) of the order (\d+)")
def move(world: ExchangeCoreWorld, m: re.Match[str], table: Table | None) -> None:
    record = _move(world, m)
    events = world.driver.last
    assert not rejections(events), rejections(events)
    amends = amended(events)
    assert len(amends) == 1, events
    assert amends[0]["order_id"] == record.engine_id
    assert amends[0]["price"] == int(m.group(2)) * record.symbol.tick_size


@registry.step(r"A client (\w+) could not move a price to (\d+) of the order (\d+) due to (\w+)")
def move_rejected(world: ExchangeCoreWorld, m: re.Match[str], table: Table | None) -> None:
    record = _move(world, m)
    events = world.driver.last
    assert [e["type"] for e in events] == ["rejected"], events
    reject = rejections(events)[0]
    assert reject["reason"] == RESULT_CODES[m.group(4)], reject
    assert (reject["command"], reject["account"], reject["order_id"]) == (
        "amend_order",
        record.account,
        record.engine_id,
    )


@registry.step(r"A client (\w+) cancels the remaining size (\d+) of the order (\d+)")
def cancel(world: ExchangeCoreWorld, m: re.Match[str], table: Table | None) -> None:
    client, size, order_id = m.group(1), int(m.group(2)), int(m.group(3))
    record = world.record(order_id, client)
    world.snapshot()
    events = world.driver.apply_ok(
        {"type": "cancel_order", "account": record.account, "order": {"client": order_id}}
    )
    finished = done(events)
    assert len(finished) == 1, events
    assert finished[0]["order_id"] == record.engine_id
    assert finished[0]["reason"] == "cancelled"
    assert finished[0]["cancelled_quantity"] == size * record.symbol.lot_size
    assert not trades(events)


@registry.step(
    r"The order (\d+) is (partially|fully) matched\. LastPx: (\d+), LastQty: (\d+)"
    r"(?:, bidderHoldPrice: (\d+))?"
)
def matched(world: ExchangeCoreWorld, m: re.Match[str], table: Table | None) -> None:
    """The last command made exactly one trade, against resting order N (the maker)."""
    order_id, fully = int(m.group(1)), m.group(2) == "fully"
    price, size = int(m.group(3)), int(m.group(4))
    record = world.orders[order_id]
    spec = record.symbol
    events = world.driver.last
    fills = trades(events)
    assert len(fills) == 1, fills
    trade = fills[0]
    assert trade["maker_order_id"] == record.engine_id, trade
    assert trade["maker_account"] == record.account, trade
    assert trade["market"] == spec.market
    assert trade["price"] == price * spec.tick_size, trade
    assert trade["quantity"] == size * spec.lot_size, trade
    assert trade["quote_quantity"] == price * size * spec.quote_scale_k, trade
    assert (trade["maker_fee"], trade["taker_fee"]) == (0, 0)
    maker_done = [d for d in done(events) if d["order_id"] == record.engine_id]
    if fully:
        assert [d["reason"] for d in maker_done] == ["filled"], maker_done
        assert world.driver.engine.order(trade["maker_order_id"]) is None
    else:
        assert not maker_done, maker_done
        assert world.driver.engine.order(trade["maker_order_id"]) is not None
    if m.group(5) is not None:
        # The bidder's hold price is the buy order's reserve price (its limit if none).
        bid_id = (
            trade["maker_order_id"] if trade["aggressor"] == "sell" else trade["taker_order_id"]
        )
        bid = world.before[bid_id]
        hold = bid["reserve_price"] or bid["price"]
        assert hold == int(m.group(5)) * spec.tick_size, bid


@registry.step(r"No trade events")
def no_trades(world: ExchangeCoreWorld, m: re.Match[str], table: Table | None) -> None:
    assert not trades(world.driver.last), trades(world.driver.last)


@registry.step(r"An? (\w+) order book is:")
def order_book(world: ExchangeCoreWorld, m: re.Match[str], table: Table | None) -> None:
    """``| bid | price | ask |`` rows (header optional): the whole book, one order per level."""
    spec = SYMBOLS[m.group(1)]
    assert table is not None
    rows = table[1:] if table and table[0][0] == "bid" else table
    bids: list[tuple[int, int, int]] = []
    asks: list[tuple[int, int, int]] = []
    for bid, price, ask in rows:
        level_price = int(price) * spec.tick_size
        if bid:
            assert not ask, f"row {bid, price, ask} has both sides"
            bids.append((level_price, int(bid) * spec.lot_size, 1))
        else:
            asks.append((level_price, int(ask) * spec.lot_size, 1))
    bids.sort(key=lambda level: -level[0])
    asks.sort(key=lambda level: level[0])
    engine = world.driver.engine
    assert engine.depth(spec.market, "buy", 10_000) == bids
    assert engine.depth(spec.market, "sell", 10_000) == asks


@registry.step(r"A client (\w+) orders:")
def client_orders(world: ExchangeCoreWorld, m: re.Match[str], table: Table | None) -> None:
    """``| id | price | size | filled | reservePrice | side |``: exactly the open orders."""
    client = m.group(1)
    account = world.account(client)
    assert table, "the step needs a header row"
    header, rows = table[0], table[1:]
    open_orders = {o["client_order_id"]: o for o in world.driver.engine.open_orders(account)}
    expected_ids = [int(row[header.index("id")]) for row in rows]
    assert sorted(open_orders) == sorted(expected_ids), (open_orders, expected_ids)
    for row in rows:
        cells = dict(zip(header, row, strict=True))
        record = world.record(int(cells["id"]), client)
        spec = record.symbol
        view = open_orders[record.client_order_id]
        assert view["order_id"] == record.engine_id
        assert view["market"] == spec.market
        if "price" in cells:
            assert view["price"] == int(cells["price"]) * spec.tick_size, view
        if "size" in cells:
            assert view["quantity"] == int(cells["size"]) * spec.lot_size, view
        if "filled" in cells:
            assert view["filled_quantity"] == int(cells["filled"]) * spec.lot_size, view
            assert view["leaves_quantity"] == view["quantity"] - view["filled_quantity"]
        if "side" in cells:
            assert view["side"] == SIDES[cells["side"]], view
        if "reservePrice" in cells:
            reserve = int(cells["reservePrice"])
            if view["side"] == "buy":
                assert view["reserve_price"] == reserve * spec.tick_size, view
            else:
                # Not sent to the engine for asks (see the module docs).
                assert view["reserve_price"] == 0, view
                assert record.reserve == reserve, (record, reserve)


@registry.step(r"A client (\w+) does not have active orders")
def no_orders(world: ExchangeCoreWorld, m: re.Match[str], table: Table | None) -> None:
    account = world.account(m.group(1))
    assert world.driver.engine.open_orders(account) == []
    for currency, (asset, _) in CURRENCIES.items():
        balance = world.driver.engine.balance(account, asset)
        assert balance is not None
        assert balance[1] == 0, (currency, balance)


@registry.step(r"A balance of a client (\w+):")
def client_balance(world: ExchangeCoreWorld, m: re.Match[str], table: Table | None) -> None:
    account = world.account(m.group(1))
    for currency, amount in _balance_rows(table):
        balance = world.driver.engine.balance(account, CURRENCIES[currency][0])
        assert balance is not None
        assert balance[0] == amount, f"{currency}: free {balance[0]}, expected {amount}"
