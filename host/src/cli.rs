//! Command-line interface: flags parsed raw here, turned into validated
//! settings by the modules that use them. `main.rs` only dispatches.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// A load balancer for LLM inference workers with WebAssembly routing policies.
#[derive(Debug, Parser)]
#[command(name = "router", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with policy components.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

/// `router policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a component against the policy contract: load it, call
    /// `init` with its config and one test `select`, print what it declared.
    Check(CheckArgs),
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
        crate::policy::PolicyEngine::default_cache_dir()
    }
}
