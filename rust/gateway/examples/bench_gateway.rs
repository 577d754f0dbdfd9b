//! `bench gateway` without Python, for profiling:
//!
//! ```text
//! cargo run --release -p bourse-gateway --example bench_gateway -- \
//!     --rate 80000 --duration 10 [--policy fsync|write|none] [--sessions 8] [--warmup 1] \
//!     [--seed 1] [--max-resting 256] [--client-threads 1] [--drain 5] [--gateway-core N] \
//!     [--gateway-spin-us N] [--node-core N] [--node-wait busy-spin|yield|spin-then-park[:S:T]]
//!     [--node-pipeline threads|single] [--gateway-embedded true|false] [--client-spin-core N]
//!     [--preallocate true|false]
//! ```
//!
//! Prints the report as one JSON line.

use bourse_gateway::loadgen::{bench_gateway, GatewayBenchConfig};
use bourse_node::Cores;

fn main() {
    if let Err(e) = run() {
        eprintln!("bench_gateway: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut cfg = GatewayBenchConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--rate" => cfg.rate = value.parse().map_err(|e| bad(&e))?,
            "--duration" => cfg.duration_s = value.parse().map_err(|e| bad(&e))?,
            "--warmup" => cfg.warmup_s = value.parse().map_err(|e| bad(&e))?,
            "--policy" => cfg.policy = value.parse().map_err(|e| bad(&e))?,
            "--sessions" => cfg.sessions = value.parse().map_err(|e| bad(&e))?,
            "--seed" => cfg.seed = value.parse().map_err(|e| bad(&e))?,
            "--max-resting" => cfg.max_resting = value.parse().map_err(|e| bad(&e))?,
            "--client-threads" => cfg.client_threads = value.parse().map_err(|e| bad(&e))?,
            // One client thread that never sleeps, pinned to this core.
            "--client-spin-core" => {
                cfg.client_spin_core = Some(value.parse().map_err(|e| bad(&e))?);
            }
            "--drain" => cfg.drain_s = value.parse().map_err(|e| bad(&e))?,
            "--gateway-core" => cfg.gateway_core = Some(value.parse().map_err(|e| bad(&e))?),
            "--gateway-spin-us" => cfg.gateway_spin_us = Some(value.parse().map_err(|e| bad(&e))?),
            "--node-core" => {
                // One core for the sequencer, the engine and the publisher.
                let core = Some(value.parse().map_err(|e| bad(&e))?);
                cfg.node_cores =
                    Cores { sequencer: core, engine: core, publisher: core, ..Cores::default() };
            }
            "--node-wait" => cfg.node_wait = Some(value.parse().map_err(|e| bad(&e))?),
            "--node-pipeline" => cfg.node_pipeline = value.parse().map_err(|e| bad(&e))?,
            // The gateway's I/O on the node's single pipeline thread (implies
            // `--node-pipeline single`).
            "--gateway-embedded" => cfg.gateway_embedded = value.parse().map_err(|e| bad(&e))?,
            // Zero-filled journal segments (on by default, as in the shipped configuration).
            "--preallocate" => cfg.preallocate_segments = value.parse().map_err(|e| bad(&e))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let report = bench_gateway(cfg)?;
    println!("{}", serde_json::to_string(&report).map_err(|e| e.to_string())?);
    Ok(())
}
