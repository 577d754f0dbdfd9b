"""The engine bindings (``controlplane._engine``), exercised through the built module."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane import (
    Command,
    CommandError,
    Engine,
    EngineError,
    Event,
    InvariantViolation,
    ToolError,
    bench_engine,
    encode_command,
    replay_lobster,
)
from tests.conftest import (
    ALICE,
    BOB,
    BTC,
    COIN,
    MARKET,
    SETUP,
    TICK_VALUE,
    USDT,
    apply_all,
    limit,
    new_exchange,
)

PRICE = 3_000_000  # 30,000.00 USDT per BTC
QTY = 1_000_000  # 0.01 BTC = 1000 lots


def of_type(events: list[Event], kind: str) -> list[dict[str, Any]]:
    return [cast(dict[str, Any], e) for e in events if e["type"] == kind]


def quote_value(price: int, quantity: int) -> int:
    """Quote atoms for `quantity` base atoms at `price` on the test market (tick 1, lot 1000)."""
    return quantity // 1000 * price * TICK_VALUE


# --- listing and funding --------------------------------------------------------------------


def test_listing_assets_and_markets() -> None:
    engine = Engine(order_capacity=1024, levels_per_side=64)
    events = apply_all(engine, SETUP[:3])
    assert of_type(events, "asset_listed") == [
        {"type": "asset_listed", "asset": BTC, "decimals": 8},
        {"type": "asset_listed", "asset": USDT, "decimals": 8},
    ]
    assert of_type(events, "market_listed") == [
        {"type": "market_listed", "market": MARKET, "base": BTC, "quote": USDT, "tick_value": 10}
    ]
    market = engine.market(MARKET)
    assert market is not None
    assert market["base"] == BTC
    assert market["quote"] == USDT
    assert market["tick_size"] == 1
    assert market["lot_size"] == 1000
    assert market["tick_value"] == TICK_VALUE
    assert market["status"] == "trading"
    assert engine.market(99) is None


def test_listing_twice_is_rejected_not_raised(exchange: Engine) -> None:
    before = exchange.state_hash()
    [event] = exchange.apply({"type": "list_asset", "asset": BTC, "decimals": 8})
    assert event["type"] == "rejected"
    assert event["command"] == "list_asset"
    assert event["reason"] == "asset_exists"
    assert exchange.state_hash() == before


def test_deposits_credit_free_balance() -> None:
    engine = Engine()
    events = apply_all(engine, SETUP)
    assert {"type": "deposited", "account": BOB, "asset": BTC, "amount": COIN} in events
    assert engine.balance(ALICE, USDT) == (1_000 * COIN, 0)
    assert engine.balance(BOB, BTC) == (COIN, 0)
    assert engine.balance(ALICE, BTC) == (0, 0)
    assert engine.balance(999, BTC) is None


def test_deposit_to_unknown_account_is_rejected(exchange: Engine) -> None:
    before = exchange.state_hash()
    events = exchange.apply({"type": "deposit", "account": 77, "asset": BTC, "amount": 5})
    assert [(e["type"], cast(dict[str, Any], e).get("reason")) for e in events] == [
        ("rejected", "unknown_account")
    ]
    assert exchange.state_hash() == before


# --- orders ---------------------------------------------------------------------------------


def test_limit_order_rests(exchange: Engine) -> None:
    events = exchange.apply(limit(BOB, "sell", PRICE, QTY, client_order_id=7))
    [accepted] = of_type(events, "accepted")
    order_id = accepted["order_id"]
    assert accepted["account"] == BOB
    assert accepted["side"] == "sell"
    assert accepted["price"] == PRICE
    assert accepted["quantity"] == QTY
    assert accepted["client_order_id"] == 7
    # What the command asked for (defaults here): no post-only, no STP, no reserve price.
    assert (accepted["post_only"], accepted["stp"], accepted["reserve_price"]) == (False, "none", 0)
    assert {"type": "balance", "account": BOB, "asset": BTC, "free": COIN - QTY, "held": QTY} in (
        events
    )
    [book] = of_type(events, "book")
    assert book["action"] == "add"
    assert book["order_id"] == order_id
    assert (book["level_quantity"], book["level_orders"]) == (QTY, 1)
    assert not of_type(events, "trade")

    assert exchange.balance(BOB, BTC) == (COIN - QTY, QTY)
    assert exchange.depth(MARKET, "sell", 10) == [(PRICE, QTY, 1)]
    assert exchange.depth(MARKET, "buy", 10) == []
    order = exchange.order(order_id)
    assert order is not None
    assert (order["account"], order["side"], order["price"]) == (BOB, "sell", PRICE)
    assert (order["leaves_quantity"], order["filled_quantity"]) == (QTY, 0)
    assert exchange.open_orders(BOB) == [order]
    assert exchange.book_orders(MARKET, "sell") == [order]
    assert exchange.open_orders(ALICE) == []
    exchange.check_invariants()


def test_crossing_order_trades_at_the_resting_price(exchange: Engine) -> None:
    [maker] = of_type(
        exchange.apply(limit(BOB, "sell", PRICE, QTY, client_order_id=11)), "accepted"
    )
    take = 400_000
    events = exchange.apply(limit(ALICE, "buy", PRICE + 100_000, take, client_order_id=22))
    [taker] = of_type(events, "accepted")

    [trade] = of_type(events, "trade")
    assert trade["price"] == PRICE  # the maker's price, not the taker's limit
    assert trade["quantity"] == take
    assert trade["quote_quantity"] == quote_value(PRICE, take)
    assert trade["aggressor"] == "buy"
    assert (trade["maker_order_id"], trade["taker_order_id"]) == (
        maker["order_id"],
        taker["order_id"],
    )
    assert (trade["maker_account"], trade["taker_account"]) == (BOB, ALICE)
    assert (trade["maker_fee"], trade["taker_fee"]) == (0, 0)  # fee tier 0
    # Enough for both sides' execution reports: client ids, and what each still has open.
    assert (trade["maker_client_order_id"], trade["taker_client_order_id"]) == (11, 22)
    assert (trade["maker_leaves_quantity"], trade["taker_leaves_quantity"]) == (QTY - take, 0)

    [done] = of_type(events, "order_done")
    assert done["order_id"] == taker["order_id"]
    assert done["reason"] == "filled"
    assert done["filled_quantity"] == take

    cost = quote_value(PRICE, take)
    assert exchange.balance(ALICE, USDT) == (1_000 * COIN - cost, 0)
    assert exchange.balance(ALICE, BTC) == (take, 0)
    assert exchange.balance(BOB, BTC) == (COIN - QTY, QTY - take)
    assert exchange.balance(BOB, USDT) == (cost, 0)
    assert exchange.depth(MARKET, "sell", 10) == [(PRICE, QTY - take, 1)]
    assert exchange.depth(MARKET, "buy", 10) == []
    assert exchange.order(taker["order_id"]) is None
    exchange.check_invariants()


def test_accepted_repeats_post_only_stp_and_reserve_price(exchange: Engine) -> None:
    order = limit(ALICE, "buy", PRICE, QTY)
    order["post_only"] = True
    order["stp"] = "expire_both"
    order["reserve_price"] = PRICE + 1000
    [accepted] = of_type(exchange.apply(order), "accepted")
    assert (accepted["post_only"], accepted["stp"], accepted["reserve_price"]) == (
        True,
        "expire_both",
        PRICE + 1000,
    )


def test_amended_names_the_client_order_id(exchange: Engine) -> None:
    [accepted] = of_type(
        exchange.apply(limit(BOB, "sell", PRICE, QTY, client_order_id=5)), "accepted"
    )
    events = exchange.apply(
        {"type": "amend_order", "account": BOB, "order": {"client": 5}, "new_quantity": QTY // 2}
    )
    [amended] = of_type(events, "amended")
    assert (amended["order_id"], amended["client_order_id"]) == (accepted["order_id"], 5)
    assert (amended["leaves_quantity"], amended["kept_priority"]) == (QTY // 2, True)


def test_cancel_all_by_side_leaves_the_other_side(exchange: Engine) -> None:
    apply_all(
        exchange,
        [
            limit(BOB, "sell", PRICE, QTY),
            limit(ALICE, "buy", PRICE - 1000, QTY),
            limit(ALICE, "buy", PRICE - 2000, QTY),
        ],
    )
    [sell] = exchange.open_orders(BOB)
    events = exchange.apply({"type": "cancel_all", "account": ALICE, "side": "buy"})
    [report] = of_type(events, "mass_cancelled")
    assert report == {
        "type": "mass_cancelled",
        "account": ALICE,
        "market": None,
        "side": "buy",
        "count": 2,
    }
    assert exchange.open_orders(ALICE) == []
    assert exchange.open_orders(BOB) == [sell]
    # Bob's only order is a sell: cancelling his buys in the market cancels nothing.
    events = exchange.apply({"type": "cancel_all", "account": BOB, "market": MARKET, "side": "buy"})
    [report] = of_type(events, "mass_cancelled")
    assert (report["market"], report["side"], report["count"]) == (MARKET, "buy", 0)
    assert exchange.open_orders(BOB) == [sell]
    # Without a side, both sides.
    [report] = of_type(exchange.apply({"type": "cancel_all", "account": BOB}), "mass_cancelled")
    assert (report["market"], report["side"], report["count"]) == (None, None, 1)
    exchange.check_invariants()


def test_order_the_account_cannot_afford_is_rejected(exchange: Engine) -> None:
    before = exchange.state_hash()
    events = exchange.apply(limit(ALICE, "buy", PRICE, COIN))  # 30,000 USDT, has 1,000
    [rejected] = of_type(events, "rejected")
    assert rejected["reason"] == "insufficient_balance"
    assert rejected["command"] == "place_order"
    assert exchange.state_hash() == before
    assert exchange.balance(ALICE, USDT) == (1_000 * COIN, 0)


def test_depth_orders_levels_best_first(exchange: Engine) -> None:
    for price in (PRICE + 200, PRICE, PRICE + 100, PRICE):
        apply_all(exchange, [limit(BOB, "sell", price, QTY)])
    assert exchange.depth(MARKET, "sell", 2) == [(PRICE, 2 * QTY, 2), (PRICE + 100, QTY, 1)]
    prices = [o["price"] for o in exchange.book_orders(MARKET, "sell")]
    assert prices == [PRICE, PRICE, PRICE + 100, PRICE + 200]


def test_query_with_unknown_side_raises_value_error(exchange: Engine) -> None:
    with pytest.raises(ValueError, match="side"):
        exchange.depth(MARKET, cast(Any, "bid"), 5)
    with pytest.raises(ValueError, match="side"):
        exchange.book_orders(MARKET, cast(Any, "up"))


# --- determinism ----------------------------------------------------------------------------


def test_state_hash_is_deterministic() -> None:
    orders: list[Command] = [
        limit(BOB, "sell", PRICE, QTY),
        limit(BOB, "sell", PRICE + 10, QTY),
        limit(ALICE, "buy", PRICE + 10, 3 * QTY // 2),
    ]
    a, b = new_exchange(), new_exchange()
    assert re.fullmatch(r"[0-9a-f]{32}", a.state_hash())
    assert a.state_hash() == b.state_hash()
    assert apply_all(a, orders) == apply_all(b, orders)
    assert a.state_hash() == b.state_hash()
    apply_all(b, [{"type": "deposit", "account": ALICE, "asset": BTC, "amount": 1}])
    assert a.state_hash() != b.state_hash()


def test_check_invariants_passes_on_a_valid_engine(exchange: Engine) -> None:
    exchange.check_invariants()
    assert issubclass(InvariantViolation, EngineError)


# --- bad input ------------------------------------------------------------------------------

BAD_COMMANDS: list[tuple[object, str]] = [
    ({"account": ALICE, "asset": BTC, "amount": 1}, "type"),
    ({"type": "teleport", "account": ALICE}, "teleport"),
    ({"type": 5, "account": ALICE}, "type"),
    ({"type": "deposit", "account": ALICE, "asset": BTC}, "amount"),
    ({"type": "deposit", "account": ALICE, "asset": BTC, "amount": "lots"}, "amount"),
    ({"type": "deposit", "account": ALICE, "asset": BTC, "amount": 1.5}, "amount"),
    ({"type": "deposit", "account": -1, "asset": BTC, "amount": 1}, "account"),
    ({"type": "deposit", "account": ALICE, "asset": BTC, "amount": 2**64}, "amount"),
    ({"type": "deposit", "account": ALICE, "asset": 2**32, "amount": 1}, "asset"),
    ({**limit(ALICE, "buy", PRICE, QTY), "side": "up"}, "side"),
    ({**limit(ALICE, "buy", PRICE, QTY), "time_in_force": "forever"}, "time_in_force"),
    ({**limit(ALICE, "buy", PRICE, QTY), "price": None}, "price"),
    ({"type": "cancel_order", "account": ALICE, "order": {"oid": 1}}, "order"),
    ({"type": "cancel_order", "account": ALICE, "order": 1}, "order"),
    ([("type", "deposit")], "dict"),
    (None, "dict"),
]


@pytest.mark.parametrize(("command", "field"), BAD_COMMANDS)
def test_malformed_command_raises_command_error(
    exchange: Engine, command: object, field: str
) -> None:
    before = exchange.state_hash()
    with pytest.raises(CommandError, match=re.escape(field)) as info:
        exchange.apply(cast(Any, command))
    assert isinstance(info.value, EngineError)
    with pytest.raises(CommandError, match=re.escape(field)):
        encode_command(cast(Any, command))
    assert exchange.state_hash() == before


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"\xff" * 8,
        encode_command(limit(ALICE, "buy", PRICE, QTY))[:-1],
        encode_command(limit(ALICE, "buy", PRICE, QTY)) + b"\x00",
    ],
    ids=["empty", "tag-0", "unknown-tag", "truncated", "trailing"],
)
def test_undecodable_bytes_raise_command_error(exchange: Engine, data: bytes) -> None:
    before = exchange.state_hash()
    with pytest.raises(CommandError, match="undecodable"):
        exchange.apply_bytes(data)
    assert exchange.state_hash() == before


def test_bad_enum_byte_names_the_field(exchange: Engine) -> None:
    data = bytearray(encode_command(limit(ALICE, "buy", PRICE, QTY)))
    side_offset = 1 + 8 + 4 + 8  # tag, account, market, client_order_id
    data[side_offset] = 9
    with pytest.raises(CommandError, match="side"):
        exchange.apply_bytes(bytes(data))


def test_cancel_all_filter_byte(exchange: Engine) -> None:
    # tag, account, then the filter byte: bit 0 = a market follows, bits 1-2 = the side.
    data = encode_command({"type": "cancel_all", "account": ALICE, "side": "sell"})
    assert data == bytes([12]) + ALICE.to_bytes(8, "little") + bytes([0b100])
    # Side 3 and higher bits are not commands.
    for bad in (0b110, 0b1000):
        with pytest.raises(CommandError, match="cancel_filter"):
            exchange.apply_bytes(data[:-1] + bytes([bad]))


_FUZZ_ENGINE = new_exchange()


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=96))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    engine = _FUZZ_ENGINE
    before = engine.state_hash()
    try:
        events = engine.apply_bytes(data)
    except CommandError:
        assert engine.state_hash() == before
    else:  # some byte strings are valid commands
        assert events
        assert all(isinstance(e["type"], str) for e in events)
    engine.check_invariants()


# --- binary codec ---------------------------------------------------------------------------


def test_encoded_commands_apply_like_dicts() -> None:
    commands: list[Command] = [
        *SETUP,
        limit(BOB, "sell", PRICE, QTY, client_order_id=1),
        limit(ALICE, "buy", PRICE, QTY // 2),
        {"type": "cancel_order", "account": BOB, "order": {"client": 1}},
        {"type": "cancel_all", "account": ALICE, "market": MARKET},
        limit(BOB, "sell", PRICE, QTY),
        limit(ALICE, "buy", PRICE // 2, QTY),
        {"type": "cancel_all", "account": ALICE, "side": "buy"},
        {"type": "cancel_all", "account": BOB, "market": MARKET, "side": "sell"},
        {"type": "withdraw", "account": ALICE, "asset": BTC, "amount": 1000},
    ]
    by_dict, by_bytes = Engine(), Engine()
    for command in commands:
        data = encode_command(command)
        assert isinstance(data, bytes)
        assert by_bytes.apply_bytes(data) == by_dict.apply(command)
    assert by_bytes.state_hash() == by_dict.state_hash()


_u64 = st.integers(min_value=0, max_value=2**64 - 1)


@settings(max_examples=200, deadline=None)
@given(
    account=_u64,
    market=st.integers(min_value=0, max_value=2**32 - 1),
    side=st.sampled_from(["buy", "sell"]),
    order_type=st.sampled_from(["limit", "market"]),
    tif=st.sampled_from(["gtc", "ioc", "fok"]),
    stp=st.sampled_from(["none", "expire_taker", "expire_maker", "expire_both", "decrement"]),
    post_only=st.booleans(),
    numbers=st.tuples(_u64, _u64, _u64, _u64, _u64),
)
def test_place_order_roundtrips_through_bytes(
    account: int,
    market: int,
    side: Any,
    order_type: Any,
    tif: Any,
    stp: Any,
    post_only: bool,
    numbers: tuple[int, int, int, int, int],
) -> None:
    client_order_id, price, quantity, quote_quantity, reserve_price = numbers
    command: Command = {
        "type": "place_order",
        "account": account,
        "market": market,
        "client_order_id": client_order_id,
        "side": side,
        "order_type": order_type,
        "time_in_force": tif,
        "post_only": post_only,
        "stp": stp,
        "price": price,
        "quantity": quantity,
        "quote_quantity": quote_quantity,
        "reserve_price": reserve_price,
    }
    by_dict, by_bytes = new_exchange(), new_exchange()
    assert by_bytes.apply_bytes(encode_command(command)) == by_dict.apply(command)
    assert by_bytes.state_hash() == by_dict.state_hash()


# --- tools ----------------------------------------------------------------------------------


def test_exception_tree() -> None:
    for error in (CommandError, InvariantViolation, ToolError):
        assert issubclass(error, EngineError)
    assert issubclass(EngineError, Exception)


def test_tools_report_failures_as_tool_error(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match=r"nope\.zip"):
        replay_lobster(tmp_path / "nope.zip")
    with pytest.raises(ToolError):
        bench_engine("no-such-workload", 10, 1)


def test_replay_lobster_returns_a_json_line(lobster_zip: Path) -> None:
    line = replay_lobster(str(lobster_zip), max_messages=1000)
    assert isinstance(json.loads(line), dict)


def test_bench_engine_returns_a_json_line() -> None:
    line = bench_engine("exchange-core", 10_000, 1)
    assert isinstance(json.loads(line), dict)
