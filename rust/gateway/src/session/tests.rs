use std::cell::RefCell;
use std::collections::HashSet;

use bourse_engine::{MarketId, OrderType, Side, StpMode, TimeInForce};
use proptest::prelude::*;

use super::*;
use crate::protocol::{
    AmendOrder, CancelOrder, LoginFlags, Logout, MassCancel, NewOrder, SideFilter, Signature,
};

const SECRET: &[u8] = b"super secret key bytes";
const KEY: u64 = 7;
const DC_KEY: u64 = 8;
const ACCOUNT: AccountId = AccountId(42);
const T0: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;

#[derive(Default)]
struct Keys {
    nonces: RefCell<HashSet<[u8; 32]>>,
    sessions: RefCell<HashSet<(u64, u8)>>,
}

impl KeyStore for Keys {
    fn key(&self, key_id: u64) -> Option<ApiKey<'_>> {
        let kinds = match key_id {
            KEY => SessionKinds::ALL,
            DC_KEY => SessionKinds::NONE.with(SessionKind::DropCopy),
            _ => return None,
        };
        Some(ApiKey { secret: SECRET, account: ACCOUNT, kinds, last_client_ref: 0 })
    }
    fn claim_nonce(&self, nonce: &Nonce) -> bool {
        self.nonces.borrow_mut().insert(nonce.0)
    }
    fn resolve_next_seq(&self, _account: AccountId, next_seq: u64) -> Option<u64> {
        match next_seq {
            0 => Some(100 << 16),
            s if s <= 100 << 16 => Some(s),
            _ => None,
        }
    }
    fn claim_session(&self, key_id: u64, kind: SessionKind) -> bool {
        self.sessions.borrow_mut().insert((key_id, kind as u8))
    }
}

fn config() -> SessionConfig {
    SessionConfig { throttle_per_sec: 10, throttle_burst: 3, ..SessionConfig::default() }
}

fn login_msg(nonce: [u8; 32], key_id: u64, kind: SessionKind, cod: bool, secret: &[u8]) -> Login {
    let mut l = Login {
        key_id,
        timestamp_ns: T0,
        nonce: Nonce(nonce),
        signature: Signature::default(),
        heartbeat_ms: 1000,
        session_kind: kind,
        flags: LoginFlags::empty().with_cancel_on_disconnect(cod),
        next_seq: 0,
    };
    sign(&mut l, secret);
    l
}

fn sign(l: &mut Login, secret: &[u8]) {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(&l.signing_payload());
    l.signature = Signature(mac.finalize().into_bytes().into());
}

fn step(s: &mut Session, m: Message, now: u64, keys: &Keys) -> Vec<Action> {
    let mut out = Vec::new();
    s.on_message(&m, now, keys, &mut out);
    out
}

fn tick(s: &mut Session, now: u64) -> Vec<Action> {
    let mut out = Vec::new();
    s.on_tick(now, &mut out);
    out
}

/// A new session and the outcome of logging in with `edit` applied to a valid Login (then re-signed
/// with `secret` unless `resign` is false).
fn try_login(keys: &Keys, edit: impl FnOnce(&mut Login), resign: bool) -> (Session, Vec<Action>) {
    let (mut s, ch) = Session::new(config(), 1, [9; 32], T0);
    let mut l = login_msg(ch.nonce.0, KEY, SessionKind::OrderEntry, true, SECRET);
    edit(&mut l);
    if resign {
        sign(&mut l, SECRET);
    }
    let out = step(&mut s, Message::Login(l), T0, keys);
    (s, out)
}

fn logged_in(keys: &Keys, kind: SessionKind, cod: bool) -> Session {
    let (mut s, ch) = Session::new(config(), 1, [9; 32], T0);
    let key = if kind == SessionKind::DropCopy { DC_KEY } else { KEY };
    let mut l = login_msg(ch.nonce.0, key, kind, cod, SECRET);
    if kind == SessionKind::MarketData {
        l.next_seq = 0;
    }
    let out = step(&mut s, Message::Login(l), T0, keys);
    assert!(matches!(out[0], Action::Send(Message::LoginAccepted(_))), "{out:?}");
    s
}

fn login_reject(out: &[Action]) -> LoginRejectReason {
    match out {
        [Action::Send(Message::LoginRejected(r)), Action::Disconnect(DisconnectReason::LoginRejected(d))] =>
        {
            assert_eq!(r.reason, *d);
            r.reason
        }
        other => panic!("not a login reject: {other:?}"),
    }
}

fn new_order(client_ref: u64) -> Message {
    Message::NewOrder(NewOrder {
        client_ref,
        market: MarketId(1),
        client_order_id: 5,
        side: Side::Buy,
        order_type: OrderType::Limit,
        time_in_force: TimeInForce::Gtc,
        post_only: false,
        stp: StpMode::None,
        price: 100,
        quantity: 10,
        quote_quantity: 0,
        reserve_price: 0,
    })
}

fn order_reject(out: &[Action]) -> RejectCode {
    match out {
        [Action::Send(Message::OrderRejected(r))] => {
            assert_eq!(r.seq, 0);
            r.reason
        }
        other => panic!("not an order reject: {other:?}"),
    }
}

fn submits(out: &[Action]) -> usize {
    out.iter().filter(|a| matches!(a, Action::Submit { .. })).count()
}

#[test]
fn valid_login_is_accepted_and_replay_starts() {
    let keys = Keys::default();
    let (s, out) = try_login(&keys, |l| l.next_seq = 5 << 16, true);
    let Action::Send(Message::LoginAccepted(a)) = out[0] else { panic!("{out:?}") };
    assert_eq!((a.account, a.heartbeat_ms, a.next_seq, a.session_id), (42, 1000, 5 << 16, 1));
    assert_eq!(out[1], Action::Replay { from_seq: 5 << 16 });
    assert_eq!(out.len(), 2);
    assert_eq!(s.state(), SessionState::LoggedIn);
    assert_eq!(s.account(), Some(ACCOUNT));
}

#[test]
fn login_rejections_are_precise() {
    use LoginRejectReason as R;
    let k = Keys::default;
    assert_eq!(login_reject(&try_login(&k(), |l| l.signature.0[0] ^= 1, false).1), R::BadSignature);
    let (_, out) = try_login(&k(), |l| sign(l, b"wrong secret"), false);
    assert_eq!(login_reject(&out), R::BadSignature);
    assert_eq!(login_reject(&try_login(&k(), |l| l.key_id = 99, true).1), R::UnknownKey);
    assert_eq!(login_reject(&try_login(&k(), |l| l.nonce.0[3] ^= 1, true).1), R::NonceMismatch);
    assert_eq!(
        login_reject(&try_login(&k(), |l| l.timestamp_ns = T0 - 5_001 * MS, true).1),
        R::StaleTimestamp
    );
    assert_eq!(
        login_reject(&try_login(&k(), |l| l.timestamp_ns = T0 + 5_001 * MS, true).1),
        R::StaleTimestamp
    );
    // Within the skew is fine.
    assert!(matches!(
        try_login(&k(), |l| l.timestamp_ns = T0 - 4_999 * MS, true).1[0],
        Action::Send(Message::LoginAccepted(_))
    ));
    assert_eq!(
        login_reject(&try_login(&k(), |l| l.heartbeat_ms = 99, true).1),
        R::InvalidHeartbeat
    );
    assert_eq!(
        login_reject(&try_login(&k(), |l| l.heartbeat_ms = 60_001, true).1),
        R::InvalidHeartbeat
    );
    assert_eq!(
        login_reject(&try_login(&k(), |l| l.session_kind = SessionKind::DropCopy, true).1),
        R::InvalidFlags
    );
    assert_eq!(
        login_reject(&try_login(&k(), |l| l.next_seq = (100 << 16) + 1, true).1),
        R::SeqUnavailable
    );
    // The drop-copy key may not open order entry.
    let (_, out) = try_login(&k(), |l| l.key_id = DC_KEY, true);
    assert_eq!(login_reject(&out), R::NotPermitted);
}

#[test]
fn replayed_nonce_and_second_session_are_rejected() {
    let keys = Keys::default();
    let (_s1, out) = try_login(&keys, |_| {}, true);
    assert!(matches!(out[0], Action::Send(Message::LoginAccepted(_))));
    // The same nonce again (a captured Login replayed on a connection that drew the same nonce).
    let (_s2, out) = try_login(&keys, |_| {}, true);
    assert_eq!(login_reject(&out), LoginRejectReason::NonceReused);
    // A fresh nonce, but the key already has an order-entry session.
    let (mut s3, ch) = Session::new(config(), 2, [10; 32], T0);
    let l = login_msg(ch.nonce.0, KEY, SessionKind::OrderEntry, false, SECRET);
    assert_eq!(
        login_reject(&step(&mut s3, Message::Login(l), T0, &keys)),
        LoginRejectReason::AlreadyLoggedIn
    );
}

#[test]
fn second_login_on_a_logged_in_session_is_rejected_without_disturbing_it() {
    let keys = Keys::default();
    let mut s = logged_in(&keys, SessionKind::OrderEntry, true);
    let l = login_msg([9; 32], KEY, SessionKind::OrderEntry, true, SECRET);
    let out = step(&mut s, Message::Login(l), T0, &keys);
    assert_eq!(
        out,
        vec![Action::Send(Message::LoginRejected(LoginRejected {
            reason: LoginRejectReason::AlreadyLoggedIn
        }))]
    );
    assert_eq!(s.state(), SessionState::LoggedIn);
    assert_eq!(submits(&step(&mut s, new_order(1), T0, &keys)), 1);
}

#[test]
fn anything_before_login_is_refused_and_disconnects() {
    let keys = Keys::default();
    let (mut s, _) = Session::new(config(), 1, [9; 32], T0);
    let out = step(&mut s, new_order(1), T0, &keys);
    assert!(
        matches!(&out[0], Action::Send(Message::OrderRejected(r)) if r.reason == RejectCode::NotLoggedIn)
    );
    assert!(
        matches!(&out[1], Action::Send(Message::ProtocolError(e)) if e.reason == ProtocolErrorCode::UnexpectedMessage && e.template_id == 10)
    );
    assert_eq!(
        out[2],
        Action::Disconnect(DisconnectReason::Protocol(ProtocolErrorCode::UnexpectedMessage))
    );
    assert_eq!(out.len(), 3);
    assert_eq!(s.state(), SessionState::Closed);
    // Closed: everything is ignored.
    assert!(step(&mut s, new_order(2), T0, &keys).is_empty());
    let (mut s, _) = Session::new(config(), 1, [9; 32], T0);
    let out = step(&mut s, Message::Heartbeat(Heartbeat { timestamp_ns: T0 }), T0, &keys);
    assert_eq!(out.len(), 2);
    assert!(matches!(
        out[1],
        Action::Disconnect(DisconnectReason::Protocol(ProtocolErrorCode::UnexpectedMessage))
    ));
}

#[test]
fn login_timeout() {
    let (mut s, _) = Session::new(config(), 1, [9; 32], T0);
    assert!(tick(&mut s, T0 + 4_999 * MS).is_empty());
    let out = tick(&mut s, T0 + 5_000 * MS);
    assert!(
        matches!(&out[0], Action::Send(Message::ProtocolError(e)) if e.reason == ProtocolErrorCode::LoginTimeout)
    );
    assert_eq!(out.len(), 2);
}

#[test]
fn requests_map_to_engine_commands_for_the_account() {
    let keys = Keys::default();
    let mut s = logged_in(&keys, SessionKind::OrderEntry, false);
    let out = step(&mut s, new_order(1), T0, &keys);
    let [Action::Submit { command: Command::PlaceOrder(o), client_ref: 1, key_id: KEY }] = out[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!(
        (o.account, o.market, o.client_order_id, o.price, o.quantity),
        (ACCOUNT, MarketId(1), 5, 100, 10)
    );
    let cancel = Message::CancelOrder(CancelOrder { client_ref: 2, order: OrderRef::Client(5) });
    assert_eq!(
        step(&mut s, cancel, T0, &keys),
        vec![Action::Submit {
            command: Command::CancelOrder { account: ACCOUNT, order: OrderRef::Client(5) },
            client_ref: 2,
            key_id: KEY
        }]
    );
    let amend = Message::AmendOrder(AmendOrder {
        client_ref: 3,
        order: OrderRef::Id(77),
        new_price: 0,
        new_quantity: 4,
    });
    assert_eq!(
        step(&mut s, amend, T0 + 1_000 * MS, &keys),
        vec![Action::Submit {
            command: Command::AmendOrder {
                account: ACCOUNT,
                order: OrderRef::Id(77),
                new_price: 0,
                new_quantity: 4
            },
            client_ref: 3,
            key_id: KEY
        }]
    );
    let mass = Message::MassCancel(MassCancel {
        client_ref: 4,
        market: Some(MarketId(1)),
        side: SideFilter::Both,
    });
    assert_eq!(
        step(&mut s, mass, T0 + 1_000 * MS, &keys),
        vec![Action::Submit {
            command: Command::CancelAll { account: ACCOUNT, market: Some(MarketId(1)), side: None },
            client_ref: 4,
            key_id: KEY
        }]
    );
    // By side, in every market or in one: the engine's CancelAll takes the side filter.
    let sells =
        Message::MassCancel(MassCancel { client_ref: 5, market: None, side: SideFilter::Sell });
    assert_eq!(
        step(&mut s, sells, T0 + 2_000 * MS, &keys),
        vec![Action::Submit {
            command: Command::CancelAll { account: ACCOUNT, market: None, side: Some(Side::Sell) },
            client_ref: 5,
            key_id: KEY
        }]
    );
    let buys = Message::MassCancel(MassCancel {
        client_ref: 6,
        market: Some(MarketId(2)),
        side: SideFilter::Buy,
    });
    assert_eq!(
        step(&mut s, buys, T0 + 3_000 * MS, &keys),
        vec![Action::Submit {
            command: Command::CancelAll {
                account: ACCOUNT,
                market: Some(MarketId(2)),
                side: Some(Side::Buy)
            },
            client_ref: 6,
            key_id: KEY
        }]
    );
    // A submitted mass cancel by side consumes its client_ref like any request.
    assert_eq!(
        order_reject(&step(&mut s, new_order(6), T0 + 4_000 * MS, &keys)),
        RejectCode::DuplicateClientRef
    );
    assert_eq!(submits(&step(&mut s, new_order(7), T0 + 5_000 * MS, &keys)), 1);
}

#[test]
fn client_ref_must_strictly_increase() {
    let keys = Keys::default();
    let mut s = logged_in(&keys, SessionKind::OrderEntry, false);
    assert_eq!(submits(&step(&mut s, new_order(10), T0, &keys)), 1);
    for (i, r) in [10, 9, 0].into_iter().enumerate() {
        let out = step(&mut s, new_order(r), T0 + (i as u64 + 1) * 1_000 * MS, &keys);
        assert_eq!(order_reject(&out), RejectCode::DuplicateClientRef);
        let Action::Send(Message::OrderRejected(rej)) = out[0] else { unreachable!() };
        assert_eq!((rej.client_ref, rej.request_template, rej.client_order_id), (r, 10, 5));
    }
    assert_eq!(submits(&step(&mut s, new_order(11), T0 + 9_000 * MS, &keys)), 1);
}

#[test]
fn throttle_burst_then_refill() {
    let keys = Keys::default();
    let mut s = logged_in(&keys, SessionKind::OrderEntry, false);
    // Burst 3 at 10/s.
    for r in 1..=3 {
        assert_eq!(submits(&step(&mut s, new_order(r), T0, &keys)), 1);
    }
    assert_eq!(order_reject(&step(&mut s, new_order(4), T0, &keys)), RejectCode::Throttled);
    // 99 ms later: still less than one token.
    assert_eq!(
        order_reject(&step(&mut s, new_order(4), T0 + 99 * MS, &keys)),
        RejectCode::Throttled
    );
    // 100 ms after the last refill point: one token; a throttled request did not consume client_ref 4.
    assert_eq!(submits(&step(&mut s, new_order(4), T0 + 199 * MS, &keys)), 1);
    assert_eq!(
        order_reject(&step(&mut s, new_order(5), T0 + 199 * MS, &keys)),
        RejectCode::Throttled
    );
    // A long idle refills only up to the burst.
    let t = T0 + 60_000 * MS;
    for r in 5..=7 {
        assert_eq!(submits(&step(&mut s, new_order(r), t, &keys)), 1);
    }
    assert_eq!(order_reject(&step(&mut s, new_order(8), t, &keys)), RejectCode::Throttled);
}

#[test]
fn drop_copy_and_market_data_may_not_submit() {
    for kind in [SessionKind::DropCopy, SessionKind::MarketData] {
        let keys = Keys::default();
        let mut s = logged_in(&keys, kind, false);
        assert_eq!(order_reject(&step(&mut s, new_order(1), T0, &keys)), RejectCode::NotPermitted);
        assert_eq!(s.state(), SessionState::LoggedIn);
    }
    let keys = Keys::default();
    let mut s = logged_in(&keys, SessionKind::MarketData, false);
    let sub =
        MdSubscribe { market: MarketId(1), feed: crate::protocol::FeedKind::Levels, depth: 5 };
    assert_eq!(step(&mut s, Message::MdSubscribe(sub), T0, &keys), vec![Action::Subscribe(sub)]);
    let keys = Keys::default();
    let mut oe = logged_in(&keys, SessionKind::OrderEntry, false);
    let out = step(&mut oe, Message::MdSubscribe(sub), T0, &keys);
    assert!(
        matches!(&out[..], [Action::Send(Message::MdSubscribeRejected(r))] if r.reason == SubscribeRejectReason::NotPermitted)
    );
}

#[test]
fn heartbeats_and_timeout_with_cancel_on_disconnect() {
    let keys = Keys::default();
    let mut s = logged_in(&keys, SessionKind::OrderEntry, true);
    // Interval 1 s. Nothing due before it.
    assert!(tick(&mut s, T0 + 999 * MS).is_empty());
    assert_eq!(
        tick(&mut s, T0 + 1_000 * MS),
        vec![Action::Send(Message::Heartbeat(Heartbeat { timestamp_ns: T0 + 1_000 * MS }))]
    );
    assert!(tick(&mut s, T0 + 1_500 * MS).is_empty());
    // Other traffic the caller sent postpones the heartbeat.
    s.on_sent(T0 + 1_900 * MS);
    assert!(tick(&mut s, T0 + 2_500 * MS).is_empty());
    assert_eq!(tick(&mut s, T0 + 2_900 * MS).len(), 1);
    // The client's heartbeat keeps the session alive.
    assert!(step(
        &mut s,
        Message::Heartbeat(Heartbeat { timestamp_ns: 0 }),
        T0 + 2_950 * MS,
        &keys
    )
    .is_empty());
    assert!(tick(&mut s, T0 + 5_949 * MS)
        .iter()
        .all(|a| matches!(a, Action::Send(Message::Heartbeat(_)))));
    // Three intervals of silence: timeout, cancel-on-disconnect, release, close.
    let out = tick(&mut s, T0 + 5_950 * MS);
    assert_eq!(
        out,
        vec![
            Action::Send(Message::ProtocolError(ProtocolError {
                reason: ProtocolErrorCode::HeartbeatTimeout,
                template_id: 0,
                offset: 0
            })),
            Action::CancelOnDisconnect { account: ACCOUNT },
            Action::SessionEnded { key_id: KEY, kind: SessionKind::OrderEntry },
            Action::Disconnect(DisconnectReason::Protocol(ProtocolErrorCode::HeartbeatTimeout)),
        ]
    );
    assert!(tick(&mut s, T0 + 10_000 * MS).is_empty());
    let mut out = Vec::new();
    s.on_disconnect(T0 + 10_000 * MS, &mut out);
    assert!(out.is_empty(), "cancel-on-disconnect fires once");
}

#[test]
fn lost_connection_fires_cancel_on_disconnect_only_if_asked() {
    let keys = Keys::default();
    let mut s = logged_in(&keys, SessionKind::OrderEntry, true);
    let mut out = Vec::new();
    s.on_disconnect(T0, &mut out);
    assert_eq!(
        out,
        vec![
            Action::CancelOnDisconnect { account: ACCOUNT },
            Action::SessionEnded { key_id: KEY, kind: SessionKind::OrderEntry }
        ]
    );
    let keys = Keys::default();
    let mut s = logged_in(&keys, SessionKind::OrderEntry, false);
    let mut out = Vec::new();
    s.on_disconnect(T0, &mut out);
    assert_eq!(out, vec![Action::SessionEnded { key_id: KEY, kind: SessionKind::OrderEntry }]);
}

#[test]
fn logout_never_cancels() {
    let keys = Keys::default();
    let mut s = logged_in(&keys, SessionKind::OrderEntry, true);
    let out = step(&mut s, Message::Logout(Logout {}), T0, &keys);
    assert_eq!(
        out,
        vec![
            Action::Send(Message::EndOfSession(EndOfSession { reason: EndReason::LoggedOut })),
            Action::SessionEnded { key_id: KEY, kind: SessionKind::OrderEntry },
            Action::Disconnect(DisconnectReason::LoggedOut),
        ]
    );
    let mut out = Vec::new();
    s.on_disconnect(T0, &mut out);
    s.on_tick(T0 + 60_000 * MS, &mut out);
    assert!(out.is_empty());
}

#[test]
fn flood_disconnects() {
    let keys = Keys::default();
    let cfg = SessionConfig { flood_burst: 5, flood_per_sec: 1, ..config() };
    let (mut s, ch) = Session::new(cfg, 1, [9; 32], T0);
    let l = login_msg(ch.nonce.0, KEY, SessionKind::OrderEntry, true, SECRET);
    step(&mut s, Message::Login(l), T0, &keys);
    for _ in 0..4 {
        assert!(
            step(&mut s, Message::Heartbeat(Heartbeat { timestamp_ns: 0 }), T0, &keys).is_empty()
        );
    }
    let out = step(&mut s, Message::Heartbeat(Heartbeat { timestamp_ns: 0 }), T0, &keys);
    assert!(out.contains(&Action::CancelOnDisconnect { account: ACCOUNT }));
    assert_eq!(
        out.last(),
        Some(&Action::Disconnect(DisconnectReason::Protocol(ProtocolErrorCode::Flood)))
    );
}

fn arb_message() -> impl Strategy<Value = Message> {
    let n = Message::SPECS.len();
    (0..n, prop::collection::vec(any::<u64>(), 20))
        .prop_map(|(i, seeds)| Message::from_seeds(i, &seeds))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary sequences (with a valid Login sometimes mixed in) never panic, never submit
    /// before a successful login, and nothing follows a Disconnect.
    #[test]
    fn arbitrary_sequences_never_submit_before_login(
        steps in prop::collection::vec((arb_message(), any::<bool>(), 0u64..3_000, 0u8..8), 0..60),
    ) {
        let keys = Keys::default();
        let (mut s, ch) = Session::new(config(), 1, [9; 32], T0);
        let mut now = T0;
        let mut accepted = false;
        let mut closed = false;
        let mut out = Vec::new();
        for (msg, real_login, dt_ms, what) in steps {
            now += dt_ms * MS;
            out.clear();
            let msg = if real_login {
                Message::Login(login_msg(ch.nonce.0, KEY, SessionKind::OrderEntry, what & 1 == 1, SECRET))
            } else {
                msg
            };
            match what {
                6 => s.on_tick(now, &mut out),
                7 if dt_ms % 5 == 0 => s.on_disconnect(now, &mut out),
                _ => s.on_message(&msg, now, &keys, &mut out),
            }
            if closed {
                prop_assert!(out.is_empty());
            }
            for a in &out {
                match a {
                    Action::Send(Message::LoginAccepted(_)) => accepted = true,
                    Action::Submit { .. } => prop_assert!(accepted && !closed),
                    _ => {}
                }
            }
            if let Some(i) = out.iter().position(|a| matches!(a, Action::Disconnect(_))) {
                prop_assert_eq!(i, out.len() - 1);
            }
            if s.state() == SessionState::Closed {
                closed = true;
            }
        }
    }
}
