//! Bindings for the durable node (`bourse-node`): `Node`, and the journal and benchmark tools.
//!
//! * `Node(config)` starts (recovering from `config["data_dir"]`) a node: the engine behind a
//!   sequencer and a journal, on its own threads. The config dict is
//!   [`bourse_node::NodeConfig`] in its serde form, unknown keys rejected.
//! * Every call that can wait (submit, events, queries, snapshot, stop) releases the GIL.
//! * Submissions go through one internal [`Client`] behind a mutex: a client is one thread
//!   at a time, and its acknowledgement wait polls rather than parking on a doorbell, so it
//!   can be used from whichever thread holds the mutex. The control plane's pipelined path
//!   is `open_client` (a `NodeClient` per caller, msgpack in and out) and `events_packed`;
//!   see [`crate::client`].
//!
//! Locks are only ever taken with the GIL released, and Python objects are only built after
//! they are released, so a thread waiting for a lock never holds the GIL someone needs.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bourse_engine::{AccountId, AssetId, Command, MarketId};
use bourse_gateway::protocol::SessionKind;
use bourse_gateway::server::{Gateway, GatewayConfig};
use bourse_gateway::session::SessionKinds;
use bourse_node::journal::{self, JournalError, ReadMode};
use bourse_node::{recovery, Ack, Client, CommandEvents, Durability, Node, NodeConfig, NodeStats};
use bourse_node::{RecoveryReport, SubmitError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use pythonize::{depythonize, pythonize};

use crate::client::{encode_entries, AckBell, Lifecycle, PyNodeClient};
use crate::{command_from_py, parse_side, run_tool, Error, Result};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn no_gateway() -> Error {
    Error::Node("no gateway is running (call start_gateway first)".to_owned())
}

fn gateway_error(e: bourse_gateway::server::GatewayError) -> Error {
    match e {
        bourse_gateway::server::GatewayError::Node(n) => n.into(),
        other => Error::Node(other.to_string()),
    }
}

/// Take the node back from its last other owners (a gateway's replay workers, which end as
/// soon as their sessions are gone).
fn sole_owner(mut node: Arc<Node>) -> Result<Node> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Arc::try_unwrap(node) {
            Ok(node) => return Ok(node),
            Err(shared) if Instant::now() < deadline => {
                node = shared;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return Err(Error::Node("the node is still in use; cannot stop it".into())),
        }
    }
}

fn stopped() -> Error {
    Error::Stopped("node stopped".to_owned())
}

fn duration(seconds: f64, what: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| Error::Argument(format!("{what} must be a finite number ≥ 0, not {seconds}")))
}

/// Decode a node config dict. `data_dir` may be a `str` or any `os.PathLike`.
fn config_from_py(obj: &Bound<'_, PyAny>) -> Result<NodeConfig> {
    let Ok(dict) = obj.cast::<PyDict>() else {
        let type_name = obj.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        return Err(Error::Node(format!("a node config must be a dict, not {type_name}")));
    };
    let dict = dict.copy()?;
    if let Some(dir) = dict.get_item("data_dir")? {
        if !dir.is_instance_of::<PyString>() {
            let path: PathBuf = dir.extract().map_err(|_| {
                Error::Node("invalid node config: `data_dir` must be a str or os.PathLike".into())
            })?;
            let path = path.into_os_string().into_string().map_err(|p| {
                Error::Node(format!("invalid node config: `data_dir` {p:?} is not UTF-8"))
            })?;
            dict.set_item("data_dir", path)?;
        }
    }
    depythonize(dict.as_any()).map_err(|e| {
        let error = e.to_string();
        match crate::blame_field::<NodeConfig>(&dict, &error) {
            Some(key) => Error::Node(format!("invalid node config: field `{key}`: {error}")),
            None => Error::Node(format!("invalid node config: {error}")),
        }
    })
}

/// An acknowledgement or an event-log entry as a dict: `{"seq", "timestamp_ns", "events"}`.
fn entry_to_py<'py>(
    py: Python<'py>,
    seq: u64,
    timestamp_ns: u64,
    events: &[bourse_engine::Event],
) -> Result<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("seq", seq)?;
    d.set_item("timestamp_ns", timestamp_ns)?;
    d.set_item("events", pythonize(py, events)?)?;
    Ok(d)
}

fn acks_to_py<'py>(py: Python<'py>, acks: &[Ack]) -> Result<Bound<'py, PyList>> {
    let items = acks
        .iter()
        .map(|a| entry_to_py(py, a.seq, a.timestamp_ns, &a.events))
        .collect::<Result<Vec<_>>>()?;
    Ok(PyList::new(py, items)?)
}

/// The single client submissions go through, and the next correlation number to use.
struct Submitter {
    client: Client,
    next_correlation: u64,
}

impl Submitter {
    /// Submit `commands` in order, keeping up to `window` in flight, and return their
    /// acknowledgements in order. `timeout` bounds every wait without progress.
    fn call_many(
        &mut self,
        commands: &[Command],
        window: usize,
        timeout: Duration,
    ) -> Result<Vec<Ack>> {
        let n = commands.len();
        // Acks of an earlier call that gave up waiting have smaller correlations: skipped.
        let base = self.next_correlation;
        self.next_correlation += n as u64;
        let mut acks: Vec<Ack> = Vec::with_capacity(n);
        let mut next = 0usize;
        let mut progress = Instant::now();
        while acks.len() < n {
            let mut busy = false;
            while next < n && next - acks.len() < window {
                match self.client.submit(commands[next], base + next as u64) {
                    Ok(()) => {
                        next += 1;
                        progress = Instant::now();
                    }
                    Err(SubmitError::Busy(_)) => {
                        busy = true;
                        break;
                    }
                    Err(SubmitError::Stopped | SubmitError::Timeout) => return Err(stopped()),
                }
            }
            let must_wait = busy || next == n || next - acks.len() >= window;
            let ack = if must_wait {
                let left = timeout.saturating_sub(progress.elapsed());
                let asked = Instant::now();
                let ack = self.client.ack_timeout(left);
                if ack.is_none() && asked.elapsed() < left {
                    // `ack_timeout` returns early only when the node stops.
                    return Err(Error::Stopped(format!(
                        "node stopped with {} command(s) unacknowledged; they may or may not \
                         be in the journal",
                        next - acks.len()
                    )));
                }
                ack
            } else {
                self.client.try_ack()
            };
            match ack {
                Some(ack) if ack.correlation < base + acks.len() as u64 => {} // stale
                Some(ack) => {
                    let expected = base + acks.len() as u64;
                    if ack.correlation != expected {
                        return Err(Error::Node(format!(
                            "acknowledgement out of order: expected reference {expected}, got {}",
                            ack.correlation
                        )));
                    }
                    acks.push(ack);
                    progress = Instant::now();
                }
                None if must_wait && progress.elapsed() >= timeout => {
                    if next == acks.len() {
                        return Err(Error::Busy(format!(
                            "node busy: the submission ring stayed full for {:.3} s",
                            timeout.as_secs_f64()
                        )));
                    }
                    let lost = if self.client.acks_lost() {
                        " (acknowledgements were dropped: the ring overflowed)"
                    } else {
                        ""
                    };
                    return Err(Error::Node(format!(
                        "no acknowledgement within {:.3} s; {} command(s) in flight{lost}",
                        timeout.as_secs_f64(),
                        next - acks.len()
                    )));
                }
                None => {}
            }
        }
        Ok(acks)
    }
}

/// A running node; see the module docs. A context manager: `with Node(cfg) as node: ...`
/// stops it (with a final snapshot) on exit.
#[pyclass(name = "Node", module = "controlplane._engine", frozen)]
pub struct PyNode {
    /// `None` once stopped. Held for reading by every call (GIL released), for writing by
    /// `stop`. Shared with the gateway (and its replay workers) while one runs.
    node: RwLock<Option<Arc<Node>>>,
    /// The binary gateway, once started.
    gateway: Mutex<Option<Gateway>>,
    submitter: Mutex<Option<Submitter>>,
    recovery: RecoveryReport,
    ring_capacity: usize,
    /// Set by the first `stop`; later ones return it again.
    final_stats: Mutex<Option<NodeStats>>,
    /// Told when `stop` begins and ends, for the `NodeClient`s.
    lifecycle: Arc<Lifecycle>,
}

impl PyNode {
    /// Run `f` on the running node with the GIL released.
    fn with_node<R, F>(&self, py: Python<'_>, f: F) -> Result<R>
    where
        R: Send,
        F: FnOnce(&Node) -> Result<R> + Send,
    {
        py.detach(|| {
            let guard = self.node.read().unwrap_or_else(PoisonError::into_inner);
            let node = guard.as_deref().ok_or_else(stopped)?;
            f(node)
        })
    }

    fn submit_commands(
        &self,
        py: Python<'_>,
        commands: &[Command],
        window: usize,
        timeout: Duration,
    ) -> Result<Vec<Ack>> {
        py.detach(|| {
            let mut submitter = lock(&self.submitter);
            let submitter = submitter.as_mut().ok_or_else(stopped)?;
            submitter.call_many(commands, window, timeout)
        })
    }
}

#[pymethods]
impl PyNode {
    /// Recover from `config["data_dir"]` (created if missing) and start the node's threads.
    #[new]
    fn new(py: Python<'_>, config: &Bound<'_, PyAny>) -> Result<Self> {
        let config = config_from_py(config)?;
        let ring_capacity = config.ring_capacity.max(1);
        let (node, client) = py.detach(|| -> Result<(Node, Client)> {
            let node = Node::start(config)?;
            let client = node.client()?;
            Ok((node, client))
        })?;
        let recovery = node.recovery().clone();
        Ok(PyNode {
            node: RwLock::new(Some(Arc::new(node))),
            gateway: Mutex::new(None),
            // References start at the recovered next sequence number: every command takes a
            // sequence number, so they never repeat across restarts.
            submitter: Mutex::new(Some(Submitter { client, next_correlation: recovery.next_seq })),
            recovery,
            ring_capacity,
            final_stats: Mutex::new(None),
            lifecycle: Arc::default(),
        })
    }

    /// What recovery found and did when the node started (also after `stop`).
    fn recovery<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyAny>> {
        Ok(pythonize(py, &self.recovery)?)
    }

    /// Submit one command and wait until it is acknowledged (journaled under the durability
    /// policy and applied); returns `{"seq", "timestamp_ns", "events"}`.
    #[pyo3(signature = (command, *, timeout = 30.0))]
    fn submit<'py>(&self, command: &Bound<'py, PyAny>, timeout: f64) -> Result<Bound<'py, PyDict>> {
        let py = command.py();
        let command = command_from_py(command)?;
        let timeout = duration(timeout, "timeout")?;
        let acks = self.submit_commands(py, &[command], 1, timeout)?;
        let ack = &acks[0];
        entry_to_py(py, ack.seq, ack.timestamp_ns, &ack.events)
    }

    /// Submit commands in order, keeping up to `window` in flight; returns their
    /// acknowledgements in the same order. Every command is checked before any is submitted.
    #[pyo3(signature = (commands, *, window = 1024, timeout = 30.0))]
    fn submit_many<'py>(
        &self,
        commands: &Bound<'py, PyAny>,
        window: usize,
        timeout: f64,
    ) -> Result<Bound<'py, PyList>> {
        let py = commands.py();
        let commands =
            commands.try_iter()?.map(|c| command_from_py(&c?)).collect::<Result<Vec<Command>>>()?;
        let timeout = duration(timeout, "timeout")?;
        if window == 0 {
            return Err(Error::Argument("window must be at least 1".to_owned()));
        }
        let window = window.min(self.ring_capacity);
        let acks = self.submit_commands(py, &commands, window, timeout)?;
        acks_to_py(py, &acks)
    }

    /// Up to `max` commands' events from `from_seq` on, in order, as
    /// `{"seq", "timestamp_ns", "origin", "command", "events"}`; waits up to `timeout` seconds for the first if
    /// none is published yet. Raises `EventsGone` if they were compacted away.
    #[pyo3(signature = (from_seq, max = 1000, timeout = 0.0))]
    fn events<'py>(
        &self,
        py: Python<'py>,
        from_seq: u64,
        max: usize,
        timeout: f64,
    ) -> Result<Bound<'py, PyList>> {
        let timeout = duration(timeout, "timeout")?;
        let entries: Vec<CommandEvents> =
            self.with_node(py, |node| Ok(node.events_from(from_seq, max, timeout)?))?;
        let items = entries
            .iter()
            .map(|c| {
                let d = entry_to_py(py, c.seq, c.timestamp_ns, &c.events)?;
                d.set_item("origin", pythonize(py, &c.origin)?)?;
                d.set_item("command", pythonize(py, &c.command)?)?;
                Ok(d)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PyList::new(py, items)?)
    }

    /// The same entries as `events`, as msgpack bytes with field names in the versioned
    /// envelope `[MESSAGE_VERSION, [entry, ...]]` (see `client`); GIL released while waiting
    /// and encoding.
    #[pyo3(signature = (from_seq, max = 1000, timeout = 0.0))]
    fn events_packed<'py>(
        &self,
        py: Python<'py>,
        from_seq: u64,
        max: usize,
        timeout: f64,
    ) -> Result<Bound<'py, PyBytes>> {
        let timeout = duration(timeout, "timeout")?;
        let packed =
            self.with_node(py, |node| encode_entries(&node.events_from(from_seq, max, timeout)?))?;
        Ok(PyBytes::new(py, &packed))
    }

    /// A new pipelined submission client with its own rings (see `NodeClient`).
    fn open_client(&self, py: Python<'_>) -> Result<PyNodeClient> {
        let bell = Arc::new(AckBell::default());
        let ringer = bell.clone();
        let client = self.with_node(py, |node| {
            Ok(node.client_with_notify(0, Arc::new(move || ringer.ring()))?)
        })?;
        Ok(PyNodeClient::new(client, self.ring_capacity, self.lifecycle.clone(), bell))
    }

    /// The highest `Origin.reference` the node has applied for `source` (0 if none; source 0
    /// is never tracked): where a submitter that numbers its commands continues after a
    /// restart. Commands still in flight are not counted.
    fn last_reference(&self, py: Python<'_>, source: u64) -> Result<u64> {
        self.with_node(py, |node| Ok(node.last_reference(source)?))
    }

    /// The node's counters as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyAny>> {
        let stats = self.with_node(py, |node| Ok(node.stats()))?;
        Ok(pythonize(py, &stats)?)
    }

    /// The engine's state hash (32 hex digits), between two commands.
    fn state_hash(&self, py: Python<'_>) -> Result<String> {
        self.with_node(py, |node| Ok(node.query(|e| format!("{:032x}", e.state_hash()))?))
    }

    /// `(free, held)` atoms, or None if the account has never held the asset.
    fn balance(&self, py: Python<'_>, account: u64, asset: u32) -> Result<Option<(u64, u64)>> {
        self.with_node(py, |node| {
            Ok(node.query(move |e| {
                e.balance(AccountId(account), AssetId(asset)).map(|b| (b.free, b.held))
            })?)
        })
    }

    /// The account's fee tier and its rates as `(tier, maker_bps, taker_bps)`, or None if
    /// the account does not exist.
    fn fee_rates(&self, py: Python<'_>, account: u64) -> Result<Option<(u8, u32, u32)>> {
        self.with_node(py, |node| Ok(node.query(move |e| e.fee_rates(AccountId(account)))?))
    }

    /// Up to `levels` price levels of one side, best first, as `(price, quantity, orders)`.
    fn depth(
        &self,
        py: Python<'_>,
        market: u32,
        side: &str,
        levels: usize,
    ) -> Result<Vec<(u64, u64, u32)>> {
        let side = parse_side(side)?;
        self.with_node(py, |node| {
            Ok(node.query(move |e| {
                e.depth(MarketId(market), side, levels)
                    .iter()
                    .map(|l| (l.price, l.quantity, l.orders))
                    .collect()
            })?)
        })
    }

    /// Every listed market's specification and status (as `Engine.market`), in listing
    /// order, read from the running engine between two commands.
    fn markets<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyAny>> {
        let markets = self.with_node(py, |node| {
            Ok(node.query(|e| {
                e.markets().into_iter().filter_map(|m| e.market(m)).collect::<Vec<_>>()
            })?)
        })?;
        Ok(pythonize(py, &markets)?)
    }

    /// Listed assets as `(asset, decimals)`, in listing order.
    fn assets(&self, py: Python<'_>) -> Result<Vec<(u32, u8)>> {
        self.with_node(py, |node| {
            Ok(node.query(|e| e.assets().into_iter().map(|(a, d)| (a.0, d)).collect())?)
        })
    }

    /// Take a snapshot now; returns its sequence number once it is written.
    fn snapshot(&self, py: Python<'_>) -> Result<u64> {
        self.with_node(py, |node| node.snapshot_now().map_err(Error::from))
    }

    /// Stop: finish what was submitted, take a final snapshot, join the threads; returns the
    /// final counters. Idempotent (later calls return the same dict); every other method
    /// raises `NodeStopped` afterwards.
    fn stop<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyAny>> {
        let stats = py.detach(|| -> Result<NodeStats> {
            let mut last = lock(&self.final_stats);
            if let Some(stats) = &*last {
                return Ok(stats.clone());
            }
            // The gateway first: its sessions end, and their cancel-on-disconnect commands
            // reach the journal before the node stops.
            let gateway_result = lock(&self.gateway).take().map(Gateway::stop);
            self.lifecycle.stopping();
            // Then ask the node to stop: a reader waiting in `events` (holding the read lock)
            // and a submission in progress return promptly instead of running to their
            // timeouts.
            if let Some(node) = self.node.read().unwrap_or_else(PoisonError::into_inner).as_ref() {
                node.begin_stop();
            }
            // Waits for a submission in progress on another thread to finish.
            lock(&self.submitter).take();
            let node = self.node.write().unwrap_or_else(PoisonError::into_inner).take();
            let Some(node) = node else { return Err(stopped()) };
            let node = sole_owner(node)?;
            if let Some(Err(e)) = gateway_result {
                eprintln!("bourse: gateway stop: {e}");
            }
            let before = node.stats();
            let outcome = node.stop();
            // The threads are joined (or gone): no acknowledgement will come any more.
            self.lifecycle.stopped();
            match outcome {
                Ok(stats) => {
                    *last = Some(stats.clone());
                    Ok(stats)
                }
                Err(e) => {
                    *last = Some(before);
                    Err(match e {
                        bourse_node::NodeError::Snapshot(msg) => {
                            Error::Node(format!("final snapshot failed: {msg}"))
                        }
                        other => other.into(),
                    })
                }
            }
        })?;
        Ok(pythonize(py, &stats)?)
    }

    /// Start the binary gateway (docs/protocol.md) in front of this node. `config` is the
    /// gateway config dict (`listen` = "host:port", port 0 for any; throttles, buffers, …),
    /// unknown keys rejected. Returns `{"host", "port"}` it listens on.
    #[pyo3(signature = (config = None))]
    fn start_gateway<'py>(
        &self,
        py: Python<'py>,
        config: Option<&Bound<'py, PyAny>>,
    ) -> Result<Bound<'py, PyDict>> {
        let config: GatewayConfig = match config {
            None => GatewayConfig::default(),
            Some(c) => depythonize(c)
                .map_err(|e| Error::Node(format!("invalid gateway configuration: {e}")))?,
        };
        let addr = py.detach(|| -> Result<std::net::SocketAddr> {
            let mut slot = lock(&self.gateway);
            if slot.is_some() {
                return Err(Error::Node("the gateway is already running".into()));
            }
            let node = self.node.read().unwrap_or_else(PoisonError::into_inner);
            let node = node.as_ref().ok_or_else(stopped)?.clone();
            let gateway = Gateway::start(node, config).map_err(gateway_error)?;
            let addr = gateway.local_addr();
            *slot = Some(gateway);
            Ok(addr)
        })?;
        let d = PyDict::new(py);
        d.set_item("host", addr.ip().to_string())?;
        d.set_item("port", addr.port())?;
        Ok(d)
    }

    /// Add (or replace) an API key of the gateway: `secret` (bytes) signs logins, `account`
    /// is what it trades for, `kinds` the session kinds it may open (`order_entry`,
    /// `drop_copy`, `market_data`; all by default).
    #[pyo3(signature = (key_id, secret, account, kinds = None))]
    fn add_api_key(
        &self,
        py: Python<'_>,
        key_id: u64,
        secret: Vec<u8>,
        account: u64,
        kinds: Option<Vec<String>>,
    ) -> Result<()> {
        let kinds = match kinds {
            None => SessionKinds::ALL,
            Some(names) => names.iter().try_fold(SessionKinds::NONE, |set, name| {
                let kind = match name.as_str() {
                    "order_entry" => SessionKind::OrderEntry,
                    "drop_copy" => SessionKind::DropCopy,
                    "market_data" => SessionKind::MarketData,
                    other => {
                        return Err(Error::Argument(format!(
                            "unknown session kind {other:?} (order_entry, drop_copy, market_data)"
                        )))
                    }
                };
                Ok(set.with(kind))
            })?,
        };
        py.detach(|| {
            let gateway = lock(&self.gateway);
            let gateway = gateway.as_ref().ok_or_else(no_gateway)?;
            gateway.add_key(key_id, &secret, AccountId(account), kinds).map_err(gateway_error)
        })
    }

    /// Revoke an API key: no new logins; its sessions end (`EndOfSession Administrative`).
    /// Returns whether the key existed.
    fn revoke_api_key(&self, py: Python<'_>, key_id: u64) -> Result<bool> {
        py.detach(|| {
            let gateway = lock(&self.gateway);
            Ok(gateway.as_ref().ok_or_else(no_gateway)?.revoke_key(key_id))
        })
    }

    /// The gateway's counters.
    fn gateway_stats<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyAny>> {
        let stats = py.detach(|| {
            let gateway = lock(&self.gateway);
            Ok::<_, Error>(gateway.as_ref().ok_or_else(no_gateway)?.stats())
        })?;
        Ok(pythonize(py, &stats)?)
    }

    /// Stop the gateway (sessions end with `EndOfSession Shutdown`; cancel-on-disconnect
    /// fires); the node keeps running. Returns the final counters.
    fn stop_gateway<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyAny>> {
        let stats = py.detach(|| {
            let gateway = lock(&self.gateway).take().ok_or_else(no_gateway)?;
            gateway.stop().map_err(gateway_error)
        })?;
        Ok(pythonize(py, &stats)?)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Stop the node (see `stop`); exceptions propagate.
    #[pyo3(signature = (exc_type = None, exc = None, traceback = None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        exc: Option<&Bound<'_, PyAny>>,
        traceback: Option<&Bound<'_, PyAny>>,
    ) -> Result<bool> {
        let _ = (exc_type, exc, traceback);
        self.stop(py)?;
        Ok(false)
    }
}

/// Replay a node's data directory (newest valid snapshot + the journal after it) into a
/// fresh engine in this process, changing nothing on disk (a torn tail is not cut off, only
/// not replayed). Returns the recovery report's fields plus `invariants_ok` and
/// `invariant_error` (the engine's `check_invariants` on the result).
#[pyfunction]
fn replay_journal<'py>(config: &Bound<'py, PyAny>) -> Result<Bound<'py, PyAny>> {
    let py = config.py();
    let config = config_from_py(config)?;
    let (report, invariants) = py.detach(|| -> Result<_> {
        let started = Instant::now();
        let (engine, mut report) = recovery::replay_directory(&config)?;
        report.elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        Ok((report, engine.check_invariants()))
    })?;
    let out = pythonize(py, &report)?;
    let dict = out.cast::<PyDict>().map_err(PyErr::from)?;
    dict.set_item("invariants_ok", invariants.is_ok())?;
    dict.set_item("invariant_error", invariants.err())?;
    Ok(out)
}

/// The journal's records from `from_seq` on (0: from the first one still present) as
/// `{"seq", "timestamp_ns", "command"}`. Reads in `StopAtTornTail` mode: a torn last record
/// (a crash mid-write, or a record a running node is still writing) ends the list quietly,
/// exactly where recovery would cut it; any other damage raises `RecoveryError`, and records
/// compacted away raise `EventsGone`. Safe on the directory of a running node.
#[pyfunction]
#[pyo3(signature = (data_dir, from_seq = 0))]
fn read_journal(py: Python<'_>, data_dir: PathBuf, from_seq: u64) -> Result<Bound<'_, PyList>> {
    let read = || -> std::result::Result<Vec<journal::Record>, JournalError> {
        let reader = journal::read_journal(&data_dir, from_seq, ReadMode::StopAtTornTail)?;
        let mut out = Vec::new();
        for r in reader {
            let r = r?;
            if r.seq >= from_seq {
                out.push(r);
            }
        }
        Ok(out)
    };
    let records = py.detach(|| -> Result<Vec<journal::Record>> {
        // A running node may compact (delete) a listed segment before it is opened: list
        // again (the next attempt starts at the new first segment, or says `Compacted`).
        let mut attempts = 0;
        loop {
            match read() {
                Err(JournalError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound && attempts < 5 =>
                {
                    attempts += 1;
                }
                other => return Ok(other?),
            }
        }
    })?;
    let items = records
        .iter()
        .map(|r| -> Result<Bound<'_, PyDict>> {
            let d = PyDict::new(py);
            d.set_item("seq", r.seq)?;
            d.set_item("timestamp_ns", r.timestamp_ns)?;
            d.set_item("origin", pythonize(py, &r.origin)?)?;
            d.set_item("command", pythonize(py, &r.command)?)?;
            Ok(d)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(PyList::new(py, items)?)
}

/// The pipeline benchmark (`bourse bench pipeline`); returns its JSON line.
#[pyfunction]
fn bench_pipeline(
    py: Python<'_>,
    policy: &str,
    ops: u64,
    window: usize,
    seed: u64,
) -> Result<String> {
    let policy: Durability = policy.parse().map_err(|e| Error::Argument(format!("{e}")))?;
    run_tool(py, || bourse_node::bench::pipeline(policy, ops, window, seed))
}

/// The replay benchmark (`bourse bench replay`); returns its JSON line.
#[pyfunction]
fn bench_replay(py: Python<'_>, ops: u64, seed: u64, fsync_samples: usize) -> Result<String> {
    run_tool(py, || bourse_node::bench::replay(ops, seed, fsync_samples))
}

/// Add the node's class and functions to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyNode>()?;
    m.add_function(wrap_pyfunction!(replay_journal, m)?)?;
    m.add_function(wrap_pyfunction!(read_journal, m)?)?;
    m.add_function(wrap_pyfunction!(bench_pipeline, m)?)?;
    m.add_function(wrap_pyfunction!(bench_replay, m)?)?;
    Ok(())
}
