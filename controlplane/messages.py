"""The messages between the engine and the control plane, as msgspec Structs.

Commands go to the node (:class:`controlplane.bridge.EngineBridge`); each command's events
come back in its acknowledgement and, in sequence order, on the event stream
(:class:`controlplane.bridge.EventFeed`). Every union is tagged by ``type`` (the snake_case
variant name), exactly the serde form of the Rust types in ``rust/engine/src/command.rs``
and ``event.rs`` and of ``bourse_node::CommandEvents``, so one decoder reads both the
msgpack the node encodes and the dicts of the dict-based bindings.

Units are the engine's: asset amounts in atoms, prices in price units (multiples of the
market's tick size), quantities in base atoms (multiples of its lot size). Account 0 is the
fee account. :data:`VERSION` is the version of these shapes; the node refuses to speak to a
control plane of another version.

Invariants: every field is an int, a bool, a short literal or a nested Struct (no floats);
decoding rejects unknown tags and wrong types, so a mismatch with the engine fails loudly.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import msgspec

VERSION = 1
"""The version of the message shapes (bumped on any incompatible change)."""

Side: TypeAlias = Literal["buy", "sell"]
OrderType: TypeAlias = Literal["limit", "market"]
TimeInForce: TypeAlias = Literal["gtc", "ioc", "fok"]
StpMode: TypeAlias = Literal["none", "expire_taker", "expire_maker", "expire_both", "decrement"]
MarketStatus: TypeAlias = Literal["trading", "halted", "delisted"]
AccountStatus: TypeAlias = Literal["active", "frozen"]
DoneReason: TypeAlias = Literal[
    "filled",
    "cancelled",
    "expired",
    "fok_unfilled",
    "self_trade",
    "protection_limit",
    "budget_exhausted",
    "delisted",
]
BookAction: TypeAlias = Literal["add", "reduce", "fill", "remove"]
RejectReason: TypeAlias = str
"""One of ``controlplane.engine_types.RejectReason`` (kept open so that a reason added to
the engine does not make the stream undecodable)."""


class _Message(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class OrderRef(_Message, omit_defaults=True):
    """An order by the engine's id (``id``) or by its account's client order id (``client``):
    exactly one is set."""

    id: int | None = None
    client: int | None = None


# --- commands -------------------------------------------------------------------------------


class _Command(_Message, tag_field="type"):
    pass


class ListAsset(_Command, tag="list_asset"):
    asset: int
    decimals: int


class ListMarket(_Command, tag="list_market"):
    market: int
    base: int
    quote: int
    price_decimals: int
    tick_size: int
    lot_size: int
    min_notional: int


class SetMarketStatus(_Command, tag="set_market_status"):
    market: int
    status: MarketStatus


class SetFeeTier(_Command, tag="set_fee_tier"):
    tier: int
    maker_bps: int
    taker_bps: int


class CreateAccount(_Command, tag="create_account"):
    account: int
    fee_tier: int = 0


class SetAccountFeeTier(_Command, tag="set_account_fee_tier"):
    account: int
    fee_tier: int


class SetAccountStatus(_Command, tag="set_account_status"):
    account: int
    status: AccountStatus


class Deposit(_Command, tag="deposit"):
    account: int
    asset: int
    amount: int


class Withdraw(_Command, tag="withdraw"):
    account: int
    asset: int
    amount: int


class PlaceOrder(_Command, tag="place_order"):
    """A limit order has ``price`` and ``quantity``; a market order ``quantity`` (base) or,
    for a buy, ``quote_quantity`` (a budget in quote atoms), and ``reserve_price`` (0 = none)
    as its protection limit. ``client_order_id`` 0 = none."""

    account: int
    market: int
    side: Side
    order_type: OrderType
    client_order_id: int = 0
    time_in_force: TimeInForce = "gtc"
    post_only: bool = False
    stp: StpMode = "none"
    price: int = 0
    quantity: int = 0
    quote_quantity: int = 0
    reserve_price: int = 0


class CancelOrder(_Command, tag="cancel_order"):
    account: int
    order: OrderRef


class CancelAll(_Command, tag="cancel_all"):
    """The account's open orders: all, or one market's and/or one side's."""

    account: int
    market: int | None = None
    side: Side | None = None


class AmendOrder(_Command, tag="amend_order"):
    """0 = unchanged. Reducing the quantity alone keeps the order's priority."""

    account: int
    order: OrderRef
    new_price: int = 0
    new_quantity: int = 0


Command: TypeAlias = (
    ListAsset
    | ListMarket
    | SetMarketStatus
    | SetFeeTier
    | CreateAccount
    | SetAccountFeeTier
    | SetAccountStatus
    | Deposit
    | Withdraw
    | PlaceOrder
    | CancelOrder
    | CancelAll
    | AmendOrder
)


# --- events ---------------------------------------------------------------------------------


class _Event(_Message, tag_field="type"):
    pass


class Rejected(_Event, tag="rejected"):
    command: str
    account: int
    order_id: int
    client_order_id: int
    reason: RejectReason


class AssetListed(_Event, tag="asset_listed"):
    asset: int
    decimals: int


class MarketListed(_Event, tag="market_listed"):
    market: int
    base: int
    quote: int
    tick_value: int


class MarketStatusChanged(_Event, tag="market_status_changed"):
    market: int
    status: MarketStatus
    book_seq: int


class FeeTierSet(_Event, tag="fee_tier_set"):
    tier: int
    maker_bps: int
    taker_bps: int


class AccountCreated(_Event, tag="account_created"):
    account: int
    fee_tier: int


class AccountFeeTierSet(_Event, tag="account_fee_tier_set"):
    account: int
    fee_tier: int


class AccountStatusChanged(_Event, tag="account_status_changed"):
    account: int
    status: AccountStatus


class Deposited(_Event, tag="deposited"):
    account: int
    asset: int
    amount: int


class Withdrawn(_Event, tag="withdrawn"):
    account: int
    asset: int
    amount: int


class Balance(_Event, tag="balance"):
    """An account's balance of an asset after the command: ``free`` and ``held`` (by open
    orders)."""

    account: int
    asset: int
    free: int
    held: int


class Accepted(_Event, tag="accepted"):
    order_id: int
    account: int
    market: int
    client_order_id: int
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    post_only: bool
    stp: StpMode
    price: int
    quantity: int
    quote_quantity: int
    reserve_price: int


class Trade(_Event, tag="trade"):
    """``*_leaves_quantity``: what the order still has open after this fill (0 = done)."""

    market: int
    trade_id: int
    price: int
    quantity: int
    quote_quantity: int
    aggressor: Side
    maker_order_id: int
    taker_order_id: int
    maker_account: int
    taker_account: int
    maker_client_order_id: int
    taker_client_order_id: int
    maker_fee: int
    taker_fee: int
    maker_leaves_quantity: int
    taker_leaves_quantity: int


class Amended(_Event, tag="amended"):
    order_id: int
    account: int
    market: int
    client_order_id: int
    price: int
    leaves_quantity: int
    kept_priority: bool


class OrderDone(_Event, tag="order_done"):
    order_id: int
    account: int
    market: int
    client_order_id: int
    reason: DoneReason
    filled_quantity: int
    cancelled_quantity: int


class MassCancelled(_Event, tag="mass_cancelled"):
    account: int
    market: int | None
    side: Side | None
    count: int


class Book(_Event, tag="book"):
    """One change to a market's book, with the level's totals after it; ``book_seq`` is
    dense per market."""

    market: int
    book_seq: int
    action: BookAction
    order_id: int
    side: Side
    price: int
    order_quantity: int
    delta: int
    level_quantity: int
    level_orders: int


Event: TypeAlias = (
    Rejected
    | AssetListed
    | MarketListed
    | MarketStatusChanged
    | FeeTierSet
    | AccountCreated
    | AccountFeeTierSet
    | AccountStatusChanged
    | Deposited
    | Withdrawn
    | Balance
    | Accepted
    | Trade
    | Amended
    | OrderDone
    | MassCancelled
    | Book
)


# --- acknowledgements and the event stream --------------------------------------------------


class Origin(_Message):
    """Who submitted a command: a stable source id (0 = unnamed) and its reference."""

    source: int
    reference: int


class Ack(_Message):
    """One command's acknowledgement: journaled under the node's policy and applied."""

    seq: int
    timestamp_ns: int
    events: list[Event]

    def rejection(self) -> Rejected | None:
        """The command's rejection, if the engine refused it."""
        for event in self.events:
            if isinstance(event, Rejected):
                return event
        return None


class Entry(_Message):
    """One command in the event stream: its sequence number, sequencer timestamp (ns since
    the Unix epoch), origin, the command and its events."""

    seq: int
    timestamp_ns: int
    origin: Origin
    command: Command
    events: list[Event]


def to_wire(command: Command) -> dict[str, object]:
    """The dict form of a command (for the dict-based bindings)."""
    wire: dict[str, object] = msgspec.to_builtins(command)
    return wire
