"""Step definitions for MultiBitExchange's Gherkin scenarios (``MultiBitExchange/*.feature``).

The features trade one currency pair with decimal prices down to 1e-8 (``6.24999999``) and
whole quantities, between named brokers. We list one market whose base asset has 0 decimals
and quote asset 8, with 8 price decimals, tick 1 and lot 1 — so a price unit is exactly 1e-8
quote per base unit and one tick of one lot is worth one quote atom. Each broker is an
account, created when first named, with balances far larger than any scenario needs.

A price of ``M`` is a market order (IOC by nature; its unfilled rest is cancelled). "Trades
generated" are those of the last ``the following orders are submitted`` step, in order. The
order book table lists orders, not levels: bids (broker, qty, price) on the left best first,
asks (price, qty, broker) on the right best first, time priority within a price — it is
compared with the engine's whole book, order by order. The quote is best bid, best ask and
their difference.
"""

from __future__ import annotations

import re
from decimal import Decimal

from controlplane.engine_types import OrderView, PlaceOrderCommand, Side, TradeEvent
from tests.scenarios.gherkin import Table
from tests.scenarios.steps import StepRegistry
from tests.scenarios.support import Driver, accepted, done, rejections, trades

BASE, QUOTE = 1, 2
MARKET = 1
PRICE_DECIMALS = 8
#: What every broker starts with: base units and quote atoms (1e8 whole quote units).
BASE_GRANT, QUOTE_GRANT = 10**9, 10**16


def price_units(text: str) -> int:
    """A decimal price as an exact number of price units (1e-8)."""
    units = Decimal(text).scaleb(PRICE_DECIMALS)
    assert units == units.to_integral_value(), f"price {text} is not a multiple of 1e-8"
    assert units > 0, f"price {text} is not positive"
    return int(units)


def price_text(units: int) -> Decimal:
    """Price units back to a decimal price, for messages and comparisons."""
    return Decimal(units).scaleb(-PRICE_DECIMALS).normalize()


class MultiBitWorld:
    """One scenario's exchange: one market, brokers by name."""

    def __init__(self) -> None:
        self.driver = Driver()
        self.brokers: dict[str, int] = {}
        self.names: dict[int, str] = {}
        self.last_trades: list[TradeEvent] = []
        self.driver.apply_ok({"type": "list_asset", "asset": BASE, "decimals": 0})
        self.driver.apply_ok({"type": "list_asset", "asset": QUOTE, "decimals": 8})
        events = self.driver.apply_ok(
            {
                "type": "list_market",
                "market": MARKET,
                "base": BASE,
                "quote": QUOTE,
                "price_decimals": PRICE_DECIMALS,
                "tick_size": 1,
                "lot_size": 1,
                "min_notional": 0,
            }
        )
        assert [e["tick_value"] for e in events if e["type"] == "market_listed"] == [1]

    def check(self) -> None:
        self.driver.engine.check_invariants()

    def broker(self, name: str) -> int:
        """The broker's account, opened and funded on first use."""
        if name not in self.brokers:
            account = len(self.brokers) + 1
            self.driver.apply_ok({"type": "create_account", "account": account, "fee_tier": 0})
            for asset, amount in ((BASE, BASE_GRANT), (QUOTE, QUOTE_GRANT)):
                self.driver.apply_ok(
                    {"type": "deposit", "account": account, "asset": asset, "amount": amount}
                )
            self.brokers[name] = account
            self.names[account] = name
        return self.brokers[name]


registry: StepRegistry[MultiBitWorld] = StepRegistry()


def _rows(table: Table | None, columns: list[str]) -> list[dict[str, str]]:
    """Data rows as dicts, after checking the header names exactly these columns."""
    assert table, "the step needs a table with a header"
    header = table[0]
    assert header[: len(columns)] == columns, header
    return [dict(zip(header, row, strict=True)) for row in table[1:]]


@registry.step(r"the following orders are submitted:")
def submit(world: MultiBitWorld, m: re.Match[str], table: Table | None) -> None:
    world.last_trades = []
    for row in _rows(table, ["Broker", "Side", "Qty", "Price"]):
        side_word = row["Side"].lower()
        assert side_word in ("buy", "sell"), row
        side: Side = "buy" if side_word == "buy" else "sell"
        quantity = int(row["Qty"])
        account = world.broker(row["Broker"])
        order: PlaceOrderCommand = {
            "type": "place_order",
            "account": account,
            "market": MARKET,
            "side": side,
            "order_type": "limit",
            "time_in_force": "gtc",
            "quantity": quantity,
        }
        is_market = row["Price"] == "M"
        if is_market:
            order["order_type"], order["time_in_force"] = "market", "ioc"
        else:
            order["price"] = price_units(row["Price"])
        events = world.driver.apply(order)
        assert not rejections(events), (row, rejections(events))
        assert len(accepted(events)) == 1, events
        fills = trades(events)
        filled = sum(t["quantity"] for t in fills)
        finished = done(events)
        incoming = accepted(events)[0]["order_id"]
        mine = [d for d in finished if d["order_id"] == incoming]
        if filled == quantity:
            assert [d["reason"] for d in mine] == ["filled"], events
        elif is_market:
            # The rest of a market order is cancelled once the book runs out.
            assert [d["reason"] for d in mine] == ["expired"], events
            assert not world.driver.engine.depth(MARKET, "sell" if side == "buy" else "buy", 1)
        else:
            assert not mine, events
            assert world.driver.engine.order(incoming) is not None, events
        world.last_trades.extend(fills)


@registry.step(r"no trades are generated")
def no_trades(world: MultiBitWorld, m: re.Match[str], table: Table | None) -> None:
    assert world.last_trades == []


@registry.step(r"the following trades are generated:")
def trades_generated(world: MultiBitWorld, m: re.Match[str], table: Table | None) -> None:
    expected = [
        (r["Buying broker"], r["Selling broker"], int(r["Qty"]), price_units(r["Price"]))
        for r in _rows(table, ["Buying broker", "Selling broker", "Qty", "Price"])
    ]
    actual = []
    for t in world.last_trades:
        maker, taker = world.names[t["maker_account"]], world.names[t["taker_account"]]
        buyer, seller = (taker, maker) if t["aggressor"] == "buy" else (maker, taker)
        actual.append((buyer, seller, t["quantity"], t["price"]))
    assert actual == expected


def _side(orders: list[OrderView], names: dict[int, str]) -> list[tuple[str, int, int]]:
    return [(names[o["account"]], o["leaves_quantity"], o["price"]) for o in orders]


@registry.step(r"market order book looks like:")
def order_book(world: MultiBitWorld, m: re.Match[str], table: Table | None) -> None:
    """``| Broker | Qty | Price | Price | Qty | Broker |``: bids left, asks right, by order."""
    assert table, "the step needs a table with a header"
    assert table[0] == ["Broker", "Qty", "Price", "Price", "Qty", "Broker"], table[0]
    bids: list[tuple[str, int, int]] = []
    asks: list[tuple[str, int, int]] = []
    for bid_broker, bid_qty, bid_price, ask_price, ask_qty, ask_broker in table[1:]:
        if bid_broker or bid_qty or bid_price:
            bids.append((bid_broker, int(bid_qty), price_units(bid_price)))
        if ask_broker or ask_qty or ask_price:
            asks.append((ask_broker, int(ask_qty), price_units(ask_price)))
    engine = world.driver.engine
    assert _side(engine.book_orders(MARKET, "buy"), world.names) == bids
    assert _side(engine.book_orders(MARKET, "sell"), world.names) == asks


@registry.step(r"the quote looks like:")
def quote(world: MultiBitWorld, m: re.Match[str], table: Table | None) -> None:
    rows = _rows(table, ["Bid", "Ask", "Spread"])
    assert len(rows) == 1, rows
    expected = rows[0]
    engine = world.driver.engine
    best_bid, best_ask = engine.depth(MARKET, "buy", 1), engine.depth(MARKET, "sell", 1)
    assert best_bid, "a quote needs a bid"
    assert best_ask, "a quote needs an ask"
    bid, ask = best_bid[0][0], best_ask[0][0]
    assert bid == price_units(expected["Bid"]), price_text(bid)
    assert ask == price_units(expected["Ask"]), price_text(ask)
    assert ask - bid == price_units(expected["Spread"]), price_text(ask - bid)
