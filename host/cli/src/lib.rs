//! The `router` command: its command line ([`Cli`]; [`run`] dispatches,
//! for the binary and the Python package alike), and the tools it offers
//! besides routing: a simulated SGLang worker ([`sim`]), the demo on a
//! simulated fleet ([`demo`]), a workload replayer ([`bench`], over
//! [`workload`]) and the policy project scaffold ([`scaffold`]). The router
//! itself is the `wasm-router` library; nothing here is on its request
//! path.
#![deny(missing_docs)]

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub mod bench;
pub mod bindings;
pub mod demo;
pub mod replay;
pub mod run;
pub mod scaffold;
pub mod sim;
pub mod workload;

/// A load balancer for LLM inference workers with WebAssembly routing policies.
///
/// Without a subcommand, runs the router:
/// `router --policy cache_aware --worker-urls http://127.0.0.1:8000 ...`
#[derive(Debug, Parser)]
#[command(
    name = "router",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Something other than running the router.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Router flags (when no subcommand is given).
    #[command(flatten)]
    pub run: wasm_router::config::RouterArgs,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive
    /// (`target=level,...`). At error, warn and info, other crates than the
    /// router log at warn at most [default: info; warn for `demo`].
    #[arg(long, global = true, help_heading = "Logging")]
    pub log_level: Option<String>,
    /// Log as JSON lines.
    #[arg(long, global = true, help_heading = "Logging")]
    pub log_json: bool,
}

impl Cli {
    /// The command line, each router setting's help ending with its default
    /// ([`wasm_router::config::defaults`]).
    pub fn command_with_defaults() -> clap::Command {
        wasm_router::config::show_defaults(<Cli as clap::CommandFactory>::command())
    }

    /// Parse `argv` (program name first) against
    /// [`Cli::command_with_defaults`].
    pub fn try_parse_args<I, T>(argv: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Cli::command_with_defaults().try_get_matches_from(argv)?;
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches)
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with policy components.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run a simulated SGLang worker (KV cache, prefill, decode, batching),
    /// or a fleet of them in one process (`--count`).
    SimWorker(crate::sim::FleetArgs),
    /// Run a Kubernetes API server that serves pods only (list and watch),
    /// for trying and measuring service discovery; pods are set over HTTP.
    SimKubeApi(crate::sim::kube_api::KubeApiArgs),
    /// Simulated fleet + router + shared-prefix workload, for each built-in policy.
    Demo(crate::demo::DemoArgs),
    /// Replay a seeded workload against a URL; print a JSON report.
    Bench(crate::bench::BenchArgs),
    /// Replay a trace (decision records, or Mooncake format) through a
    /// simulated fleet in process, once per policy; print a row each.
    Replay(crate::replay::ReplayArgs),
}

/// `router policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a component against the policy contract: load it, call
    /// `init` with its config and one test `select`, print what it declared.
    Check(CheckArgs),
    /// Create a policy project that builds, from the templates.
    New(crate::scaffold::NewArgs),
    /// Wrap a core module that follows the contract's canonical ABI (an
    /// AssemblyScript build, or a C build against `policy bindings`) into
    /// a policy component.
    Componentize(ComponentizeArgs),
    /// Write the contract's bindings and the SDK for a language the router
    /// builds for (C, Go), so no bindings generator needs installing.
    Bindings(crate::bindings::BindingsArgs),
}

/// `router policy componentize`
#[derive(Debug, Args)]
pub struct ComponentizeArgs {
    /// The core WebAssembly module.
    pub core: PathBuf,
    /// Where to write the component.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// `router policy check`
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A `.wasm` component, or the name of a built-in policy.
    pub file: String,
    /// The JSON config passed to `init`.
    #[arg(long, default_value = "{}")]
    pub config: String,
    /// Compile without the on-disk cache of compiled components.
    #[arg(long)]
    pub no_cache: bool,
}

/// Where compiled components are cached, unless disabled.
pub fn cache_dir(disabled: bool) -> Option<PathBuf> {
    if disabled {
        None
    } else {
        wasm_router::config::default_cache_dir()
    }
}
