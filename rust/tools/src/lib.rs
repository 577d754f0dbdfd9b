//! # bourse-tools
//!
//! Native tools built on the Bourse engine, called from the Python `bourse` CLI (through
//! the `bourse-python` extension) and usable directly from Rust tests and benches:
//!
//! * [`lobster`]: replays a LOBSTER sample (NASDAQ order-by-order messages plus the book
//!   after each one) through the engine and checks the engine's book against the file's
//!   after every message.
//! * [`bench`](mod@bench): single-threaded latency and throughput benchmark of
//!   [`bourse_engine::Engine::apply`] on synthetic workloads shaped like exchange-core's
//!   and liquibook's performance tests.
//!
//! Both entry points return one line of JSON, so the CLI can print or parse it.

pub mod bench;
pub mod lobster;
