//! The native half of the `wasm_router` Python package
//! (`wasm_router._native`): the `router` command line, and a handle that runs
//! a router on a background thread. Argument and error conversion only; the
//! routing lives in the `wasm-router` crate.

use std::sync::mpsc;
use std::thread::JoinHandle;

use clap::error::{ContextKind, ContextValue};
use clap::{ArgAction, CommandFactory};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use wasm_router::config::{Config, ConfigError};
use wasm_router_cli::Cli;

// The router binary's allocator (see host/cli/src/main.rs), for the same
// performance from Python. It serves this extension's Rust allocations only.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Run the `router` command line (`argv` without the program name), as the
/// binary would; returns its exit code. The GIL is released meanwhile.
#[pyfunction]
fn main(py: Python<'_>, argv: Vec<String>) -> u8 {
    py.detach(|| wasm_router_cli::run::entry(std::iter::once("router".to_string()).chain(argv)))
}

/// The router's flags, as `wasm_router._flags` turns `Router(...)` keyword
/// arguments into argv: one `(name, flag, switch, max_values, value_names)`
/// per flag, `name` being the long flag with underscores.
#[pyfunction]
fn flags() -> Vec<(String, String, bool, usize, Vec<String>)> {
    Cli::command()
        .get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?;
            if matches!(arg.get_action(), ArgAction::Help | ArgAction::Version) {
                return None;
            }
            let switch = matches!(arg.get_action(), ArgAction::SetTrue);
            let max_values = arg.get_num_args().map_or(1, |n| n.max_values());
            let value_names = arg
                .get_value_names()
                .map(|names| names.iter().map(ToString::to_string).collect())
                .unwrap_or_default();
            Some((
                long.replace('-', "_"),
                format!("--{long}"),
                switch,
                max_values,
                value_names,
            ))
        })
        .collect()
}

/// Parse and validate router flags as `router` would, without starting it;
/// `ValueError` naming the setting (as a `Router(...)` keyword) otherwise.
#[pyfunction]
fn check(argv: Vec<String>) -> PyResult<()> {
    let cli = parse(argv)?;
    Config::load(&cli.run).map_err(config_error)?;
    Ok(())
}

fn parse(argv: Vec<String>) -> PyResult<Cli> {
    Cli::try_parse_args(std::iter::once("router".to_string()).chain(argv)).map_err(|e| {
        let message = e.render().to_string();
        let message = message.trim().trim_start_matches("error: ");
        match e.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(arg)) => {
                let flag = arg.split(' ').next().unwrap_or(arg);
                PyValueError::new_err(format!("invalid {}: {message}", keyword(flag)))
            }
            _ => PyValueError::new_err(message.to_string()),
        }
    })
}

fn config_error(e: ConfigError) -> PyErr {
    match &e {
        ConfigError::Invalid { setting, reason } if setting.starts_with("--") => {
            PyValueError::new_err(format!(
                "invalid {} ({setting}): {reason}",
                keyword(setting)
            ))
        }
        _ => PyValueError::new_err(e.to_string()),
    }
}

/// `Router(...)`'s keyword for a flag: `--cache-threshold` is `cache_threshold`.
fn keyword(flag: &str) -> String {
    flag.trim_start_matches("--").replace('-', "_")
}

/// A router running on a background thread of this process.
#[pyclass(module = "wasm_router._native")]
struct RouterHandle {
    address: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

#[pymethods]
impl RouterHandle {
    /// Start a router with these flags (as for `router`); returns once it
    /// listens. Bad flags raise `ValueError`; failure to start, `RuntimeError`.
    #[staticmethod]
    fn start(py: Python<'_>, argv: Vec<String>) -> PyResult<RouterHandle> {
        let cli = parse(argv)?;
        let config = Config::load(&cli.run).map_err(config_error)?;
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("wasm-router".into())
            .spawn(move || {
                let runtime = tokio::runtime::Runtime::new()?;
                runtime.block_on(async move {
                    let running = match wasm_router::server::start(config).await {
                        Ok(running) => running,
                        Err(e) => {
                            // The caller is waiting on the other end.
                            let _sent = ready_tx.send(Err(format!("{e:#}")));
                            return Ok(());
                        }
                    };
                    let _sent = ready_tx.send(Ok(running.addr.to_string()));
                    // A dropped sender (the handle garbage-collected) stops it too.
                    let _stopped = stop_rx.await;
                    running.shutdown().await
                })
            })
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the router thread: {e}")))?;
        let ready = py.detach(move || ready_rx.recv());
        match ready {
            Ok(Ok(address)) => Ok(RouterHandle {
                address,
                stop: Some(stop_tx),
                thread: Some(thread),
            }),
            Ok(Err(message)) => Err(PyRuntimeError::new_err(message)),
            Err(_) => Err(PyRuntimeError::new_err(
                "the router thread ended before it listened",
            )),
        }
    }

    /// `host:port` the router listens on.
    #[getter]
    fn address(&self) -> String {
        self.address.clone()
    }

    /// Stop accepting requests, let those in flight finish, and wait.
    fn stop(&mut self, py: Python<'_>) -> PyResult<()> {
        if let Some(stop) = self.stop.take() {
            // An error means the thread is already gone: nothing to stop.
            let _sent = stop.send(());
        }
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        match py.detach(|| thread.join()) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(PyRuntimeError::new_err(format!("{e:#}"))),
            Err(_) => Err(PyRuntimeError::new_err("the router thread panicked")),
        }
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add_function(wrap_pyfunction!(flags, m)?)?;
    m.add_function(wrap_pyfunction!(check, m)?)?;
    m.add_class::<RouterHandle>()?;
    Ok(())
}
