//! # bourse-gateway
//!
//! The market-maker gateway: a native binary protocol for order entry, drop copy and market
//! data over TCP.
//!
//! * [`protocol`]: the wire format — framing, the SBE-style message header, every message,
//!   the code tables and their mapping from the engine's reasons. Pure: no I/O, no clock.
//! * [`session`]: the sans-I/O session state machine of one connection — login (HMAC),
//!   heartbeats, logout and cancel-on-disconnect, idempotency, throttle, request → command.
//! * [`server`]: the TCP server in front of a running node — one I/O thread serving every
//!   session, routing execution reports and market data from the node's event stream,
//!   replaying missed messages from the durable log.
//! * [`loadgen`]: a native open-loop load generator over the protocol (many sessions, a
//!   fixed offered rate, latency from the scheduled send time) and the `bench gateway`
//!   harness that runs it against a node and a gateway in process.
//!
//! The specification for client authors is `docs/protocol.md` (with the SBE-style XML schema
//! `docs/protocol.xml`, rendered from the message definitions in [`protocol`]).

#![deny(unsafe_code)]

pub mod loadgen;
pub mod protocol;
pub mod server;
pub mod session;
