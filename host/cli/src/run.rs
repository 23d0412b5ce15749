//! The command line's dispatch: shared by the `router` binary and the
//! Python package, so both behave the same.

use anyhow::Context as _;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Layer};

use super::{Cli, Command, PolicyCommand, cache_dir};
use wasm_router::config::{Config, RouterArgs};
use wasm_router::policy::{PolicyEngine, PolicySource, check};

/// Run the `router` command line with `argv` (program name first), as the
/// binary and the Python package do. Returns the process exit code: 0, 1
/// when the work failed, 2 for bad usage or settings.
pub fn entry<I, T>(argv: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_args(argv) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors exit 2.
            if e.kind() == clap::error::ErrorKind::UnknownArgument {
                eprint!("{}", unrecognized(&e));
            } else {
                let _printed = e.print();
            }
            return e.exit_code() as u8;
        }
    };
    // Kept until the end: it flushes the log file's last lines.
    let _log_file = match init_logging(&cli) {
        Ok(guard) => guard,
        Err(message) => {
            eprintln!("error: {message}");
            return 2;
        }
    };
    let outcome = match cli.command {
        Some(Command::Policy(PolicyCommand::Check(args))) => policy_check(args),
        Some(Command::Policy(PolicyCommand::New(args))) => {
            crate::scaffold::create(&args).map(|dir| {
                println!("created {}: {}", dir.display(), args.lang.next_step());
            })
        }
        Some(Command::Policy(PolicyCommand::Componentize(args))) => policy_componentize(&args),
        Some(Command::Policy(PolicyCommand::Bindings(args))) => {
            crate::bindings::write(&args).map(|files| {
                for file in files {
                    println!("wrote {}", file.display());
                }
            })
        }
        Some(Command::SimWorker(args)) => block_on(sim_worker(args)),
        Some(Command::SimKubeApi(args)) => block_on(sim_kube_api(args)),
        Some(Command::Demo(args)) => block_on(demo(args)),
        Some(Command::Replay(args)) => crate::replay::run(&args),
        Some(Command::Bench(args)) => block_on(async move {
            println!("{}", crate::bench::run(&args).await?);
            Ok(())
        }),
        None => return run_router(&cli.run),
    };
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// clap's message for an unknown flag in argparse's words, which scripts
/// written against sglang_router's launcher look for.
fn unrecognized(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let text = e.render().to_string();
    match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => text.replacen(
            &format!("unexpected argument '{arg}' found"),
            &format!("unrecognized arguments: {arg}"),
            1,
        ),
        _ => text,
    }
}

fn policy_check(args: crate::CheckArgs) -> anyhow::Result<()> {
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&args.config)
        .map_err(|e| anyhow::anyhow!("--config must be a JSON object: {e}"))?;
    let engine = PolicyEngine::new(cache_dir(args.no_cache))?;
    let source = PolicySource::parse(&args.file)?;
    print!("{}", check::check(&engine, source, &args.config)?);
    Ok(())
}

fn policy_componentize(args: &crate::ComponentizeArgs) -> anyhow::Result<()> {
    let core = std::fs::read(&args.core)
        .with_context(|| format!("cannot read {}", args.core.display()))?;
    let component = wasm_router::policy::componentize::componentize(&core)
        .with_context(|| format!("cannot componentize {}", args.core.display()))?;
    std::fs::write(&args.output, &component)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    println!(
        "wrote {} ({} bytes): try it with `router policy check {}`",
        args.output.display(),
        component.len(),
        args.output.display()
    );
    Ok(())
}

fn block_on(work: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(work)
}

async fn sim_worker(args: crate::sim::FleetArgs) -> anyhow::Result<()> {
    let stop = ShutdownSignal::install()?;
    let nth = |port: u16, i: u16| match port {
        0 => Ok(0),
        port => port
            .checked_add(i)
            .with_context(|| format!("--count {} from port {port} runs past 65535", args.count)),
    };
    let mut fleet = Vec::with_capacity(args.count.into());
    for i in 0..args.count {
        let mut sim = args.sim.clone();
        sim.port = nth(args.sim.port, i)?;
        sim.kv_events_port = args.sim.kv_events_port.map(|p| nth(p, i)).transpose()?;
        let handle = crate::sim::start(sim, false).await?;
        tracing::info!("simulated worker on {}", handle.url());
        if args.count > 1 {
            println!("{}", handle.url());
        }
        fleet.push(handle);
    }
    stop.wait().await?;
    Ok(())
}

async fn sim_kube_api(args: crate::sim::kube_api::KubeApiArgs) -> anyhow::Result<()> {
    let stop = ShutdownSignal::install()?;
    let api = std::sync::Arc::default();
    let handle = crate::sim::kube_api::serve((args.host, args.port).into(), api).await?;
    // Scripts read the address from this line.
    println!("sim-kube-api on {}", handle.url());
    stop.wait().await?;
    Ok(())
}

async fn demo(args: crate::demo::DemoArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let results = crate::demo::run(&args, std::io::stderr().is_terminal()).await?;
    print!("{}", crate::demo::table(&results));
    Ok(())
}

/// Logs to stderr and, with `--log-dir`, also to a file there that starts
/// anew each day (`wasm-router.YYYY-MM-DD`, as sglang-router writes
/// `smg.YYYY-MM-DD`), written off the logging thread; the guard flushes it.
fn init_logging(cli: &Cli) -> Result<Option<WorkerGuard>, String> {
    let quiet = matches!(cli.command, Some(Command::Demo(_)));
    let level = cli
        .log_level
        .as_deref()
        .unwrap_or(if quiet { "warn" } else { "info" });
    let filter = EnvFilter::try_new(log_filter(level))
        .map_err(|e| format!("invalid --log-level {level:?}: {e}"))?;
    // Colors only for a person at a terminal, not in a piped or captured log.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut layers = vec![fmt_layer(cli.log_json, std::io::stderr, ansi)];
    let mut guard = None;
    if let Some(dir) = &cli.run.log_dir {
        let file = tracing_appender::rolling::RollingFileAppender::builder()
            .rotation(tracing_appender::rolling::Rotation::DAILY)
            .filename_prefix("wasm-router")
            .build(dir)
            .map_err(|e| format!("cannot write logs in --log-dir {}: {e}", dir.display()))?;
        let (writer, flush) = tracing_appender::non_blocking(file);
        layers.push(fmt_layer(cli.log_json, writer, false));
        guard = Some(flush);
    }
    // `try_init`: a Python process may run several routers.
    if tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .try_init()
        .is_err()
    {
        tracing::debug!("logging was already set up");
    }
    Ok(guard)
}

/// The targets of the router's own log lines: its crates, and the lines
/// policies write (`policy`).
const OWN_TARGETS: [&str; 3] = ["wasm_router", "wasm_router_cli", "policy"];

/// Crates whose failures the router reports itself, once: kube logs an
/// error at every retry while the API server is away (service discovery
/// says so once, and counts them in its metrics).
const REPORTED_FOR: [&str; 2] = ["kube_client", "kube_runtime"];

/// The filter for `--log-level`: at error, warn or info the level is the
/// router's, and other crates' lines (a ZMQ library's connection notes,
/// say) pass at warn at most, and those the router reports for
/// ([`REPORTED_FOR`]) not at all; debug and trace, or a tracing directive,
/// are taken as written.
pub fn log_filter(level: &str) -> String {
    let others = match level {
        "error" => "error",
        "warn" | "info" => "warn",
        _ => return level.to_string(),
    };
    let own = OWN_TARGETS.iter().map(|t| format!("{t}={level}"));
    let quiet = REPORTED_FOR.iter().map(|t| format!("{t}=off"));
    let directives: Vec<String> = own.chain(quiet).collect();
    format!("{others},{}", directives.join(","))
}

/// A formatting layer writing to `writer`: JSON lines, or text (colored
/// when `ansi`).
fn fmt_layer<S, W>(json: bool, writer: W, ansi: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    if json {
        layer.json().boxed()
    } else {
        layer.boxed()
    }
}

fn run_router(args: &RouterArgs) -> u8 {
    let config = match Config::load(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Handlers first: a signal that arrives while starting must not kill
    // the process with the default action.
    let stop = ShutdownSignal::install()?;
    let running = wasm_router::server::start(config).await?;
    stop.wait().await?;
    tracing::info!("shutting down: finishing in-flight requests");
    running.shutdown().await
}

/// SIGTERM or SIGINT, listened for from the moment it is installed.
struct ShutdownSignal {
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignal {
            term: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(mut self) -> std::io::Result<()> {
        tokio::select! {
            _ = self.term.recv() => Ok(()),
            _ = self.interrupt.recv() => Ok(()),
        }
    }
}
