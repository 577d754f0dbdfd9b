//! The session state machine of one connection: login, heartbeats, logout, idempotency,
//! throttling and the translation of order requests into engine commands.
//!
//! Sans-I/O: no sockets, no threads, no clock reads, no randomness. The caller passes the
//! time (`now_ns`, ns since the Unix epoch, from any clock that does not go backwards much —
//! elapsed times saturate at 0) and the server nonce, feeds decoded [`Message`]s in, and
//! carries out the [`Action`]s that come out, in order.
//!
//! # API
//!
//! * [`Session::new`] → the session and the [`Challenge`] to send first.
//! * [`Session::on_message`] for every decoded client message (the [`KeyStore`] answers the
//!   login's questions).
//! * [`Session::on_tick`] periodically (every few ms): heartbeats, login and heartbeat timeouts.
//! * [`Session::on_sent`] whenever the caller sends something the session did not produce
//!   (execution reports, market data), so no heartbeat is sent needlessly.
//! * [`Session::on_disconnect`] when the connection is lost.
//!
//! Each appends to a caller-provided `Vec<Action>` (reuse it: no allocation in steady state).
//!
//! # States
//!
//! ```text
//!            new() ─► AwaitingLogin ──valid Login──► LoggedIn ──Logout──► Closed (no COD)
//!                         │                              │
//!  bad Login / other msg / login timeout      timeout / protocol error / lost connection
//!                         ▼                              ▼
//!                       Closed                  Closed (+ CancelOnDisconnect if flagged)
//! ```
//!
//! # Invariants
//!
//! * No [`Action::Submit`] before a successful login, nor on a drop-copy or market-data
//!   session, nor after [`Action::Disconnect`] (a closed session ignores everything).
//! * Every refused request produces exactly one precise wire reject and no `Submit`.
//! * `client_ref`s of submitted commands strictly increase (seeded with the key's last one,
//!   [`ApiKey::last_client_ref`]); only a submitted request consumes its `client_ref`, so a
//!   throttled request may be resent with the same one.
//! * [`Action::CancelOnDisconnect`] fires at most once, only when the login asked for it, and
//!   only when a logged-in session ends other than by `Logout`.
//! * [`Action::SessionEnded`] is emitted exactly once for every successful login (the caller
//!   releases the key's session slot claimed by [`KeyStore::claim_session`]).
//! * [`Action::Disconnect`] is the last action the session ever produces.
//!
//! # Complexity
//!
//! Every call is O(1) time and pushes O(1) actions; the login does one HMAC-SHA256 over 62
//! bytes. The session holds no heap memory.

use bourse_engine::{AccountId, Command, NewOrder as EngineNewOrder, OrderRef};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::protocol::{
    Challenge, EndOfSession, EndReason, Heartbeat, Login, LoginAccepted, LoginRejectReason,
    LoginRejected, MdRetransmitRequest, MdSubscribe, MdSubscribeRejected, MdUnsubscribe, Message,
    Nonce, OrderRejected, ProtocolError, ProtocolErrorCode, RejectCode, SessionKind,
    SubscribeRejectReason,
};

const NS_PER_MS: u64 = 1_000_000;
const NS_PER_SEC: u64 = 1_000_000_000;

/// Limits of a session (one per gateway, shared by its sessions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Smallest heartbeat interval a Login may ask for, ms (spec: 100).
    pub heartbeat_min_ms: u32,
    /// Largest heartbeat interval a Login may ask for, ms (spec: 60,000).
    pub heartbeat_max_ms: u32,
    /// The Login timestamp may differ from the server clock by at most this, ms (spec: 5,000).
    pub max_clock_skew_ms: u64,
    /// A Login must arrive within this after the Challenge, ms (spec: 5,000).
    pub login_timeout_ms: u64,
    /// Order requests per second refilled into the session's token bucket.
    pub throttle_per_sec: u32,
    /// Capacity of the order token bucket (the burst allowed after idling).
    pub throttle_burst: u32,
    /// Messages of any kind per second before the connection is cut (`Flood`).
    pub flood_per_sec: u32,
    /// Burst of messages of any kind before the connection is cut.
    pub flood_burst: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            heartbeat_min_ms: 100,
            heartbeat_max_ms: 60_000,
            max_clock_skew_ms: 5_000,
            login_timeout_ms: 5_000,
            throttle_per_sec: 1_000,
            throttle_burst: 100,
            flood_per_sec: 10_000,
            flood_burst: 2_000,
        }
    }
}

/// The session kinds an API key may open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SessionKinds(u8);

impl SessionKinds {
    /// No kind.
    pub const NONE: SessionKinds = SessionKinds(0);
    /// Every kind.
    pub const ALL: SessionKinds = SessionKinds(0b111);

    fn bit(kind: SessionKind) -> u8 {
        match kind {
            SessionKind::OrderEntry => 1,
            SessionKind::DropCopy => 2,
            SessionKind::MarketData => 4,
        }
    }

    /// This set with `kind` added.
    pub const fn with(self, kind: SessionKind) -> SessionKinds {
        SessionKinds(
            self.0
                | match kind {
                    SessionKind::OrderEntry => 1,
                    SessionKind::DropCopy => 2,
                    SessionKind::MarketData => 4,
                },
        )
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: SessionKind) -> bool {
        self.0 & Self::bit(kind) != 0
    }
}

/// What the key store knows about an API key.
#[derive(Clone, Copy, Debug)]
pub struct ApiKey<'a> {
    /// The HMAC-SHA256 secret.
    pub secret: &'a [u8],
    /// The account the key trades for.
    pub account: AccountId,
    /// The session kinds it may open.
    pub kinds: SessionKinds,
    /// The last `client_ref` this key submitted (recorded with its commands; 0 if none): the
    /// session accepts only greater ones.
    pub last_client_ref: u64,
}

/// The gateway's shared state that a login consults. Methods take `&self`: an implementation
/// shared by I/O threads uses interior mutability, and the `claim_*` methods must be atomic.
pub trait KeyStore {
    /// The key, or `None` if it is unknown or revoked.
    fn key(&self, key_id: u64) -> Option<ApiKey<'_>>;
    /// Record that a login used `nonce`; `false` if one already did.
    fn claim_nonce(&self, nonce: &Nonce) -> bool;
    /// Where a replay for `account` asked from `next_seq` starts (`next_seq` itself, or the
    /// next live position for 0); `None` if it cannot be served (`SeqUnavailable`).
    fn resolve_next_seq(&self, account: AccountId, next_seq: u64) -> Option<u64>;
    /// Mark the key as having a session of `kind`; `false` if it already has one. Released by
    /// the caller on [`Action::SessionEnded`].
    fn claim_session(&self, key_id: u64, kind: SessionKind) -> bool;
}

/// Why the connection is closed ([`Action::Disconnect`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The login was refused.
    LoginRejected(LoginRejectReason),
    /// A protocol violation or timeout (the `ProtocolError` was sent just before).
    Protocol(ProtocolErrorCode),
    /// A clean logout (the `EndOfSession` was sent just before).
    LoggedOut,
}

/// Something the caller must do, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this message to the client. `EndOfSession` must go after everything already owed.
    Send(Message),
    /// Submit this command to the node for the session's account; record `key_id` and
    /// `client_ref` with it (replay, idempotency across reconnects).
    Submit {
        /// The engine command.
        command: Command,
        /// The request's client_ref.
        client_ref: u64,
        /// The API key that sent it.
        key_id: u64,
    },
    /// Stream the account's stored messages with `seq >= from_seq`, then go live (sent right
    /// after `LoginAccepted`, order-entry and drop-copy sessions).
    Replay {
        /// First position.
        from_seq: u64,
    },
    /// Start a market-data subscription (the market-data layer answers it).
    Subscribe(MdSubscribe),
    /// Stop a market-data subscription.
    Unsubscribe(MdUnsubscribe),
    /// Serve a market-data retransmit request.
    Retransmit(MdRetransmitRequest),
    /// Cancel every open order of the account, as one command (`CancelAll`, cancel reason
    /// `CancelOnDisconnect`, `client_ref` 0).
    CancelOnDisconnect {
        /// The account.
        account: AccountId,
    },
    /// The logged-in session is over: release the key's slot for this kind.
    SessionEnded {
        /// The key.
        key_id: u64,
        /// The kind.
        kind: SessionKind,
    },
    /// Close the connection. Always the last action.
    Disconnect(DisconnectReason),
}

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// The Challenge was sent; waiting for Login.
    AwaitingLogin,
    /// Logged in.
    LoggedIn,
    /// Over: every input is ignored.
    Closed,
}

/// A token bucket in nano-tokens (one token = 10^9), refilled continuously.
#[derive(Clone, Copy, Debug)]
struct TokenBucket {
    nano_tokens: u64,
    capacity: u64,
    per_sec: u64,
    last_ns: u64,
}

impl TokenBucket {
    fn new(per_sec: u32, burst: u32, now_ns: u64) -> TokenBucket {
        let capacity = (burst as u64).saturating_mul(NS_PER_SEC);
        TokenBucket { nano_tokens: capacity, capacity, per_sec: per_sec as u64, last_ns: now_ns }
    }

    /// Take one token if there is one.
    fn take(&mut self, now_ns: u64) -> bool {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        if now_ns > self.last_ns {
            self.last_ns = now_ns;
        }
        self.nano_tokens = self
            .nano_tokens
            .saturating_add(elapsed.saturating_mul(self.per_sec))
            .min(self.capacity);
        if self.nano_tokens >= NS_PER_SEC {
            self.nano_tokens -= NS_PER_SEC;
            true
        } else {
            false
        }
    }
}

/// The established login.
#[derive(Clone, Copy, Debug)]
struct Established {
    key_id: u64,
    account: AccountId,
    kind: SessionKind,
    cancel_on_disconnect: bool,
    interval_ns: u64,
    last_client_ref: u64,
    next_seq: u64,
}

/// One connection's session. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Session {
    config: SessionConfig,
    session_id: u64,
    nonce: Nonce,
    state: SessionState,
    created_ns: u64,
    last_recv_ns: u64,
    last_sent_ns: u64,
    login: Option<Established>,
    orders: TokenBucket,
    flood: TokenBucket,
}

impl Session {
    /// A new session and the Challenge to send at once. `server_nonce` must be fresh random
    /// bytes, never reused.
    pub fn new(
        config: SessionConfig,
        session_id: u64,
        server_nonce: [u8; 32],
        now_ns: u64,
    ) -> (Session, Challenge) {
        let nonce = Nonce(server_nonce);
        let session = Session {
            config,
            session_id,
            nonce,
            state: SessionState::AwaitingLogin,
            created_ns: now_ns,
            last_recv_ns: now_ns,
            last_sent_ns: now_ns,
            login: None,
            orders: TokenBucket::new(config.throttle_per_sec, config.throttle_burst, now_ns),
            flood: TokenBucket::new(config.flood_per_sec, config.flood_burst, now_ns),
        };
        (session, Challenge { nonce, server_time_ns: now_ns })
    }

    /// The current state.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// The account, once logged in.
    pub fn account(&self) -> Option<AccountId> {
        self.login.map(|l| l.account)
    }

    /// The session kind, once logged in.
    pub fn kind(&self) -> Option<SessionKind> {
        self.login.map(|l| l.kind)
    }

    /// The granted heartbeat interval in ms, once logged in.
    pub fn heartbeat_ms(&self) -> Option<u32> {
        self.login.map(|l| (l.interval_ns / NS_PER_MS) as u32)
    }

    /// The caller sent something to the client at `now_ns` (resets the heartbeat timer).
    pub fn on_sent(&mut self, now_ns: u64) {
        self.last_sent_ns = self.last_sent_ns.max(now_ns);
    }

    fn send(&mut self, msg: Message, now_ns: u64, out: &mut Vec<Action>) {
        self.on_sent(now_ns);
        out.push(Action::Send(msg));
    }

    /// End the session as a disconnect: optional ProtocolError, cancel-on-disconnect, slot
    /// release, Disconnect.
    fn close(
        &mut self,
        error: Option<ProtocolError>,
        reason: DisconnectReason,
        clean: bool,
        out: &mut Vec<Action>,
    ) {
        if let Some(e) = error {
            out.push(Action::Send(Message::ProtocolError(e)));
        }
        if let Some(l) = self.login.take() {
            if l.cancel_on_disconnect && !clean {
                out.push(Action::CancelOnDisconnect { account: l.account });
            }
            out.push(Action::SessionEnded { key_id: l.key_id, kind: l.kind });
        }
        self.state = SessionState::Closed;
        out.push(Action::Disconnect(reason));
    }

    fn protocol_error(&mut self, code: ProtocolErrorCode, template_id: u16, out: &mut Vec<Action>) {
        let e = ProtocolError { reason: code, template_id, offset: 0 };
        self.close(Some(e), DisconnectReason::Protocol(code), false, out);
    }

    /// Handle one message from the client.
    pub fn on_message<K: KeyStore + ?Sized>(
        &mut self,
        msg: &Message,
        now_ns: u64,
        keys: &K,
        out: &mut Vec<Action>,
    ) {
        if self.state == SessionState::Closed {
            return;
        }
        self.last_recv_ns = self.last_recv_ns.max(now_ns);
        let template = msg.template_id();
        if !self.flood.take(now_ns) {
            return self.protocol_error(ProtocolErrorCode::Flood, template, out);
        }
        if self.state == SessionState::AwaitingLogin {
            return match msg {
                Message::Login(login) => self.on_login(login, now_ns, keys, out),
                _ => {
                    if let Some((client_ref, order_id, client_order_id)) = order_request(msg) {
                        let r = reject(
                            now_ns,
                            client_ref,
                            template,
                            order_id,
                            client_order_id,
                            RejectCode::NotLoggedIn,
                        );
                        self.send(r, now_ns, out);
                    }
                    self.protocol_error(ProtocolErrorCode::UnexpectedMessage, template, out)
                }
            };
        }
        let Some(login) = self.login else {
            return self.protocol_error(ProtocolErrorCode::UnexpectedMessage, template, out);
        };
        match msg {
            Message::Heartbeat(_) => {}
            Message::Logout(_) => {
                let end = Message::EndOfSession(EndOfSession { reason: EndReason::LoggedOut });
                self.send(end, now_ns, out);
                self.close(None, DisconnectReason::LoggedOut, true, out);
            }
            Message::Login(_) => {
                // The established session is not disturbed by a stray second Login.
                let r = Message::LoginRejected(LoginRejected {
                    reason: LoginRejectReason::AlreadyLoggedIn,
                });
                self.send(r, now_ns, out);
            }
            Message::NewOrder(_)
            | Message::CancelOrder(_)
            | Message::AmendOrder(_)
            | Message::MassCancel(_) => self.on_order_request(msg, login, now_ns, out),
            Message::MdSubscribe(s) => {
                if login.kind == SessionKind::MarketData {
                    out.push(Action::Subscribe(*s));
                } else {
                    let r = MdSubscribeRejected {
                        market: s.market,
                        reason: SubscribeRejectReason::NotPermitted,
                    };
                    self.send(Message::MdSubscribeRejected(r), now_ns, out);
                }
            }
            Message::MdUnsubscribe(u) if login.kind == SessionKind::MarketData => {
                out.push(Action::Unsubscribe(*u))
            }
            Message::MdRetransmitRequest(r) if login.kind == SessionKind::MarketData => {
                out.push(Action::Retransmit(*r))
            }
            // Server-to-client messages, and market-data requests on another kind of session.
            _ => self.protocol_error(ProtocolErrorCode::UnexpectedMessage, template, out),
        }
    }

    fn on_login<K: KeyStore + ?Sized>(
        &mut self,
        login: &Login,
        now_ns: u64,
        keys: &K,
        out: &mut Vec<Action>,
    ) {
        match self.check_login(login, now_ns, keys) {
            Ok(established) => {
                self.login = Some(established);
                self.state = SessionState::LoggedIn;
                let next_seq = established.next_seq;
                let accepted = LoginAccepted {
                    session_id: self.session_id,
                    account: established.account.0,
                    heartbeat_ms: login.heartbeat_ms,
                    next_seq,
                };
                self.send(Message::LoginAccepted(accepted), now_ns, out);
                if login.session_kind != SessionKind::MarketData {
                    out.push(Action::Replay { from_seq: next_seq });
                }
            }
            Err(reason) => {
                self.send(Message::LoginRejected(LoginRejected { reason }), now_ns, out);
                self.close(None, DisconnectReason::LoginRejected(reason), false, out);
            }
        }
    }

    /// Every login check, cheapest and least revealing first; the claims (which change shared
    /// state) come after the signature verified.
    fn check_login<K: KeyStore + ?Sized>(
        &self,
        login: &Login,
        now_ns: u64,
        keys: &K,
    ) -> Result<Established, LoginRejectReason> {
        use LoginRejectReason as R;
        if login.nonce != self.nonce {
            return Err(R::NonceMismatch);
        }
        let key = keys.key(login.key_id).ok_or(R::UnknownKey)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(key.secret).map_err(|_| R::BadSignature)?;
        mac.update(&login.signing_payload());
        mac.verify_slice(&login.signature.0).map_err(|_| R::BadSignature)?;
        if login.timestamp_ns.abs_diff(now_ns)
            > self.config.max_clock_skew_ms.saturating_mul(NS_PER_MS)
        {
            return Err(R::StaleTimestamp);
        }
        if !keys.claim_nonce(&login.nonce) {
            return Err(R::NonceReused);
        }
        if !key.kinds.contains(login.session_kind) {
            return Err(R::NotPermitted);
        }
        if !(self.config.heartbeat_min_ms..=self.config.heartbeat_max_ms)
            .contains(&login.heartbeat_ms)
        {
            return Err(R::InvalidHeartbeat);
        }
        let cod = login.flags.cancel_on_disconnect();
        if cod && login.session_kind != SessionKind::OrderEntry {
            return Err(R::InvalidFlags);
        }
        let next_seq = match login.session_kind {
            SessionKind::MarketData => (login.next_seq == 0).then_some(0),
            _ => keys.resolve_next_seq(key.account, login.next_seq),
        }
        .ok_or(R::SeqUnavailable)?;
        if !keys.claim_session(login.key_id, login.session_kind) {
            return Err(R::AlreadyLoggedIn);
        }
        Ok(Established {
            key_id: login.key_id,
            account: key.account,
            kind: login.session_kind,
            cancel_on_disconnect: cod,
            interval_ns: login.heartbeat_ms as u64 * NS_PER_MS,
            last_client_ref: key.last_client_ref,
            next_seq,
        })
    }

    fn on_order_request(
        &mut self,
        msg: &Message,
        login: Established,
        now_ns: u64,
        out: &mut Vec<Action>,
    ) {
        let template = msg.template_id();
        let Some((client_ref, order_id, client_order_id)) = order_request(msg) else {
            return;
        };
        let code = if login.kind != SessionKind::OrderEntry {
            Some(RejectCode::NotPermitted)
        } else if !self.orders.take(now_ns) {
            Some(RejectCode::Throttled)
        } else if client_ref <= login.last_client_ref {
            Some(RejectCode::DuplicateClientRef)
        } else {
            None
        };
        if let Some(code) = code {
            let r = reject(now_ns, client_ref, template, order_id, client_order_id, code);
            return self.send(r, now_ns, out);
        }
        let account = login.account;
        let command = match *msg {
            Message::NewOrder(o) => Command::PlaceOrder(EngineNewOrder {
                account,
                market: o.market,
                client_order_id: o.client_order_id,
                side: o.side,
                order_type: o.order_type,
                time_in_force: o.time_in_force,
                post_only: o.post_only,
                stp: o.stp,
                price: o.price,
                quantity: o.quantity,
                quote_quantity: o.quote_quantity,
                reserve_price: o.reserve_price,
            }),
            Message::CancelOrder(c) => Command::CancelOrder { account, order: c.order },
            Message::AmendOrder(a) => Command::AmendOrder {
                account,
                order: a.order,
                new_price: a.new_price,
                new_quantity: a.new_quantity,
            },
            // SideFilter::Both / Buy / Sell → None / Some(Buy) / Some(Sell).
            Message::MassCancel(m) => {
                Command::CancelAll { account, market: m.market, side: m.side.side() }
            }
            _ => return,
        };
        if let Some(l) = self.login.as_mut() {
            l.last_client_ref = client_ref;
        }
        out.push(Action::Submit { command, client_ref, key_id: login.key_id });
    }

    /// Advance time: the login timeout, the heartbeat to send, the heartbeat timeout.
    pub fn on_tick(&mut self, now_ns: u64, out: &mut Vec<Action>) {
        match self.state {
            SessionState::Closed => {}
            SessionState::AwaitingLogin => {
                if now_ns.saturating_sub(self.created_ns)
                    >= self.config.login_timeout_ms.saturating_mul(NS_PER_MS)
                {
                    self.protocol_error(ProtocolErrorCode::LoginTimeout, 0, out);
                }
            }
            SessionState::LoggedIn => {
                let Some(login) = self.login else { return };
                if now_ns.saturating_sub(self.last_recv_ns) >= login.interval_ns.saturating_mul(3) {
                    return self.protocol_error(ProtocolErrorCode::HeartbeatTimeout, 0, out);
                }
                if now_ns.saturating_sub(self.last_sent_ns) >= login.interval_ns {
                    self.send(Message::Heartbeat(Heartbeat { timestamp_ns: now_ns }), now_ns, out);
                }
            }
        }
    }

    /// The connection was lost (or closed by the caller for a reason the session did not
    /// produce, e.g. a decode error or a slow consumer, after sending its ProtocolError). A
    /// logged-in session with cancel-on-disconnect fires it; a session already closed (after a
    /// Logout, say) does nothing.
    pub fn on_disconnect(&mut self, _now_ns: u64, out: &mut Vec<Action>) {
        if self.state == SessionState::Closed {
            return;
        }
        if let Some(l) = self.login.take() {
            if l.cancel_on_disconnect {
                out.push(Action::CancelOnDisconnect { account: l.account });
            }
            out.push(Action::SessionEnded { key_id: l.key_id, kind: l.kind });
        }
        self.state = SessionState::Closed;
    }
}

/// `(client_ref, order_id, client_order_id)` of an order request, `None` for other messages.
fn order_request(msg: &Message) -> Option<(u64, u64, u64)> {
    let by_ref = |r: OrderRef| match r {
        OrderRef::Id(id) => (id, 0),
        OrderRef::Client(c) => (0, c),
    };
    Some(match *msg {
        Message::NewOrder(o) => (o.client_ref, 0, o.client_order_id),
        Message::CancelOrder(c) => {
            let (i, c2) = by_ref(c.order);
            (c.client_ref, i, c2)
        }
        Message::AmendOrder(a) => {
            let (i, c2) = by_ref(a.order);
            (a.client_ref, i, c2)
        }
        Message::MassCancel(m) => (m.client_ref, 0, 0),
        _ => return None,
    })
}

/// A session-level (unsequenced, `seq` 0) OrderRejected.
fn reject(
    now_ns: u64,
    client_ref: u64,
    template: u16,
    order_id: u64,
    client_order_id: u64,
    reason: RejectCode,
) -> Message {
    Message::OrderRejected(OrderRejected {
        seq: 0,
        timestamp_ns: now_ns,
        client_ref,
        request_template: template,
        order_id,
        client_order_id,
        reason,
    })
}

#[cfg(test)]
mod tests;
