//! # bourse-engine
//!
//! The Bourse matching engine core: a deterministic state machine with no I/O, no clock,
//! no randomness and no dependency on Python. Commands go in through
//! [`Engine::apply`]; events come out into a caller-owned buffer.
//!
//! * [`types`]: ids and units (integer atoms, ticks and lots).
//! * [`command`]: the commands and their binary codec.
//! * [`event`]: the events, reject reasons and done reasons.
//! * [`book`]: price levels and FIFO queues over preallocated pools.
//! * [`index`]: order id → slot, a paged direct map.
//! * [`risk`]: holds and fees (the seam for margin).
//! * [`engine`]: the rules that tie them together.
//!
//! Matching is price-time priority. An incoming order trades against the best opposite
//! level, oldest order first, at the resting order's price.

#![deny(unsafe_code)]

pub mod book;
pub mod command;
pub mod engine;
pub mod event;
mod hash;
pub mod index;
pub mod risk;
pub mod types;

pub use command::{Command, CommandKind, DecodeError, NewOrder, OrderRef};
pub use engine::{
    Balance, Engine, EngineConfig, LevelView, MarketView, OrderView, Snapshot, SnapshotError,
    MAX_OPEN_ORDERS_PER_ACCOUNT,
};
pub use event::{BookAction, DoneReason, Event, RejectReason};
pub use types::*;
