"""Order translation between Binance's REST shapes and the engine: client order ids, decimal
parameters and symbol filters, engine rejections as Binance errors, orders as Binance JSON.

Client order ids. The engine knows a client order id as a u64 per account (0 = none) and
refuses a new order whose id is held by an open order of the same account
(``duplicate_client_order_id``). Binance's ``newClientOrderId`` is a string
``^[a-zA-Z0-9-_]{1,36}$``. :class:`ClientOrderIds` maps one to the other:

* a canonical decimal string (no leading zero) of a number in ``1 .. 2**63 - 1`` maps to
  that number, so the binary gateway's numeric ids and REST's agree;
* any other string gets an id allocated per account from ``2**63`` up, stored in the table
  ``client_order_ids`` (account, text, seq) with engine id ``2**63 + seq`` (seq fits SQLite's
  signed 64 bits); unique per account both ways. A string keeps its id for ever, so reusing
  it after its order is done gives the same engine id and queries by it find the newest
  order (the projections return the latest order with an engine id);
* :func:`generated_client_order_id` makes Binance-like ids (``x-`` + 20 base62 characters)
  for orders sent without one, remembered like any other string.

Allocation happens only after every check of the request has passed. A string keeps its id
once allocated, even if the engine then refuses the order it was allocated for: no order
carries the id, so nothing observable changes, and never reusing an id means a concurrent
order that took the same string cannot be renamed.

Decimals and filters (:func:`parse_amount`, :class:`OrderFilters`): a number is
``^([0-9]{1,20})(\\.[0-9]{1,20})?$`` (else ``-1100``); digits finer than the asset's precision
must be zeros (else ``-1111`` "Parameter 'x' has too much precision."); PRICE_FILTER (a
positive multiple of the tick), LOT_SIZE (a positive multiple of the lot, at most the
largest u64 multiple) and NOTIONAL (at least the market's minimum; for a MARKET order at the
best opposite price) fail with ``-1013`` "Filter failure: <FILTER>", the same filters
``exchangeInfo`` publishes.

Complexity: a mapping lookup or allocation is one indexed SQLite statement, O(log n); the
rest is arithmetic on the request.
"""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass
from typing import Any

from controlplane import messages as m
from controlplane.api.errors import (
    BAD_PRECISION,
    FILTER_FAILURE,
    NEW_ORDER_REJECTED,
    ApiError,
    bad_symbol,
    illegal,
)
from controlplane.db import Database
from controlplane.listing import U64_MAX, Market
from controlplane.projections import OrderRow

MODULE = "orders"
ALLOCATED_BASE = 2**63
"""Engine client order ids from here up are allocated for non-numeric strings."""
CLIENT_ID_RANGE = "^[a-zA-Z0-9-_]{1,36}$"
CLIENT_ID = re.compile(r"^[a-zA-Z0-9\-_]{1,36}\Z")
DECIMAL_RANGE = "^([0-9]{1,20})(\\.[0-9]{1,20})?$"
_DECIMAL = re.compile(r"^([0-9]{1,20})(?:\.([0-9]{1,20}))?\Z")
_BASE62 = string.digits + string.ascii_letters
GENERATED_PREFIX = "x-"
GENERATED_LENGTH = 22

SCHEMA = [
    [
        """CREATE TABLE client_order_ids (
            account INTEGER NOT NULL,
            text TEXT NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (account, text),
            UNIQUE (account, seq)
        )""",
    ]
]


def generated_client_order_id() -> str:
    """A fresh client order id as Binance makes them: 22 characters, random."""
    # One call for all the randomness (a per-character ``secrets.choice`` costs a system call
    # each); base62 digits of a 128-bit number, 20 of them (62**20 > 2**119).
    number = int.from_bytes(secrets.token_bytes(16))
    digits = []
    for _ in range(GENERATED_LENGTH - len(GENERATED_PREFIX)):
        number, digit = divmod(number, 62)
        digits.append(_BASE62[digit])
    return GENERATED_PREFIX + "".join(digits)


def numeric_client_id(text: str) -> int | None:
    """The engine id a canonical decimal string maps to (itself), or None."""
    if not text.isascii() or not text.isdigit() or text.startswith("0") or len(text) > 19:
        return None
    value = int(text)
    return value if value < ALLOCATED_BASE else None


class ClientOrderIds:
    """The per-account mapping of client order id strings to engine ids (module docs)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate(MODULE, SCHEMA)

    def lookup(self, account: int, text: str) -> int | None:
        """The engine id of a string already in use by the account, or None."""
        numeric = numeric_client_id(text)
        if numeric is not None:
            return numeric
        row = self.db.conn.execute(
            "SELECT seq FROM client_order_ids WHERE account = ? AND text = ?", (account, text)
        ).fetchone()
        return None if row is None else ALLOCATED_BASE + int(row[0])

    def allocate(self, account: int, text: str) -> tuple[int, bool]:
        """The engine id for a string, allocated if new; and whether it was allocated now."""
        found = self.lookup(account, text)
        if found is not None:
            return found, False
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT MAX(seq) FROM client_order_ids WHERE account = ?", (account,)
            ).fetchone()
            seq = 0 if row[0] is None else int(row[0]) + 1
            conn.execute(
                "INSERT INTO client_order_ids (account, text, seq) VALUES (?, ?, ?)",
                (account, text, seq),
            )
        return ALLOCATED_BASE + seq, True

    def text(self, account: int, engine_id: int) -> str:
        """The string of an engine client order id ("" for none)."""
        if engine_id == 0:
            return ""
        if engine_id < ALLOCATED_BASE:
            return str(engine_id)
        row = self.db.conn.execute(
            "SELECT text FROM client_order_ids WHERE account = ? AND seq = ?",
            (account, engine_id - ALLOCATED_BASE),
        ).fetchone()
        return str(engine_id) if row is None else str(row[0])


# --- decimals and filters -------------------------------------------------------------------


def filter_failure(name: str) -> ApiError:
    return ApiError(FILTER_FAILURE, f"Filter failure: {name}")


def rejected(msg: str) -> ApiError:
    return ApiError(NEW_ORDER_REJECTED, msg)


def parse_amount(name: str, text: str, decimals: int) -> int:
    """``text`` as a count of ``10**-decimals`` units: -1100 if not a decimal number,
    -1111 if it has non-zero digits beyond ``decimals``."""
    match = _DECIMAL.match(text)
    if match is None:
        raise illegal(name, DECIMAL_RANGE)
    whole, fraction = match.group(1), match.group(2) or ""
    if fraction[decimals:].strip("0"):
        raise ApiError(BAD_PRECISION, f"Parameter '{name}' has too much precision.")
    fraction = fraction[:decimals].ljust(decimals, "0")
    scale: int = 10**decimals
    return int(whole) * scale + (int(fraction) if fraction else 0)


@dataclass(frozen=True)
class OrderFilters:
    """A market's symbol filters, as ``exchangeInfo`` publishes them."""

    market: Market

    @property
    def price_digits(self) -> int:
        return max(self.market.price_decimals, self.market.quote.decimals)

    def price(self, text: str, name: str = "price") -> int:
        """A price in price units: -1111 beyond the quote precision, PRICE_FILTER unless a
        positive multiple of the tick."""
        mk = self.market
        raw = parse_amount(name, text, self.price_digits)
        unit: int = 10 ** (self.price_digits - mk.price_decimals)
        if raw == 0 or raw % unit or raw // unit > U64_MAX or (raw // unit) % mk.tick_size:
            raise filter_failure("PRICE_FILTER")
        return raw // unit

    def quantity(self, text: str, name: str = "quantity") -> int:
        """Base atoms: -1111 beyond the base precision, LOT_SIZE unless a positive multiple
        of the lot within the largest quantity."""
        mk = self.market
        quantity = parse_amount(name, text, mk.base.decimals)
        if quantity == 0 or quantity % mk.lot_size or quantity > U64_MAX:
            raise filter_failure("LOT_SIZE")
        return quantity

    def quote_amount(self, text: str, name: str = "quoteOrderQty") -> int:
        """Quote atoms: -1111 beyond the quote precision; NOTIONAL below the minimum."""
        mk = self.market
        amount = parse_amount(name, text, mk.quote.decimals)
        if amount < max(mk.min_notional, 1) or amount > U64_MAX:
            raise filter_failure("NOTIONAL")
        return amount

    def notional(self, price: int, quantity: int) -> None:
        """NOTIONAL: ``price * quantity`` at least the minimum (and within u64)."""
        value = self.market.notional(price, quantity)
        if value < self.market.min_notional or value > U64_MAX:
            raise filter_failure("NOTIONAL")


# --- engine rejections ----------------------------------------------------------------------

_FILTER_OF_REASON = {
    "zero_quantity": "LOT_SIZE",
    "quantity_off_lot": "LOT_SIZE",
    "zero_price": "PRICE_FILTER",
    "price_off_tick": "PRICE_FILTER",
    "below_min_notional": "NOTIONAL",
    "overflow": "NOTIONAL",
    "too_many_open_orders": "EXCHANGE_MAX_NUM_ORDERS",
}
_NEW_ORDER_MESSAGES = {
    "insufficient_balance": "Account has insufficient balance for requested action.",
    "post_only_would_take": "Order would immediately match and take.",
    "duplicate_client_order_id": "Duplicate order sent.",
    "market_halted": "Market is closed.",
    "market_delisted": "Market is closed.",
    "account_frozen": "This account may not place or cancel orders.",
    "invalid_order": "Unsupported order combination",
    "order_not_found": "Unknown order sent.",
}


def rejection_error(reason: str, code: int = NEW_ORDER_REJECTED) -> ApiError:
    """Binance's error for an engine rejection of a command (``code``: -2010 for new
    orders, -2011 for cancels)."""
    if reason in _FILTER_OF_REASON:
        return filter_failure(_FILTER_OF_REASON[reason])
    if reason == "unknown_market":
        return bad_symbol()
    return ApiError(code, _NEW_ORDER_MESSAGES.get(reason, f"Order rejected: {reason}."))


# --- orders as Binance JSON -----------------------------------------------------------------

NS_PER_MS = 1_000_000


def order_type(row: OrderRow | m.Accepted) -> str:
    if row.order_type == "market":
        return "MARKET"
    return "LIMIT_MAKER" if row.post_only else "LIMIT"


def time_in_force(row: OrderRow) -> str:
    """Binance shows GTC for MARKET and LIMIT_MAKER orders."""
    if row.order_type == "market" or row.post_only:
        return "GTC"
    return row.time_in_force.upper()


def orig_qty(row: OrderRow) -> int:
    """A market buy by quote amount has no quantity of its own: what it bought."""
    return row.quantity if row.quantity or row.order_type == "limit" else row.executed_qty


def order_fields(mk: Market, row: OrderRow) -> dict[str, Any]:
    """The fields every order response shares, from price to side (Binance's order)."""
    return {
        "price": mk.price_str(row.price if row.order_type == "limit" else 0),
        "origQty": mk.qty_str(orig_qty(row)),
        "executedQty": mk.qty_str(row.executed_qty),
        "origQuoteOrderQty": mk.quote_str(row.quote_quantity),
        "cummulativeQuoteQty": mk.quote_str(row.cumulative_quote_qty),
        "status": row.status,
        "timeInForce": time_in_force(row),
        "type": order_type(row),
        "side": row.side.upper(),
    }


def query_json(mk: Market, row: OrderRow, client_order_id: str) -> dict[str, Any]:
    """``GET /api/v3/order``, ``openOrders``, ``allOrders``."""
    return {
        "symbol": mk.symbol,
        "orderId": row.order_id,
        "orderListId": -1,
        "clientOrderId": client_order_id,
        **order_fields(mk, row),
        "stopPrice": mk.price_str(0),
        "icebergQty": mk.qty_str(0),
        "time": row.created_ns // NS_PER_MS,
        "updateTime": row.updated_ns // NS_PER_MS,
        "isWorking": True,
        "workingTime": row.working_ns // NS_PER_MS,
        "selfTradePreventionMode": row.stp.upper(),
    }


def cancel_json(
    mk: Market, row: OrderRow, orig_client_order_id: str, cancel_id: str, transact_ms: int
) -> dict[str, Any]:
    """``DELETE /api/v3/order`` (and each order of ``DELETE /api/v3/openOrders``)."""
    return {
        "symbol": mk.symbol,
        "origClientOrderId": orig_client_order_id,
        "orderId": row.order_id,
        "orderListId": -1,
        "clientOrderId": cancel_id,
        "transactTime": transact_ms,
        **order_fields(mk, row),
        "selfTradePreventionMode": row.stp.upper(),
    }
