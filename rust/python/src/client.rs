//! The msgpack side of the bindings: the event stream as packed bytes, and `NodeClient`, a
//! pipelined submission client for the control plane (`controlplane.bridge`).
//!
//! Every message crosses as msgpack with field names (`rmp_serde::to_vec_named`), in the
//! serde form of the engine's and node's types: exactly the shapes of the msgspec Structs in
//! `controlplane/messages.py`. What the node sends is wrapped in a versioned envelope, a
//! 2-array `[MESSAGE_VERSION, payload]`:
//!
//! * `Node.events_packed` → `[1, [{seq, timestamp_ns, origin, command, events}, ...]]`;
//! * `NodeClient.wait_acks` → `[1, [[correlation, {seq, timestamp_ns, events}], ...]]`.
//!
//! Commands go in as one msgpack map each (`{"type": "deposit", ...}`), no envelope.
//!
//! # `NodeClient`
//!
//! One [`Client`] (its own submission and acknowledgement rings) used from two threads: the
//! asyncio loop thread hands commands in with `send` (never blocks: a full ring raises
//! `NodeBusy` at once), and one receiver thread collects acknowledgements with `wait_acks`
//! (GIL released). Each `send` returns a correlation number (1, 2, … per client); a client's
//! acknowledgements come back in the order its commands were sent, so they are matched to
//! correlations first in, first out, and checked against the reference journaled with each
//! command. At most `ring_capacity` commands are in flight per client, so the
//! acknowledgement ring (as large) can never overflow and drop one.
//!
//! Locking: the client's mutex is held only for ring pushes and pops, never while waiting,
//! and its holders never touch Python; so `send` takes it with the GIL held (no GIL hand-off
//! on the hot path) without risk of deadlock.
//!
//! Cost: `send` is one msgpack decode and one ring push, O(command size); `wait_acks` is
//! O(acks returned) plus their encoding. The receiver never polls: while commands are in
//! flight it sleeps on an [`AckBell`] that the node's publisher rings after each burst that
//! brought this client acknowledgements (`Node::client_with_notify`); with none in flight it
//! parks until a `send`.

use std::collections::VecDeque;
use std::io::Cursor;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bourse_engine::{Command, Event};
use bourse_node::{Ack, Client, CommandEvents, SubmitError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The version of the message shapes (`controlplane.messages.VERSION`), first in every
/// envelope.
pub(crate) const MESSAGE_VERSION: u32 = 1;

/// How long a receiver with nothing in flight parks before it looks at the node's state
/// again (bounds how long it takes to notice a stop).
const IDLE_PARK: Duration = Duration::from_millis(50);

/// The publisher's wake-up for a receiver waiting for acknowledgements: a flag and a
/// condition variable. The flag is set after the acknowledgements are in the ring, and the
/// receiver looks at the ring again after it finds the flag set (and clears it) or times
/// out, so no wake-up is lost: one that comes between the receiver's look at the ring and its
/// wait leaves the flag set, and the wait returns at once.
#[derive(Default)]
pub(crate) struct AckBell {
    rung: Mutex<bool>,
    ring: Condvar,
}

impl AckBell {
    /// Called by the node's publisher thread: set the flag, wake the receiver.
    pub(crate) fn ring(&self) {
        *lock(&self.rung) = true;
        self.ring.notify_one();
    }

    /// Wait until rung (then clear the flag) or `timeout` passes.
    fn wait(&self, timeout: Duration) {
        let mut rung = lock(&self.rung);
        if !*rung {
            rung = self.ring.wait_timeout(rung, timeout).unwrap_or_else(PoisonError::into_inner).0;
        }
        *rung = false;
    }
}

/// Where the node is in its life, as the clients see it (set by `Node.stop`).
#[derive(Default)]
pub(crate) struct Lifecycle(AtomicU8);

impl Lifecycle {
    const RUNNING: u8 = 0;
    const STOPPING: u8 = 1;
    const STOPPED: u8 = 2;

    /// `Node.stop` began: no new commands are taken.
    pub(crate) fn stopping(&self) {
        self.0.fetch_max(Self::STOPPING, Ordering::AcqRel);
    }

    /// The node's threads are joined: every acknowledgement it will ever send was sent.
    pub(crate) fn stopped(&self) {
        self.0.store(Self::STOPPED, Ordering::Release);
    }

    fn get(&self) -> u8 {
        self.0.load(Ordering::Acquire)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn closed() -> Error {
    Error::Stopped("the node client is closed".to_owned())
}

fn encode<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(|e| Error::Node(format!("cannot encode {what}: {e}")))
}

/// `[MESSAGE_VERSION, entries]` in msgpack.
pub(crate) fn encode_entries(entries: &[CommandEvents]) -> Result<Vec<u8>> {
    encode(&(MESSAGE_VERSION, entries), "events")
}

/// One acknowledgement as the control plane reads it (`controlplane.messages.Ack`).
#[derive(Serialize)]
struct AckBody<'a> {
    seq: u64,
    timestamp_ns: u64,
    events: &'a [Event],
}

/// `[MESSAGE_VERSION, [[correlation, ack], ...]]` in msgpack.
fn encode_acks(acks: &[(u64, Ack)]) -> Result<Vec<u8>> {
    let items: Vec<(u64, AckBody<'_>)> = acks
        .iter()
        .map(|(correlation, a)| {
            (*correlation, AckBody { seq: a.seq, timestamp_ns: a.timestamp_ns, events: &a.events })
        })
        .collect();
    encode(&(MESSAGE_VERSION, items), "acknowledgements")
}

/// Only the tag of a command map, to check that it names the command by a string (serde
/// would also take a variant's index, and a command as an array).
#[derive(Deserialize)]
struct NamedCommand<'a> {
    #[serde(rename = "type")]
    _kind: &'a str,
}

/// Decode one msgpack command map (`{"type": "<name>", ...}`); every byte must belong to it.
pub(crate) fn decode_command(data: &[u8]) -> Result<Command> {
    let is_map = |marker: u8| matches!(marker, 0x80..=0x8f | 0xde | 0xdf);
    if !data.first().copied().is_some_and(is_map) {
        return Err(Error::Command("invalid msgpack command: not a map".to_owned()));
    }
    if rmp_serde::from_slice::<NamedCommand<'_>>(data).is_err() {
        return Err(Error::Command(
            "invalid msgpack command: field `type` must be a string naming the command".to_owned(),
        ));
    }
    let mut de = rmp_serde::Deserializer::new(Cursor::new(data));
    let command = Command::deserialize(&mut de)
        .map_err(|e| Error::Command(format!("invalid msgpack command: {e}")))?;
    let used = de.position();
    if used != data.len() as u64 {
        return Err(Error::Command(format!(
            "invalid msgpack command: {} trailing byte(s) after it",
            data.len() as u64 - used
        )));
    }
    Ok(command)
}

/// A command handed in and not yet acknowledged.
struct InFlight {
    correlation: u64,
    /// Journaled as `Origin::reference`; the node echoes it in the acknowledgement.
    reference: u64,
}

struct State {
    /// `None` once closed.
    client: Option<Client>,
    in_flight: VecDeque<InFlight>,
    next_correlation: u64,
}

/// A pipelined submission client of a node; see the module docs. Made by
/// `Node.open_client()`.
#[pyclass(name = "NodeClient", module = "controlplane._engine", frozen)]
pub struct PyNodeClient {
    state: Mutex<State>,
    /// Signalled when a command goes in flight on an idle client, and on `close`.
    sent: Condvar,
    /// At most this many commands in flight (the node's ring capacity).
    capacity: usize,
    lifecycle: std::sync::Arc<Lifecycle>,
    /// Rung by the node's publisher when acknowledgements arrive.
    bell: std::sync::Arc<AckBell>,
}

impl PyNodeClient {
    /// `client` must have been made with `Node::client_with_notify` ringing `bell`.
    pub(crate) fn new(
        client: Client,
        capacity: usize,
        lifecycle: std::sync::Arc<Lifecycle>,
        bell: std::sync::Arc<AckBell>,
    ) -> PyNodeClient {
        PyNodeClient {
            state: Mutex::new(State {
                client: Some(client),
                in_flight: VecDeque::new(),
                next_correlation: 1,
            }),
            sent: Condvar::new(),
            capacity: capacity.max(1),
            lifecycle,
            bell,
        }
    }

    /// Wait (GIL released by the caller) until at least one acknowledgement is there, up to
    /// `max` of them, or `timeout` passes (then none).
    fn collect(&self, max: usize, timeout: Duration) -> Result<Vec<(u64, Ack)>> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            // Read before draining: once STOPPED, an empty ring stays empty.
            let life = self.lifecycle.get();
            let mut guard = lock(&self.state);
            let state = &mut *guard;
            let client = state.client.as_mut().ok_or_else(closed)?;
            let mut acks = Vec::new();
            while acks.len() < max {
                let Some(ack) = client.try_ack() else { break };
                let Some(sent) = state.in_flight.pop_front() else {
                    return Err(Error::Node(format!(
                        "acknowledgement of seq {} with nothing in flight",
                        ack.seq
                    )));
                };
                if ack.correlation != sent.reference {
                    return Err(Error::Node(format!(
                        "acknowledgement out of order: expected reference {}, got {}",
                        sent.reference, ack.correlation
                    )));
                }
                acks.push((sent.correlation, ack));
            }
            if !acks.is_empty() {
                return Ok(acks);
            }
            let now = Instant::now();
            let left = deadline.map_or(IDLE_PARK, |d| d.saturating_duration_since(now));
            if state.in_flight.is_empty() {
                if life != Lifecycle::RUNNING {
                    return Err(Error::Stopped("node stopped".to_owned()));
                }
                if left.is_zero() {
                    return Ok(acks);
                }
                let park = left.min(IDLE_PARK);
                drop(self.sent.wait_timeout(guard, park).unwrap_or_else(PoisonError::into_inner));
                continue;
            }
            if life == Lifecycle::STOPPED {
                return Err(Error::Stopped(format!(
                    "node stopped with {} command(s) unacknowledged; they may or may not be \
                     in the journal",
                    state.in_flight.len()
                )));
            }
            drop(guard);
            if left.is_zero() {
                return Ok(acks);
            }
            // Bounded, so a stop is noticed (the node's last acknowledgements ring it too).
            self.bell.wait(left.min(IDLE_PARK));
        }
    }
}

#[pymethods]
impl PyNodeClient {
    /// Hand in one msgpack-encoded command (journaled with `Origin{source, reference}`);
    /// returns its correlation number. Never blocks: `NodeBusy` if the ring is full (or
    /// `ring_capacity` commands are in flight), `CommandError` for bytes that are not a
    /// command (nothing is submitted), `NodeStopped` if the node or this client stopped.
    #[pyo3(signature = (packed_command, source = 0, reference = 0))]
    fn send(&self, packed_command: &[u8], source: u64, reference: u64) -> Result<u64> {
        let command = decode_command(packed_command)?;
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        let client = state.client.as_mut().ok_or_else(closed)?;
        if state.in_flight.len() >= self.capacity {
            return Err(Error::Busy(format!(
                "node busy: {} commands in flight (the ring's capacity)",
                self.capacity
            )));
        }
        match client.submit_from(source, command, reference) {
            Ok(()) => {}
            Err(SubmitError::Busy(_)) => {
                return Err(Error::Busy("node busy: the submission ring is full".to_owned()))
            }
            Err(SubmitError::Stopped | SubmitError::Timeout) => {
                return Err(Error::Stopped("node stopped".to_owned()))
            }
        }
        let correlation = state.next_correlation;
        state.next_correlation += 1;
        let was_idle = state.in_flight.is_empty();
        state.in_flight.push_back(InFlight { correlation, reference });
        drop(guard);
        if was_idle {
            self.sent.notify_all();
        }
        Ok(correlation)
    }

    /// Wait (GIL released) up to `timeout` seconds for acknowledgements; returns up to `max`
    /// as msgpack `[version, [[correlation, {seq, timestamp_ns, events}], ...]]` (an empty
    /// list after the timeout). `NodeStopped` once the node stopped (with nothing left to
    /// return) or the client was closed.
    #[pyo3(signature = (max = 1024, timeout = 1.0))]
    fn wait_acks<'py>(
        &self,
        py: Python<'py>,
        max: usize,
        timeout: f64,
    ) -> Result<Bound<'py, PyBytes>> {
        let timeout = Duration::try_from_secs_f64(timeout).map_err(|_| {
            Error::Argument(format!("timeout must be a finite number ≥ 0, not {timeout}"))
        })?;
        let max = max.max(1);
        let packed = py.detach(|| encode_acks(&self.collect(max, timeout)?))?;
        Ok(PyBytes::new(py, &packed))
    }

    /// How many commands were sent and not yet returned by `wait_acks`.
    fn in_flight(&self) -> usize {
        lock(&self.state).in_flight.len()
    }

    /// Close the client: later calls raise `NodeStopped`, and so does a `wait_acks` in
    /// progress (promptly). Commands in flight are still applied by the node; their
    /// acknowledgements are not delivered. Idempotent.
    fn close(&self, py: Python<'_>) {
        py.detach(|| {
            lock(&self.state).client = None;
            self.sent.notify_all();
        });
    }
}
