//! Python bindings for the Bourse engine, built by maturin as `controlplane._engine`.
//!
//! This crate only translates; every rule lives in `bourse-engine` (and the benchmark and
//! replay tools in `bourse-tools`):
//! * command dicts ⇄ [`Command`] and [`Event`] ⇄ event dicts, through their serde form
//!   (`{"type": "deposit", "account": 1, "asset": 2, "amount": 100}`) with `pythonize`;
//! * `bytes` ⇄ the binary command codec ([`Command::encode`] / [`Command::decode`]);
//! * Rust errors → one small exception tree, declared once below and converted in one place
//!   ([`Error`]):
//!
//! ```text
//! EngineError(Exception)
//! ├── CommandError        a dict or byte string that is not a command (says which field)
//! ├── InvariantViolation  check_invariants() found broken engine state
//! ├── ToolError           a benchmark or replay failed (e.g. a missing file)
//! └── NodeError           the durable node (`Node`, journal tools): bad config, I/O, …
//!     ├── RecoveryError   the journal or a snapshot is damaged (names the file and offset)
//!     ├── NodeBusy        the submission ring stayed full for the whole timeout
//!     ├── NodeStopped     the node is stopped (or stopped before acknowledging)
//!     └── EventsGone      the events or records asked for were compacted away
//! ```
//!
//! A command the engine refuses is not an exception: it comes back as a `rejected` event.
//!
//! The msgpack bridge to the control plane (`Node.events_packed`, `NodeClient`) is in
//! [`client`].
//!
//! The node (`Node`, `replay_journal`, `read_journal`, `bench_pipeline`, `bench_replay`) is
//! in [`node`]; the gateway benchmark (`bench_gateway`) in [`gateway_bench`].

mod client;
mod gateway_bench;
mod node;

use std::path::PathBuf;

use bourse_engine::{
    AccountId, AssetId, Command, DecodeError, Engine, EngineConfig, Event, MarketId, Side,
};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use pythonize::{depythonize, pythonize, PythonizeError};

create_exception!(
    controlplane._engine,
    EngineError,
    PyException,
    "Base class of every error raised by the engine bindings."
);
create_exception!(
    controlplane._engine,
    CommandError,
    EngineError,
    "A dict or byte string that does not describe a command; the message says which field."
);
create_exception!(
    controlplane._engine,
    InvariantViolation,
    EngineError,
    "The engine's state broke one of its invariants."
);
create_exception!(
    controlplane._engine,
    ToolError,
    EngineError,
    "A benchmark or replay tool failed."
);
create_exception!(
    controlplane._engine,
    NodeError,
    EngineError,
    "The durable node failed: a bad config, an I/O error, a failed snapshot."
);
create_exception!(
    controlplane._engine,
    RecoveryError,
    NodeError,
    "Journal or snapshot damage that recovery will not guess about; names file and offset."
);
create_exception!(
    controlplane._engine,
    NodeBusy,
    NodeError,
    "The node's submission ring stayed full for the whole timeout; nothing was submitted."
);
create_exception!(
    controlplane._engine,
    NodeStopped,
    NodeError,
    "The node is stopped, or stopped before acknowledging a command."
);
create_exception!(
    controlplane._engine,
    EventsGone,
    NodeError,
    "The events or journal records asked for were compacted away after a snapshot."
);

/// Everything a binding call can fail with. The only place Rust errors become Python ones.
pub(crate) enum Error {
    /// Not a command: raises `CommandError`.
    Command(String),
    /// A bad argument to a query (e.g. an unknown side): raises `ValueError`.
    Argument(String),
    /// Raises `InvariantViolation`.
    Invariant(String),
    /// Raises `ToolError`.
    Tool(String),
    /// Raises `NodeError`.
    Node(String),
    /// Raises `RecoveryError`.
    Recovery(String),
    /// Raises `NodeBusy`.
    Busy(String),
    /// Raises `NodeStopped`.
    Stopped(String),
    /// Raises `EventsGone`.
    EventsGone(String),
    /// Python itself raised (e.g. `MemoryError` while building a result); passed through.
    Python(PyErr),
}

impl From<PyErr> for Error {
    fn from(err: PyErr) -> Error {
        Error::Python(err)
    }
}

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        match err {
            Error::Command(msg) => CommandError::new_err(msg),
            Error::Argument(msg) => PyValueError::new_err(msg),
            Error::Invariant(msg) => InvariantViolation::new_err(msg),
            Error::Tool(msg) => ToolError::new_err(msg),
            Error::Node(msg) => NodeError::new_err(msg),
            Error::Recovery(msg) => RecoveryError::new_err(msg),
            Error::Busy(msg) => NodeBusy::new_err(msg),
            Error::Stopped(msg) => NodeStopped::new_err(msg),
            Error::EventsGone(msg) => EventsGone::new_err(msg),
            Error::Python(err) => err,
        }
    }
}

impl From<DecodeError> for Error {
    fn from(err: DecodeError) -> Error {
        Error::Command(format!("undecodable command bytes: {err}"))
    }
}

impl From<bourse_node::NodeError> for Error {
    fn from(err: bourse_node::NodeError) -> Error {
        use bourse_node::journal::JournalError;
        use bourse_node::NodeError as E;
        match err {
            E::Recovery(_) | E::Journal(JournalError::Corrupt { .. }) => {
                Error::Recovery(err.to_string())
            }
            E::Stopped => Error::Stopped(err.to_string()),
            E::EventsGone(_) | E::Journal(JournalError::Compacted { .. }) => {
                Error::EventsGone(err.to_string())
            }
            E::Io(_)
            | E::Journal(_)
            | E::Snapshot(_)
            | E::Config(_)
            | E::ThreadPanicked(_)
            | E::Failed(_) => Error::Node(err.to_string()),
        }
    }
}

impl From<bourse_node::journal::JournalError> for Error {
    fn from(err: bourse_node::journal::JournalError) -> Error {
        bourse_node::NodeError::Journal(err).into()
    }
}

/// Turning engine values into Python objects only fails if Python does.
impl From<PythonizeError> for Error {
    fn from(err: PythonizeError) -> Error {
        Error::Python(err.into())
    }
}

pub(crate) type Result<T> = std::result::Result<T, Error>;

/// The matching engine: a deterministic state machine. Not thread-safe to share without
/// a lock; Python's per-object borrow checking enforces one mutable user at a time.
#[pyclass(name = "Engine", module = "controlplane._engine")]
pub struct PyEngine {
    engine: Engine,
    /// Reused for every command so applying one does not allocate on the Rust side.
    events: Vec<Event>,
}

#[pymethods]
impl PyEngine {
    #[new]
    #[pyo3(signature = (order_capacity = 65536, levels_per_side = 1024))]
    fn new(order_capacity: usize, levels_per_side: usize) -> PyResult<Self> {
        let config = EngineConfig { order_capacity, levels_per_side };
        config.validate().map_err(pyo3::exceptions::PyValueError::new_err)?;
        Ok(PyEngine { engine: Engine::new(config), events: Vec::new() })
    }

    /// Apply one command dict; returns its events as dicts.
    fn apply<'py>(&mut self, command: &Bound<'py, PyAny>) -> Result<Bound<'py, PyAny>> {
        let py = command.py();
        let command = command_from_py(command)?;
        self.apply_command(py, &command)
    }

    /// Apply one binary-encoded command; returns its events as dicts.
    fn apply_bytes<'py>(&mut self, py: Python<'py>, data: &[u8]) -> Result<Bound<'py, PyAny>> {
        let command = Command::decode(data)?;
        self.apply_command(py, &command)
    }

    /// The state hash as 32 lowercase hex digits.
    fn state_hash(&self) -> String {
        format!("{:032x}", self.engine.state_hash())
    }

    /// `(free, held)` atoms, or None if the account has never held the asset.
    fn balance(&self, account: u64, asset: u32) -> Option<(u64, u64)> {
        self.engine.balance(AccountId(account), AssetId(asset)).map(|b| (b.free, b.held))
    }

    /// One open order as a dict, or None.
    fn order<'py>(&self, py: Python<'py>, order_id: u64) -> Result<Bound<'py, PyAny>> {
        Ok(pythonize(py, &self.engine.order(order_id))?)
    }

    /// The account's open orders as dicts.
    fn open_orders<'py>(&self, py: Python<'py>, account: u64) -> Result<Bound<'py, PyAny>> {
        Ok(pythonize(py, &self.engine.open_orders(AccountId(account)))?)
    }

    /// Up to `levels` price levels of one side, best first, as `(price, quantity, orders)`.
    fn depth(&self, market: u32, side: &str, levels: usize) -> Result<Vec<(u64, u64, u32)>> {
        let side = parse_side(side)?;
        let depth = self.engine.depth(MarketId(market), side, levels);
        Ok(depth.iter().map(|l| (l.price, l.quantity, l.orders)).collect())
    }

    /// Every order on one side of a book as dicts, best first, FIFO within a level.
    fn book_orders<'py>(
        &self,
        py: Python<'py>,
        market: u32,
        side: &str,
    ) -> Result<Bound<'py, PyAny>> {
        let side = parse_side(side)?;
        Ok(pythonize(py, &self.engine.book_orders(MarketId(market), side))?)
    }

    /// The market's specification and status as a dict, or None.
    fn market<'py>(&self, py: Python<'py>, market: u32) -> Result<Bound<'py, PyAny>> {
        Ok(pythonize(py, &self.engine.market(MarketId(market)))?)
    }

    /// Raise `InvariantViolation` if the engine's state is inconsistent.
    fn check_invariants(&self) -> Result<()> {
        self.engine.check_invariants().map_err(Error::Invariant)
    }
}

impl PyEngine {
    fn apply_command<'py>(
        &mut self,
        py: Python<'py>,
        command: &Command,
    ) -> Result<Bound<'py, PyAny>> {
        self.events.clear();
        self.engine.apply(command, &mut self.events);
        Ok(pythonize(py, &self.events)?)
    }
}

/// The binary form of a command dict.
#[pyfunction]
fn encode_command<'py>(command: &Bound<'py, PyAny>) -> Result<Bound<'py, PyBytes>> {
    let py = command.py();
    let command = command_from_py(command)?;
    Ok(PyBytes::new(py, &command.to_bytes()))
}

/// Run the engine benchmark; returns the JSON line it prints.
#[pyfunction]
fn bench_engine(py: Python<'_>, workload: &str, ops: u64, seed: u64) -> Result<String> {
    run_tool(py, || bourse_tools::bench::run(workload, ops, seed))
}

/// Replay a LOBSTER sample zip through the engine; returns the JSON line it prints.
#[pyfunction]
#[pyo3(signature = (path, max_messages = None))]
fn replay_lobster(py: Python<'_>, path: PathBuf, max_messages: Option<u64>) -> Result<String> {
    run_tool(py, || bourse_tools::lobster::replay_path(&path, max_messages))
}

/// Run a long native job with the GIL released.
pub(crate) fn run_tool<F>(py: Python<'_>, job: F) -> Result<String>
where
    F: FnOnce() -> std::result::Result<String, String> + Send,
{
    py.detach(job).map_err(Error::Tool)
}

pub(crate) fn parse_side(side: &str) -> Result<Side> {
    match side {
        "buy" => Ok(Side::Buy),
        "sell" => Ok(Side::Sell),
        other => Err(Error::Argument(format!("side must be 'buy' or 'sell', not {other:?}"))),
    }
}

/// Decode a command dict such as `{"type": "deposit", "account": 1, "asset": 2, "amount": 5}`.
pub(crate) fn command_from_py(obj: &Bound<'_, PyAny>) -> Result<Command> {
    let Ok(dict) = obj.cast::<PyDict>() else {
        let type_name = obj.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        return Err(Error::Command(format!("a command must be a dict, not {type_name}")));
    };
    // serde would also take a variant's index for the tag; a command names its type.
    if !dict.get_item("type")?.is_some_and(|t| t.is_instance_of::<PyString>()) {
        return Err(Error::Command(
            "invalid command: field `type` must be a string naming the command".to_owned(),
        ));
    }
    depythonize(obj).map_err(|err| Error::Command(describe_bad_command(dict, &err.to_string())))
}

/// Say what is wrong with a command dict, and where. serde's message says what, but inside
/// an internally tagged enum (which buffers the fields) it loses which field it was about;
/// the field to blame is the one whose removal changes the error. Runs on errors only.
fn describe_bad_command(dict: &Bound<'_, PyDict>, error: &str) -> String {
    let kind = dict.get_item("type").ok().flatten().and_then(|t| t.extract::<String>().ok());
    let what = match kind {
        Some(kind) => format!("invalid {kind:?} command"),
        None => "invalid command".to_owned(),
    };
    match blame_field::<Command>(dict, error) {
        Some(field) => format!("{what}: field `{field}`: {error}"),
        None => format!("{what}: {error}"),
    }
}

/// Which key of `dict` is to blame for `error` (deserializing it as a `T`), if one is.
pub(crate) fn blame_field<T: serde::de::DeserializeOwned>(
    dict: &Bound<'_, PyDict>,
    error: &str,
) -> Option<String> {
    if error.starts_with("missing field") {
        return None; // serde already named it
    }
    let mut keys: Vec<Bound<'_, PyAny>> = dict.keys().iter().collect();
    // The tag last: removing it always changes the error, so it is only to blame if nothing else is.
    keys.sort_by_key(|k| k.extract::<&str>().is_ok_and(|k| k == "type"));
    keys.into_iter().find_map(|key| {
        let probe = dict.copy().ok()?;
        probe.del_item(&key).ok()?;
        let changed = match depythonize::<T>(probe.as_any()) {
            Ok(_) => true,
            Err(err) => err.to_string() != error,
        };
        changed.then(|| key.to_string())
    })
}

/// The `controlplane._engine` module.
#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<PyEngine>()?;
    m.add_function(wrap_pyfunction!(encode_command, m)?)?;
    m.add_function(wrap_pyfunction!(bench_engine, m)?)?;
    m.add_function(wrap_pyfunction!(replay_lobster, m)?)?;
    m.add("EngineError", py.get_type::<EngineError>())?;
    m.add("CommandError", py.get_type::<CommandError>())?;
    m.add("InvariantViolation", py.get_type::<InvariantViolation>())?;
    m.add("ToolError", py.get_type::<ToolError>())?;
    m.add("NodeError", py.get_type::<NodeError>())?;
    m.add("RecoveryError", py.get_type::<RecoveryError>())?;
    m.add("NodeBusy", py.get_type::<NodeBusy>())?;
    m.add("NodeStopped", py.get_type::<NodeStopped>())?;
    m.add("EventsGone", py.get_type::<EventsGone>())?;
    m.add("MESSAGE_VERSION", client::MESSAGE_VERSION)?;
    m.add_class::<client::PyNodeClient>()?;
    node::register(m)?;
    gateway_bench::register(m)?;
    Ok(())
}
