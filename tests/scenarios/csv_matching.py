"""The csv-matching scenarios: an order-book exercise's input commands and expected output.

Input (``inputFile.csv``), one command a line, ``#`` comments, blank lines ignored:

* ``N, user, symbol, price, qty, B|S, userOrderId`` — a new order; price 0 is a market order,
  anything else a GTC limit order;
* ``C, user, userOrderId`` — cancel;
* ``F`` — end of a scenario: the next one starts on empty books.

Output (``output_file.csv``, given for the odd-numbered scenarios only), per command:

* ``A, user, userOrderId`` — the order (or cancel: ``C, user, userOrderId``) was acknowledged;
* ``T, buyUser, buyOrderId, sellUser, sellOrderId, price, qty`` — one line per fill, in order;
* ``B, B|S, price, qty`` (``B, S, -, -`` when a side is empty) — the top of book of a side,
  after the command, for each side whose best price or total quantity at the best price
  changed. This rule is read off the expected output: it holds for every line of it (an order
  resting behind the best, or a cancel behind it, prints no ``B`` line; a fill that leaves the
  best price with less quantity prints one). When both sides change in one command (an order
  that trades and then rests; no scenario with expected output does that) the buy side is
  printed first.

The input's comments also state the top of book after each block of commands
(``# hit book on each side, generate trades, TOB = 9/12``); those are checked too, for every
scenario, as are the engine's invariants after every command. One comment is wrong, and
:data:`TOB_CORRECTIONS` says which and why.

Engine mapping: one market per symbol (base asset per symbol, a shared quote asset, all with
0 decimals, price decimals 0, tick 1, lot 1, so prices and quantities are the file's
integers); users are accounts with the same ids, funded far beyond any scenario's needs;
user order ids are client order ids. Every expected line agrees with price-time priority.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from controlplane.engine_types import PlaceOrderCommand, Side
from tests.scenarios.support import Driver, accepted, done, rejections, trades

Line = tuple[str, ...]
QUOTE = 1
#: Base units of every symbol and quote units every user starts with.
BASE_GRANT, QUOTE_GRANT = 10**9, 10**12
#: Input line of a ``TOB`` comment -> (what it states, what the commands actually give), for
#: comments that contradict their own commands. Scenario 8's first block copies the usual
#: "build book, TOB = 10/11", but its asks are at 16 and 15 (there is no ask at 11), so no
#: engine can show 10/11; the next comment (11/14) agrees with 10/15 here.
TOB_CORRECTIONS: dict[int, tuple[tuple[int, int], tuple[int, int]]] = {118: ((10, 11), (10, 15))}
#: Book sides in the order their ``B`` lines are printed, with their letter.
SIDES: tuple[tuple[Side, str], ...] = (("buy", "B"), ("sell", "S"))
_TOB = re.compile(r"TOB = (\d+|-)/(\d+|-)")


@dataclass(frozen=True)
class NewOrder:
    """``N, user, symbol, price, qty, side, userOrderId``."""

    user: int
    symbol: str
    price: int
    qty: int
    side: Side
    oid: int
    line: int


@dataclass(frozen=True)
class Cancel:
    """``C, user, userOrderId``."""

    user: int
    oid: int
    line: int


@dataclass(frozen=True)
class TopOfBook:
    """A comment's ``TOB = bid/ask`` (None for ``-``), to hold after the commands before it."""

    bid: int | None
    ask: int | None
    line: int


Item = NewOrder | Cancel | TopOfBook


@dataclass
class Scenario:
    """One scenario of the input file."""

    number: int
    name: str = ""
    description: str = ""
    items: list[Item] = field(default_factory=list)

    @property
    def symbols(self) -> list[str]:
        return list(dict.fromkeys(i.symbol for i in self.items if isinstance(i, NewOrder)))

    @property
    def users(self) -> list[int]:
        return sorted({i.user for i in self.items if isinstance(i, NewOrder | Cancel)})


def _fields(line: str) -> list[str]:
    return [f.strip() for f in line.split(",")]


def parse_input(path: Path) -> list[Scenario]:
    """Split the input file into scenarios at each ``F``."""
    scenarios: list[Scenario] = []
    current = Scenario(number=1)
    pending: TopOfBook | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            text = line.lstrip("#").strip()
            if text.startswith("name:"):
                current.name = text[len("name:") :].strip()
            elif text.startswith("descr:"):
                current.description = text[len("descr:") :].strip()
            elif (m := _TOB.search(text)) is not None:
                if pending is not None:
                    current.items.append(pending)
                bid, ask = (None if g == "-" else int(g) for g in m.groups())
                if number in TOB_CORRECTIONS:
                    stated, (bid, ask) = TOB_CORRECTIONS[number]
                    assert m.groups() == tuple(map(str, stated)), f"{path}:{number} changed"
                pending = TopOfBook(bid, ask, number)
            continue
        f = _fields(line)
        if f == ["F"]:
            if pending is not None:
                current.items.append(pending)
                pending = None
            scenarios.append(current)
            current = Scenario(number=len(scenarios) + 1)
        elif f[0] == "N" and len(f) == 7:
            assert f[5] in ("B", "S"), f"{path}:{number}: side {f[5]!r}"
            side: Side = "buy" if f[5] == "B" else "sell"
            current.items.append(
                NewOrder(int(f[1]), f[2], int(f[3]), int(f[4]), side, int(f[6]), number)
            )
        elif f[0] == "C" and len(f) == 3:
            current.items.append(Cancel(int(f[1]), int(f[2]), number))
        else:
            raise ValueError(f"{path}:{number}: cannot parse {line!r}")
    assert not current.items, f"{path}: commands after the last F"
    return scenarios


def parse_output(path: Path) -> dict[str, list[Line]]:
    """Expected output lines by scenario name (``#name: scenario N`` headers)."""
    expected: dict[str, list[Line]] = {}
    name: str | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            text = line.lstrip("#").strip()
            if text.startswith("name:"):
                name = text[len("name:") :].strip()
                assert name not in expected, f"{path}:{number}: {name} again"
                expected[name] = []
            continue
        assert name is not None, f"{path}:{number}: output before any '#name:'"
        expected[name].append(tuple(_fields(line)))
    return expected


@dataclass
class Replay:
    """What running a scenario gave: its output lines and the top-of-book checks made."""

    output: list[Line]
    tob_checks: int


def _top(driver: Driver, market: int) -> dict[Side, tuple[int, int] | None]:
    top: dict[Side, tuple[int, int] | None] = {}
    for side, _ in SIDES:
        levels = driver.engine.depth(market, side, 1)
        top[side] = (levels[0][0], levels[0][1]) if levels else None
    return top


def run(scenario: Scenario) -> Replay:
    """Replay a scenario on a fresh engine; every command is checked as it goes."""
    driver = Driver()
    driver.apply_ok({"type": "list_asset", "asset": QUOTE, "decimals": 0})
    markets: dict[str, int] = {}
    for n, symbol in enumerate(scenario.symbols, start=1):
        base = QUOTE + n
        driver.apply_ok({"type": "list_asset", "asset": base, "decimals": 0})
        driver.apply_ok(
            {
                "type": "list_market",
                "market": n,
                "base": base,
                "quote": QUOTE,
                "price_decimals": 0,
                "tick_size": 1,
                "lot_size": 1,
                "min_notional": 0,
            }
        )
        markets[symbol] = n
    for user in scenario.users:
        assert user != 0, "user 0 would be the fee account"
        driver.apply_ok({"type": "create_account", "account": user, "fee_tier": 0})
        grants = [(QUOTE, QUOTE_GRANT), *((QUOTE + n, BASE_GRANT) for n in markets.values())]
        for asset, amount in grants:
            driver.apply_ok({"type": "deposit", "account": user, "asset": asset, "amount": amount})

    output: list[Line] = []
    owners: dict[int, tuple[int, int]] = {}  # engine order id -> (user, user order id)
    market_of: dict[tuple[int, int], int] = {}  # (user, user order id) -> market
    market = 0
    checks = 0
    for item in scenario.items:
        if isinstance(item, TopOfBook):
            assert market, f"line {item.line}: top of book before any order"
            top = _top(driver, market)
            actual = tuple(None if t is None else t[0] for t in (top["buy"], top["sell"]))
            assert actual == (item.bid, item.ask), f"line {item.line}: TOB {actual}"
            checks += 1
            continue
        if isinstance(item, NewOrder):
            market = markets[item.symbol]
            before = _top(driver, market)
            order: PlaceOrderCommand = {
                "type": "place_order",
                "account": item.user,
                "market": market,
                "client_order_id": item.oid,
                "side": item.side,
                "order_type": "limit",
                "time_in_force": "gtc",
                "quantity": item.qty,
            }
            if item.price == 0:
                order["order_type"], order["time_in_force"] = "market", "ioc"
            else:
                order["price"] = item.price
            events = driver.apply(order)
            assert not rejections(events), (item, events)
            (ack,) = accepted(events)
            owners[ack["order_id"]] = (item.user, item.oid)
            market_of[item.user, item.oid] = market
            output.append(("A", str(item.user), str(item.oid)))
            for t in trades(events):
                buy, sell = t["maker_order_id"], t["taker_order_id"]
                if t["aggressor"] == "buy":
                    buy, sell = sell, buy
                output.append(
                    ("T", *map(str, (*owners[buy], *owners[sell], t["price"], t["quantity"])))
                )
        else:
            market = market_of[item.user, item.oid]
            before = _top(driver, market)
            events = driver.apply_ok(
                {"type": "cancel_order", "account": item.user, "order": {"client": item.oid}}
            )
            assert [d["reason"] for d in done(events)] == ["cancelled"], events
            output.append(("C", str(item.user), str(item.oid)))
        after = _top(driver, market)
        for side, letter in SIDES:
            if after[side] != before[side]:
                level = after[side]
                shown = ("-", "-") if level is None else (str(level[0]), str(level[1]))
                output.append(("B", letter, *shown))
    assert driver.engine.open_orders(0) == []
    return Replay(output, checks)
