"""The Bourse binary protocol, schema version 1: every message, its wire form, and a streaming
decoder. Pure: no I/O, no clock, no randomness.

The normative description is ``docs/protocol.md``; the SBE-style schema ``docs/protocol.xml``
(generated from the Rust definitions in ``rust/gateway/src/protocol``) is the source of truth
for template ids, offsets, sizes and codes. ``tests/test_gateway_codec.py`` parses that XML and
checks every template, field, offset, size and code against this module, so the two cannot
drift apart silently.

Wire format::

    frame  = length:uint16  header  body
    header = blockLength:uint16  templateId:uint16  schemaId:uint16  version:uint16

Every integer is unsigned little-endian; ``length`` (header + body) is at most
:data:`MAX_FRAME_LEN`; each template has exactly one block length.

Python shapes:

* Every message is a frozen, slotted dataclass whose fields are declared in wire order with
  the same names as the schema. ``uint*`` and ``MarketId`` fields are ``int``; enumerations are
  :class:`enum.IntEnum` subclasses whose members carry the schema's codes (member names are
  the schema names in UPPER_SNAKE_CASE: ``StpMode.EXPIRE_TAKER`` is ``ExpireTaker``);
  ``Bool`` fields are ``bool``; ``Nonce``/``Signature`` are 32-byte ``bytes``; ``LoginFlags``
  is an :class:`enum.IntFlag`; ``OrderRef`` is :class:`OrderRef`; ``OptionalMarket`` is
  ``int | None`` (``None`` = every market).
* :func:`encode` (or ``msg.encode()``) returns the whole frame, length prefix included.
* :func:`decode` takes one whole frame with its prefix, :func:`decode_frame` one frame
  without it, and :class:`FrameDecoder` any chunking of a byte stream.

Invariants:

* Decoding is total: any byte string either decodes to exactly one message or raises
  :class:`ProtocolDecodeError` whose ``reason`` is the :class:`ProtocolErrorCode` a Bourse
  server would answer with (``FRAME_TOO_LARGE``, ``FRAME_TOO_SHORT``, ``WRONG_SCHEMA``,
  ``UNSUPPORTED_VERSION``, ``UNKNOWN_TEMPLATE``, ``BAD_BLOCK_LENGTH``, ``TRUNCATED``,
  ``TRAILING_BYTES``, ``INVALID_VALUE``), checked in that order, fields in wire order.
* The encoding is canonical: ``decode(b) == m`` implies ``encode(m) == b``. Values outside a
  code table, a ``Bool`` other than 0/1, undefined flag bits, an order reference kind other
  than 1/2 and an absent optional market with a non-zero id are decoding errors, and
  :func:`encode` refuses to produce them (:class:`ProtocolEncodeError`).
* A :class:`FrameDecoder` that raised is poisoned: a byte stream has no resynchronisation
  point, so every later :meth:`FrameDecoder.feed` raises the same error.

Complexity: encoding and decoding a message is O(frame length) with one precompiled
:class:`struct.Struct` call; :meth:`FrameDecoder.feed` is O(bytes fed + bytes kept).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Final, TypeAlias, TypeVar, get_type_hints

__all__ = [
    "BOOK_CHANGE_TYPES",
    "COMPOSITES",
    "ENUMS",
    "HEADER_LEN",
    "LENGTH_PREFIX_LEN",
    "LOGIN_FLAG_BITS",
    "LOGIN_SIGNING_PAYLOAD_LEN",
    "MAX_FRAME_LEN",
    "MESSAGE_TYPES",
    "REPLY_TYPES",
    "REQUEST_TYPES",
    "SCHEMA_ID",
    "SCHEMA_VERSION",
    "SEQUENCED_TYPES",
    "TEMPLATES",
    "TYPES",
    "AmendOrder",
    "BookChange",
    "Bool",
    "CancelOrder",
    "CancelReason",
    "Challenge",
    "EndOfSession",
    "EndReason",
    "FeedKind",
    "FieldSpec",
    "FrameDecoder",
    "Heartbeat",
    "Liquidity",
    "Login",
    "LoginAccepted",
    "LoginFlags",
    "LoginRejectReason",
    "LoginRejected",
    "Logout",
    "MarketStatus",
    "MassCancel",
    "MassCancelReport",
    "MdAdd",
    "MdDelete",
    "MdExecute",
    "MdLevel",
    "MdMarketStatus",
    "MdReduce",
    "MdRetransmitReply",
    "MdRetransmitRequest",
    "MdSnapshotEnd",
    "MdSnapshotLevel",
    "MdSnapshotOrder",
    "MdSnapshotStart",
    "MdSubscribe",
    "MdSubscribeRejected",
    "MdTopOfBook",
    "MdTrade",
    "MdUnsubscribe",
    "Message",
    "MessageSpec",
    "NewOrder",
    "OrderAccepted",
    "OrderAmended",
    "OrderCancelled",
    "OrderExecuted",
    "OrderRef",
    "OrderRefKind",
    "OrderRejected",
    "OrderType",
    "ProtocolDecodeError",
    "ProtocolEncodeError",
    "ProtocolError",
    "ProtocolErrorCode",
    "RejectCode",
    "Reply",
    "Request",
    "RetransmitStatus",
    "Sequenced",
    "SessionKind",
    "Side",
    "SideFilter",
    "StpMode",
    "SubscribeRejectReason",
    "TimeInForce",
    "WireMessage",
    "WireType",
    "decode",
    "decode_frame",
    "encode",
    "encode_many",
    "login_signing_payload",
    "message_specs",
    "schema_name",
    "sign",
    "signed_login",
    "split_stream_seq",
    "stream_seq",
]

# ---- Constants ----------------------------------------------------------------------------

SCHEMA_ID: Final = 0x5342
"""The schema id in every header: 21314, the bytes ``B`` ``S`` on the wire."""
SCHEMA_VERSION: Final = 1
"""The schema version this module speaks (and the only one it accepts)."""
LENGTH_PREFIX_LEN: Final = 2
"""Bytes of the length prefix before every frame."""
HEADER_LEN: Final = 8
"""Bytes of the SBE message header."""
MAX_FRAME_LEN: Final = 1024
"""The largest allowed length prefix (header + body)."""
LOGIN_SIGNING_PAYLOAD_LEN: Final = 62
"""Bytes of the payload the Login signature is an HMAC-SHA256 of."""


def stream_seq(node_seq: int, index: int) -> int:
    """An outbound stream position: ``node_seq << 16 | index`` (``index`` < 65,536)."""
    if not 0 <= index <= 0xFFFF:
        raise ValueError(f"index {index} does not fit in 16 bits")
    return (node_seq << 16) | index


def split_stream_seq(seq: int) -> tuple[int, int]:
    """Split an outbound stream position into ``(node_seq, index)``."""
    return seq >> 16, seq & 0xFFFF


# ---- Code tables --------------------------------------------------------------------------


class Bool(enum.IntEnum):
    """A boolean (message fields of this type are Python ``bool``)."""

    FALSE = 0
    TRUE = 1


class Side(enum.IntEnum):
    """Side of an order."""

    BUY = 1
    SELL = 2


class OrderType(enum.IntEnum):
    """Order type."""

    LIMIT = 1
    MARKET = 2


class TimeInForce(enum.IntEnum):
    """Time in force."""

    GTC = 1
    IOC = 2
    FOK = 3


class StpMode(enum.IntEnum):
    """Self-trade prevention mode (the incoming order's decides)."""

    NONE = 1
    EXPIRE_TAKER = 2
    EXPIRE_MAKER = 3
    EXPIRE_BOTH = 4
    DECREMENT = 5


class MarketStatus(enum.IntEnum):
    """Trading status of a market."""

    TRADING = 1
    HALTED = 2
    DELISTED = 3


class OrderRefKind(enum.IntEnum):
    """Which order a cancel or amend names (the first byte of an :class:`OrderRef`)."""

    ORDER_ID = 1
    CLIENT_ORDER_ID = 2


class SideFilter(enum.IntEnum):
    """Mass-cancel side filter: 0 = both sides."""

    BOTH = 0
    BUY = 1
    SELL = 2


class SessionKind(enum.IntEnum):
    """What a session is for, chosen at login."""

    ORDER_ENTRY = 1
    DROP_COPY = 2
    MARKET_DATA = 3


class LoginRejectReason(enum.IntEnum):
    """Why a login was refused."""

    BAD_SIGNATURE = 1
    STALE_TIMESTAMP = 2
    NONCE_MISMATCH = 3
    NONCE_REUSED = 4
    UNKNOWN_KEY = 5
    NOT_PERMITTED = 6
    ALREADY_LOGGED_IN = 7
    SEQ_UNAVAILABLE = 8
    INVALID_HEARTBEAT = 9
    UNAVAILABLE = 10
    INVALID_FLAGS = 11


class EndReason(enum.IntEnum):
    """Why the server ends a session (EndOfSession)."""

    LOGGED_OUT = 1
    SHUTDOWN = 2
    ADMINISTRATIVE = 3


class ProtocolErrorCode(enum.IntEnum):
    """Why the server closes a connection (ProtocolError), and why a decode fails."""

    FRAME_TOO_LARGE = 1
    FRAME_TOO_SHORT = 2
    WRONG_SCHEMA = 3
    UNSUPPORTED_VERSION = 4
    UNKNOWN_TEMPLATE = 5
    BAD_BLOCK_LENGTH = 6
    TRUNCATED = 7
    TRAILING_BYTES = 8
    INVALID_VALUE = 9
    UNEXPECTED_MESSAGE = 10
    LOGIN_TIMEOUT = 11
    HEARTBEAT_TIMEOUT = 12
    SLOW_CONSUMER = 13
    FLOOD = 14


class RejectCode(enum.IntEnum):
    """Why an order request was refused: 1-99 the engine's reasons, 100+ the gateway's."""

    UNKNOWN_ASSET = 1
    ASSET_EXISTS = 2
    UNKNOWN_MARKET = 3
    MARKET_EXISTS = 4
    INVALID_MARKET_SPEC = 5
    UNKNOWN_ACCOUNT = 6
    ACCOUNT_EXISTS = 7
    ACCOUNT_FROZEN = 8
    RESERVED_ACCOUNT = 9
    MARKET_HALTED = 10
    MARKET_DELISTED = 11
    ZERO_QUANTITY = 12
    ZERO_PRICE = 13
    PRICE_OFF_TICK = 14
    QUANTITY_OFF_LOT = 15
    BELOW_MIN_NOTIONAL = 16
    OVERFLOW = 17
    INSUFFICIENT_BALANCE = 18
    POST_ONLY_WOULD_TAKE = 19
    DUPLICATE_CLIENT_ORDER_ID = 20
    ORDER_NOT_FOUND = 21
    INVALID_ORDER = 22
    PRICE_ABOVE_RESERVE = 23
    AMEND_NO_CHANGE = 24
    UNKNOWN_FEE_TIER = 25
    INVALID_FEE = 26
    INVALID_STATUS_TRANSITION = 27
    INVALID_DECIMALS = 28
    TOO_MANY_OPEN_ORDERS = 29
    DUPLICATE_CLIENT_REF = 100
    THROTTLED = 101
    NOT_LOGGED_IN = 102
    NOT_PERMITTED = 103
    SERVER_BUSY = 104
    UNSUPPORTED = 105


class CancelReason(enum.IntEnum):
    """Why an order ended without filling completely (OrderCancelled)."""

    USER_CANCEL = 1
    MASS_CANCEL = 2
    CANCEL_ON_DISCONNECT = 3
    EXPIRED = 4
    FOK_UNFILLED = 5
    SELF_TRADE = 6
    PROTECTION_LIMIT = 7
    BUDGET_EXHAUSTED = 8
    DELISTED = 9


class Liquidity(enum.IntEnum):
    """Whether a fill added or took liquidity."""

    MAKER = 1
    TAKER = 2


class FeedKind(enum.IntEnum):
    """Which market-data feed a subscription wants."""

    ORDER_BY_ORDER = 1
    LEVELS = 2
    TOP_OF_BOOK = 3


class SubscribeRejectReason(enum.IntEnum):
    """Why a market-data subscription was refused."""

    UNKNOWN_MARKET = 1
    ALREADY_SUBSCRIBED = 2
    TOO_MANY_SUBSCRIPTIONS = 3
    INVALID_DEPTH = 4
    NOT_PERMITTED = 5
    THROTTLED = 6


class RetransmitStatus(enum.IntEnum):
    """The answer to a market-data retransmit request."""

    ACCEPTED = 1
    TOO_OLD = 2
    TOO_MANY = 3
    NOT_SUBSCRIBED = 4
    NOT_YET = 5


class LoginFlags(enum.IntFlag):
    """Login options (a ``uint8`` flag set); bits not defined here must be zero."""

    NONE = 0
    CANCEL_ON_DISCONNECT = 1 << 0


ENUMS: Final[dict[str, type[enum.IntEnum]]] = {
    "Bool": Bool,
    "Side": Side,
    "OrderType": OrderType,
    "TimeInForce": TimeInForce,
    "StpMode": StpMode,
    "MarketStatus": MarketStatus,
    "OrderRefKind": OrderRefKind,
    "SideFilter": SideFilter,
    "SessionKind": SessionKind,
    "LoginRejectReason": LoginRejectReason,
    "EndReason": EndReason,
    "ProtocolErrorCode": ProtocolErrorCode,
    "RejectCode": RejectCode,
    "CancelReason": CancelReason,
    "Liquidity": Liquidity,
    "FeedKind": FeedKind,
    "SubscribeRejectReason": SubscribeRejectReason,
    "RetransmitStatus": RetransmitStatus,
}
"""Every enumeration of the schema, by its schema name."""

_ENUM_ENCODING: Final[dict[type[enum.IntEnum], str]] = {
    ProtocolErrorCode: "uint16",
    RejectCode: "uint16",
}
"""Enumerations encoded wider than ``uint8``."""

LOGIN_FLAG_BITS: Final[dict[str, int]] = {"cancelOnDisconnect": 0}
"""The schema's choices of the ``LoginFlags`` set: name -> bit number."""
_LOGIN_FLAGS_ALL: Final = int(LoginFlags.CANCEL_ON_DISCONNECT)


def schema_name(member: enum.Enum) -> str:
    """The schema's (CamelCase) name of an enumeration member: ``StpMode.EXPIRE_TAKER`` ->
    ``"ExpireTaker"``."""
    return "".join(part.capitalize() for part in member.name.split("_"))


# ---- Composites ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderRef:
    """Which order a cancel or amend names: by the engine's order id or by the account's
    client order id (wire: ``kind`` uint8 then ``id`` uint64, 9 bytes)."""

    kind: OrderRefKind
    id: int

    @classmethod
    def by_order_id(cls, order_id: int) -> OrderRef:
        """The order with this engine order id."""
        return cls(OrderRefKind.ORDER_ID, order_id)

    @classmethod
    def by_client_order_id(cls, client_order_id: int) -> OrderRef:
        """The account's open order with this client order id."""
        return cls(OrderRefKind.CLIENT_ORDER_ID, client_order_id)


COMPOSITES: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "OrderRef": (("kind", "OrderRefKind"), ("id", "uint64")),
    "OptionalMarket": (("present", "Bool"), ("market", "MarketId")),
}
"""The schema's composites: name -> (sub-field name, type) in wire order."""


# ---- Errors -------------------------------------------------------------------------------


class ProtocolDecodeError(ValueError):
    """Bytes that are not a valid frame. ``reason`` is the :class:`ProtocolErrorCode` a server
    answers with; ``template_id``, ``message``, ``field``, ``offset`` (body offset) and
    ``value`` (the raw value refused) say where, when known. ``decoded`` holds the messages a
    :meth:`FrameDecoder.feed` call decoded before the bad frame (deliver them first)."""

    def __init__(
        self,
        reason: ProtocolErrorCode,
        detail: str,
        *,
        template_id: int = 0,
        message: str | None = None,
        field: str | None = None,
        offset: int = 0,
        value: int | None = None,
    ) -> None:
        super().__init__(f"{schema_name(reason)}: {detail}")
        self.reason = reason
        self.detail = detail
        self.template_id = template_id
        self.message = message
        self.field = field
        self.offset = offset
        self.value = value
        self.decoded: list[Message] = []


class ProtocolEncodeError(ValueError):
    """A message whose field cannot be put on the wire (out of range, not in its code table,
    not canonical)."""


class _BadValue(Exception):
    """Internal: a field's raw value is outside its code table."""

    def __init__(self, raw: int) -> None:
        self.raw = raw


# ---- Wire types ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WireType:
    """How one field type sits on the wire: its schema name, size, ``struct`` format (one or
    more codes: composites take one per sub-field) and converters."""

    name: str
    size: int
    fmt: str
    decode: Callable[[tuple[Any, ...], int], Any] | None
    """Raw values at an index -> Python value (raises ``_BadValue``); None: the raw value."""
    encode: Callable[[Any], tuple[Any, ...]]
    """Python value -> raw values (raises ``ProtocolEncodeError``)."""

    @property
    def nvals(self) -> int:
        """Values this type takes in the flat tuple of a ``struct`` call."""
        return len(struct.Struct("<" + self.fmt).unpack(bytes(self.size)))


def _uint(name: str, fmt: str, bits: int) -> WireType:
    limit = 1 << bits

    def enc(v: Any) -> tuple[Any, ...]:
        if type(v) is int and 0 <= v < limit:  # the fast path
            return (v,)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < limit:
            raise ProtocolEncodeError(f"{v!r} is not a {name} (0 <= n < 2**{bits})")
        return (int(v),)

    return WireType(name, bits // 8, fmt, None, enc)


UINT8: Final = _uint("uint8", "B", 8)
UINT16: Final = _uint("uint16", "H", 16)
UINT32: Final = _uint("uint32", "I", 32)
UINT64: Final = _uint("uint64", "Q", 64)
MARKET_ID: Final = _uint("MarketId", "I", 32)


def _enum_wire(cls: type[enum.IntEnum]) -> WireType:
    table: dict[int, enum.IntEnum] = {int(m): m for m in cls}
    encoding = _ENUM_ENCODING.get(cls, "uint8")
    fmt, size = ("H", 2) if encoding == "uint16" else ("B", 1)

    def dec(vals: tuple[Any, ...], i: int) -> Any:
        raw: int = vals[i]
        try:
            return table[raw]
        except KeyError:
            raise _BadValue(raw) from None

    def enc(v: Any) -> tuple[Any, ...]:
        if isinstance(v, bool) or not isinstance(v, int) or v not in table:
            raise ProtocolEncodeError(f"{v!r} is not a {cls.__name__} code")
        return (int(v),)

    name = next(k for k, c in ENUMS.items() if c is cls)
    return WireType(name, size, fmt, dec, enc)


def _bool_dec(vals: tuple[Any, ...], i: int) -> Any:
    raw: int = vals[i]
    if raw == 0:
        return False
    if raw == 1:
        return True
    raise _BadValue(raw)


def _bool_enc(v: Any) -> tuple[Any, ...]:
    if v is True or v is False or (isinstance(v, int) and v in (0, 1)):
        return (int(v),)
    raise ProtocolEncodeError(f"{v!r} is not a Bool")


BOOL: Final = WireType("Bool", 1, "B", _bool_dec, _bool_enc)


def _bytes32(name: str) -> WireType:
    def enc(v: Any) -> tuple[Any, ...]:
        if not isinstance(v, bytes | bytearray | memoryview) or len(v) != 32:
            raise ProtocolEncodeError(f"a {name} is exactly 32 bytes, got {v!r}")
        return (bytes(v),)

    return WireType(name, 32, "32s", None, enc)


NONCE: Final = _bytes32("Nonce")
SIGNATURE: Final = _bytes32("Signature")


def _flags_dec(vals: tuple[Any, ...], i: int) -> Any:
    raw: int = vals[i]
    if raw & ~_LOGIN_FLAGS_ALL:
        raise _BadValue(raw)
    return LoginFlags(raw)


def _flags_enc(v: Any) -> tuple[Any, ...]:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= _LOGIN_FLAGS_ALL:
        raise ProtocolEncodeError(f"{v!r} is not a LoginFlags value (undefined bits set)")
    return (int(v),)


LOGIN_FLAGS: Final = WireType("LoginFlags", 1, "B", _flags_dec, _flags_enc)

_ORDER_REF_KINDS: Final = {int(k): k for k in OrderRefKind}


def _order_ref_dec(vals: tuple[Any, ...], i: int) -> Any:
    kind = _ORDER_REF_KINDS.get(vals[i])
    if kind is None:
        raise _BadValue(vals[i])
    return OrderRef(kind, vals[i + 1])


def _order_ref_enc(v: Any) -> tuple[Any, ...]:
    if not isinstance(v, OrderRef):
        raise ProtocolEncodeError(f"{v!r} is not an OrderRef")
    kind: Any = v.kind
    if isinstance(kind, bool) or kind not in _ORDER_REF_KINDS:
        raise ProtocolEncodeError(f"{v.kind!r} is not an OrderRefKind code")
    return (int(v.kind), *UINT64.encode(v.id))


ORDER_REF: Final = WireType("OrderRef", 9, "BQ", _order_ref_dec, _order_ref_enc)


def _opt_market_dec(vals: tuple[Any, ...], i: int) -> Any:
    present: int = vals[i]
    market: int = vals[i + 1]
    if present == 1:
        return market
    if present == 0:
        if market != 0:
            raise _BadValue(market)
        return None
    raise _BadValue(present)


def _opt_market_enc(v: Any) -> tuple[Any, ...]:
    if v is None:
        return (0, 0)
    return (1, *MARKET_ID.encode(v))


OPTIONAL_MARKET: Final = WireType("OptionalMarket", 5, "BI", _opt_market_dec, _opt_market_enc)

U8: TypeAlias = Annotated[int, UINT8]
U16: TypeAlias = Annotated[int, UINT16]
U32: TypeAlias = Annotated[int, UINT32]
U64: TypeAlias = Annotated[int, UINT64]
MarketId: TypeAlias = Annotated[int, MARKET_ID]
Nonce: TypeAlias = Annotated[bytes, NONCE]
Signature: TypeAlias = Annotated[bytes, SIGNATURE]
OptionalMarket: TypeAlias = Annotated[int | None, OPTIONAL_MARKET]

_WIRE_OF_CLASS: Final[dict[Any, WireType]] = {
    bool: BOOL,
    LoginFlags: LOGIN_FLAGS,
    OrderRef: ORDER_REF,
    **{cls: _enum_wire(cls) for name, cls in ENUMS.items() if name != "Bool"},
}

TYPES: Final[dict[str, WireType]] = {
    w.name: w
    for w in (
        *(UINT8, UINT16, UINT32, UINT64, MARKET_ID, NONCE, SIGNATURE, BOOL),
        *_WIRE_OF_CLASS.values(),
        OPTIONAL_MARKET,
    )
}
"""Every field type by its schema name."""


def _wire_of(hint: Any) -> WireType:
    meta = getattr(hint, "__metadata__", None)
    if meta:
        for m in meta:
            if isinstance(m, WireType):
                return m
    try:
        return _WIRE_OF_CLASS[hint]
    except (KeyError, TypeError):
        raise TypeError(f"no wire type for annotation {hint!r}") from None


# ---- Message specs and the per-template codec ---------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a message: name, schema type, body offset and size."""

    name: str
    type_name: str
    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """One template: its name, id, block length and fields in wire order."""

    name: str
    template_id: int
    block_length: int
    fields: tuple[FieldSpec, ...]

    @property
    def frame_len(self) -> int:
        """Bytes of the whole frame, length prefix included."""
        return LENGTH_PREFIX_LEN + HEADER_LEN + self.block_length


_HEADER: Final = struct.Struct("<HHHH")
_PREFIX_HEADER_FMT: Final = "<HHHHH"


class _Codec:
    """Encoder and decoder of one template (built once, at import)."""

    __slots__ = ("body", "cls", "encoders", "frame", "plain", "prefix", "spec", "steps")

    def __init__(self, cls: type[WireMessage], template_id: int) -> None:
        hints = get_type_hints(cls, include_extras=True)
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        wires = [_wire_of(hints[f.name]) for f in fields]
        specs: list[FieldSpec] = []
        steps: list[tuple[Callable[[tuple[Any, ...], int], Any] | None, int, str, int]] = []
        offset = 0
        index = 0
        for f, w in zip(fields, wires, strict=True):
            specs.append(FieldSpec(f.name, w.name, offset, w.size))
            steps.append((w.decode, index, f.name, offset))
            offset += w.size
            index += w.nvals
        fmt = "".join(w.fmt for w in wires)
        self.cls = cls
        self.spec = MessageSpec(cls.__name__, template_id, offset, tuple(specs))
        self.body = struct.Struct("<" + fmt)
        assert self.body.size == offset, cls.__name__
        self.frame = struct.Struct(_PREFIX_HEADER_FMT + fmt)
        self.prefix = (HEADER_LEN + offset, offset, template_id, SCHEMA_ID, SCHEMA_VERSION)
        self.plain = all(w.decode is None for w in wires) and index == len(wires)
        self.steps = tuple(steps)
        self.encoders = tuple((f.name, w.encode) for f, w in zip(fields, wires, strict=True))

    def encode(self, msg: WireMessage) -> bytes:
        vals: list[Any] = list(self.prefix)
        for name, enc in self.encoders:
            try:
                vals.extend(enc(getattr(msg, name)))
            except ProtocolEncodeError as e:
                raise ProtocolEncodeError(f"{self.spec.name}.{name}: {e}") from None
        return self.frame.pack(*vals)

    def decode_body(self, buf: Any, offset: int) -> Message:
        vals = self.body.unpack_from(buf, offset)
        if self.plain:
            return self.cls(*vals)  # type: ignore[return-value]
        args: list[Any] = []
        for dec, i, name, field_offset in self.steps:
            if dec is None:
                args.append(vals[i])
                continue
            try:
                args.append(dec(vals, i))
            except _BadValue as e:
                raise ProtocolDecodeError(
                    ProtocolErrorCode.INVALID_VALUE,
                    f"{self.spec.name}.{name} at body offset {field_offset}: invalid value {e.raw}",
                    template_id=self.spec.template_id,
                    message=self.spec.name,
                    field=name,
                    offset=field_offset,
                    value=e.raw,
                ) from None
        return self.cls(*args)  # type: ignore[return-value]


_BY_TEMPLATE: dict[int, _Codec] = {}
_BY_CLASS: dict[type, _Codec] = {}


class WireMessage:
    """Base of every message class: the template's constants and :meth:`encode`."""

    __slots__ = ()

    TEMPLATE_ID: ClassVar[int]
    BLOCK_LENGTH: ClassVar[int]
    FRAME_LEN: ClassVar[int]
    SPEC: ClassVar[MessageSpec]

    def encode(self) -> bytes:
        """The whole frame: length prefix, header and body."""
        return _BY_CLASS[type(self)].encode(self)


_M = TypeVar("_M", bound=WireMessage)


def _message(template_id: int) -> Callable[[type[_M]], type[_M]]:
    def register(cls: type[_M]) -> type[_M]:
        if template_id in _BY_TEMPLATE:
            raise ValueError(f"template id {template_id} registered twice")
        codec = _Codec(cls, template_id)
        cls.TEMPLATE_ID = template_id
        cls.BLOCK_LENGTH = codec.spec.block_length
        cls.FRAME_LEN = codec.spec.frame_len
        cls.SPEC = codec.spec
        _BY_TEMPLATE[template_id] = codec
        _BY_CLASS[cls] = codec
        return cls

    return register


# ---- Messages: session --------------------------------------------------------------------


@_message(1)
@dataclass(frozen=True, slots=True)
class Challenge(WireMessage):
    """[server → client] The first message on every connection: the nonce to sign and echo."""

    nonce: Nonce
    server_time_ns: U64


@_message(2)
@dataclass(frozen=True, slots=True)
class Login(WireMessage):
    """[client → server] Opens a session: the API key, the signature and the options."""

    key_id: U64
    timestamp_ns: U64
    nonce: Nonce
    signature: Signature
    heartbeat_ms: U32
    session_kind: SessionKind
    flags: LoginFlags
    next_seq: U64

    def signing_payload(self) -> bytes:
        """The 62 bytes the signature is an HMAC-SHA256 of (the signature itself excluded)."""
        return login_signing_payload(
            nonce=self.nonce,
            timestamp_ns=self.timestamp_ns,
            key_id=self.key_id,
            session_kind=self.session_kind,
            heartbeat_ms=self.heartbeat_ms,
            flags=self.flags,
            next_seq=self.next_seq,
        )

    def verify(self, secret: bytes) -> bool:
        """Whether the signature is the HMAC-SHA256 of the signing payload under ``secret``."""
        return hmac.compare_digest(sign(secret, self.signing_payload()), self.signature)


@_message(3)
@dataclass(frozen=True, slots=True)
class LoginAccepted(WireMessage):
    """[server → client] The login succeeded; replayed messages (if any) follow, then live."""

    session_id: U64
    account: U64
    heartbeat_ms: U32
    next_seq: U64


@_message(4)
@dataclass(frozen=True, slots=True)
class LoginRejected(WireMessage):
    """[server → client] The login failed; the server closes the connection."""

    reason: LoginRejectReason


@_message(5)
@dataclass(frozen=True, slots=True)
class Heartbeat(WireMessage):
    """[both ways] Sent when nothing else was sent for one heartbeat interval."""

    timestamp_ns: U64


@_message(6)
@dataclass(frozen=True, slots=True)
class Logout(WireMessage):
    """[client → server] Ends the session cleanly (no cancel-on-disconnect)."""


@_message(7)
@dataclass(frozen=True, slots=True)
class EndOfSession(WireMessage):
    """[server → client] Everything was sent; the server closes the connection."""

    reason: EndReason


@_message(8)
@dataclass(frozen=True, slots=True)
class ProtocolError(WireMessage):
    """[server → client] A protocol violation; the server closes the connection after it."""

    reason: ProtocolErrorCode
    template_id: U16
    offset: U16


# ---- Messages: order entry, client → server -----------------------------------------------


@_message(10)
@dataclass(frozen=True, slots=True)
class NewOrder(WireMessage):
    """[client → server] Place an order."""

    client_ref: U64
    market: MarketId
    client_order_id: U64
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    post_only: bool
    stp: StpMode
    price: U64
    quantity: U64
    quote_quantity: U64
    reserve_price: U64


@_message(11)
@dataclass(frozen=True, slots=True)
class CancelOrder(WireMessage):
    """[client → server] Cancel one open order."""

    client_ref: U64
    order: OrderRef


@_message(12)
@dataclass(frozen=True, slots=True)
class AmendOrder(WireMessage):
    """[client → server] Change an open limit order (0 = keep)."""

    client_ref: U64
    order: OrderRef
    new_price: U64
    new_quantity: U64


@_message(13)
@dataclass(frozen=True, slots=True)
class MassCancel(WireMessage):
    """[client → server] Cancel every open order, optionally one market and/or side."""

    client_ref: U64
    market: OptionalMarket
    side: SideFilter


# ---- Messages: order entry, server → client -----------------------------------------------


@_message(20)
@dataclass(frozen=True, slots=True)
class OrderAccepted(WireMessage):
    """[server → client] An order passed every check and has an order id."""

    seq: U64
    timestamp_ns: U64
    client_ref: U64
    order_id: U64
    market: MarketId
    client_order_id: U64
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    post_only: bool
    stp: StpMode
    price: U64
    quantity: U64
    quote_quantity: U64
    reserve_price: U64


@_message(21)
@dataclass(frozen=True, slots=True)
class OrderRejected(WireMessage):
    """[server → client] A request was refused; ``seq`` 0 for a session-level reject."""

    seq: U64
    timestamp_ns: U64
    client_ref: U64
    request_template: U16
    order_id: U64
    client_order_id: U64
    reason: RejectCode


@_message(22)
@dataclass(frozen=True, slots=True)
class OrderExecuted(WireMessage):
    """[server → client] One of the account's orders traded (no client_ref)."""

    seq: U64
    timestamp_ns: U64
    order_id: U64
    client_order_id: U64
    market: MarketId
    trade_id: U64
    side: Side
    price: U64
    quantity: U64
    quote_quantity: U64
    fee: U64
    liquidity: Liquidity
    leaves_quantity: U64


@_message(23)
@dataclass(frozen=True, slots=True)
class OrderCancelled(WireMessage):
    """[server → client] An order ended without filling completely."""

    seq: U64
    timestamp_ns: U64
    client_ref: U64
    order_id: U64
    client_order_id: U64
    market: MarketId
    reason: CancelReason
    filled_quantity: U64
    cancelled_quantity: U64


@_message(24)
@dataclass(frozen=True, slots=True)
class OrderAmended(WireMessage):
    """[server → client] An open order's price or quantity changed."""

    seq: U64
    timestamp_ns: U64
    client_ref: U64
    order_id: U64
    client_order_id: U64
    market: MarketId
    price: U64
    leaves_quantity: U64
    kept_priority: bool


@_message(25)
@dataclass(frozen=True, slots=True)
class MassCancelReport(WireMessage):
    """[server → client] A MassCancel finished; its OrderCancelled messages came first."""

    seq: U64
    timestamp_ns: U64
    client_ref: U64
    market: OptionalMarket
    side: SideFilter
    count: U32


# ---- Messages: market data, client → server -----------------------------------------------


@_message(30)
@dataclass(frozen=True, slots=True)
class MdSubscribe(WireMessage):
    """[client → server] Subscribe to one market's feed: a snapshot, then incrementals."""

    market: MarketId
    feed: FeedKind
    depth: U16


@_message(31)
@dataclass(frozen=True, slots=True)
class MdUnsubscribe(WireMessage):
    """[client → server] Stop a subscription."""

    market: MarketId


@_message(32)
@dataclass(frozen=True, slots=True)
class MdRetransmitRequest(WireMessage):
    """[client → server] Ask again for book changes [from_book_seq, from_book_seq + count)."""

    market: MarketId
    from_book_seq: U64
    count: U32


# ---- Messages: market data, server → client -----------------------------------------------


@_message(40)
@dataclass(frozen=True, slots=True)
class MdSnapshotStart(WireMessage):
    """[server → client] A snapshot of the book exactly as of ``book_seq`` begins."""

    market: MarketId
    book_seq: U64
    feed: FeedKind
    status: MarketStatus
    entries: U32


@_message(41)
@dataclass(frozen=True, slots=True)
class MdSnapshotOrder(WireMessage):
    """[server → client] One resting order of a snapshot (bids then asks, best first, each
    level oldest first)."""

    market: MarketId
    order_id: U64
    side: Side
    price: U64
    quantity: U64


@_message(42)
@dataclass(frozen=True, slots=True)
class MdSnapshotLevel(WireMessage):
    """[server → client] One price level of a snapshot (bids then asks, best first)."""

    market: MarketId
    side: Side
    price: U64
    quantity: U64
    orders: U32


@_message(43)
@dataclass(frozen=True, slots=True)
class MdSnapshotEnd(WireMessage):
    """[server → client] The snapshot is complete."""

    market: MarketId
    book_seq: U64


@_message(44)
@dataclass(frozen=True, slots=True)
class MdAdd(WireMessage):
    """[server → client] An order rests at the back of its level."""

    market: MarketId
    book_seq: U64
    timestamp_ns: U64
    order_id: U64
    side: Side
    price: U64
    quantity: U64


@_message(45)
@dataclass(frozen=True, slots=True)
class MdExecute(WireMessage):
    """[server → client] A resting order traded (partly or fully)."""

    market: MarketId
    book_seq: U64
    timestamp_ns: U64
    order_id: U64
    side: Side
    price: U64
    executed_quantity: U64
    remaining_quantity: U64
    trade_id: U64


@_message(46)
@dataclass(frozen=True, slots=True)
class MdReduce(WireMessage):
    """[server → client] A resting order's quantity went down without a trade (priority
    kept)."""

    market: MarketId
    book_seq: U64
    timestamp_ns: U64
    order_id: U64
    side: Side
    price: U64
    reduced_by: U64
    remaining_quantity: U64


@_message(47)
@dataclass(frozen=True, slots=True)
class MdDelete(WireMessage):
    """[server → client] A resting order left the book without trading."""

    market: MarketId
    book_seq: U64
    timestamp_ns: U64
    order_id: U64
    side: Side
    price: U64
    removed_quantity: U64


@_message(48)
@dataclass(frozen=True, slots=True)
class MdTrade(WireMessage):
    """[server → client] A trade; carries the book_seq of its maker fill."""

    market: MarketId
    book_seq: U64
    timestamp_ns: U64
    trade_id: U64
    price: U64
    quantity: U64
    aggressor: Side


@_message(49)
@dataclass(frozen=True, slots=True)
class MdMarketStatus(WireMessage):
    """[server → client] The market's status changed; carries the current book_seq."""

    market: MarketId
    book_seq: U64
    timestamp_ns: U64
    status: MarketStatus


@_message(50)
@dataclass(frozen=True, slots=True)
class MdLevel(WireMessage):
    """[server → client] Levels feed: a level after one book change (quantity 0 = gone)."""

    market: MarketId
    book_seq: U64
    timestamp_ns: U64
    side: Side
    price: U64
    quantity: U64
    orders: U32


@_message(51)
@dataclass(frozen=True, slots=True)
class MdTopOfBook(WireMessage):
    """[server → client] Top-of-book feed: the best bid and ask (a full state)."""

    market: MarketId
    book_seq: U64
    timestamp_ns: U64
    bid_price: U64
    bid_quantity: U64
    bid_orders: U32
    ask_price: U64
    ask_quantity: U64
    ask_orders: U32


@_message(52)
@dataclass(frozen=True, slots=True)
class MdRetransmitReply(WireMessage):
    """[server → client] The answer to MdRetransmitRequest."""

    market: MarketId
    from_book_seq: U64
    count: U32
    status: RetransmitStatus


@_message(53)
@dataclass(frozen=True, slots=True)
class MdSubscribeRejected(WireMessage):
    """[server → client] A subscription was refused."""

    market: MarketId
    reason: SubscribeRejectReason


Message: TypeAlias = (
    Challenge
    | Login
    | LoginAccepted
    | LoginRejected
    | Heartbeat
    | Logout
    | EndOfSession
    | ProtocolError
    | NewOrder
    | CancelOrder
    | AmendOrder
    | MassCancel
    | OrderAccepted
    | OrderRejected
    | OrderExecuted
    | OrderCancelled
    | OrderAmended
    | MassCancelReport
    | MdSubscribe
    | MdUnsubscribe
    | MdRetransmitRequest
    | MdSnapshotStart
    | MdSnapshotOrder
    | MdSnapshotLevel
    | MdSnapshotEnd
    | MdAdd
    | MdExecute
    | MdReduce
    | MdDelete
    | MdTrade
    | MdMarketStatus
    | MdLevel
    | MdTopOfBook
    | MdRetransmitReply
    | MdSubscribeRejected
)
"""Any message of the protocol."""

Sequenced: TypeAlias = (
    OrderAccepted | OrderRejected | OrderExecuted | OrderCancelled | OrderAmended | MassCancelReport
)
"""The account-stream messages (templates 20-25): they carry ``seq`` (0 = unsequenced)."""
SEQUENCED_TYPES: Final = (
    OrderAccepted,
    OrderRejected,
    OrderExecuted,
    OrderCancelled,
    OrderAmended,
    MassCancelReport,
)

Reply: TypeAlias = OrderAccepted | OrderRejected | OrderCancelled | OrderAmended | MassCancelReport
"""The messages that echo a request's ``client_ref``."""
REPLY_TYPES: Final = (OrderAccepted, OrderRejected, OrderCancelled, OrderAmended, MassCancelReport)

Request: TypeAlias = NewOrder | CancelOrder | AmendOrder | MassCancel
"""The order-entry requests (they carry ``client_ref``)."""
REQUEST_TYPES: Final = (NewOrder, CancelOrder, AmendOrder, MassCancel)

BookChange: TypeAlias = MdAdd | MdExecute | MdReduce | MdDelete | MdLevel
"""The dense market-data messages: each takes the next ``book_seq``."""
BOOK_CHANGE_TYPES: Final = (MdAdd, MdExecute, MdReduce, MdDelete, MdLevel)

MESSAGE_TYPES: Final[tuple[type[WireMessage], ...]] = tuple(
    _BY_TEMPLATE[t].cls for t in sorted(_BY_TEMPLATE)
)
"""Every message class, in template order."""
TEMPLATES: Final[dict[int, type[WireMessage]]] = {t: _BY_TEMPLATE[t].cls for t in _BY_TEMPLATE}
"""Message class by template id."""


def message_specs() -> list[MessageSpec]:
    """Every template's spec, in template order."""
    return [_BY_TEMPLATE[t].spec for t in sorted(_BY_TEMPLATE)]


# ---- Encoding and decoding ----------------------------------------------------------------


def encode(msg: Message) -> bytes:
    """The whole frame of ``msg``: length prefix, header and body."""
    try:
        codec = _BY_CLASS[type(msg)]
    except KeyError:
        raise ProtocolEncodeError(f"{msg!r} is not a protocol message") from None
    return codec.encode(msg)


def encode_many(msgs: Sequence[Message]) -> bytes:
    """The frames of ``msgs`` back to back."""
    return b"".join(encode(m) for m in msgs)


def _decode_at(buf: Any, offset: int, length: int) -> Message:
    """Decode the frame (header + body) of ``length`` bytes at ``buf[offset:]``."""
    if length < HEADER_LEN:
        raise ProtocolDecodeError(
            ProtocolErrorCode.FRAME_TOO_SHORT,
            f"frame of {length} bytes is shorter than the {HEADER_LEN}-byte header",
        )
    block_length, template_id, schema_id, version = _HEADER.unpack_from(buf, offset)
    if schema_id != SCHEMA_ID:
        raise ProtocolDecodeError(
            ProtocolErrorCode.WRONG_SCHEMA,
            f"schema id {schema_id:#06x} is not Bourse's ({SCHEMA_ID:#06x})",
            template_id=template_id,
        )
    if version != SCHEMA_VERSION:
        raise ProtocolDecodeError(
            ProtocolErrorCode.UNSUPPORTED_VERSION,
            f"schema version {version} is not supported (this decoder speaks {SCHEMA_VERSION})",
            template_id=template_id,
        )
    codec = _BY_TEMPLATE.get(template_id)
    if codec is None:
        raise ProtocolDecodeError(
            ProtocolErrorCode.UNKNOWN_TEMPLATE,
            f"unknown template id {template_id}",
            template_id=template_id,
        )
    spec = codec.spec
    if block_length != spec.block_length:
        raise ProtocolDecodeError(
            ProtocolErrorCode.BAD_BLOCK_LENGTH,
            f"{spec.name}: header block length {block_length}, the template's is "
            f"{spec.block_length}",
            template_id=template_id,
            message=spec.name,
        )
    body_len = length - HEADER_LEN
    if body_len < spec.block_length:
        raise ProtocolDecodeError(
            ProtocolErrorCode.TRUNCATED,
            f"{spec.name}: body truncated, {body_len} of {spec.block_length} bytes",
            template_id=template_id,
            message=spec.name,
        )
    if body_len > spec.block_length:
        raise ProtocolDecodeError(
            ProtocolErrorCode.TRAILING_BYTES,
            f"{spec.name}: {body_len - spec.block_length} trailing bytes after the body",
            template_id=template_id,
            message=spec.name,
        )
    return codec.decode_body(buf, offset + HEADER_LEN)


def decode_frame(frame: bytes | bytearray | memoryview) -> Message:
    """Decode one frame: header + body, without the length prefix."""
    return _decode_at(frame, 0, len(frame))


def _check_length(length: int) -> None:
    if length > MAX_FRAME_LEN:
        raise ProtocolDecodeError(
            ProtocolErrorCode.FRAME_TOO_LARGE,
            f"frame length {length} exceeds the maximum {MAX_FRAME_LEN}",
        )
    if length < HEADER_LEN:
        raise ProtocolDecodeError(
            ProtocolErrorCode.FRAME_TOO_SHORT,
            f"frame length {length} is shorter than the {HEADER_LEN}-byte header",
        )


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Decode exactly one whole frame, length prefix included. Fewer bytes than the prefix
    announces are ``TRUNCATED``, more are ``TRAILING_BYTES``."""
    if len(data) < LENGTH_PREFIX_LEN:
        raise ProtocolDecodeError(
            ProtocolErrorCode.TRUNCATED, f"{len(data)} bytes: no complete length prefix"
        )
    length = data[0] | data[1] << 8
    _check_length(length)
    available = len(data) - LENGTH_PREFIX_LEN
    if available < length:
        raise ProtocolDecodeError(
            ProtocolErrorCode.TRUNCATED, f"length prefix {length}, only {available} bytes follow"
        )
    if available > length:
        raise ProtocolDecodeError(
            ProtocolErrorCode.TRAILING_BYTES,
            f"length prefix {length}, {available - length} more bytes follow the frame",
        )
    return _decode_at(data, LENGTH_PREFIX_LEN, length)


class FrameDecoder:
    """Splits a byte stream, in any chunking, into messages.

    ``feed(bytes)`` returns the messages completed by those bytes, in order. A bad frame
    raises :class:`ProtocolDecodeError` (with the messages decoded before it in
    ``error.decoded``) and poisons the decoder: every later ``feed`` raises the same error
    (with ``decoded`` empty).
    """

    __slots__ = ("_buf", "_error")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._error: ProtocolDecodeError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as messages."""
        return len(self._buf)

    @property
    def error(self) -> ProtocolDecodeError | None:
        """The error that poisoned the decoder, if any."""
        return self._error

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Add ``data``; return every message now complete."""
        if self._error is not None:
            self._error.decoded = []  # handed over with the first raise
            raise self._error
        buf = self._buf
        buf += data
        out: list[Message] = []
        pos = 0
        end = len(buf)
        try:
            while end - pos >= LENGTH_PREFIX_LEN:
                length = buf[pos] | buf[pos + 1] << 8
                _check_length(length)
                if end - pos - LENGTH_PREFIX_LEN < length:
                    break
                out.append(_decode_at(buf, pos + LENGTH_PREFIX_LEN, length))
                pos += LENGTH_PREFIX_LEN + length
        except ProtocolDecodeError as e:
            e.decoded = out
            self._error = e
            buf.clear()
            raise
        if pos:
            del buf[:pos]
        return out


# ---- Login signature ----------------------------------------------------------------------

_SIGNING: Final = struct.Struct("<32sQQBIBQ")
assert _SIGNING.size == LOGIN_SIGNING_PAYLOAD_LEN


def login_signing_payload(
    *,
    nonce: bytes,
    timestamp_ns: int,
    key_id: int,
    session_kind: SessionKind,
    heartbeat_ms: int,
    flags: LoginFlags | int,
    next_seq: int,
) -> bytes:
    """The 62-byte payload a Login signs: ``nonce (32) | timestamp_ns (u64) | key_id (u64) |
    session_kind (u8) | heartbeat_ms (u32) | flags (u8) | next_seq (u64)``, little-endian."""
    if len(nonce) != 32:
        raise ProtocolEncodeError(f"a Nonce is exactly 32 bytes, got {len(nonce)}")
    try:
        return _SIGNING.pack(
            bytes(nonce),
            timestamp_ns,
            key_id,
            int(session_kind),
            heartbeat_ms,
            int(flags),
            next_seq,
        )
    except struct.error as e:
        raise ProtocolEncodeError(f"login signing payload: {e}") from None


def sign(secret: bytes, payload: bytes) -> bytes:
    """HMAC-SHA256 of ``payload`` under ``secret`` (32 bytes)."""
    return hmac.new(secret, payload, hashlib.sha256).digest()


def signed_login(
    challenge: Challenge,
    *,
    key_id: int,
    secret: bytes,
    timestamp_ns: int,
    session_kind: SessionKind = SessionKind.ORDER_ENTRY,
    heartbeat_ms: int = 1000,
    flags: LoginFlags = LoginFlags.NONE,
    next_seq: int = 0,
) -> Login:
    """The Login answering ``challenge``, signed with ``secret``."""
    unsigned = Login(
        key_id=key_id,
        timestamp_ns=timestamp_ns,
        nonce=challenge.nonce,
        signature=bytes(32),
        heartbeat_ms=heartbeat_ms,
        session_kind=session_kind,
        flags=flags,
        next_seq=next_seq,
    )
    return dataclasses.replace(unsigned, signature=sign(secret, unsigned.signing_payload()))
