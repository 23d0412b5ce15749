//! The `router` binary: parse flags, set up logging, dispatch, map errors to
//! exit codes (1: the work failed; 2: bad usage, from clap).

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use wasm_router::cli::{Cli, Command, PolicyCommand, cache_dir};
use wasm_router::policy::{PolicyEngine, PolicySource, check};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(&cli.log_level).unwrap_or_else(|e| {
        eprintln!("error: invalid --log-level {:?}: {e}", cli.log_level);
        std::process::exit(2);
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Policy(PolicyCommand::Check(args)) => {
            let engine = PolicyEngine::new(cache_dir(args.no_cache))?;
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&args.config)
                .map_err(|e| anyhow::anyhow!("--config must be a JSON object: {e}"))?;
            let source = PolicySource::parse(&args.file)?;
            print!("{}", check::check(&engine, source, &args.config)?);
            Ok(())
        }
    }
}
