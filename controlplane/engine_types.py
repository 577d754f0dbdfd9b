"""Typed shapes of the dicts that cross the engine boundary.

Commands go in (``Engine.apply``, ``encode_command``); events, orders and markets come out.
They mirror the serde form of the Rust types in ``rust/engine/src`` (``command.rs``,
``event.rs``, ``types.rs``): a ``type`` tag in snake_case plus the variant's fields.

Units: asset amounts are atoms; prices are price units (``p`` means ``p / 10**price_decimals``
quote per whole base) and multiples of the market's tick size; quantities are base atoms and
multiples of its lot size. Account 0 is the fee account.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypeAlias, TypedDict

Side: TypeAlias = Literal["buy", "sell"]
OrderType: TypeAlias = Literal["limit", "market"]
TimeInForce: TypeAlias = Literal["gtc", "ioc", "fok"]
StpMode: TypeAlias = Literal["none", "expire_taker", "expire_maker", "expire_both", "decrement"]
MarketStatus: TypeAlias = Literal["trading", "halted", "delisted"]
AccountStatus: TypeAlias = Literal["active", "frozen"]
CommandKind: TypeAlias = Literal[
    "list_asset",
    "list_market",
    "set_market_status",
    "set_fee_tier",
    "create_account",
    "set_account_fee_tier",
    "set_account_status",
    "deposit",
    "withdraw",
    "place_order",
    "cancel_order",
    "cancel_all",
    "amend_order",
]
RejectReason: TypeAlias = Literal[
    "unknown_asset",
    "asset_exists",
    "unknown_market",
    "market_exists",
    "invalid_market_spec",
    "unknown_account",
    "account_exists",
    "account_frozen",
    "reserved_account",
    "market_halted",
    "market_delisted",
    "zero_quantity",
    "zero_price",
    "price_off_tick",
    "quantity_off_lot",
    "below_min_notional",
    "overflow",
    "insufficient_balance",
    "post_only_would_take",
    "duplicate_client_order_id",
    "order_not_found",
    "invalid_order",
    "price_above_reserve",
    "amend_no_change",
    "unknown_fee_tier",
    "invalid_fee",
    "invalid_status_transition",
    "invalid_decimals",
    "too_many_open_orders",
]
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


class OrderById(TypedDict):
    """Refer to an order by the engine's order id."""

    id: int


class OrderByClientId(TypedDict):
    """Refer to an order by the account's client order id."""

    client: int


OrderRef: TypeAlias = OrderById | OrderByClientId


# --- commands -------------------------------------------------------------------------------


class ListAssetCommand(TypedDict):
    type: Literal["list_asset"]
    asset: int
    decimals: int


class ListMarketCommand(TypedDict):
    type: Literal["list_market"]
    market: int
    base: int
    quote: int
    price_decimals: int
    tick_size: int
    lot_size: int
    min_notional: int


class SetMarketStatusCommand(TypedDict):
    type: Literal["set_market_status"]
    market: int
    status: MarketStatus


class SetFeeTierCommand(TypedDict):
    type: Literal["set_fee_tier"]
    tier: int
    maker_bps: int
    taker_bps: int


class CreateAccountCommand(TypedDict):
    type: Literal["create_account"]
    account: int
    fee_tier: int


class SetAccountFeeTierCommand(TypedDict):
    type: Literal["set_account_fee_tier"]
    account: int
    fee_tier: int


class SetAccountStatusCommand(TypedDict):
    type: Literal["set_account_status"]
    account: int
    status: AccountStatus


class DepositCommand(TypedDict):
    type: Literal["deposit"]
    account: int
    asset: int
    amount: int


class WithdrawCommand(TypedDict):
    type: Literal["withdraw"]
    account: int
    asset: int
    amount: int


class PlaceOrderCommand(TypedDict):
    type: Literal["place_order"]
    account: int
    market: int
    side: Side
    order_type: OrderType
    client_order_id: NotRequired[int]
    time_in_force: NotRequired[TimeInForce]
    post_only: NotRequired[bool]
    stp: NotRequired[StpMode]
    price: NotRequired[int]
    quantity: NotRequired[int]
    quote_quantity: NotRequired[int]
    reserve_price: NotRequired[int]


class CancelOrderCommand(TypedDict):
    type: Literal["cancel_order"]
    account: int
    order: OrderRef


class CancelAllCommand(TypedDict):
    """Cancel the account's open orders: all, or only one market's and/or one side's."""

    type: Literal["cancel_all"]
    account: int
    market: NotRequired[int | None]
    side: NotRequired[Side | None]


class AmendOrderCommand(TypedDict):
    type: Literal["amend_order"]
    account: int
    order: OrderRef
    new_price: NotRequired[int]
    new_quantity: NotRequired[int]


Command: TypeAlias = (
    ListAssetCommand
    | ListMarketCommand
    | SetMarketStatusCommand
    | SetFeeTierCommand
    | CreateAccountCommand
    | SetAccountFeeTierCommand
    | SetAccountStatusCommand
    | DepositCommand
    | WithdrawCommand
    | PlaceOrderCommand
    | CancelOrderCommand
    | CancelAllCommand
    | AmendOrderCommand
)


# --- events ---------------------------------------------------------------------------------


class RejectedEvent(TypedDict):
    type: Literal["rejected"]
    command: CommandKind
    account: int
    order_id: int
    client_order_id: int
    reason: RejectReason


class AssetListedEvent(TypedDict):
    type: Literal["asset_listed"]
    asset: int
    decimals: int


class MarketListedEvent(TypedDict):
    type: Literal["market_listed"]
    market: int
    base: int
    quote: int
    tick_value: int


class MarketStatusChangedEvent(TypedDict):
    type: Literal["market_status_changed"]
    market: int
    status: MarketStatus
    book_seq: int


class FeeTierSetEvent(TypedDict):
    type: Literal["fee_tier_set"]
    tier: int
    maker_bps: int
    taker_bps: int


class AccountCreatedEvent(TypedDict):
    type: Literal["account_created"]
    account: int
    fee_tier: int


class AccountFeeTierSetEvent(TypedDict):
    type: Literal["account_fee_tier_set"]
    account: int
    fee_tier: int


class AccountStatusChangedEvent(TypedDict):
    type: Literal["account_status_changed"]
    account: int
    status: AccountStatus


class DepositedEvent(TypedDict):
    type: Literal["deposited"]
    account: int
    asset: int
    amount: int


class WithdrawnEvent(TypedDict):
    type: Literal["withdrawn"]
    account: int
    asset: int
    amount: int


class BalanceEvent(TypedDict):
    type: Literal["balance"]
    account: int
    asset: int
    free: int
    held: int


class AcceptedEvent(TypedDict):
    """``post_only``, ``stp`` and ``reserve_price`` (0 = none) are as the command asked."""

    type: Literal["accepted"]
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


class TradeEvent(TypedDict):
    """``*_leaves_quantity``: base atoms the order still has open after this fill (0 = done;
    always 0 for a taker that is a market buy by quote amount, whose end is its OrderDone)."""

    type: Literal["trade"]
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


class AmendedEvent(TypedDict):
    type: Literal["amended"]
    order_id: int
    account: int
    market: int
    client_order_id: int
    price: int
    leaves_quantity: int
    kept_priority: bool


class OrderDoneEvent(TypedDict):
    type: Literal["order_done"]
    order_id: int
    account: int
    market: int
    client_order_id: int
    reason: DoneReason
    filled_quantity: int
    cancelled_quantity: int


class MassCancelledEvent(TypedDict):
    type: Literal["mass_cancelled"]
    account: int
    market: int | None
    side: Side | None
    count: int


class BookEvent(TypedDict):
    type: Literal["book"]
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
    RejectedEvent
    | AssetListedEvent
    | MarketListedEvent
    | MarketStatusChangedEvent
    | FeeTierSetEvent
    | AccountCreatedEvent
    | AccountFeeTierSetEvent
    | AccountStatusChangedEvent
    | DepositedEvent
    | WithdrawnEvent
    | BalanceEvent
    | AcceptedEvent
    | TradeEvent
    | AmendedEvent
    | OrderDoneEvent
    | MassCancelledEvent
    | BookEvent
)


# --- query results --------------------------------------------------------------------------


class OrderView(TypedDict):
    """An open order (``Engine.order``, ``open_orders``, ``book_orders``)."""

    order_id: int
    account: int
    market: int
    client_order_id: int
    side: Side
    price: int
    quantity: int
    leaves_quantity: int
    filled_quantity: int
    reserve_price: int
    post_only: bool
    stp: StpMode


class MarketView(TypedDict):
    """A market's specification and status (``Engine.market``)."""

    market: int
    base: int
    quote: int
    price_decimals: int
    tick_size: int
    lot_size: int
    min_notional: int
    tick_value: int
    status: MarketStatus
    book_seq: int


# --- the node (``Node``, ``replay_journal``, ``read_journal``) --------------------------------

Durability: TypeAlias = Literal["fsync", "write", "none"]


class SpinThenPark(TypedDict):
    spins: int
    park_timeout_us: int


class SpinThenParkWait(TypedDict):
    spin_then_park: SpinThenPark


WaitStrategy: TypeAlias = Literal["busy_spin", "yield"] | SpinThenParkWait
"""How idle pipeline threads wait (serde form of ``bourse_node::WaitStrategy``)."""

Pipeline: TypeAlias = Literal["threads", "single"]
"""``bourse_node::Pipeline``: a thread per stage (default) or one thread for all three."""


class Cores(TypedDict, total=False):
    """Cores to pin the pipeline threads to; None (the default) leaves one to the scheduler."""

    sequencer: int | None
    engine: int | None
    publisher: int | None
    gateway: int | None


class NodeConfig(TypedDict, total=False):
    """``bourse_node::NodeConfig``: every key optional (defaults suit a small machine),
    unknown keys rejected."""

    data_dir: str
    durability: Durability
    segment_bytes: int
    preallocate_segments: bool
    snapshot_every_commands: int
    snapshot_every_secs: int
    keep_snapshots: int
    ring_capacity: int
    wait: WaitStrategy
    cores: Cores
    pipeline: Pipeline
    order_capacity: int
    levels_per_side: int
    event_window: int


class RecoveryReport(TypedDict):
    """What recovery found and did (``Node.recovery``)."""

    snapshot_seq: int
    snapshot_file: str | None
    skipped_snapshots: list[str]
    replayed: int
    torn_tail: str | None
    padding_trimmed: int
    next_seq: int
    last_timestamp_ns: int
    state_hash: str
    elapsed_ms: float


class ReplayReport(RecoveryReport):
    """``replay_journal``: the recovery report of a clean replay, plus the invariant check."""

    invariants_ok: bool
    invariant_error: str | None


class Ack(TypedDict):
    """One command's acknowledgement (``Node.submit``)."""

    seq: int
    timestamp_ns: int
    events: list[Event]


class Origin(TypedDict):
    """Who submitted a command, journaled with it: a stable source id and its reference."""

    source: int
    reference: int


class EventLogEntry(TypedDict):
    """One command's entry in the event log (``Node.events``)."""

    seq: int
    timestamp_ns: int
    origin: Origin
    command: Command
    events: list[Event]


class JournalRecord(TypedDict):
    """One journaled command (``read_journal``)."""

    seq: int
    timestamp_ns: int
    origin: Origin
    command: Command


class LatencyHistogram(TypedDict):
    """``bourse_node::HistogramStats``: fixed log-scale buckets (powers of two from 128 ns to
    about 1.07 s), cumulative like Prometheus's ``le`` buckets; ``count`` is the ``+Inf``
    bucket."""

    bounds_ns: list[int]
    cumulative: list[int]
    count: int
    sum_ns: int


class NodeStats(TypedDict):
    """The node's counters (``Node.stats``, ``Node.stop``). The ring depths are commands
    waiting for the sequencer (in the clients' rings), the engine (durable, not applied) and
    the publisher (applied, not published)."""

    durable_seq: int
    applied_seq: int
    published_seq: int
    commits: int
    commit_records: int
    last_commit_ns: int
    snapshots: int
    last_snapshot_seq: int
    last_snapshot_pause_ns: int
    last_snapshot_write_ns: int
    acks_dropped: int
    busy_rejections: int
    sequencer_ring_depth: int
    engine_ring_depth: int
    publisher_ring_depth: int
    engine_apply_ns: LatencyHistogram
    journal_commit_ns: LatencyHistogram


class GatewayConfig(TypedDict, total=False):
    """The binary gateway's settings (``Node.start_gateway``); every key is optional."""

    listen: str
    max_sessions: int
    outbound_buffer_bytes: int
    md_retention: int
    max_subscriptions: int
    subscribes_per_sec: int
    max_pending_logins: int
    heartbeat_min_ms: int
    heartbeat_max_ms: int
    max_clock_skew_ms: int
    login_timeout_ms: int
    throttle_per_sec: int
    throttle_burst: int
    flood_per_sec: int
    flood_burst: int
    spin_us: int
    idle_poll_us: int
    core: int | None
    event_ring: int
    embedded: bool


class GatewayAddress(TypedDict):
    """Where the gateway listens (``Node.start_gateway``)."""

    host: str
    port: int


class GatewayStats(TypedDict):
    """The gateway's counters (``Node.gateway_stats``, ``Node.stop_gateway``)."""

    accepted: int
    active: int
    logins: int
    login_failures: int
    messages_in: int
    messages_out: int
    submitted: int
    busy_rejects: int
    protocol_errors: int
    slow_consumers: int
    replays: int
    routed_seq: int
    cancel_on_disconnect: int
