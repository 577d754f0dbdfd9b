//! The I/O thread: connections, sessions, submission and routing (see the [module
//! docs](super)).

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bourse_engine::{
    AccountId, Command, Engine, LevelView, MarketId, MarketStatus, OrderRef, Side,
};
use bourse_node::{Client, CommandEvents, Node, SubmitError, Subscription, WaitStrategy};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use rustc_hash::FxHashMap;

use super::keys::{KeyRegistry, KeysView};
use super::md::{MdMarket, MdOutput, MdState};
use super::render::{account_messages, command_account, request_template};
use super::replay::{self, ReplayJob, ReplayMsg};
use super::{sides, Control, Counters, GatewayConfig, GatewayError, MdSub};
use crate::protocol::{
    stream_seq, EndOfSession, EndReason, FeedKind, FrameDecoder, MdRetransmitReply,
    MdRetransmitRequest, MdSnapshotEnd, MdSnapshotLevel, MdSnapshotOrder, MdSnapshotStart,
    MdSubscribe, MdSubscribeRejected, Message, Nonce, OrderRejected, ProtocolError,
    ProtocolErrorCode, RejectCode, RetransmitStatus, SessionKind, SubscribeRejectReason,
};
use crate::session::{Action, ApiKey, KeyStore, Session, SessionConfig, SessionState};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// Commands routed per turn of the loop at most (then sockets are served again).
const ROUTE_BURST: usize = 1024;
/// How often sessions are ticked (heartbeats, timeouts).
const TICK: Duration = Duration::from_millis(5);
/// How long a closing connection may take to drain its last bytes.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long a logged-out session may wait for what it is owed before EndOfSession anyway.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// How long `stop` waits for cancel-on-disconnect commands to be acknowledged.
const STOP_GRACE: Duration = Duration::from_secs(5);

pub(super) fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// The key store a login consults: the key table plus the router's position.
struct LoginStore<'a> {
    keys: KeysView<'a>,
    /// The first node sequence number not yet routed.
    live_node_seq: u64,
    /// Asked for the oldest replayable position only when a verified Login resumes.
    node: &'a Node,
}

impl KeyStore for LoginStore<'_> {
    fn key(&self, key_id: u64) -> Option<ApiKey<'_>> {
        self.keys.key(key_id)
    }

    fn claim_nonce(&self, nonce: &Nonce) -> bool {
        self.keys.claim_nonce(nonce)
    }

    /// Called only after the signature verified, so an unauthenticated client cannot make
    /// the I/O thread list the data directory.
    fn resolve_next_seq(&self, _account: AccountId, next_seq: u64) -> Option<u64> {
        let live = stream_seq(self.live_node_seq, 0);
        if next_seq == 0 {
            return Some(live);
        }
        if next_seq > live {
            return None;
        }
        // Positions below the first command's (1 << 16) mean "from the beginning".
        let node_seq = (next_seq >> 16).max(1);
        let first_available = self.node.first_available_seq().ok()?;
        (node_seq >= first_available).then_some(next_seq)
    }

    fn claim_session(&self, key_id: u64, kind: SessionKind) -> bool {
        self.keys.claim_session(key_id, kind)
    }
}

/// A logged-in session's identity.
#[derive(Clone, Copy, Debug)]
struct LoggedIn {
    key_id: u64,
    account: AccountId,
    kind: SessionKind,
}

/// A resuming session's replay.
struct Replay {
    rx: Receiver<ReplayMsg>,
    /// Live messages that arrived during the replay, sent after it.
    pending: Vec<u8>,
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    session: Session,
    decoder: FrameDecoder,
    out: Vec<u8>,
    written: usize,
    /// A frame boundary in `out`: at or before `written`, or the end of the partly written
    /// frame that `written` is inside (so `out` can be cut at a frame boundary).
    aligned: usize,
    /// Set once the connection is to be closed: after the output drains, or at the deadline.
    closing: Option<Instant>,
    login: Option<LoggedIn>,
    replay: Option<Replay>,
    subs: Vec<MdSub>,
    /// The highest client_ref this connection submitted.
    max_client_ref: u64,
    /// Subscribe requests in the current second: (second since the epoch, count).
    subscribe_window: (u64, u32),
    /// The highest client_ref the node accepted from this connection (0: none).
    last_submitted: u64,
    /// The highest reference of this connection's key the router has routed.
    routed_ref: u64,
    /// After a Logout: the EndOfSession to send once everything owed is out, and the
    /// latest time to send it anyway.
    draining: Option<(Message, Instant)>,
    queued_for_flush: bool,
}

impl Conn {
    /// The first frame boundary at or after `written`.
    fn boundary_after_written(&mut self) -> usize {
        let mut b = self.aligned;
        while b < self.written && b + 2 <= self.out.len() {
            let len = u16::from_le_bytes([self.out[b], self.out[b + 1]]) as usize;
            b += 2 + len;
        }
        self.aligned = b.min(self.out.len());
        self.aligned
    }

    fn pending_bytes(&self) -> usize {
        self.out.len() - self.written + self.replay.as_ref().map_or(0, |r| r.pending.len())
    }
}

pub(super) struct Io {
    poll: Poll,
    listener: TcpListener,
    waker: Arc<Waker>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    node: Arc<Node>,
    client: Client,
    feed: Subscription,
    /// The first node sequence number not yet routed.
    next_seq: u64,
    keys: Arc<KeyRegistry>,
    md: MdState,
    account_conns: FxHashMap<AccountId, Vec<usize>>,
    market_subs: FxHashMap<MarketId, Vec<usize>>,
    replaying: Vec<usize>,
    /// Replay worker threads (joined at shutdown), and the flag that tells them to stop.
    replay_workers: Vec<std::thread::JoinHandle<()>>,
    replay_stop: Arc<AtomicBool>,
    flush: Vec<usize>,
    control: Receiver<Control>,
    config: GatewayConfig,
    session_config: SessionConfig,
    counters: Arc<Counters>,
    actions: Vec<Action>,
    routed: Vec<(AccountId, Message)>,
    md_out: Vec<(MarketId, MdOutput)>,
    /// Set while the thread is about to sleep in `epoll_wait`: the publisher's notification
    /// wakes it (through the waker) only then.
    sleeping: Arc<AtomicBool>,
    /// The wall clock (ns since the Unix epoch), read once per turn of the loop.
    now: u64,
    /// Cancel-on-disconnect commands the node's ring refused; retried every turn.
    pending_cod: Vec<(u64, AccountId)>,
    next_session_id: u64,
    stopping: bool,
    /// When `stop` gives up on cancel-on-disconnect still waiting for room.
    stop_deadline: Option<Instant>,
    /// Turns run on the node's pipeline thread (`GatewayConfig::embedded`).
    embedded: bool,
    /// The poller's event buffer (taken during a turn).
    events: Option<Events>,
    last_activity: Instant,
    last_tick: Instant,
}

/// The order fields a session-level reject names, from the command.
fn command_ids(command: &Command) -> (u64, u64) {
    let by_ref = |r: OrderRef| match r {
        OrderRef::Id(id) => (id, 0),
        OrderRef::Client(c) => (0, c),
    };
    match *command {
        Command::PlaceOrder(o) => (0, o.client_order_id),
        Command::CancelOrder { order, .. } | Command::AmendOrder { order, .. } => by_ref(order),
        _ => (0, 0),
    }
}

impl Io {
    pub(super) fn new(
        node: Arc<Node>,
        config: GatewayConfig,
        keys: Arc<KeyRegistry>,
        counters: Arc<Counters>,
        control: Receiver<Control>,
    ) -> Result<(Io, Arc<Waker>, SocketAddr), GatewayError> {
        let std_listener = std::net::TcpListener::bind(&config.listen)?;
        std_listener.set_nonblocking(true)?;
        let local_addr = std_listener.local_addr()?;
        let mut listener = TcpListener::from_std(std_listener);
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        // Subscribe first, then read the published position, then cut the market-data state:
        // the router starts at `published + 1`, fills any gap before the subscription's first
        // entry from the event log, and skips book changes the seeded state already has.
        let sleeping = Arc::new(AtomicBool::new(false));
        let notify: bourse_node::node::Notify = {
            let (sleeping, waker) = (sleeping.clone(), waker.clone());
            Arc::new(move || {
                // Dekker: the publisher's push (a release store) must be ordered before this
                // load, as the I/O thread's announcement is before its look at the ring.
                std::sync::atomic::fence(Ordering::SeqCst);
                if sleeping.load(Ordering::SeqCst) && sleeping.swap(false, Ordering::SeqCst) {
                    let _ = waker.wake();
                }
            })
        };
        let feed = node.subscribe_with_notify(config.event_ring, notify)?;
        let published = node.stats().published_seq;
        let mut md = MdState::new(config.md_retention);
        let markets = node.query(|e| {
            e.markets()
                .into_iter()
                .filter_map(|m| {
                    let v = e.market(m)?;
                    let levels = |side| -> Vec<(u64, u64, u32)> {
                        e.depth(m, side, usize::MAX)
                            .into_iter()
                            .map(|l: LevelView| (l.price, l.quantity, l.orders))
                            .collect()
                    };
                    Some((m, v.status, v.book_seq, levels(Side::Buy), levels(Side::Sell)))
                })
                .collect::<Vec<_>>()
        })?;
        for (m, status, book_seq, bids, asks) in markets {
            md.seed(m, MdMarket::new(status, book_seq, &bids, &asks));
        }
        // Results come from the subscription (every command's events with its origin), so
        // the node builds no acknowledgements for this client.
        let client = node.client_without_acks(0)?;
        let session_config = config.session_config();
        let config_embedded = config.embedded;
        let io = Io {
            poll,
            listener,
            waker: waker.clone(),
            conns: Vec::new(),
            free: Vec::new(),
            node,
            client,
            feed,
            next_seq: published + 1,
            keys,
            md,
            account_conns: FxHashMap::default(),
            market_subs: FxHashMap::default(),
            replaying: Vec::new(),
            replay_workers: Vec::new(),
            replay_stop: Arc::new(AtomicBool::new(false)),
            flush: Vec::new(),
            control,
            config,
            session_config,
            counters,
            actions: Vec::new(),
            routed: Vec::new(),
            md_out: Vec::new(),
            sleeping,
            now: now_ns(),
            pending_cod: Vec::new(),
            next_session_id: now_ns(),
            stopping: false,
            stop_deadline: None,
            embedded: config_embedded,
            events: Some(Events::with_capacity(1024)),
            last_activity: Instant::now(),
            last_tick: Instant::now(),
        };
        Ok((io, waker, local_addr))
    }

    /// The I/O thread's loop (the gateway in its own thread): turns, sleeping in
    /// `epoll_wait` or yielding between idle ones as configured.
    pub(super) fn run(mut self) {
        let node_config = self.node.config();
        let core = self.config.core.or(node_config.cores.gateway);
        if let Err(e) = bourse_node::affinity::pin_current_thread(core) {
            eprintln!("bourse-gateway: cannot pin the I/O thread: {e}");
        }
        let spin = Duration::from_micros(self.config.spin_us);
        let (sleep, yield_when_idle) = match (self.config.idle_poll_us, node_config.wait) {
            (0, WaitStrategy::BusySpin) => (None, false),
            (0, WaitStrategy::Yield) => (None, true),
            // The publisher wakes a sleeping I/O thread (`notify`), and sockets wake it
            // through epoll: sleeping until the next tick loses nothing.
            (0, WaitStrategy::SpinThenPark { .. }) => (Some(TICK), false),
            (us, _) => (Some(Duration::from_micros(us).min(TICK)), false),
        };
        loop {
            let timeout = match sleep {
                Some(sleep)
                    if !self.stopping
                        && self.last_activity.elapsed() >= spin
                        && self.pending_cod.is_empty() =>
                {
                    // Announce the sleep, then look once more: an entry published between
                    // the last look and the announcement would otherwise not wake us.
                    self.sleeping.store(true, Ordering::SeqCst);
                    std::sync::atomic::fence(Ordering::SeqCst);
                    if self.feed.is_empty() {
                        sleep
                    } else {
                        self.sleeping.store(false, Ordering::SeqCst);
                        Duration::ZERO
                    }
                }
                _ => Duration::ZERO,
            };
            match self.turn(None, timeout) {
                Turn::Stopped => return,
                Turn::Active => {}
                // Stopping: cancel-on-disconnect waits for room in the node's ring.
                Turn::Idle if self.stopping => std::thread::sleep(Duration::from_micros(100)),
                Turn::Idle if yield_when_idle => std::thread::yield_now(),
                Turn::Idle => {}
            }
        }
    }

    /// One turn of the loop: poll the sockets (waiting up to `timeout`), read, decode and
    /// submit; route what the node published; pump replays; tick; flush. `engine` is given
    /// when the turn runs on the node's pipeline thread (the embedded gateway): subscription
    /// snapshots are then cut from it directly, since a query to the engine would wait for
    /// this very thread.
    pub(super) fn turn(&mut self, engine: EngineAt<'_>, timeout: Duration) -> Turn {
        if self.stopping {
            return self.continue_shutdown();
        }
        let mut events = self.events.take().unwrap_or_else(|| Events::with_capacity(1024));
        let polled = self.poll.poll(&mut events, Some(timeout));
        self.sleeping.store(false, Ordering::SeqCst);
        if let Err(e) = polled {
            if e.kind() != ErrorKind::Interrupted {
                eprintln!("bourse-gateway: poll failed: {e}; stopping");
                return Turn::Stopped;
            }
        }
        self.now = now_ns();
        // Cancel-on-disconnect first, before new requests take the ring's free slots.
        self.retry_cancel_on_disconnect();
        let mut active = !events.is_empty();
        for event in events.iter() {
            match event.token() {
                LISTENER => self.accept(),
                WAKER => {}
                Token(i) => {
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        self.read(i, engine);
                    }
                    if event.is_writable() {
                        self.queue_flush(i);
                    }
                }
            }
        }
        self.events = Some(events);
        while let Ok(c) = self.control.try_recv() {
            match c {
                Control::Revoke(key_id) => self.end_sessions_of(Some(key_id)),
                Control::Stop => self.stopping = true,
            }
        }
        if self.stopping {
            self.begin_shutdown();
            return self.continue_shutdown();
        }
        self.retry_cancel_on_disconnect();
        active |= self.route();
        active |= self.pump_replays();
        let instant = Instant::now();
        if instant.duration_since(self.last_tick) >= TICK {
            self.last_tick = instant;
            self.tick();
        }
        self.flush_all();
        if active {
            self.last_activity = instant;
            Turn::Active
        } else {
            Turn::Idle
        }
    }

    /// The replay workers not joined yet (the embedded gateway hands them to
    /// `Gateway::stop` to join, off the pipeline thread).
    pub(super) fn take_replay_workers(&mut self) -> Vec<std::thread::JoinHandle<()>> {
        std::mem::take(&mut self.replay_workers)
    }

    // ---- Connections ---------------------------------------------------------------------

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                    let open = self.conns.len() - self.free.len();
                    let awaiting_login = self
                        .conns
                        .iter()
                        .flatten()
                        .filter(|c| c.login.is_none() && c.closing.is_none())
                        .count();
                    if open >= self.config.max_sessions
                        || awaiting_login >= self.config.max_pending_logins
                    {
                        continue; // dropped: closes the connection
                    }
                    let _ = stream.set_nodelay(true);
                    let i = self.free.pop().unwrap_or_else(|| {
                        self.conns.push(None);
                        self.conns.len() - 1
                    });
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if self.poll.registry().register(&mut stream, Token(i), interest).is_err() {
                        self.free.push(i);
                        continue;
                    }
                    let mut nonce = [0u8; 32];
                    if getrandom::fill(&mut nonce).is_err() {
                        eprintln!("bourse-gateway: no randomness for a nonce; refusing {peer}");
                        let _ = self.poll.registry().deregister(&mut stream);
                        self.free.push(i);
                        continue;
                    }
                    self.next_session_id += 1;
                    let now = self.now;
                    let (session, challenge) =
                        Session::new(self.session_config, self.next_session_id, nonce, now);
                    let mut conn = Conn {
                        stream,
                        peer,
                        session,
                        decoder: FrameDecoder::default(),
                        out: Vec::new(),
                        written: 0,
                        aligned: 0,
                        closing: None,
                        login: None,
                        replay: None,
                        subs: Vec::new(),
                        max_client_ref: 0,
                        subscribe_window: (0, 0),
                        last_submitted: 0,
                        routed_ref: 0,
                        draining: None,
                        queued_for_flush: false,
                    };
                    Message::Challenge(challenge).append_to(&mut conn.out);
                    self.conns[i] = Some(conn);
                    self.counters.active.fetch_add(1, Ordering::Relaxed);
                    self.queue_flush(i);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("bourse-gateway: accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn conn(&mut self, i: usize) -> Option<&mut Conn> {
        self.conns.get_mut(i).and_then(Option::as_mut)
    }

    /// Read everything available (the poller is edge-triggered) and handle each message.
    fn read(&mut self, i: usize, engine: EngineAt<'_>) {
        loop {
            let Some(conn) = self.conn(i) else { return };
            if conn.closing.is_some() {
                // Discard what a closing session still sends.
                let mut sink = [0u8; 4096];
                match conn.stream.read(&mut sink) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
            let spare = conn.decoder.spare();
            match conn.stream.read(spare) {
                Ok(0) => return self.lost(i),
                Ok(n) => {
                    conn.decoder.commit(n);
                    self.drain_frames(i, engine);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.lost(i),
            }
        }
    }

    fn drain_frames(&mut self, i: usize, engine: EngineAt<'_>) {
        loop {
            let Some(conn) = self.conn(i) else { return };
            if conn.closing.is_some() {
                return;
            }
            let decoded = match conn.decoder.next_frame() {
                Ok(None) => return,
                Ok(Some(frame)) => match Message::decode(frame) {
                    Ok(m) => Ok(m),
                    Err(e) => {
                        let template = if frame.len() >= 4 {
                            u16::from_le_bytes([frame[2], frame[3]])
                        } else {
                            0
                        };
                        let offset = match e {
                            crate::protocol::DecodeError::InvalidValue { offset, .. } => {
                                offset as u16
                            }
                            _ => 0,
                        };
                        Err(ProtocolError { reason: (&e).into(), template_id: template, offset })
                    }
                },
                Err(e) => Err(ProtocolError { reason: (&e).into(), template_id: 0, offset: 0 }),
            };
            self.counters.messages_in.fetch_add(1, Ordering::Relaxed);
            match decoded {
                Ok(m) => self.on_message(i, m, engine),
                Err(error) => return self.protocol_failure(i, error),
            }
        }
    }

    fn on_message(&mut self, i: usize, msg: Message, engine: EngineAt<'_>) {
        let now = self.now;
        let mut actions = std::mem::take(&mut self.actions);
        actions.clear();
        let was_logged_in;
        {
            let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) else { return };
            was_logged_in = conn.session.state() == SessionState::LoggedIn;
            let store = LoginStore {
                keys: self.keys.view(),
                live_node_seq: self.next_seq,
                node: &self.node,
            };
            conn.session.on_message(&msg, now, &store, &mut actions);
            if !was_logged_in && conn.session.state() == SessionState::LoggedIn {
                if let Message::Login(login) = msg {
                    let who = LoggedIn {
                        key_id: login.key_id,
                        account: conn.session.account().unwrap_or(AccountId(0)),
                        kind: login.session_kind,
                    };
                    conn.login = Some(who);
                }
            }
        }
        if let Message::Login(_) = msg {
            self.after_login(i, was_logged_in);
        }
        self.run_actions(i, &actions, now, engine);
        self.actions = actions;
    }

    fn after_login(&mut self, i: usize, was_logged_in: bool) {
        let Some(conn) = self.conn(i) else { return };
        if was_logged_in {
            return;
        }
        match conn.login {
            Some(who) => {
                self.counters.logins.fetch_add(1, Ordering::Relaxed);
                if who.kind != SessionKind::MarketData {
                    self.account_conns.entry(who.account).or_default().push(i);
                }
            }
            None => {
                self.counters.login_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn run_actions(&mut self, i: usize, actions: &[Action], now: u64, engine: EngineAt<'_>) {
        for action in actions {
            match *action {
                Action::Send(
                    m @ Message::EndOfSession(EndOfSession { reason: EndReason::LoggedOut }),
                ) => {
                    // A clean logout: EndOfSession goes after everything owed — the replies
                    // to requests already submitted, the rest of a replay.
                    if let Some(conn) = self.conn(i) {
                        conn.draining = Some((m, Instant::now() + DRAIN_LIMIT));
                    }
                }
                Action::Send(m) => self.send(i, &m),
                Action::Submit { command, client_ref, key_id } => {
                    self.submit(i, command, client_ref, key_id, now)
                }
                Action::Replay { from_seq } => self.start_replay(i, from_seq),
                Action::Subscribe(s) => self.subscribe(i, s, engine),
                Action::Unsubscribe(u) => self.unsubscribe(i, u.market),
                Action::Retransmit(r) => self.retransmit(i, r),
                Action::CancelOnDisconnect { account } => {
                    let key_id = self.conn(i).and_then(|c| c.login).map_or(0, |l| l.key_id);
                    self.counters.cancel_on_disconnect.fetch_add(1, Ordering::Relaxed);
                    self.pending_cod.push((key_id, account));
                    self.retry_cancel_on_disconnect();
                }
                Action::SessionEnded { key_id, kind } => {
                    self.keys.release_session(key_id, kind);
                    let mut draining = false;
                    if let Some(conn) = self.conn(i) {
                        let max = conn.max_client_ref;
                        draining = conn.draining.is_some();
                        self.keys.note_client_ref(key_id, max);
                    }
                    if !draining {
                        self.detach(i);
                    }
                }
                Action::Disconnect(_) => {
                    let mut draining = false;
                    if let Some(conn) = self.conn(i) {
                        draining = conn.draining.is_some();
                        if !draining {
                            conn.closing = Some(Instant::now() + CLOSE_GRACE);
                        }
                    }
                    if draining {
                        self.try_finish_drain(i, false);
                    }
                    self.queue_flush(i);
                }
            }
        }
    }

    /// A logged-out session still owed messages: once every request it submitted has been
    /// routed back and its replay is over (or `force`, at the drain deadline), send its
    /// EndOfSession and close.
    fn try_finish_drain(&mut self, i: usize, force: bool) {
        let Some(conn) = self.conn(i) else { return };
        let Some((end, _)) = conn.draining else { return };
        let caught_up = conn.routed_ref >= conn.last_submitted && conn.replay.is_none();
        if !caught_up && !force {
            return;
        }
        conn.draining = None;
        if let Some(r) = conn.replay.take() {
            conn.out.extend_from_slice(&r.pending);
        }
        end.append_to(&mut conn.out);
        conn.closing = Some(Instant::now() + CLOSE_GRACE);
        self.counters.messages_out.fetch_add(1, Ordering::Relaxed);
        self.detach(i);
        self.queue_flush(i);
    }

    /// Remove a connection from the routing tables (its session is over).
    fn detach(&mut self, i: usize) {
        let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) else { return };
        if let Some(who) = conn.login {
            if let Some(v) = self.account_conns.get_mut(&who.account) {
                v.retain(|&c| c != i);
                if v.is_empty() {
                    self.account_conns.remove(&who.account);
                }
            }
        }
        for s in conn.subs.drain(..) {
            if let Some(v) = self.market_subs.get_mut(&s.market) {
                v.retain(|&c| c != i);
            }
        }
        conn.replay = None;
        self.replaying.retain(|&c| c != i);
    }

    fn submit(&mut self, i: usize, command: Command, client_ref: u64, key_id: u64, now: u64) {
        // While an account's cancel-on-disconnect waits for room in the node's ring, its new
        // requests wait too: they must not overtake the cancel (which would cancel them).
        let cancel_pending = command_account(&command)
            .is_some_and(|a| self.pending_cod.iter().any(|&(_, account)| account == a));
        let submitted = if cancel_pending {
            Err(SubmitError::Busy(bourse_node::node::Submission {
                command,
                source: key_id,
                correlation: client_ref,
            }))
        } else {
            self.client.submit_from(key_id, command, client_ref)
        };
        match submitted {
            Ok(()) => {
                self.counters.submitted.fetch_add(1, Ordering::Relaxed);
                if let Some(conn) = self.conn(i) {
                    conn.max_client_ref = conn.max_client_ref.max(client_ref);
                    conn.last_submitted = conn.last_submitted.max(client_ref);
                }
            }
            Err(SubmitError::Busy(_)) | Err(SubmitError::Stopped) | Err(SubmitError::Timeout) => {
                self.counters.busy_rejects.fetch_add(1, Ordering::Relaxed);
                if let Some(conn) = self.conn(i) {
                    // The session consumed the client_ref; remember it like a submitted one.
                    conn.max_client_ref = conn.max_client_ref.max(client_ref);
                }
                let (order_id, client_order_id) = command_ids(&command);
                let reject = Message::OrderRejected(OrderRejected {
                    seq: 0,
                    timestamp_ns: now,
                    client_ref,
                    request_template: request_template(command.kind()).unwrap_or(0),
                    order_id,
                    client_order_id,
                    reason: RejectCode::ServerBusy,
                });
                self.send(i, &reject);
            }
        }
    }

    fn retry_cancel_on_disconnect(&mut self) {
        while let Some(&(key_id, account)) = self.pending_cod.first() {
            let command = Command::CancelAll { account, market: None, side: None };
            match self.client.submit_from(key_id, command, 0) {
                Ok(()) => {
                    self.pending_cod.remove(0);
                }
                Err(SubmitError::Busy(_)) => return,
                Err(e) => {
                    eprintln!("bourse-gateway: cancel-on-disconnect for {account:?} lost: {e}");
                    self.pending_cod.remove(0);
                }
            }
        }
    }

    /// Queue a message for the client (session-level: not held back by a replay).
    fn send(&mut self, i: usize, m: &Message) {
        let now = self.now;
        let Some(conn) = self.conn(i) else { return };
        m.append_to(&mut conn.out);
        conn.session.on_sent(now);
        self.counters.messages_out.fetch_add(1, Ordering::Relaxed);
        self.enforce_outbound_limit(i);
        self.queue_flush(i);
    }

    /// Queue a routed message: behind the replay while one runs; a session whose buffer
    /// overflows is cut.
    fn deliver(&mut self, i: usize, m: &Message) {
        let limit = self.config.outbound_buffer_bytes;
        let Some(conn) = self.conn(i) else { return };
        if conn.closing.is_some() {
            return;
        }
        match conn.replay.as_mut() {
            Some(r) => m.append_to(&mut r.pending),
            None => m.append_to(&mut conn.out),
        }
        let over = conn.pending_bytes() > limit;
        self.counters.messages_out.fetch_add(1, Ordering::Relaxed);
        if over {
            self.slow_consumer(i);
        } else {
            self.queue_flush(i);
        }
    }

    fn slow_consumer(&mut self, i: usize) {
        self.counters.slow_consumers.fetch_add(1, Ordering::Relaxed);
        let error =
            ProtocolError { reason: ProtocolErrorCode::SlowConsumer, template_id: 0, offset: 0 };
        if let Some(conn) = self.conn(i) {
            // What is queued will not be read in time anyway: drop it (after the frame being
            // written, so the stream stays whole), say why, close once that is out.
            let boundary = conn.boundary_after_written();
            conn.out.truncate(boundary);
            if let Some(r) = conn.replay.as_mut() {
                r.pending = Vec::new();
            }
            Message::ProtocolError(error).append_to(&mut conn.out);
        }
        self.end_session(i, false);
    }

    /// A decoding failure: say what was wrong, then end the session as a disconnect.
    fn protocol_failure(&mut self, i: usize, error: ProtocolError) {
        self.counters.protocol_errors.fetch_add(1, Ordering::Relaxed);
        self.send(i, &Message::ProtocolError(error));
        self.end_session(i, false);
    }

    /// End a session the session itself did not end: cancel-on-disconnect and slot release
    /// as for a lost connection, then close once the output drains.
    fn end_session(&mut self, i: usize, immediately: bool) {
        let now = self.now;
        let mut actions = std::mem::take(&mut self.actions);
        actions.clear();
        if let Some(conn) = self.conn(i) {
            conn.session.on_disconnect(now, &mut actions);
            conn.closing =
                Some(if immediately { Instant::now() } else { Instant::now() + CLOSE_GRACE });
        }
        self.run_actions(i, &actions, now, None);
        self.actions = actions;
        self.queue_flush(i);
    }

    /// The connection dropped.
    fn lost(&mut self, i: usize) {
        self.end_session(i, true);
        self.close(i);
    }

    fn close(&mut self, i: usize) {
        self.detach(i);
        let Some(mut conn) = self.conns.get_mut(i).and_then(Option::take) else { return };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        self.free.push(i);
        self.counters.active.fetch_sub(1, Ordering::Relaxed);
    }

    /// End every session (of one key, or all) from the server side.
    fn end_sessions_of(&mut self, key: Option<u64>) {
        let reason = if key.is_some() { EndReason::Administrative } else { EndReason::Shutdown };
        for i in 0..self.conns.len() {
            let Some(conn) = self.conn(i) else { continue };
            if conn.closing.is_some() {
                continue;
            }
            let matches = match key {
                None => true,
                Some(k) => conn.login.is_some_and(|l| l.key_id == k),
            };
            if matches {
                if conn.login.is_some() {
                    self.send(i, &Message::EndOfSession(EndOfSession { reason }));
                }
                self.end_session(i, false);
            }
        }
    }

    fn queue_flush(&mut self, i: usize) {
        if let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) {
            if !conn.queued_for_flush {
                conn.queued_for_flush = true;
                self.flush.push(i);
            }
        }
    }

    fn flush_all(&mut self) {
        let queued = std::mem::take(&mut self.flush);
        for &i in &queued {
            let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) else { continue };
            conn.queued_for_flush = false;
            let mut broken = false;
            while conn.written < conn.out.len() {
                match conn.stream.write(&conn.out[conn.written..]) {
                    Ok(0) => {
                        broken = true;
                        break;
                    }
                    Ok(n) => conn.written += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
            }
            if conn.written == conn.out.len() {
                conn.out.clear();
                conn.written = 0;
                conn.aligned = 0;
            } else if conn.written > (1 << 20) {
                let boundary = conn.boundary_after_written();
                conn.out.drain(..conn.written);
                conn.aligned = boundary - conn.written;
                conn.written = 0;
            }
            let drained = conn.out.is_empty();
            let close_now = match conn.closing {
                Some(deadline) => drained || Instant::now() >= deadline,
                None => false,
            };
            if broken {
                self.lost(i);
            } else if close_now {
                self.close(i);
            }
        }
        let mut rest = std::mem::take(&mut self.flush);
        if !rest.is_empty() {
            // Queued while flushing (a lost connection's cancel-on-disconnect): next turn.
            self.flush.append(&mut rest);
        }
        self.flush.shrink_to(64);
    }

    fn tick(&mut self) {
        let now = self.now;
        let instant = Instant::now();
        let mut actions = std::mem::take(&mut self.actions);
        for i in 0..self.conns.len() {
            let Some(conn) = self.conn(i) else { continue };
            if conn.draining.is_some_and(|(_, deadline)| instant >= deadline) {
                self.try_finish_drain(i, true);
                continue;
            }
            if let Some(deadline) = conn.closing {
                if instant >= deadline {
                    self.close(i);
                } else {
                    self.queue_flush(i);
                }
                continue;
            }
            actions.clear();
            conn.session.on_tick(now, &mut actions);
            if !actions.is_empty() {
                if actions.iter().any(|a| matches!(a, Action::Disconnect(_))) {
                    self.counters.protocol_errors.fetch_add(1, Ordering::Relaxed);
                }
                self.run_actions(i, &actions, now, None);
            }
        }
        self.actions = actions;
    }

    // ---- Replay --------------------------------------------------------------------------

    fn start_replay(&mut self, i: usize, from_seq: u64) {
        let live = self.next_seq;
        if from_seq >= stream_seq(live, 0) {
            return;
        }
        let Some(who) = self.conn(i).and_then(|c| c.login) else { return };
        let job = ReplayJob { account: who.account, from_seq, live_node_seq: live };
        self.replay_workers.retain(|w| !w.is_finished());
        let (rx, worker) =
            replay::spawn(self.node.clone(), job, self.waker.clone(), self.replay_stop.clone());
        self.replay_workers.extend(worker);
        let Some(conn) = self.conn(i) else { return };
        conn.replay = Some(Replay { rx, pending: Vec::new() });
        self.replaying.push(i);
        self.counters.replays.fetch_add(1, Ordering::Relaxed);
    }

    /// Move replay chunks into sessions with room; finish replays that are done.
    fn pump_replays(&mut self) -> bool {
        let limit = self.config.outbound_buffer_bytes / 2;
        let mut active = false;
        let mut k = 0;
        while k < self.replaying.len() {
            let i = self.replaying[k];
            k += 1;
            let mut failed = None;
            let mut finished = false;
            {
                let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) else { continue };
                let Some(replay) = conn.replay.as_mut() else { continue };
                while conn.out.len() - conn.written < limit {
                    match replay.rx.try_recv() {
                        Ok(ReplayMsg::Chunk(bytes)) => {
                            conn.out.extend_from_slice(&bytes);
                            active = true;
                        }
                        Ok(ReplayMsg::Done) => {
                            conn.out.append(&mut replay.pending);
                            finished = true;
                            break;
                        }
                        Ok(ReplayMsg::Failed(why)) => {
                            failed = Some(why);
                            break;
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            failed = Some("replay worker ended".into());
                            break;
                        }
                    }
                }
                if finished {
                    conn.replay = None;
                }
            }
            if finished {
                k -= 1;
                self.replaying.remove(k);
                active = true;
                self.try_finish_drain(i, false);
            }
            if let Some(why) = failed {
                let peer = self.conn(i).map(|c| c.peer);
                eprintln!("bourse-gateway: replay for {peer:?} failed: {why}; ending the session");
                k -= 1;
                self.replaying.remove(k);
                self.send(
                    i,
                    &Message::EndOfSession(EndOfSession { reason: EndReason::Administrative }),
                );
                self.end_session(i, false);
            }
            self.queue_flush(i);
        }
        active
    }

    // ---- Routing -------------------------------------------------------------------------

    /// Route what the node published; `true` if anything was.
    fn route(&mut self) -> bool {
        let mut routed = 0;
        while routed < ROUTE_BURST {
            let Some(ce) = self.feed.try_next() else { break };
            routed += 1;
            if ce.seq < self.next_seq {
                continue;
            }
            if ce.seq > self.next_seq {
                self.catch_up(ce.seq);
            }
            self.route_one(&ce);
        }
        if self.feed.take_lag() {
            let published = self.node.stats().published_seq;
            self.catch_up(published + 1);
            routed += 1;
        }
        routed > 0
    }

    /// Route everything before `upto` from the event log.
    fn catch_up(&mut self, upto: u64) {
        while self.next_seq < upto {
            let want = (upto - self.next_seq).min(4096) as usize;
            match self.node.events_from(self.next_seq, want, Duration::ZERO) {
                Ok(batch) if !batch.is_empty() => {
                    for ce in &batch {
                        if ce.seq >= self.next_seq && ce.seq < upto {
                            self.route_one(ce);
                        }
                    }
                }
                Ok(_) => return,
                Err(e) => {
                    eprintln!("bourse-gateway: cannot read node seq {}: {e}", self.next_seq);
                    return;
                }
            }
        }
    }

    fn route_one(&mut self, ce: &CommandEvents) {
        debug_assert_eq!(ce.seq, self.next_seq);
        self.next_seq = ce.seq + 1;
        self.counters.routed_seq.store(ce.seq, Ordering::Relaxed);
        let mut routed = std::mem::take(&mut self.routed);
        routed.clear();
        let conns = &self.account_conns;
        account_messages(ce, |a| conns.contains_key(&a), |a, m| routed.push((a, m)));
        for (account, m) in &routed {
            let Some(targets) = self.account_conns.get(account) else { continue };
            // Usually one or two sessions (order entry and drop copy): copy the indexes.
            let targets: smallvec_free::Targets = targets.as_slice().into();
            for &i in targets.as_slice() {
                self.deliver(i, m);
            }
        }
        self.routed = routed;
        // The requesting connection learns that this request of its key has been answered
        // (a logged-out session waits for that before its EndOfSession).
        if ce.origin.source != 0 {
            if let Some(account) = command_account(&ce.command) {
                let targets: smallvec_free::Targets =
                    self.account_conns.get(&account).map_or(&[][..], |v| v.as_slice()).into();
                for &i in targets.as_slice() {
                    let Some(conn) = self.conn(i) else { continue };
                    if conn.login.is_some_and(|l| l.key_id == ce.origin.source) {
                        conn.routed_ref = conn.routed_ref.max(ce.origin.reference);
                        if conn.draining.is_some() {
                            self.try_finish_drain(i, false);
                        }
                    }
                }
            }
        }

        let mut md_out = std::mem::take(&mut self.md_out);
        md_out.clear();
        self.md.apply(ce, |market, o| md_out.push((market, o)));
        for (market, o) in &md_out {
            let Some(subs) = self.market_subs.get(market) else { continue };
            let targets: smallvec_free::Targets = subs.as_slice().into();
            for &i in targets.as_slice() {
                self.deliver_md(i, ce.seq, *market, o);
            }
        }
        self.md_out = md_out;
    }

    fn deliver_md(&mut self, i: usize, node_seq: u64, market: MarketId, o: &MdOutput) {
        let Some(conn) = self.conn(i) else { return };
        let Some(sub) = conn.subs.iter().find(|s| s.market == market) else { return };
        if node_seq <= sub.snapshot_node_seq {
            // The snapshot the session got already shows this command's effect.
            return;
        }
        let message = match (o, sub.feed) {
            (MdOutput::Change(c), FeedKind::OrderByOrder) => c.order_message(),
            (MdOutput::Change(c), FeedKind::Levels) => c.level_message(),
            (MdOutput::Top(t), FeedKind::TopOfBook) => Message::MdTopOfBook(*t),
            (MdOutput::Trade(t), _) => Message::MdTrade(*t),
            (MdOutput::Status(s), _) => Message::MdMarketStatus(*s),
            _ => return,
        };
        self.deliver(i, &message);
    }

    // ---- Market data requests -----------------------------------------------------------

    fn subscribe(&mut self, i: usize, s: MdSubscribe, engine: EngineAt<'_>) {
        let reject =
            |reason| Message::MdSubscribeRejected(MdSubscribeRejected { market: s.market, reason });
        let max = self.config.max_subscriptions;
        let per_sec = self.config.subscribes_per_sec;
        let known = self.md.market(s.market).is_some();
        let second = self.now / 1_000_000_000;
        let Some(conn) = self.conn(i) else { return };
        // Every accepted subscribe makes the engine cut a snapshot: a fixed window per
        // second bounds what one session can ask of it.
        if conn.subscribe_window.0 != second {
            conn.subscribe_window = (second, 0);
        }
        conn.subscribe_window.1 += 1;
        let refusal = if conn.subscribe_window.1 > per_sec {
            Some(SubscribeRejectReason::Throttled)
        } else if !known {
            Some(SubscribeRejectReason::UnknownMarket)
        } else if conn.subs.iter().any(|x| x.market == s.market) {
            Some(SubscribeRejectReason::AlreadySubscribed)
        } else if conn.subs.len() >= max {
            Some(SubscribeRejectReason::TooManySubscriptions)
        } else if s.depth != 0 {
            Some(SubscribeRejectReason::InvalidDepth)
        } else {
            None
        };
        if let Some(reason) = refusal {
            return self.send(i, &reject(reason));
        }
        let (market, feed) = (s.market, s.feed);
        let snapshot = match engine {
            Some((e, applied)) => Ok((cut_snapshot(e, market, feed), applied)),
            // On the pipeline thread a query would wait for that very thread.
            None if self.embedded => Err(()),
            None => self.node.query_at(move |e, _| cut_snapshot(e, market, feed)).map_err(drop),
        };
        let Ok((Some((book_seq, status, entries)), snapshot_node_seq)) = snapshot else {
            return self.send(i, &reject(SubscribeRejectReason::UnknownMarket));
        };
        let count = match &entries {
            Snapshot::Orders(v) => v.len(),
            Snapshot::Levels(v) => v.len(),
        };
        let mut frames = Vec::new();
        let start = MdSnapshotStart { market, book_seq, feed, status, entries: count as u32 };
        Message::MdSnapshotStart(start).append_to(&mut frames);
        match &entries {
            Snapshot::Orders(v) => {
                for &(order_id, side, price, quantity) in v {
                    let m = MdSnapshotOrder { market, order_id, side, price, quantity };
                    Message::MdSnapshotOrder(m).append_to(&mut frames);
                }
            }
            Snapshot::Levels(v) => {
                for &(side, price, quantity, orders) in v {
                    let m = MdSnapshotLevel { market, side, price, quantity, orders };
                    Message::MdSnapshotLevel(m).append_to(&mut frames);
                }
            }
        }
        Message::MdSnapshotEnd(MdSnapshotEnd { market, book_seq }).append_to(&mut frames);
        let now = self.now;
        let Some(conn) = self.conn(i) else { return };
        conn.out.extend_from_slice(&frames);
        conn.subs.push(MdSub { market, feed, snapshot_node_seq });
        conn.session.on_sent(now);
        self.counters.messages_out.fetch_add(count as u64 + 2, Ordering::Relaxed);
        self.market_subs.entry(market).or_default().push(i);
        self.enforce_outbound_limit(i);
        self.queue_flush(i);
    }

    fn unsubscribe(&mut self, i: usize, market: MarketId) {
        let Some(conn) = self.conn(i) else { return };
        conn.subs.retain(|s| s.market != market);
        if let Some(v) = self.market_subs.get_mut(&market) {
            v.retain(|&c| c != i);
        }
    }

    fn retransmit(&mut self, i: usize, r: MdRetransmitRequest) {
        let reply = |count: u32, status| {
            Message::MdRetransmitReply(MdRetransmitReply {
                market: r.market,
                from_book_seq: r.from_book_seq,
                count,
                status,
            })
        };
        let Some(conn) = self.conn(i) else { return };
        let Some(sub) = conn.subs.iter().find(|s| s.market == r.market).copied() else {
            return self.send(i, &reply(0, RetransmitStatus::NotSubscribed));
        };
        if sub.feed == FeedKind::TopOfBook {
            // Every top-of-book message is a full state: nothing to resend.
            return self.send(i, &reply(0, RetransmitStatus::Accepted));
        }
        let Some(market) = self.md.market(r.market) else {
            return self.send(i, &reply(0, RetransmitStatus::NotSubscribed));
        };
        let mut frames = Vec::new();
        let mut count = 0u32;
        let retained = market
            .retransmit(r.from_book_seq, r.count)
            .map(|changes| changes.copied().collect::<Vec<_>>());
        match retained {
            Err(status) => return self.send(i, &reply(0, status)),
            Ok(changes) => {
                for c in changes {
                    let m = match sub.feed {
                        FeedKind::Levels => c.level_message(),
                        _ => c.order_message(),
                    };
                    m.append_to(&mut frames);
                    count += 1;
                }
            }
        }
        self.send(i, &reply(count, RetransmitStatus::Accepted));
        if let Some(conn) = self.conn(i) {
            conn.out.extend_from_slice(&frames);
        }
        self.counters.messages_out.fetch_add(count as u64, Ordering::Relaxed);
        self.enforce_outbound_limit(i);
        self.queue_flush(i);
    }

    /// Cut a session whose queued bytes passed the limit (whatever queued them: live
    /// messages, snapshots, retransmits, rejects).
    fn enforce_outbound_limit(&mut self, i: usize) {
        let limit = self.config.outbound_buffer_bytes;
        let over = self.conn(i).is_some_and(|c| c.closing.is_none() && c.pending_bytes() > limit);
        if over {
            self.slow_consumer(i);
        }
    }

    // ---- Shutdown ------------------------------------------------------------------------

    /// `Stop`: end every session (cancel-on-disconnect fires), then
    /// [`Io::continue_shutdown`] on this and later turns.
    fn begin_shutdown(&mut self) {
        self.end_sessions_of(None);
        self.stop_deadline = Some(Instant::now() + STOP_GRACE);
    }

    /// Cancel-on-disconnect must be in the node's ring before the node is stopped (the node
    /// applies everything submitted before it stops): retried on every turn — on the
    /// pipeline thread the sequencer takes them between turns, so this never waits there —
    /// until all are taken or the grace period is over; then close everything.
    fn continue_shutdown(&mut self) -> Turn {
        self.retry_cancel_on_disconnect();
        let deadline = *self.stop_deadline.get_or_insert_with(|| Instant::now() + STOP_GRACE);
        if !self.pending_cod.is_empty() && Instant::now() < deadline {
            return Turn::Idle;
        }
        if !self.pending_cod.is_empty() {
            eprintln!(
                "bourse-gateway: {} cancel-on-disconnect command(s) not submitted at shutdown",
                self.pending_cod.len()
            );
        }
        self.flush_all();
        self.replay_stop.store(true, Ordering::Release);
        for i in 0..self.conns.len() {
            self.close(i);
        }
        // Closing dropped their channels; each worker ends at its next batch or send. Join
        // them, so that the node has no other owner once `Gateway::stop` returns (the
        // embedded gateway leaves that to `Gateway::stop`, off the pipeline thread).
        if !self.embedded {
            for worker in self.replay_workers.drain(..) {
                let _ = worker.join();
            }
        }
        Turn::Stopped
    }
}

/// The engine as of a node sequence number, when the gateway runs on the pipeline thread.
pub(super) type EngineAt<'a> = Option<(&'a Engine, u64)>;

/// What one [`Io::turn`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Turn {
    /// Made progress.
    Active,
    /// Nothing to do (or, stopping, waiting for room for cancel-on-disconnect).
    Idle,
    /// Shut down: every connection is closed; never turn again.
    Stopped,
}

/// Cut a market-data subscription snapshot of `market` from the engine.
fn cut_snapshot(
    e: &Engine,
    market: MarketId,
    feed: FeedKind,
) -> Option<(u64, MarketStatus, Snapshot)> {
    let view = e.market(market)?;
    let entries = match feed {
        FeedKind::OrderByOrder => Snapshot::Orders(
            sides()
                .into_iter()
                .flat_map(|side| {
                    e.book_orders(market, side)
                        .into_iter()
                        .map(move |o| (o.order_id, side, o.price, o.leaves_quantity))
                })
                .collect(),
        ),
        FeedKind::Levels | FeedKind::TopOfBook => {
            let max = match feed {
                FeedKind::TopOfBook => 1,
                _ => usize::MAX,
            };
            Snapshot::Levels(
                sides()
                    .into_iter()
                    .flat_map(|side| {
                        e.depth(market, side, max)
                            .into_iter()
                            .map(move |l| (side, l.price, l.quantity, l.orders))
                    })
                    .collect(),
            )
        }
    };
    Some((view.book_seq, view.status, entries))
}

/// A subscription snapshot as the engine cut it.
enum Snapshot {
    /// (order id, side, price, open quantity), bids best first then asks best first.
    Orders(Vec<(u64, Side, u64, u64)>),
    /// (side, price, quantity, orders).
    Levels(Vec<(Side, u64, u64, u32)>),
}

mod smallvec_free {
    //! A copy of a short index list, so that delivering (which needs `&mut` the I/O state)
    //! does not hold a borrow of the routing table.

    /// Up to 8 indexes inline; more spill to the heap.
    pub enum Targets {
        Inline([usize; 8], usize),
        Heap(Vec<usize>),
    }

    impl From<&[usize]> for Targets {
        fn from(s: &[usize]) -> Targets {
            if s.len() <= 8 {
                let mut a = [0; 8];
                a[..s.len()].copy_from_slice(s);
                Targets::Inline(a, s.len())
            } else {
                Targets::Heap(s.to_vec())
            }
        }
    }

    impl Targets {
        pub fn as_slice(&self) -> &[usize] {
            match self {
                Targets::Inline(a, n) => &a[..*n],
                Targets::Heap(v) => v,
            }
        }
    }
}
