"""The Python codec of the gateway protocol against the published schema, and the client.

* Conformance: ``docs/protocol.xml`` (generated from the Rust definitions) is parsed and every
  template id, block length, field name, type, offset and size, every enumeration code, the
  flag set and the composites are compared with ``controlplane.gateway.codec``.
* Golden vectors (the same bytes the Rust tests pin) and the Login signing payload.
* Property tests: every message round-trips, through the streaming decoder in any chunking;
  decoding is canonical; arbitrary bytes only ever raise ``ProtocolDecodeError``.
* Every decode error reason, with the field and offset it names; encode-side validation.
* The asyncio client against an in-process fake gateway (login signing, replies matched by
  client_ref, heartbeats, logout, abrupt close, resume position).
"""

from __future__ import annotations

import dataclasses
import struct
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.gateway import codec as c
from controlplane.gateway.client import (
    ClientRefAllocator,
)
from controlplane.gateway.codec import ProtocolErrorCode as PE

SCHEMA_XML = Path(__file__).parent.parent / "docs" / "protocol.xml"
SBE = "{http://fixprotocol.io/2016/sbe}"
PRIMITIVE_SIZES = {"uint8": 1, "uint16": 2, "uint32": 4, "uint64": 8}


def snake(name: str) -> str:
    """``ExpireTaker`` -> ``EXPIRE_TAKER``, ``cancelOnDisconnect`` -> ``CANCEL_ON_DISCONNECT``."""
    out = ""
    for i, ch in enumerate(name):
        if ch.isupper() and i > 0:
            out += "_"
        out += ch.upper()
    return out


# ---- Conformance with docs/protocol.xml ----------------------------------------------------


class Schema:
    """The parts of the XML schema the codec must agree with."""

    def __init__(self, path: Path) -> None:
        root = ET.parse(path).getroot()
        self.root = root
        types = root.find("types")
        assert types is not None
        self.types = types
        self.sizes: dict[str, int] = dict(PRIMITIVE_SIZES)
        self.enums: dict[str, tuple[str, dict[str, int]]] = {}
        self.sets: dict[str, tuple[str, dict[str, int]]] = {}
        self.composites: dict[str, list[tuple[str, str]]] = {}
        for el in types:
            name = el.attrib["name"]
            if el.tag == "type":
                size = PRIMITIVE_SIZES[el.attrib["primitiveType"]]
                self.sizes[name] = size * int(el.attrib.get("length", "1"))
            elif el.tag == "enum":
                enc = el.attrib["encodingType"]
                self.enums[name] = (enc, {v.attrib["name"]: int(v.text or "") for v in el})
                self.sizes[name] = PRIMITIVE_SIZES[enc]
            elif el.tag == "set":
                enc = el.attrib["encodingType"]
                self.sets[name] = (enc, {ch.attrib["name"]: int(ch.text or "") for ch in el})
                self.sizes[name] = PRIMITIVE_SIZES[enc]
            elif el.tag == "composite":
                subs = [
                    (s.attrib["name"], s.attrib.get("type") or s.attrib["primitiveType"])
                    for s in el
                ]
                self.composites[name] = subs
        for name, subs in self.composites.items():
            self.sizes[name] = sum(self.sizes[t] for _, t in subs)
        self.messages = [
            (
                int(m.attrib["id"]),
                m.attrib["name"],
                int(m.attrib["blockLength"]),
                [
                    (f.attrib["name"], f.attrib["type"], int(f.attrib["offset"]))
                    for f in m.findall("field")
                ],
            )
            for m in root.findall(f"{SBE}message")
        ]


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema(SCHEMA_XML)


def test_schema_header_and_constants(schema: Schema) -> None:
    assert int(schema.root.attrib["id"]) == c.SCHEMA_ID == 21314
    assert int(schema.root.attrib["version"]) == c.SCHEMA_VERSION == 1
    assert schema.root.attrib["byteOrder"] == "littleEndian"
    header = schema.composites["messageHeader"]
    assert header == [
        ("blockLength", "uint16"),
        ("templateId", "uint16"),
        ("schemaId", "uint16"),
        ("version", "uint16"),
    ]
    assert sum(PRIMITIVE_SIZES[t] for _, t in header) == c.HEADER_LEN
    assert "1024" in schema.root.attrib["description"]
    assert c.MAX_FRAME_LEN == 1024


def test_every_template_matches_the_schema(schema: Schema) -> None:
    specs = c.message_specs()
    assert [(t, n) for t, n, _, _ in schema.messages] == [(s.template_id, s.name) for s in specs]
    assert len(specs) == 35
    for (tid, name, block_length, fields), spec in zip(schema.messages, specs, strict=True):
        cls = c.TEMPLATES[tid]
        assert cls.__name__ == name
        assert tid == cls.TEMPLATE_ID
        assert spec.block_length == block_length == cls.BLOCK_LENGTH, name
        assert block_length + 10 == cls.FRAME_LEN
        assert [(f.name, f.type_name, f.offset) for f in spec.fields] == fields, name
        assert [f.name for f in dataclasses.fields(cls)] == [f[0] for f in fields]  # type: ignore[arg-type]
        for f in spec.fields:
            assert f.size == schema.sizes[f.type_name], (name, f.name)
            assert c.TYPES[f.type_name].size == f.size
        end = fields[-1][2] + schema.sizes[fields[-1][1]] if fields else 0
        assert end == block_length, name
        # Every template fits the maximum frame.
        assert c.HEADER_LEN + block_length <= c.MAX_FRAME_LEN


def test_every_type_size_matches_the_schema(schema: Schema) -> None:
    used = {t for _, _, _, fields in schema.messages for _, t, _ in fields}
    assert used <= set(c.TYPES)
    for name, wire in c.TYPES.items():
        assert schema.sizes[name] == wire.size, name
        assert struct.calcsize("<" + wire.fmt) == wire.size, name


def test_every_enum_code_matches_the_schema(schema: Schema) -> None:
    assert set(c.ENUMS) == set(schema.enums)
    for name, (encoding, codes) in schema.enums.items():
        cls = c.ENUMS[name]
        assert {snake(k): v for k, v in codes.items()} == {m.name: m.value for m in cls}, name
        assert {c.schema_name(m) for m in cls} == set(codes), name
        assert c.TYPES[name].size == PRIMITIVE_SIZES[encoding], name
        if name != "Bool" and name != "SideFilter":
            assert min(codes.values()) == 1, f"required enum {name} starts at 1"


def test_login_flags_match_the_schema(schema: Schema) -> None:
    assert set(schema.sets) == {"LoginFlags"}
    encoding, choices = schema.sets["LoginFlags"]
    assert encoding == "uint8"
    assert choices == c.LOGIN_FLAG_BITS
    defined = 0
    for name, bit in choices.items():
        assert c.LoginFlags[snake(name)] == 1 << bit
        defined |= 1 << bit
    assert defined == sum(m.value for m in c.LoginFlags)


def test_composites_match_the_schema(schema: Schema) -> None:
    composites = {k: v for k, v in schema.composites.items() if k != "messageHeader"}
    assert composites == {k: list(v) for k, v in c.COMPOSITES.items()}
    assert [f.name for f in dataclasses.fields(c.OrderRef)] == ["kind", "id"]


# ---- Golden vectors ----------------------------------------------------------------------


def unhex(s: str) -> bytes:
    return bytes.fromhex("".join(s.split()))


GOLDEN: list[tuple[c.Message, str]] = [
    (c.Heartbeat(timestamp_ns=0x0102_0304_0506_0708), "1000 0800 0500 4253 0100 0807060504030201"),
    (c.Logout(), "0800 0000 0600 4253 0100"),
    (
        c.NewOrder(
            client_ref=7,
            market=2,
            client_order_id=0x1122,
            side=c.Side.SELL,
            order_type=c.OrderType.LIMIT,
            time_in_force=c.TimeInForce.IOC,
            post_only=False,
            stp=c.StpMode.EXPIRE_MAKER,
            price=100_000,
            quantity=5,
            quote_quantity=0,
            reserve_price=0,
        ),
        """4100 3900 0a00 4253 0100
        0700000000000000 02000000 2211000000000000 02 01 02 00 03
        a086010000000000 0500000000000000 0000000000000000 0000000000000000""",
    ),
    (
        c.CancelOrder(client_ref=8, order=c.OrderRef.by_client_order_id(0x1122)),
        "1900 1100 0b00 4253 0100  0800000000000000 02 2211000000000000",
    ),
    (
        c.MassCancel(client_ref=9, market=3, side=c.SideFilter.BOTH),
        "1600 0e00 0d00 4253 0100  0900000000000000 01 03000000 00",
    ),
    (
        c.OrderRejected(
            seq=c.stream_seq(5, 1),
            timestamp_ns=1,
            client_ref=7,
            request_template=c.NewOrder.TEMPLATE_ID,
            order_id=0,
            client_order_id=0,
            reason=c.RejectCode.THROTTLED,
        ),
        """3400 2c00 1500 4253 0100
        0100050000000000 0100000000000000 0700000000000000 0a00
        0000000000000000 0000000000000000 6500""",
    ),
    (
        c.MdAdd(
            market=1,
            book_seq=42,
            timestamp_ns=0,
            order_id=9,
            side=c.Side.BUY,
            price=250,
            quantity=3,
        ),
        """3500 2d00 2c00 4253 0100
        01000000 2a00000000000000 0000000000000000 0900000000000000 01
        fa00000000000000 0300000000000000""",
    ),
]


@pytest.mark.parametrize(("msg", "wire"), GOLDEN, ids=lambda v: type(v).__name__)
def test_golden_vectors(msg: c.Message, wire: str) -> None:
    want = unhex(wire)
    assert c.encode(msg) == want == msg.encode()
    assert c.decode(want) == msg
    assert c.decode_frame(want[2:]) == msg
    assert len(want) == type(msg).FRAME_LEN


def test_login_signing_payload_is_pinned() -> None:
    login = c.Login(
        key_id=0x0A0B,
        timestamp_ns=0x0102,
        nonce=b"\xee" * 32,
        signature=b"\x55" * 32,
        heartbeat_ms=1000,
        session_kind=c.SessionKind.ORDER_ENTRY,
        flags=c.LoginFlags.CANCEL_ON_DISCONNECT,
        next_seq=c.stream_seq(3, 0),
    )
    want = b"\xee" * 32 + unhex("0201000000000000 0b0a000000000000 01 e8030000 01 0000030000000000")
    assert login.signing_payload() == want
    assert len(want) == c.LOGIN_SIGNING_PAYLOAD_LEN
    # The signature is not signed.
    assert dataclasses.replace(login, signature=bytes(32)).signing_payload() == want
    # signed_login signs exactly that payload with HMAC-SHA256.
    challenge = c.Challenge(nonce=b"\xee" * 32, server_time_ns=0)
    signed = c.signed_login(
        challenge,
        key_id=0x0A0B,
        secret=b"k",
        timestamp_ns=0x0102,
        session_kind=c.SessionKind.ORDER_ENTRY,
        heartbeat_ms=1000,
        flags=c.LoginFlags.CANCEL_ON_DISCONNECT,
        next_seq=c.stream_seq(3, 0),
    )
    import hashlib
    import hmac

    assert signed.signature == hmac.new(b"k", want, hashlib.sha256).digest()
    assert signed.verify(b"k")
    assert not signed.verify(b"other")


def test_stream_seq() -> None:
    assert c.stream_seq(5, 1) == 0x5_0001
    assert c.split_stream_seq(c.stream_seq(123, 65535)) == (123, 65535)
    with pytest.raises(ValueError, match="16 bits"):
        c.stream_seq(1, 65536)


# ---- Property tests ----------------------------------------------------------------------


def _field_strategy(type_name: str) -> st.SearchStrategy[Any]:
    wire = c.TYPES[type_name]
    if type_name in c.ENUMS and type_name != "Bool":
        return st.sampled_from(list(c.ENUMS[type_name]))
    if type_name == "Bool":
        return st.booleans()
    if type_name in ("Nonce", "Signature"):
        return st.binary(min_size=32, max_size=32)
    if type_name == "LoginFlags":
        return st.sampled_from([c.LoginFlags.NONE, c.LoginFlags.CANCEL_ON_DISCONNECT])
    if type_name == "OrderRef":
        return st.builds(
            c.OrderRef, st.sampled_from(list(c.OrderRefKind)), _field_strategy("uint64")
        )
    if type_name == "OptionalMarket":
        return st.none() | _field_strategy("MarketId")
    bits = wire.size * 8
    return st.one_of(
        st.sampled_from([0, 1, (1 << bits) - 1]),
        st.integers(0, 1000),
        st.integers(0, (1 << bits) - 1),
    )


def _message_strategy(cls: type[c.WireMessage]) -> st.SearchStrategy[c.Message]:
    fields = {f.name: _field_strategy(f.type_name) for f in cls.SPEC.fields}
    build: Callable[..., c.Message] = cls  # type: ignore[assignment]
    return st.builds(build, **fields)


ANY_MESSAGE: st.SearchStrategy[c.Message] = st.one_of(
    [_message_strategy(cls) for cls in c.MESSAGE_TYPES]
)


@settings(max_examples=300)
@given(ANY_MESSAGE)
def test_every_message_roundtrips(msg: c.Message) -> None:
    wire = c.encode(msg)
    assert len(wire) == type(msg).FRAME_LEN
    assert int.from_bytes(wire[:2], "little") == len(wire) - 2
    assert c.decode(wire) == msg


@settings(max_examples=100)
@given(st.lists(ANY_MESSAGE, min_size=1, max_size=40), st.data())
def test_stream_decodes_in_any_chunking(msgs: list[c.Message], data: st.DataObject) -> None:
    stream = c.encode_many(msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=30)))
    dec = c.FrameDecoder()
    got: list[c.Message] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        got.extend(dec.feed(stream[prev:cut]))
        prev = cut
    assert got == msgs
    assert dec.buffered == 0


DECODE_REASONS = {
    PE.FRAME_TOO_LARGE,
    PE.FRAME_TOO_SHORT,
    PE.WRONG_SCHEMA,
    PE.UNSUPPORTED_VERSION,
    PE.UNKNOWN_TEMPLATE,
    PE.BAD_BLOCK_LENGTH,
    PE.TRUNCATED,
    PE.TRAILING_BYTES,
    PE.INVALID_VALUE,
}


def _decode_or_error(data: bytes) -> c.Message | c.ProtocolDecodeError:
    try:
        return c.decode(data)
    except c.ProtocolDecodeError as e:
        return e


@settings(max_examples=300)
@given(st.sampled_from(c.MESSAGE_TYPES), st.binary(min_size=1, max_size=200))
def test_decoding_is_canonical(cls: type[c.WireMessage], body: bytes) -> None:
    """A valid header and an arbitrary body: whatever decodes re-encodes to the same bytes."""
    n = cls.BLOCK_LENGTH
    block = (body * (n // len(body) + 1))[:n]
    frame = struct.pack("<HHHHH", 8 + n, n, cls.TEMPLATE_ID, c.SCHEMA_ID, 1) + block
    outcome = _decode_or_error(frame)
    if isinstance(outcome, c.ProtocolDecodeError):
        assert outcome.reason == PE.INVALID_VALUE
        assert outcome.template_id == cls.TEMPLATE_ID
    else:
        assert c.encode(outcome) == frame


@settings(max_examples=300)
@given(st.binary(max_size=600), st.integers(1, 64))
def test_arbitrary_bytes_only_raise_decode_errors(data: bytes, chunk: int) -> None:
    dec = c.FrameDecoder()
    error: c.ProtocolDecodeError | None = None
    for i in range(0, len(data), chunk):
        try:
            msgs = dec.feed(data[i : i + chunk])
        except c.ProtocolDecodeError as e:
            error = e
            break
        for m in msgs:
            assert c.decode(c.encode(m)) == m
    if error is not None:
        assert error.reason in DECODE_REASONS
    outcome = _decode_or_error(data)
    if isinstance(outcome, c.ProtocolDecodeError):
        assert outcome.reason in DECODE_REASONS


# ---- Decode errors -----------------------------------------------------------------------


def _frame(msg: c.Message) -> bytearray:
    return bytearray(c.encode(msg))


def _new_order() -> c.NewOrder:
    return c.NewOrder(
        client_ref=1,
        market=1,
        client_order_id=0,
        side=c.Side.BUY,
        order_type=c.OrderType.LIMIT,
        time_in_force=c.TimeInForce.GTC,
        post_only=False,
        stp=c.StpMode.NONE,
        price=1,
        quantity=1,
        quote_quantity=0,
        reserve_price=0,
    )


def _decode_error(data: bytes | bytearray) -> c.ProtocolDecodeError:
    with pytest.raises(c.ProtocolDecodeError) as info:
        c.decode(bytes(data))
    # The streaming decoder finds the same error.
    with pytest.raises(c.ProtocolDecodeError) as streamed:
        c.FrameDecoder().feed(bytes(data))
    assert streamed.value.reason == info.value.reason
    return info.value


def test_frame_too_large_and_too_short() -> None:
    e = _decode_error(b"\x01\x04" + bytes(1025))
    assert e.reason == PE.FRAME_TOO_LARGE
    assert "1025" in str(e)
    assert "FrameTooLarge" in str(e)
    assert _decode_error(b"\x07\x00" + bytes(7)).reason == PE.FRAME_TOO_SHORT
    with pytest.raises(c.ProtocolDecodeError) as info:
        c.decode_frame(bytes(5))
    assert info.value.reason == PE.FRAME_TOO_SHORT
    # The largest allowed length just waits for its bytes.
    assert c.FrameDecoder().feed(b"\x00\x04") == []


def test_header_errors() -> None:
    hb = _frame(c.Heartbeat(timestamp_ns=5))
    f = bytearray(hb)
    f[6] = 0
    e = _decode_error(f)
    assert (e.reason, e.template_id) == (PE.WRONG_SCHEMA, 5)
    f = bytearray(hb)
    f[8] = 2
    assert _decode_error(f).reason == PE.UNSUPPORTED_VERSION
    for template in (0, 9, 14, 99, 0xFFFF):
        f = bytearray(hb)
        f[4:6] = template.to_bytes(2, "little")
        e = _decode_error(f)
        assert (e.reason, e.template_id) == (PE.UNKNOWN_TEMPLATE, template)
    f = bytearray(hb)
    f[2] = 9
    e = _decode_error(f)
    assert (e.reason, e.message) == (PE.BAD_BLOCK_LENGTH, "Heartbeat")


def test_truncated_and_trailing_bytes() -> None:
    hb = _frame(c.Heartbeat(timestamp_ns=5))
    # The length prefix says the frame is one byte short of the block.
    short = bytearray(hb[:-1])
    short[0] -= 1
    e = _decode_error(short)
    assert (e.reason, e.message) == (PE.TRUNCATED, "Heartbeat")
    long = bytearray(hb + b"\x00")
    long[0] += 1
    e = _decode_error(long)
    assert (e.reason, e.message) == (PE.TRAILING_BYTES, "Heartbeat")
    # decode() of one frame: fewer or more bytes than the prefix announces.
    with pytest.raises(c.ProtocolDecodeError) as info:
        c.decode(bytes(hb[:-1]))
    assert info.value.reason == PE.TRUNCATED
    with pytest.raises(c.ProtocolDecodeError) as info:
        c.decode(bytes(hb) + b"\x00")
    assert info.value.reason == PE.TRAILING_BYTES
    with pytest.raises(c.ProtocolDecodeError) as info:
        c.decode(b"\x10")
    assert info.value.reason == PE.TRUNCATED


@pytest.mark.parametrize(
    ("msg", "body_offset", "byte", "field", "value"),
    [
        (_new_order(), 20, 3, "side", 3),
        (_new_order(), 20, 0, "side", 0),
        (_new_order(), 21, 3, "order_type", 3),
        (_new_order(), 22, 0, "time_in_force", 0),
        (_new_order(), 23, 2, "post_only", 2),
        (_new_order(), 24, 0, "stp", 0),
        (_new_order(), 24, 6, "stp", 6),
        (c.CancelOrder(client_ref=1, order=c.OrderRef.by_order_id(4)), 8, 3, "order", 3),
        (c.CancelOrder(client_ref=1, order=c.OrderRef.by_order_id(4)), 8, 0, "order", 0),
        (c.MassCancel(client_ref=1, market=None, side=c.SideFilter.BUY), 9, 1, "market", 1),
        (c.MassCancel(client_ref=1, market=None, side=c.SideFilter.BUY), 8, 2, "market", 2),
        (c.MassCancel(client_ref=1, market=None, side=c.SideFilter.BUY), 13, 3, "side", 3),
        (c.LoginRejected(reason=c.LoginRejectReason.BAD_SIGNATURE), 0, 12, "reason", 12),
        (c.EndOfSession(reason=c.EndReason.LOGGED_OUT), 0, 0, "reason", 0),
        (c.ProtocolError(reason=PE.FLOOD, template_id=0, offset=0), 0, 15, "reason", 15),
        (c.MdSubscribe(market=1, feed=c.FeedKind.LEVELS, depth=0), 4, 4, "feed", 4),
    ],
)
def test_invalid_values_name_the_field_and_offset(
    msg: c.Message, body_offset: int, byte: int, field: str, value: int
) -> None:
    f = _frame(msg)
    f[10 + body_offset] = byte
    e = _decode_error(f)
    assert e.reason == PE.INVALID_VALUE
    assert e.message == type(msg).__name__
    assert e.field == field
    assert e.offset == next(s.offset for s in type(msg).SPEC.fields if s.name == field)
    assert e.value == value
    assert f"{type(msg).__name__}.{field}" in str(e)


def test_invalid_uint16_codes_and_flags() -> None:
    reject = c.OrderRejected(
        seq=0,
        timestamp_ns=0,
        client_ref=1,
        request_template=10,
        order_id=0,
        client_order_id=0,
        reason=c.RejectCode.THROTTLED,
    )
    for code in (0, 30, 99, 106, 0xFFFF):
        f = _frame(reject)
        f[10 + 42 : 10 + 44] = code.to_bytes(2, "little")
        e = _decode_error(f)
        assert (e.reason, e.field, e.offset, e.value) == (PE.INVALID_VALUE, "reason", 42, code)
    login = c.signed_login(
        c.Challenge(nonce=bytes(32), server_time_ns=0), key_id=1, secret=b"s", timestamp_ns=0
    )
    for bits in (0x02, 0x80, 0xFF):
        f = _frame(login)
        f[10 + 85] = bits
        e = _decode_error(f)
        assert (e.field, e.offset, e.value) == ("flags", 85, bits)


def test_decoder_waits_and_poisons() -> None:
    hb = c.encode(c.Heartbeat(timestamp_ns=1))
    dec = c.FrameDecoder()
    for b in hb[:-1]:
        assert dec.feed(bytes([b])) == []
    assert dec.feed(hb[-1:]) == [c.Heartbeat(timestamp_ns=1)]
    assert dec.buffered == 0
    # Good frames before a bad one are handed over with the error; then the decoder is dead.
    with pytest.raises(c.ProtocolDecodeError) as info:
        dec.feed(hb + hb + b"\x01\x04")
    assert info.value.reason == PE.FRAME_TOO_LARGE
    assert info.value.decoded == [c.Heartbeat(timestamp_ns=1)] * 2
    assert dec.error is info.value
    with pytest.raises(c.ProtocolDecodeError) as again:
        dec.feed(hb)
    assert again.value is info.value
    assert again.value.decoded == []


def test_encode_refuses_what_it_cannot_represent() -> None:
    with pytest.raises(c.ProtocolEncodeError, match=r"Heartbeat\.timestamp_ns"):
        c.encode(c.Heartbeat(timestamp_ns=1 << 64))
    with pytest.raises(c.ProtocolEncodeError):
        c.encode(c.Heartbeat(timestamp_ns=-1))
    with pytest.raises(c.ProtocolEncodeError, match="side"):
        c.encode(dataclasses.replace(_new_order(), side=3))  # type: ignore[arg-type]
    with pytest.raises(c.ProtocolEncodeError, match="post_only"):
        c.encode(dataclasses.replace(_new_order(), post_only=2))  # type: ignore[arg-type]
    with pytest.raises(c.ProtocolEncodeError, match="nonce"):
        c.encode(c.Challenge(nonce=b"short", server_time_ns=0))
    with pytest.raises(c.ProtocolEncodeError, match="order"):
        c.encode(c.CancelOrder(client_ref=1, order=c.OrderRef(3, 1)))  # type: ignore[arg-type]
    with pytest.raises(c.ProtocolEncodeError, match="market"):
        c.encode(c.MassCancel(client_ref=1, market=1 << 32, side=c.SideFilter.BOTH))
    login = c.signed_login(
        c.Challenge(nonce=bytes(32), server_time_ns=0), key_id=1, secret=b"s", timestamp_ns=0
    )
    with pytest.raises(c.ProtocolEncodeError, match="flags"):
        c.encode(dataclasses.replace(login, flags=2))  # type: ignore[arg-type]
    with pytest.raises(c.ProtocolEncodeError):
        c.encode("not a message")  # type: ignore[arg-type]


def test_optional_market_and_order_ref_forms() -> None:
    every = c.MassCancel(client_ref=1, market=None, side=c.SideFilter.SELL)
    zero = c.MassCancel(client_ref=1, market=0, side=c.SideFilter.SELL)
    assert c.encode(every)[18:23] == bytes(5)
    assert c.encode(zero)[18:23] == b"\x01" + bytes(4)
    assert c.decode(c.encode(every)).market is None  # type: ignore[union-attr]
    assert c.decode(c.encode(zero)).market == 0  # type: ignore[union-attr]
    assert c.OrderRef.by_order_id(5) == c.OrderRef(c.OrderRefKind.ORDER_ID, 5)


# ---- Client helpers (the client against the real gateway: tests/test_gateway.py) ---------


def test_client_ref_allocator() -> None:
    seeded = ClientRefAllocator(5)
    assert [seeded.next() for _ in range(3)] == [5, 6, 7]
    seeded.observe(100)
    assert seeded.next() == 101
    clock = iter([1000, 500, 2000])
    timed = ClientRefAllocator(clock=lambda: next(clock))
    assert [timed.next(), timed.next(), timed.next()] == [1000, 1001, 2000]
    with pytest.raises(ValueError, match="at least 1"):
        ClientRefAllocator(0)
