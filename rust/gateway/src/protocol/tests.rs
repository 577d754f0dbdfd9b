//! Unit and property tests of the protocol: roundtrips of every message, decoder robustness
//! against arbitrary and mutated input, golden byte vectors, the code tables and the
//! published schema.

use bourse_engine::{
    BookAction, DoneReason, MarketId, MarketStatus, OrderRef, OrderType, RejectReason, Side,
    StpMode, TimeInForce,
};
use proptest::prelude::*;

use super::schema::{self, is_known_type};
use super::*;

const N_TEMPLATES: usize = 35;

fn seed() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), Just(1), Just(u64::MAX), 0u64..1_000, any::<u64>()]
}

fn seeds() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(seed(), 20)
}

/// Encode into a fresh buffer and return the frame bytes.
fn frame_of(m: &Message) -> Vec<u8> {
    let mut buf = [0u8; MAX_FRAME_LEN + 2];
    let n = m.encode(&mut buf).expect("fits");
    let mut appended = vec![0xAA];
    m.append_to(&mut appended);
    assert_eq!(&appended[1..], &buf[..n], "append_to writes exactly the encoded frame");
    buf[..n].to_vec()
}

/// Every frame the decoder yields for `bytes` fed in chunks of `chunk`, decoded.
fn decode_stream(bytes: &[u8], chunk: usize) -> Vec<Result<Message, String>> {
    let mut dec = FrameDecoder::new(0);
    let mut out = Vec::new();
    let mut rest = bytes;
    loop {
        let n = dec.feed(&rest[..rest.len().min(chunk.max(1))]);
        rest = &rest[n..];
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => out.push(Message::decode(f).map_err(|e| e.to_string())),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
        if rest.is_empty() {
            return out;
        }
        assert!(n > 0 || dec.buffered() == 0 || chunk == 0, "decoder made no progress");
    }
}

#[test]
fn every_template_is_built_and_specs_are_consistent() {
    assert_eq!(Message::SPECS.len(), N_TEMPLATES);
    let mut ids: Vec<u16> = Message::SPECS.iter().map(|s| s.template_id).collect();
    let sorted = {
        let mut v = ids.clone();
        v.sort();
        v
    };
    assert_eq!(ids, sorted, "SPECS in template order");
    ids.dedup();
    assert_eq!(ids.len(), N_TEMPLATES, "template ids unique");
    for i in 0..N_TEMPLATES {
        let m = Message::from_seeds(i, &[7; 20]);
        assert_eq!(m.spec().template_id, Message::SPECS[i].template_id);
        assert_eq!(Message::spec_of(m.template_id()).map(|s| s.name), Some(m.spec().name));
        assert_eq!(m.frame_len(), LENGTH_PREFIX_LEN + HEADER_LEN + m.spec().block_length());
        assert!(m.frame_len() - LENGTH_PREFIX_LEN <= MAX_FRAME_LEN);
        for f in m.spec().fields {
            assert!(
                is_known_type(f.ty),
                "{}.{}: type {} not in the schema",
                m.spec().name,
                f.name,
                f.ty
            );
            assert!(!f.doc.trim().is_empty(), "{}.{} has no doc", m.spec().name, f.name);
        }
    }
    assert!(Message::spec_of(9).is_none());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_message_roundtrips(s in seeds(), chunk in 1usize..64) {
        let msgs: Vec<Message> = (0..N_TEMPLATES).map(|i| Message::from_seeds(i, &s)).collect();
        let mut stream = Vec::new();
        for m in &msgs {
            let f = frame_of(m);
            prop_assert_eq!(f.len(), m.frame_len());
            prop_assert_eq!(u16::from_le_bytes([f[0], f[1]]) as usize, f.len() - 2);
            // Direct decode, typed and untyped.
            prop_assert_eq!(Message::decode(&f[2..]), Ok(*m));
            stream.extend_from_slice(&f);
        }
        // Through the streaming decoder, in arbitrary chunks.
        let got = decode_stream(&stream, chunk);
        prop_assert_eq!(got, msgs.iter().map(|m| Ok(*m)).collect::<Vec<_>>());
    }

    #[test]
    fn decoding_is_canonical(template in 0usize..N_TEMPLATES, body in prop::collection::vec(any::<u8>(), 0..200)) {
        // A valid header for a real template, an arbitrary body: whatever decodes re-encodes
        // to the same bytes.
        let spec = &Message::SPECS[template];
        let mut frame = vec![0u8; HEADER_LEN];
        Header {
            block_length: spec.block_length() as u16,
            template_id: spec.template_id,
            schema_id: SCHEMA_ID,
            version: SCHEMA_VERSION,
        }
        .write(&mut frame);
        frame.extend(body.iter().cycle().take(spec.block_length()));
        if let Ok(m) = Message::decode(&frame) {
            prop_assert_eq!(&frame_of(&m)[2..], &frame[..]);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096), chunk in 0usize..300) {
        let _ = Message::decode(&bytes);
        let _ = decode_stream(&bytes, chunk);
    }

    #[test]
    fn arbitrary_bodies_behind_valid_headers_never_panic(
        template in any::<u16>(), block in any::<u16>(), body in prop::collection::vec(any::<u8>(), 0..300)
    ) {
        let mut frame = vec![0u8; HEADER_LEN];
        Header { block_length: block, template_id: template % 64, schema_id: SCHEMA_ID, version: SCHEMA_VERSION }
            .write(&mut frame);
        frame.extend_from_slice(&body);
        let _ = Message::decode(&frame);
    }

    #[test]
    fn mutated_frames_never_panic(
        s in seeds(),
        edits in prop::collection::vec((any::<u16>(), any::<u8>(), 0u8..3), 1..8),
        chunk in 1usize..100,
    ) {
        let mut stream = Vec::new();
        for i in 0..N_TEMPLATES {
            stream.extend(frame_of(&Message::from_seeds(i, &s)));
        }
        for (pos, byte, op) in edits {
            let p = pos as usize % stream.len();
            match op {
                0 => stream[p] ^= byte | 1,
                1 => stream.insert(p, byte),
                _ => { stream.remove(p); }
            }
        }
        // Every outcome is a message or a described error; a message decoded from a
        // mutated frame still re-encodes canonically.
        for m in decode_stream(&stream, chunk).into_iter().flatten() {
            let f = frame_of(&m);
            prop_assert_eq!(Message::decode(&f[2..]), Ok(m));
        }
    }

    #[test]
    fn stream_seq_roundtrips(node_seq in 0u64..(1 << 48), index in any::<u16>()) {
        let s = stream_seq(node_seq, index);
        prop_assert_eq!(split_stream_seq(s), (node_seq, index));
        if index < u16::MAX {
            prop_assert!(stream_seq(node_seq, index + 1) > s);
        }
        prop_assert!(stream_seq(node_seq + 1, 0) > s);
    }
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// Golden frames: the wire format is pinned byte for byte.
#[test]
fn golden_vectors() {
    let cases: Vec<(Message, &str)> = vec![
        (
            Heartbeat { timestamp_ns: 0x0102_0304_0506_0708 }.into(),
            "1000 0800 0500 4253 0100  0807060504030201",
        ),
        (Logout {}.into(), "0800 0000 0600 4253 0100"),
        (
            NewOrder {
                client_ref: 7,
                market: MarketId(2),
                client_order_id: 0x1122,
                side: Side::Sell,
                order_type: OrderType::Limit,
                time_in_force: TimeInForce::Ioc,
                post_only: false,
                stp: StpMode::ExpireMaker,
                price: 100_000,
                quantity: 5,
                quote_quantity: 0,
                reserve_price: 0,
            }
            .into(),
            "4100 3900 0a00 4253 0100
             0700000000000000 02000000 2211000000000000 02 01 02 00 03
             a086010000000000 0500000000000000 0000000000000000 0000000000000000",
        ),
        (
            CancelOrder { client_ref: 8, order: OrderRef::Client(0x1122) }.into(),
            "1900 1100 0b00 4253 0100  0800000000000000 02 2211000000000000",
        ),
        (
            MassCancel { client_ref: 9, market: Some(MarketId(3)), side: SideFilter::Both }.into(),
            "1600 0e00 0d00 4253 0100  0900000000000000 01 03000000 00",
        ),
        (
            OrderRejected {
                seq: stream_seq(5, 1),
                timestamp_ns: 1,
                client_ref: 7,
                request_template: NewOrder::TEMPLATE_ID,
                order_id: 0,
                client_order_id: 0,
                reason: RejectCode::Throttled,
            }
            .into(),
            "3400 2c00 1500 4253 0100
             0100050000000000 0100000000000000 0700000000000000 0a00
             0000000000000000 0000000000000000 6500",
        ),
        (
            MdAdd {
                market: MarketId(1),
                book_seq: 42,
                timestamp_ns: 0,
                order_id: 9,
                side: Side::Buy,
                price: 250,
                quantity: 3,
            }
            .into(),
            "3500 2d00 2c00 4253 0100
             01000000 2a00000000000000 0000000000000000 0900000000000000 01
             fa00000000000000 0300000000000000",
        ),
    ];
    for (m, want) in cases {
        let want = hex(want);
        assert_eq!(frame_of(&m), want, "{}", m.spec().name);
        assert_eq!(Message::decode(&want[2..]), Ok(m));
    }
}

#[test]
fn login_signing_payload_is_pinned() {
    let login = Login {
        key_id: 0x0A0B,
        timestamp_ns: 0x0102,
        nonce: Nonce([0xEE; 32]),
        signature: Signature([0x55; 32]),
        heartbeat_ms: 1000,
        session_kind: SessionKind::OrderEntry,
        flags: LoginFlags::empty().with_cancel_on_disconnect(true),
        next_seq: stream_seq(3, 0),
    };
    let mut want = vec![0xEE; 32];
    want.extend(hex("0201000000000000 0b0a000000000000 01 e8030000 01 0000030000000000"));
    assert_eq!(login.signing_payload().to_vec(), want);
    // The signature itself is not signed.
    let other = Login { signature: Signature([0; 32]), ..login };
    assert_eq!(other.signing_payload(), login.signing_payload());
}

fn index_of(name: &str) -> usize {
    Message::SPECS.iter().position(|s| s.name == name).unwrap()
}

fn valid_frame<M: Into<Message>>(m: M) -> Vec<u8> {
    frame_of(&m.into())[2..].to_vec()
}

#[test]
fn decode_errors_are_precise() {
    let hb = valid_frame(Heartbeat { timestamp_ns: 5 });

    assert_eq!(Message::decode(&hb[..5]), Err(DecodeError::ShortHeader { len: 5 }));

    let mut f = hb.clone();
    f[4] = 0;
    assert_eq!(Message::decode(&f), Err(DecodeError::WrongSchema(0x5300)));

    let mut f = hb.clone();
    f[6] = 2;
    assert_eq!(Message::decode(&f), Err(DecodeError::UnsupportedVersion(2)));

    let mut f = hb.clone();
    f[2] = 99;
    let e = Message::decode(&f).unwrap_err();
    assert_eq!(e, DecodeError::UnknownTemplate(99));
    assert!(e.to_string().contains("99"));

    let mut f = hb.clone();
    f[0] = 9;
    assert!(matches!(
        Message::decode(&f),
        Err(DecodeError::BlockLength { message: "Heartbeat", block_length: 9, expected: 8 })
    ));

    assert_eq!(
        Message::decode(&hb[..hb.len() - 1]),
        Err(DecodeError::Truncated { message: "Heartbeat", available: 7, expected: 8 })
    );
    let mut f = hb.clone();
    f.push(0);
    assert_eq!(
        Message::decode(&f),
        Err(DecodeError::TrailingBytes { message: "Heartbeat", extra: 1 })
    );

    assert!(matches!(
        Logout::decode(&hb),
        Err(DecodeError::WrongTemplate { name: "Logout", expected: 6, actual: 5 })
    ));
    assert_eq!(Heartbeat::decode(&hb), Ok(Heartbeat { timestamp_ns: 5 }));

    // Enumerations out of range name the field and its body offset.
    let mut f = valid_frame(Message::from_seeds(index_of("NewOrder"), &[1; 20]));
    f[HEADER_LEN + 20] = 3; // side
    let e = Message::decode(&f).unwrap_err();
    assert_eq!(
        e,
        DecodeError::InvalidValue { message: "NewOrder", field: "side", offset: 20, value: 3 }
    );
    assert!(e.to_string().contains("NewOrder.side"));
    f[HEADER_LEN + 20] = 1;
    f[HEADER_LEN + 23] = 2; // post_only
    assert!(matches!(
        Message::decode(&f),
        Err(DecodeError::InvalidValue { field: "post_only", value: 2, .. })
    ));
    f[HEADER_LEN + 23] = 0;
    f[HEADER_LEN + 24] = 0; // stp: 0 is not a code
    assert!(matches!(
        Message::decode(&f),
        Err(DecodeError::InvalidValue { field: "stp", value: 0, .. })
    ));

    // Composites and flag sets.
    let mut f = valid_frame(CancelOrder { client_ref: 1, order: OrderRef::Id(4) });
    f[HEADER_LEN + 8] = 3;
    assert!(matches!(
        Message::decode(&f),
        Err(DecodeError::InvalidValue { field: "order", offset: 8, value: 3, .. })
    ));
    let mut f = valid_frame(MassCancel { client_ref: 1, market: None, side: SideFilter::Buy });
    f[HEADER_LEN + 9] = 1; // market id without the present flag
    assert!(matches!(
        Message::decode(&f),
        Err(DecodeError::InvalidValue { field: "market", value: 1, .. })
    ));
    let mut f = valid_frame(Message::from_seeds(index_of("Login"), &[1; 20]));
    let flags_at = HEADER_LEN + 8 + 8 + 32 + 32 + 4 + 1;
    f[flags_at] = 0x02;
    assert!(matches!(
        Message::decode(&f),
        Err(DecodeError::InvalidValue { message: "Login", field: "flags", value: 2, .. })
    ));

    // Every decode error has a protocol error code.
    assert_eq!(ProtocolErrorCode::from(&e), ProtocolErrorCode::InvalidValue);
}

#[test]
fn frame_decoder_waits_rejects_and_poisons() {
    let f = frame_of(&Heartbeat { timestamp_ns: 1 }.into());
    let mut d = FrameDecoder::new(0);
    // Partial frames wait, byte by byte.
    for b in &f[..f.len() - 1] {
        assert_eq!(d.feed(&[*b]), 1);
        assert_eq!(d.next_frame(), Ok(None));
    }
    d.feed(&f[f.len() - 1..]);
    assert_eq!(d.next_frame().unwrap().map(<[u8]>::to_vec), Some(f[2..].to_vec()));
    assert_eq!(d.next_frame(), Ok(None));
    assert_eq!(d.buffered(), 0);

    // Reading straight into the spare space.
    let spare = d.spare();
    spare[..f.len()].copy_from_slice(&f);
    d.commit(f.len());
    assert!(d.next_frame().unwrap().is_some());

    // Oversized: an error, and the stream stays poisoned.
    d.feed(&[0x01, 0x04]); // 1025
    let e = FrameError::TooLarge { length: 1025, max: MAX_FRAME_LEN };
    assert_eq!(d.next_frame(), Err(e));
    d.feed(&f);
    assert_eq!(d.next_frame(), Err(e));
    assert_eq!(d.error(), Some(e));
    assert_eq!(ProtocolErrorCode::from(&e), ProtocolErrorCode::FrameTooLarge);

    // The largest allowed length waits for its bytes; a length below the header is refused.
    let mut d = FrameDecoder::new(0);
    d.feed(&(MAX_FRAME_LEN as u16).to_le_bytes());
    assert_eq!(d.next_frame(), Ok(None));
    let mut d = FrameDecoder::new(0);
    d.feed(&[7, 0]);
    assert_eq!(d.next_frame(), Err(FrameError::TooShort { length: 7, min: HEADER_LEN }));

    // A maximum-size frame fits the minimum buffer, wherever the previous frame left off.
    let mut d = FrameDecoder::new(0);
    let mut big = vec![0u8; 2 + MAX_FRAME_LEN];
    big[..2].copy_from_slice(&(MAX_FRAME_LEN as u16).to_le_bytes());
    let mut stream = f.clone();
    stream.extend_from_slice(&big);
    stream.extend_from_slice(&big);
    let mut rest = &stream[..];
    let mut frames = 0;
    while !rest.is_empty() {
        let n = d.feed(rest);
        assert!(n > 0);
        rest = &rest[n..];
        while let Some(fr) = d.next_frame().unwrap() {
            assert!(fr.len() == f.len() - 2 || fr.len() == MAX_FRAME_LEN);
            frames += 1;
        }
    }
    assert_eq!(frames, 3);
}

#[test]
fn encode_needs_room() {
    let m: Message = Heartbeat { timestamp_ns: 1 }.into();
    let mut small = [0u8; 17];
    assert_eq!(
        m.encode(&mut small),
        Err(EncodeError::BufferTooSmall { needed: 18, available: 17 })
    );
    let mut big = [0xFFu8; 40];
    assert_eq!(m.encode(&mut big), Ok(18));
    assert_eq!(big[18], 0xFF, "nothing written past the frame");
}

// ---- Code tables -------------------------------------------------------------------------

#[test]
fn reject_codes_cover_the_engine_and_keep_its_numbers() {
    let mut seen = std::collections::HashSet::new();
    for r in RejectReason::ALL {
        assert!(seen.insert(r.code()));
        let w = RejectCode::from(r);
        assert_eq!(w.code(), r.code() as u64, "{r:?} keeps the engine's code");
        assert_eq!(w.engine_reason(), Some(r));
    }
    // Every engine code 1..=max is in the list (the engine's codes are dense).
    assert_eq!(seen.len(), RejectReason::ALL.len());
    assert_eq!(seen.iter().max().copied(), Some(RejectReason::ALL.len() as u16));
    // Every wire code is either an engine reason or a gateway one (≥ 100).
    for &w in RejectCode::ALL {
        match w.engine_reason() {
            Some(r) => assert_eq!(RejectCode::from(r), w),
            None => assert!(w.code() >= 100),
        }
    }
}

#[test]
fn done_reasons_and_book_actions_map_totally() {
    let done = [
        DoneReason::Filled,
        DoneReason::Cancelled,
        DoneReason::Expired,
        DoneReason::FokUnfilled,
        DoneReason::SelfTrade,
        DoneReason::ProtectionLimit,
        DoneReason::BudgetExhausted,
        DoneReason::Delisted,
    ];
    let sources =
        [CancelSource::Request, CancelSource::MassCancel, CancelSource::CancelOnDisconnect];
    let mut produced = std::collections::HashSet::new();
    for d in done {
        for s in sources {
            match cancel_reason(d, s) {
                None => assert_eq!(d, DoneReason::Filled),
                Some(c) => {
                    produced.insert(c);
                }
            }
        }
    }
    // Every wire cancel reason is reachable from some engine reason.
    assert_eq!(produced.len(), CancelReason::ALL.len());
    assert_eq!(
        cancel_reason(DoneReason::SelfTrade, CancelSource::Request),
        Some(CancelReason::SelfTrade)
    );
    assert_eq!(
        cancel_reason(DoneReason::Cancelled, CancelSource::CancelOnDisconnect),
        Some(CancelReason::CancelOnDisconnect)
    );

    let actions = [BookAction::Add, BookAction::Reduce, BookAction::Fill, BookAction::Remove];
    let templates: std::collections::HashSet<u16> =
        actions.iter().map(|a| md_template(*a)).collect();
    assert_eq!(templates.len(), 4);
    assert!(templates.contains(&MdExecute::TEMPLATE_ID));
}

fn check_table<T: WireEnum + WireField + PartialEq + std::fmt::Debug>() {
    let spec = T::SPEC;
    assert_eq!(spec.values.len(), T::ALL.len(), "{}", spec.name);
    let mut codes = std::collections::HashSet::new();
    for (v, s) in T::ALL.iter().zip(spec.values) {
        assert_eq!(v.code(), s.code);
        assert!(codes.insert(s.code), "{}: duplicate code {}", spec.name, s.code);
        assert_eq!(T::from_code(s.code), Some(*v));
        let mut b = vec![0u8; T::SIZE];
        v.put(&mut b);
        assert_eq!(T::get(&b), Ok(*v));
    }
    // Every other code of the encoding is refused (sampled for uint16).
    for c in 0..=(if T::SIZE == 1 { 255 } else { 2048 }) {
        if !codes.contains(&c) {
            assert_eq!(T::from_code(c), None);
        }
    }
    assert!(schema::is_known_type(T::TYPE));
}

#[test]
fn code_tables_are_total_and_unique() {
    check_table::<Side>();
    check_table::<OrderType>();
    check_table::<TimeInForce>();
    check_table::<StpMode>();
    check_table::<MarketStatus>();
    check_table::<OrderRefKind>();
    check_table::<SideFilter>();
    check_table::<SessionKind>();
    check_table::<LoginRejectReason>();
    check_table::<EndReason>();
    check_table::<ProtocolErrorCode>();
    check_table::<RejectCode>();
    check_table::<CancelReason>();
    check_table::<Liquidity>();
    check_table::<FeedKind>();
    check_table::<SubscribeRejectReason>();
    check_table::<RetransmitStatus>();
    assert_eq!(ENUM_SPECS.len(), 18, "every table is published (17 + Bool)");
    // Required enumerations never use 0.
    for e in ENUM_SPECS {
        if !matches!(e.name, "Bool" | "SideFilter") {
            assert!(e.values.iter().all(|v| v.code != 0), "{} uses code 0", e.name);
        }
    }
}

// ---- The published schema ----------------------------------------------------------------

fn docs_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

/// `docs/protocol.xml` and the generated sections of `docs/protocol.md` match the code.
/// Run with `BOURSE_BLESS=1` to rewrite them after changing a message or a code table.
#[test]
fn published_schema_is_current() {
    let bless = std::env::var_os("BOURSE_BLESS").is_some();
    let xml_path = docs_dir().join("protocol.xml");
    let md_path = docs_dir().join("protocol.md");

    let xml = schema::render_xml();
    let md_now = std::fs::read_to_string(&md_path).expect("docs/protocol.md exists");
    let md = schema::splice(&md_now, "messages", &schema::render_md_messages())
        .and_then(|d| schema::splice(&d, "codes", &schema::render_md_codes()))
        .expect("docs/protocol.md has the GENERATED markers for `messages` and `codes`");

    if bless {
        std::fs::write(&xml_path, &xml).unwrap();
        std::fs::write(&md_path, &md).unwrap();
        return;
    }
    let xml_now = std::fs::read_to_string(&xml_path).unwrap_or_default();
    for (path, now, want) in [(&xml_path, &xml_now, &xml), (&md_path, &md_now, &md)] {
        if now != want {
            let first = now.lines().zip(want.lines()).position(|(a, b)| a != b);
            let line = first.unwrap_or(now.lines().count().min(want.lines().count()));
            panic!(
                "{} is stale (first difference at line {}:\n  committed: {:?}\n  generated: {:?}).\n\
                 Regenerate with: BOURSE_BLESS=1 cargo test -p bourse-gateway published_schema",
                path.display(),
                line + 1,
                now.lines().nth(line),
                want.lines().nth(line),
            );
        }
    }
}
