"""What is listed: assets and markets with their names, and the decimal ↔ integer rules.

The engine knows assets and markets by number; the API speaks of ``BTC`` and ``BTCUSDT``.
:class:`Listing` keeps the names (SQLite tables ``assets`` and ``markets``) and the market
specifications, which must equal the engine's (:meth:`Listing.check_against`). A listing is
recorded here only after the engine accepted it, so every name maps to a listed id.

Numbers on the API are decimal strings (Binance's convention). :func:`parse_decimal` turns
one into an integer count of ``10**-decimals`` units, exactly (no floats), refusing more
digits than the unit allows; :func:`fmt` writes one back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from controlplane import Node
from controlplane.db import Database

U64_MAX = 2**64 - 1
_DECIMAL = re.compile(r"^([0-9]{1,20})(?:\.([0-9]{0,18}))?\Z")


@dataclass(frozen=True)
class Asset:
    id: int
    name: str
    decimals: int


@dataclass(frozen=True)
class Market:
    id: int
    symbol: str
    base: Asset
    quote: Asset
    price_decimals: int
    tick_size: int
    """Price units."""
    lot_size: int
    """Base atoms."""
    min_notional: int
    """Quote atoms."""

    def price_str(self, price: int) -> str:
        """A price in price units as a decimal string with the quote asset's decimals."""
        return fmt(price, self.price_decimals, self.quote.decimals)

    def qty_str(self, quantity: int) -> str:
        """Base atoms as a decimal string."""
        return fmt(quantity, self.base.decimals, self.base.decimals)

    def quote_str(self, amount: int) -> str:
        """Quote atoms as a decimal string."""
        return fmt(amount, self.quote.decimals, self.quote.decimals)

    def notional(self, price: int, quantity: int) -> int:
        """Quote atoms of ``quantity`` base atoms at ``price`` (rounded down)."""
        scale: int = 10**self.quote.decimals
        divisor: int = 10 ** (self.price_decimals + self.base.decimals)
        return price * quantity * scale // divisor


def fmt(units: int, decimals: int, places: int = 8) -> str:
    """``units / 10**decimals`` written with ``places`` decimals, as Binance writes numbers."""
    return f"{Decimal(units).scaleb(-decimals):.{places}f}"


def change_percent(open_price: int, last: int) -> str:
    """(last - open) / open in percent with 3 decimals, half up ("0.013" for 8000 → 8001),
    "0.000" without an open: Binance's ``priceChangePercent``, the same on REST and streams."""
    if open_price == 0:
        return "0.000"
    pct = Decimal((last - open_price) * 100) / Decimal(open_price)
    return str(pct.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP))


class DecimalError(ValueError):
    """Not a plain non-negative decimal, or finer than the unit allows."""


def parse_decimal(text: str, decimals: int) -> int:
    """``"1.25"`` with ``decimals`` 2 → 125. Accepts ``^\\d{1,20}(\\.\\d{0,18})?$``; digits
    beyond ``decimals`` must be zeros (DecimalError otherwise), so nothing is rounded."""
    match = _DECIMAL.match(text)
    if match is None:
        raise DecimalError(f"{text!r} is not a decimal number")
    whole, fraction = match.group(1), match.group(2) or ""
    extra = fraction[decimals:]
    if extra.strip("0"):
        raise DecimalError(f"{text!r} has more than {decimals} decimals")
    fraction = fraction[:decimals].ljust(decimals, "0")
    scale: int = 10**decimals
    return int(whole) * scale + (int(fraction) if fraction else 0)


SCHEMA = [
    [
        """CREATE TABLE assets (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            decimals INTEGER NOT NULL
        )""",
        """CREATE TABLE markets (
            id INTEGER PRIMARY KEY,
            symbol TEXT NOT NULL UNIQUE,
            base INTEGER NOT NULL REFERENCES assets (id),
            quote INTEGER NOT NULL REFERENCES assets (id),
            price_decimals INTEGER NOT NULL,
            tick_size INTEGER NOT NULL,
            lot_size INTEGER NOT NULL,
            min_notional INTEGER NOT NULL
        )""",
    ]
]


class Listing:
    """The named assets and markets (loaded from and recorded to the database)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("listing", SCHEMA)
        self.assets: dict[int, Asset] = {}
        self.assets_by_name: dict[str, Asset] = {}
        self.markets: dict[int, Market] = {}
        self.by_symbol: dict[str, Market] = {}
        for row in db.conn.execute("SELECT id, name, decimals FROM assets ORDER BY id"):
            self._add_asset(Asset(row["id"], row["name"], row["decimals"]))
        for row in db.conn.execute("SELECT * FROM markets ORDER BY id"):
            self._add_market(
                Market(
                    row["id"],
                    row["symbol"],
                    self.assets[row["base"]],
                    self.assets[row["quote"]],
                    row["price_decimals"],
                    row["tick_size"],
                    row["lot_size"],
                    row["min_notional"],
                )
            )

    def _add_asset(self, asset: Asset) -> None:
        self.assets[asset.id] = asset
        self.assets_by_name[asset.name] = asset

    def _add_market(self, market: Market) -> None:
        self.markets[market.id] = market
        self.by_symbol[market.symbol] = market

    def record_asset(self, asset: Asset) -> None:
        """Record an asset the engine has listed (idempotent for the same asset)."""
        if self.assets.get(asset.id) == asset:
            return
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO assets (id, name, decimals) VALUES (?, ?, ?)",
                (asset.id, asset.name, asset.decimals),
            )
        self._add_asset(asset)

    def record_market(self, market: Market) -> None:
        """Record a market the engine has listed (idempotent for the same market)."""
        if self.markets.get(market.id) == market:
            return
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO markets (id, symbol, base, quote, price_decimals, tick_size, "
                "lot_size, min_notional) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    market.id,
                    market.symbol,
                    market.base.id,
                    market.quote.id,
                    market.price_decimals,
                    market.tick_size,
                    market.lot_size,
                    market.min_notional,
                ),
            )
        self._add_market(market)

    def check_against(self, node: Node) -> None:
        """The engine is the authority on specifications: raise RuntimeError if a recorded
        asset or market is not listed in the engine as recorded."""
        engine_assets = dict(node.assets())
        for asset in self.assets.values():
            if engine_assets.get(asset.id) != asset.decimals:
                raise RuntimeError(
                    f"asset {asset.name}: the engine has asset {asset.id} with decimals "
                    f"{engine_assets.get(asset.id)}, the listing says {asset.decimals}"
                )
        engine = {m["market"]: m for m in node.markets()}
        for m in self.markets.values():
            view = engine.get(m.id)
            spec = (
                m.base.id,
                m.quote.id,
                m.price_decimals,
                m.tick_size,
                m.lot_size,
                m.min_notional,
            )
            if view is None:
                raise RuntimeError(f"{m.symbol}: market {m.id} is not listed in the engine")
            listed = (
                view["base"],
                view["quote"],
                view["price_decimals"],
                view["tick_size"],
                view["lot_size"],
                view["min_notional"],
            )
            if listed != spec:
                raise RuntimeError(
                    f"{m.symbol}: the engine's market {m.id} is {listed}, the listing says {spec}"
                )
