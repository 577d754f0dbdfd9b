//! Replay workers: a resuming session's missed messages, read from the node's event log
//! (the in-memory window, or re-derived from the journal in one pass by
//! `Node::stream_events`), rendered exactly as the live router renders them, and handed to
//! the I/O thread in encoded chunks of about 64 KiB.
//!
//! A worker runs on its own thread so that a long replay (re-deriving events from a
//! snapshot and the journal) never stalls the I/O thread. Its channel is bounded: the I/O
//! thread takes a chunk only while the session's outbound buffer has room, so a slow reader
//! slows its own worker and nothing else. The worker stops as soon as the session is gone
//! (the channel's receiver is dropped).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use bourse_engine::AccountId;
use bourse_node::Node;

use super::render::account_messages;
use crate::protocol::Message;

/// Bytes of encoded frames per chunk handed to the I/O thread.
const CHUNK_BYTES: usize = 64 << 10;
/// Chunks in flight between a worker and the I/O thread.
pub const CHANNEL_CHUNKS: usize = 4;

/// What a worker sends.
pub enum ReplayMsg {
    /// Encoded frames, in stream order.
    Chunk(Vec<u8>),
    /// Everything before the live position was sent.
    Done,
    /// The log could not serve the replay (the reason is logged).
    Failed(String),
}

/// What a worker is asked to do.
pub struct ReplayJob {
    /// The account.
    pub account: AccountId,
    /// First stream position wanted.
    pub from_seq: u64,
    /// The first node sequence number the session receives live (exclusive end).
    pub live_node_seq: u64,
}

/// The sequenced position of an order-entry message (0 for the others).
pub fn message_seq(m: &Message) -> u64 {
    match m {
        Message::OrderAccepted(x) => x.seq,
        Message::OrderRejected(x) => x.seq,
        Message::OrderExecuted(x) => x.seq,
        Message::OrderCancelled(x) => x.seq,
        Message::OrderAmended(x) => x.seq,
        Message::MassCancelReport(x) => x.seq,
        _ => 0,
    }
}

/// Start a worker; returns the receiving end for the I/O thread and the worker's handle
/// (the gateway joins it at shutdown; `stop` makes it give up between batches).
pub fn spawn(
    node: Arc<Node>,
    job: ReplayJob,
    waker: Arc<mio::Waker>,
    stop: Arc<AtomicBool>,
) -> (Receiver<ReplayMsg>, Option<JoinHandle<()>>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL_CHUNKS);
    let spawned = std::thread::Builder::new().name("bourse-gw-replay".into()).spawn({
        let tx = tx.clone();
        let waker = waker.clone();
        move || {
            let outcome = run(&node, &job, &tx, &waker, &stop);
            let last = match outcome {
                Ok(()) => ReplayMsg::Done,
                Err(why) => ReplayMsg::Failed(why),
            };
            let _ = tx.send(last);
            let _ = waker.wake();
        }
    });
    match spawned {
        Ok(handle) => (rx, Some(handle)),
        Err(e) => {
            let _ = tx.send(ReplayMsg::Failed(format!("cannot start a replay thread: {e}")));
            let _ = waker.wake();
            (rx, None)
        }
    }
}

fn run(
    node: &Node,
    job: &ReplayJob,
    tx: &SyncSender<ReplayMsg>,
    waker: &mio::Waker,
    stop: &AtomicBool,
) -> Result<(), String> {
    let from = (job.from_seq >> 16).max(1);
    let mut chunk = Vec::new();
    let mut failure: Option<String> = None;
    node.stream_events(from, job.live_node_seq, &mut |ce| {
        if stop.load(Ordering::Acquire) {
            failure = Some("the gateway is stopping".into());
            return false;
        }
        account_messages(
            ce,
            |a| a == job.account,
            |_, m| {
                if message_seq(&m) >= job.from_seq {
                    m.append_to(&mut chunk);
                }
            },
        );
        if chunk.len() >= CHUNK_BYTES {
            if tx.send(ReplayMsg::Chunk(std::mem::take(&mut chunk))).is_err() {
                failure = Some("session gone".into());
                return false;
            }
            let _ = waker.wake();
        }
        true
    })
    .map_err(|e| format!("replay from node seq {from}: {e}"))?;
    if let Some(why) = failure {
        return Err(why);
    }
    if !chunk.is_empty() {
        tx.send(ReplayMsg::Chunk(chunk)).map_err(|_| "session gone".to_string())?;
        let _ = waker.wake();
    }
    Ok(())
}
