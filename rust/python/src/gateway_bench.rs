//! `bench_gateway`: the gateway benchmark (`bourse bench gateway`), a node and a gateway in
//! process driven by the native open-loop load generator
//! ([`bourse_gateway::loadgen::bench_gateway`]). The GIL is released while it runs; the
//! report comes back as a dict.

use bourse_gateway::loadgen::{bench_gateway as run, GatewayBenchConfig};
use bourse_node::{Cores, Durability, WaitStrategy};
use pyo3::prelude::*;
use pythonize::pythonize;

use crate::{Error, Result};

/// The gateway benchmark; returns its report (see `GatewayBenchReport`) as a dict.
#[pyfunction]
#[pyo3(signature = (
    rate,
    duration,
    policy = "fsync",
    sessions = 8,
    warmup = 1.0,
    seed = 1,
    max_resting = 256,
    client_threads = 1,
    drain = 5.0,
    gateway_core = None,
    node_core = None,
    node_wait = None,
    node_pipeline = "threads",
    client_spin_core = None,
    gateway_embedded = false,
    preallocate = true,
))]
#[allow(clippy::too_many_arguments)]
fn bench_gateway<'py>(
    py: Python<'py>,
    rate: u64,
    duration: f64,
    policy: &str,
    sessions: usize,
    warmup: f64,
    seed: u64,
    max_resting: usize,
    client_threads: usize,
    drain: f64,
    gateway_core: Option<usize>,
    node_core: Option<usize>,
    node_wait: Option<&str>,
    node_pipeline: &str,
    client_spin_core: Option<usize>,
    gateway_embedded: bool,
    preallocate: bool,
) -> Result<Bound<'py, PyAny>> {
    let policy: Durability = policy.parse().map_err(|e| Error::Argument(format!("{e}")))?;
    for (name, value) in [("duration", duration), ("warmup", warmup), ("drain", drain)] {
        if !value.is_finite() || value < 0.0 {
            return Err(Error::Argument(format!(
                "{name} must be a finite number ≥ 0, not {value}"
            )));
        }
    }
    if rate == 0 || sessions == 0 || max_resting == 0 || client_threads == 0 {
        return Err(Error::Argument(
            "rate, sessions, max_resting and client_threads must be positive".to_owned(),
        ));
    }
    let config = GatewayBenchConfig {
        rate,
        duration_s: duration,
        warmup_s: warmup,
        sessions,
        policy,
        seed,
        max_resting,
        client_threads,
        client_spin_core,
        drain_s: drain,
        gateway_core,
        gateway_spin_us: None,
        // One core for the node's three pipeline threads.
        node_cores: Cores {
            sequencer: node_core,
            engine: node_core,
            publisher: node_core,
            ..Cores::default()
        },
        node_wait: node_wait
            .map(|w| w.parse::<WaitStrategy>())
            .transpose()
            .map_err(|e| Error::Argument(e.to_string()))?,
        node_pipeline: node_pipeline.parse().map_err(Error::Argument)?,
        gateway_embedded,
        preallocate_segments: preallocate,
    };
    let report = py.detach(|| run(config)).map_err(Error::Tool)?;
    Ok(pythonize(py, &report)?)
}

/// Add the gateway benchmark to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(bench_gateway, m)?)?;
    Ok(())
}
