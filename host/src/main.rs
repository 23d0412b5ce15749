//! The `router` binary: parse flags, set up logging, dispatch, map errors to
//! exit codes (1: the work failed; 2: bad usage or settings).

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use wasm_router::cli::{Cli, Command, PolicyCommand, cache_dir};
use wasm_router::config::{Config, RouterArgs};
use wasm_router::policy::{PolicyEngine, PolicySource, check};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match EnvFilter::try_new(&cli.log_level) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("error: invalid --log-level {:?}: {e}", cli.log_level);
            return ExitCode::from(2);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_json {
        logs.json().init();
    } else {
        logs.init();
    }
    let outcome = match cli.command {
        Some(Command::Policy(PolicyCommand::Check(args))) => policy_check(args),
        Some(Command::Policy(PolicyCommand::New(args))) => wasm_router::scaffold::create(&args).map(|dir| {
            println!("created {}: build it with `cargo build --release --target wasm32-wasip2` there", dir.display());
        }),
        Some(Command::SimWorker(args)) => block_on(sim_worker(args)),
        Some(Command::Demo(args)) => block_on(demo(args)),
        Some(Command::Bench(args)) => block_on(async move {
            println!("{}", wasm_router::bench::run(&args).await?);
            Ok(())
        }),
        None => return run_router(&cli.run),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn policy_check(args: wasm_router::cli::CheckArgs) -> anyhow::Result<()> {
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&args.config)
        .map_err(|e| anyhow::anyhow!("--config must be a JSON object: {e}"))?;
    let engine = PolicyEngine::new(cache_dir(args.no_cache))?;
    let source = PolicySource::parse(&args.file)?;
    print!("{}", check::check(&engine, source, &args.config)?);
    Ok(())
}

fn block_on(work: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(work)
}

async fn sim_worker(args: wasm_router::sim::SimArgs) -> anyhow::Result<()> {
    let handle = wasm_router::sim::start(args, false).await?;
    tracing::info!("simulated worker on {}", handle.url());
    shutdown_signal().await?;
    Ok(())
}

async fn demo(args: wasm_router::demo::DemoArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let results = wasm_router::demo::run(&args, std::io::stderr().is_terminal()).await?;
    print!("{}", wasm_router::demo::table(&results));
    Ok(())
}

fn run_router(args: &RouterArgs) -> ExitCode {
    let config = match Config::load(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let running = wasm_router::server::start(config).await?;
    shutdown_signal().await?;
    tracing::info!("shutting down: finishing in-flight requests");
    running.shutdown().await
}

async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => Ok(()),
        result = tokio::signal::ctrl_c() => result,
    }
}
