//! Property tests of the command codec, and of the engine against whatever it decodes.
//!
//! * encode → decode is the identity on every command, and `to_bytes` equals `encode`;
//! * every strict prefix of an encoding is `Truncated`, and extra bytes are `TrailingBytes`;
//! * decoding arbitrary bytes never panics: it errors (with an error that describes the
//!   bytes truthfully) or gives a command that re-encodes to exactly those bytes;
//! * whatever decodes, applied to an engine with state, never panics, always yields at least
//!   one event, keeps `check_invariants` and leaves the state hash alone when rejected;
//! * serde JSON round-trips commands and events.

use std::sync::OnceLock;

use bourse_engine::*;
use proptest::prelude::*;

// ----- strategies -----------------------------------------------------------------------

/// Any u64, with the edges and small values well represented.
fn num64() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => any::<u64>(),
        3 => 0u64..10_000,
        1 => Just(u64::MAX),
        1 => (0u64..100).prop_map(|k| k * 25),
        1 => (0u64..100).prop_map(|k| k * 2_000),
        1 => (0u64..100).prop_map(|k| k * 10_000),
    ]
}

fn num32() -> impl Strategy<Value = u32> {
    prop_oneof![3 => any::<u32>(), 3 => 0u32..32, 1 => Just(u32::MAX)]
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Buy), Just(Side::Sell)]
}

fn order_type() -> impl Strategy<Value = OrderType> {
    prop_oneof![Just(OrderType::Limit), Just(OrderType::Market)]
}

fn tif() -> impl Strategy<Value = TimeInForce> {
    prop_oneof![Just(TimeInForce::Gtc), Just(TimeInForce::Ioc), Just(TimeInForce::Fok)]
}

fn stp() -> impl Strategy<Value = StpMode> {
    prop_oneof![
        Just(StpMode::None),
        Just(StpMode::ExpireTaker),
        Just(StpMode::ExpireMaker),
        Just(StpMode::ExpireBoth),
        Just(StpMode::Decrement),
    ]
}

fn market_status() -> impl Strategy<Value = MarketStatus> {
    prop_oneof![
        Just(MarketStatus::Trading),
        Just(MarketStatus::Halted),
        Just(MarketStatus::Delisted)
    ]
}

fn account_status() -> impl Strategy<Value = AccountStatus> {
    prop_oneof![Just(AccountStatus::Active), Just(AccountStatus::Frozen)]
}

fn account() -> impl Strategy<Value = AccountId> {
    prop_oneof![3 => 0u64..5, 1 => any::<u64>()].prop_map(AccountId)
}

fn asset() -> impl Strategy<Value = AssetId> {
    prop_oneof![3 => 0u32..5, 1 => any::<u32>()].prop_map(AssetId)
}

fn market() -> impl Strategy<Value = MarketId> {
    prop_oneof![3 => prop::sample::select(vec![10u32, 20, 30]), 1 => any::<u32>()]
        .prop_map(MarketId)
}

fn order_ref() -> impl Strategy<Value = OrderRef> {
    prop_oneof![
        3 => (0u64..40).prop_map(OrderRef::Id),
        1 => any::<u64>().prop_map(OrderRef::Id),
        2 => (0u64..8).prop_map(OrderRef::Client),
        1 => any::<u64>().prop_map(OrderRef::Client),
    ]
}

fn new_order() -> impl Strategy<Value = NewOrder> {
    (
        (account(), market(), prop_oneof![0u64..8, any::<u64>()], side(), order_type(), tif()),
        (any::<bool>(), stp(), num64(), num64(), num64(), num64()),
    )
        .prop_map(
            |(
                (account, market, client_order_id, side, order_type, time_in_force),
                (post_only, stp, price, quantity, quote_quantity, reserve_price),
            )| NewOrder {
                account,
                market,
                client_order_id,
                side,
                order_type,
                time_in_force,
                post_only,
                stp,
                price,
                quantity,
                quote_quantity,
                reserve_price,
            },
        )
}

/// An order the seeded engine may well accept: known account and market, on the grid near
/// the resting orders, any type, flags and self-trade mode.
fn plausible_order() -> impl Strategy<Value = NewOrder> {
    (
        (1u64..=3, prop_oneof![Just((10u32, 25u64, 2000u64, 100u64)), Just((20, 10, 10_000, 50))]),
        (
            prop_oneof![3 => Just(0u64), 1 => 6u64..12],
            side(),
            order_type(),
            tif(),
            prop::bool::weighted(0.2),
            stp(),
        ),
        (-6i64..=6, 1u64..12, prop_oneof![Just(0u64), 1u64..5_000_000], prop::bool::weighted(0.2)),
    )
        .prop_map(
            |(
                (account, (market, tick, lot, mid)),
                (client_order_id, side, order_type, time_in_force, post_only, stp),
                (offset, lots, quote_quantity, reserve),
            )| {
                let price = (mid as i64 + offset) as u64 * tick;
                let is_market = order_type == OrderType::Market;
                let market_buy_by_quote = is_market && quote_quantity != 0;
                let side = if market_buy_by_quote { Side::Buy } else { side };
                // Mostly valid shapes: the other arms cover the invalid ones.
                let time_in_force = match time_in_force {
                    TimeInForce::Fok if is_market => TimeInForce::Ioc,
                    _ if post_only => TimeInForce::Gtc,
                    tif => tif,
                };
                let post_only = post_only && !is_market;
                let reserve = reserve && !is_market && side == Side::Buy;
                NewOrder {
                    account: AccountId(account),
                    market: MarketId(market),
                    client_order_id,
                    side,
                    order_type,
                    time_in_force,
                    post_only,
                    stp,
                    price,
                    quantity: if market_buy_by_quote { 0 } else { lots * lot },
                    quote_quantity: if order_type == OrderType::Market {
                        quote_quantity
                    } else {
                        0
                    },
                    reserve_price: if reserve { price + tick } else { 0 },
                }
            },
        )
}

/// Every kind of command, with values from anywhere in their range.
fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        1 => (asset(), any::<u8>())
            .prop_map(|(asset, decimals)| Command::ListAsset { asset, decimals }),
        1 => (market(), asset(), asset(), any::<u8>(), num64(), num64(), num64()).prop_map(
            |(market, base, quote, price_decimals, tick_size, lot_size, min_notional)| {
                Command::ListMarket {
                    market,
                    base,
                    quote,
                    price_decimals,
                    tick_size,
                    lot_size,
                    min_notional,
                }
            }
        ),
        1 => (market(), market_status())
            .prop_map(|(market, status)| Command::SetMarketStatus { market, status }),
        1 => (any::<u8>(), num32(), num32()).prop_map(|(tier, maker_bps, taker_bps)| {
            Command::SetFeeTier { tier, maker_bps, taker_bps }
        }),
        1 => (account(), any::<u8>())
            .prop_map(|(account, fee_tier)| Command::CreateAccount { account, fee_tier }),
        1 => (account(), any::<u8>())
            .prop_map(|(account, fee_tier)| Command::SetAccountFeeTier { account, fee_tier }),
        1 => (account(), account_status())
            .prop_map(|(account, status)| Command::SetAccountStatus { account, status }),
        1 => (account(), asset(), num64())
            .prop_map(|(account, asset, amount)| Command::Deposit { account, asset, amount }),
        1 => (account(), asset(), num64())
            .prop_map(|(account, asset, amount)| Command::Withdraw { account, asset, amount }),
        4 => new_order().prop_map(Command::PlaceOrder),
        6 => plausible_order().prop_map(Command::PlaceOrder),
        1 => (account(), order_ref()).prop_map(|(account, order)| Command::CancelOrder { account, order }),
        2 => (account(), prop::option::of(market()), prop::option::of(side()))
            .prop_map(|(account, market, side)| Command::CancelAll { account, market, side }),
        2 => (account(), order_ref(), num64(), num64()).prop_map(
            |(account, order, new_price, new_quantity)| Command::AmendOrder {
                account,
                order,
                new_price,
                new_quantity,
            }
        ),
    ]
}

/// Byte strings: pure noise, a valid tag with a noisy tail, and valid encodings with a few
/// bytes overwritten, cut short or extended.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3);
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..80),
        1 => (1u8..=14, prop::collection::vec(any::<u8>(), 0..70)).prop_map(|(tag, tail)| {
            let mut v = vec![tag];
            v.extend(tail);
            v
        }),
        4 => (command(), edits, prop::option::weighted(0.2, any::<prop::sample::Index>()),
              prop::collection::vec(any::<u8>(), 0..2))
            .prop_map(|(cmd, edits, cut, extra)| {
                let mut v = cmd.to_bytes();
                for (at, b) in edits {
                    let i = at.index(v.len());
                    v[i] = b;
                }
                if let Some(cut) = cut {
                    v.truncate(cut.index(v.len() + 1));
                }
                if v.len() > 1 && extra.is_empty() {
                    return v;
                }
                v.extend(extra);
                v
            }),
    ]
}

// ----- an engine with some state ----------------------------------------------------------

/// Assets, two markets, fee tiers, funded accounts and resting orders on both sides.
fn seeded_engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut e = Engine::default();
        let mut cmds = vec![
            Command::ListAsset { asset: AssetId(1), decimals: 8 },
            Command::ListAsset { asset: AssetId(2), decimals: 6 },
            Command::ListAsset { asset: AssetId(3), decimals: 2 },
            Command::ListMarket {
                market: MarketId(10),
                base: AssetId(1),
                quote: AssetId(2),
                price_decimals: 2,
                tick_size: 25,
                lot_size: 2000,
                min_notional: 1000,
            },
            Command::ListMarket {
                market: MarketId(20),
                base: AssetId(2),
                quote: AssetId(3),
                price_decimals: 1,
                tick_size: 10,
                lot_size: 10_000,
                min_notional: 0,
            },
            Command::SetFeeTier { tier: 1, maker_bps: 10, taker_bps: 30 },
            Command::SetFeeTier { tier: 2, maker_bps: 45, taker_bps: 7 },
        ];
        for a in 1..=3u64 {
            let account = AccountId(a);
            cmds.push(Command::CreateAccount { account, fee_tier: (a % 3) as u8 });
            for (asset, amount) in [(1, 1_000_000), (2, 100_000_000), (3, 1_000_000)] {
                cmds.push(Command::Deposit { account, asset: AssetId(asset), amount });
            }
        }
        let mut next_client = [0u64; 3];
        for (i, (market, tick, lot, mid)) in
            [(10u32, 25u64, 2000u64, 100u64), (20, 10, 10_000, 50)].into_iter().enumerate()
        {
            for k in 1..=4u64 {
                for (side, price) in [(Side::Buy, mid - k), (Side::Sell, mid + k)] {
                    cmds.push(Command::PlaceOrder(NewOrder {
                        account: AccountId(1 + (k + i as u64) % 3),
                        market: MarketId(market),
                        client_order_id: {
                            // 1, 2, 3, … per account, so that small client ids hit.
                            let a = ((k + i as u64) % 3) as usize;
                            next_client[a] += 1;
                            next_client[a]
                        },
                        side,
                        order_type: OrderType::Limit,
                        time_in_force: TimeInForce::Gtc,
                        post_only: false,
                        stp: StpMode::None,
                        price: price * tick,
                        quantity: (k + 2) * lot,
                        quote_quantity: 0,
                        reserve_price: 0,
                    }));
                }
            }
        }
        let mut out = Vec::new();
        for c in &cmds {
            out.clear();
            e.apply(c, &mut out);
            assert!(!matches!(out[0], Event::Rejected { .. }), "seeding {c:?}: {out:?}");
        }
        e.check_invariants().unwrap();
        e
    })
}

/// Apply `cmd` and check what must hold after any command.
fn apply_checked(engine: &mut Engine, cmd: &Command) -> Result<(), TestCaseError> {
    let before = engine.state_hash();
    let mut out = Vec::new();
    engine.apply(cmd, &mut out);
    prop_assert!(!out.is_empty(), "{:?} produced no event", cmd);
    if let [Event::Rejected { .. }] = out.as_slice() {
        prop_assert_eq!(before, engine.state_hash(), "rejected {:?} changed the state", cmd);
    }
    let rejects = out.iter().filter(|e| matches!(e, Event::Rejected { .. })).count();
    prop_assert!(rejects == 0 || out.len() == 1, "a Rejected event among others: {:?}", out);
    if let Err(e) = engine.check_invariants() {
        return Err(TestCaseError::fail(format!("after {cmd:?} ({out:?}): {e}")));
    }
    Ok(())
}

// ----- properties -------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn encode_decode_roundtrip(cmd in command()) {
        let mut buf = vec![0xAA];
        cmd.encode(&mut buf);
        let bytes = cmd.to_bytes();
        prop_assert_eq!(&buf[1..], bytes.as_slice(), "encode appends to_bytes");
        prop_assert_eq!(Command::decode(&bytes), Ok(cmd));
        prop_assert_eq!(bytes[0] as usize, cmd.kind() as usize + 1, "the tag follows the kind");
    }

    #[test]
    fn prefixes_truncate_and_suffixes_trail(cmd in command(), extra in prop::collection::vec(any::<u8>(), 1..8)) {
        let bytes = cmd.to_bytes();
        for n in 0..bytes.len() {
            let truncated = matches!(Command::decode(&bytes[..n]), Err(DecodeError::Truncated { .. }));
            prop_assert!(truncated, "prefix of {} bytes of {:?}", n, cmd);
        }
        let mut longer = bytes.clone();
        longer.extend(&extra);
        prop_assert_eq!(Command::decode(&longer), Err(DecodeError::TrailingBytes(extra.len())));
    }

    #[test]
    fn decode_never_panics_and_is_exact(bytes in bytes()) {
        match Command::decode(&bytes) {
            Ok(cmd) => prop_assert_eq!(cmd.to_bytes(), bytes),
            Err(DecodeError::Truncated { offset, needed, available }) => {
                prop_assert!(available < needed);
                prop_assert_eq!(offset + available, bytes.len());
            }
            Err(DecodeError::UnknownTag(tag)) => prop_assert_eq!(Some(&tag), bytes.first()),
            Err(DecodeError::InvalidEnum { value, offset, .. }) => {
                prop_assert_eq!(Some(&value), bytes.get(offset));
            }
            Err(DecodeError::TrailingBytes(n)) => {
                prop_assert!(n > 0 && n < bytes.len());
                let head = Command::decode(&bytes[..bytes.len() - n]);
                prop_assert!(head.is_ok(), "the bytes before the trailing ones decode");
            }
        }
    }

    #[test]
    fn decoded_bytes_keep_the_engine_sound(stream in prop::collection::vec(bytes(), 1..40)) {
        let mut engine = seeded_engine().clone();
        for bytes in &stream {
            if let Ok(cmd) = Command::decode(bytes) {
                apply_checked(&mut engine, &cmd)?;
            }
        }
    }

    #[test]
    fn arbitrary_commands_keep_the_engine_sound(stream in prop::collection::vec(command(), 1..40)) {
        let mut engine = seeded_engine().clone();
        for cmd in &stream {
            apply_checked(&mut engine, cmd)?;
        }
    }

    #[test]
    fn json_roundtrip(cmd in command()) {
        let json = serde_json::to_string(&cmd).unwrap();
        let back: Command = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, cmd, "via {}", json);
        let value = serde_json::to_value(cmd).unwrap();
        prop_assert_eq!(serde_json::from_value::<Command>(value).unwrap(), cmd);
    }

    #[test]
    fn events_json_roundtrip(stream in prop::collection::vec(command(), 1..20)) {
        let mut engine = seeded_engine().clone();
        let mut out = Vec::new();
        for cmd in &stream {
            engine.apply(cmd, &mut out);
        }
        for e in &out {
            let json = serde_json::to_string(e).unwrap();
            let back: Event = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&back, e, "via {}", json);
        }
    }
}

#[test]
fn json_fills_in_defaults() {
    let json = r#"{"type":"place_order","account":1,"market":10,"side":"buy",
                   "order_type":"limit","price":2500,"quantity":2000}"#;
    let cmd: Command = serde_json::from_str(json).unwrap();
    let Command::PlaceOrder(o) = cmd else { panic!("{cmd:?}") };
    assert_eq!(o.client_order_id, 0);
    assert_eq!(o.time_in_force, TimeInForce::Gtc);
    assert!(!o.post_only);
    assert_eq!(o.stp, StpMode::None);
    assert_eq!((o.quote_quantity, o.reserve_price), (0, 0));
    let cancel: Command = serde_json::from_str(r#"{"type":"cancel_all","account":3}"#).unwrap();
    assert_eq!(cancel, Command::CancelAll { account: AccountId(3), market: None, side: None });
    let sells: Command =
        serde_json::from_str(r#"{"type":"cancel_all","account":3,"market":null,"side":"sell"}"#)
            .unwrap();
    assert_eq!(
        sells,
        Command::CancelAll { account: AccountId(3), market: None, side: Some(Side::Sell) }
    );
    let by_client: Command =
        serde_json::from_str(r#"{"type":"cancel_order","account":3,"order":{"client":7}}"#)
            .unwrap();
    assert_eq!(
        by_client,
        Command::CancelOrder { account: AccountId(3), order: OrderRef::Client(7) }
    );
}

// ----- the cancel-all filter byte ---------------------------------------------------------

/// A CancelAll's bytes: tag 12, the account, the filter byte, then the market if any.
fn cancel_all_bytes(account: u64, filter: u8, market: Option<u32>) -> Vec<u8> {
    let mut v = vec![12];
    v.extend(account.to_le_bytes());
    v.push(filter);
    if let Some(m) = market {
        v.extend(m.to_le_bytes());
    }
    v
}

#[test]
fn cancel_all_filter_byte_round_trips() {
    let account = AccountId(0x0102_0304_0506_0708);
    for (market, side, filter) in [
        (None, None, 0u8),
        (Some(MarketId(77)), None, 1),
        (None, Some(Side::Buy), 2),
        (Some(MarketId(77)), Some(Side::Buy), 3),
        (None, Some(Side::Sell), 4),
        (Some(MarketId(77)), Some(Side::Sell), 5),
    ] {
        let cmd = Command::CancelAll { account, market, side };
        let bytes = cancel_all_bytes(account.0, filter, market.map(|m| m.0));
        assert_eq!(cmd.to_bytes(), bytes, "{cmd:?}");
        assert_eq!(Command::decode(&bytes), Ok(cmd));
    }
}

#[test]
fn cancel_all_old_has_market_bytes_decode_as_before() {
    // Journals written before the side filter hold the has-market flag 0 or 1 there.
    assert_eq!(
        Command::decode(&cancel_all_bytes(3, 0, None)),
        Ok(Command::CancelAll { account: AccountId(3), market: None, side: None })
    );
    assert_eq!(
        Command::decode(&cancel_all_bytes(3, 1, Some(10))),
        Ok(Command::CancelAll { account: AccountId(3), market: Some(MarketId(10)), side: None })
    );
}

#[test]
fn cancel_all_invalid_filter_bits_are_refused() {
    // Side 3 (with and without a market) and every higher bit.
    let mut invalid = vec![0b110u8, 0b111];
    invalid.extend((3..8).map(|bit| 1u8 << bit));
    invalid.extend([0x09, 0x0B, 0x0D, 0xFF]);
    for filter in invalid {
        for market in [None, Some(10)] {
            let bytes = cancel_all_bytes(3, filter, market);
            assert_eq!(
                Command::decode(&bytes),
                Err(DecodeError::InvalidEnum { field: "cancel_filter", value: filter, offset: 9 }),
                "filter {filter:#010b}"
            );
        }
    }
    // Exactly the six valid bytes decode.
    let valid: Vec<u8> = (0..=u8::MAX)
        .filter(|&f| Command::decode(&cancel_all_bytes(3, f, (f & 1 == 1).then_some(10))).is_ok())
        .collect();
    assert_eq!(valid, vec![0, 1, 2, 3, 4, 5]);
}
