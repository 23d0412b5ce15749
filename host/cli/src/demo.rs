//! `router demo`: a simulated fleet, the router in front of it, and a
//! shared-prefix workload through each built-in policy, ending in a table.
//! Each row gets a fresh fleet so caches start cold for all.
//!
//! The workers page prompts with the repository's small BPE tokenizer
//! (embedded in the binary) and publish their KV cache events. The last
//! rows run `--replicas` routers in front of the same fleet, requests
//! alternating between them as behind an L4 balancer: cache_aware, whose
//! replicas each see their share of the traffic, against
//! precise_cache_aware, whose replicas all follow the workers' events.

use std::io::Write as _;
use std::time::Duration;

use clap::Args;

use crate::sim::{self, SimArgs};
use crate::workload::{self, Report, Shape, Spec};
use wasm_router::config::{Config, RouterArgs};

/// `router demo` flags.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// A short run (for CI): fewer, smaller requests.
    #[arg(long)]
    pub quick: bool,
    /// Simulated workers.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Prompt groups (shared system prompts).
    #[arg(long, default_value_t = 8)]
    pub groups: usize,
    /// Prompts per group.
    #[arg(long, default_value_t = 24)]
    pub prompts_per_group: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// KV cache of each simulated worker, in tokens: about four of the
    /// eight system prompts, so the fleet holds them all only when each
    /// prompt keeps to one worker.
    #[arg(long, default_value_t = 8000)]
    pub cache_tokens: usize,
    /// Multiply simulated GPU times (smaller is faster).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Stop each policy's run after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub max_secs: u64,
    /// Router replicas of the approximate-against-precise rows (0: leave
    /// those rows out).
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
}

/// The tokenizer the simulated workers and the router share:
/// host/cli/assets/tokenizer (trained by its train.py).
const TOKENIZER: &[u8] = include_bytes!("../assets/tokenizer/tokenizer.json");

/// One row of the demo: a policy, behind this many router replicas.
struct Row {
    policy: &'static str,
    replicas: usize,
}

/// One policy's results.
#[derive(Debug, Clone)]
pub struct PolicyResult {
    /// Policy name, with `xN` when behind N replicas.
    pub policy: String,
    /// Share of prompt tokens served from the workers' caches.
    pub hit_rate: f64,
    /// What the client saw.
    pub report: Report,
    /// Share of requests per worker.
    pub shares: Vec<f64>,
}

impl DemoArgs {
    fn spec(&self) -> Spec {
        let (groups, per_group) = if self.quick {
            (4, 8)
        } else {
            (self.groups, self.prompts_per_group)
        };
        Spec {
            shape: Shape::SharedPrefix,
            groups,
            prompts_per_group: per_group,
            system_chars: 2400,
            question_chars: 200,
            output_tokens: if self.quick { 8 } else { 32 },
            seed: 42,
        }
    }
}

/// Run the demo for each built-in policy.
pub async fn run(args: &DemoArgs, show_progress: bool) -> anyhow::Result<Vec<PolicyResult>> {
    let spec = args.spec();
    let prompts = spec.prompts();
    let tokenizer = std::env::temp_dir().join(format!(
        "wasm-router-demo-tokenizer-{}.json",
        std::process::id()
    ));
    std::fs::write(&tokenizer, TOKENIZER)?;
    let mut rows = vec![
        Row {
            policy: "round_robin",
            replicas: 1,
        },
        Row {
            policy: "cache_aware",
            replicas: 1,
        },
    ];
    if args.replicas > 0 {
        for policy in ["cache_aware", "precise_cache_aware"] {
            rows.push(Row {
                policy,
                replicas: args.replicas,
            });
        }
    }
    let mut results = Vec::new();
    let mut failed = None;
    for row in &rows {
        match run_row(args, row, &tokenizer, &spec, &prompts, show_progress).await {
            Ok(result) => results.push(result),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    // Removed whether or not a row failed.
    std::fs::remove_file(&tokenizer).ok();
    match failed {
        Some(e) => Err(e),
        None => Ok(results),
    }
}

async fn run_row(
    args: &DemoArgs,
    row: &Row,
    tokenizer: &std::path::Path,
    spec: &Spec,
    prompts: &[String],
    show_progress: bool,
) -> anyhow::Result<PolicyResult> {
    let mut fleet = Vec::new();
    for _ in 0..args.workers.max(1) {
        let sim = SimArgs {
            cache_tokens: args.cache_tokens,
            time_scale: args.time_scale,
            tokenizer: Some(tokenizer.to_path_buf()),
            kv_events_port: Some(0),
            ..SimArgs::default()
        };
        fleet.push(sim::start(sim, true).await?);
    }
    let precise = row.policy == "precise_cache_aware";
    let router_args = RouterArgs {
        port: Some(0),
        prometheus_port: Some(0),
        policy: Some(row.policy.to_string()),
        worker_urls: fleet.iter().map(|w| w.url()).collect(),
        kv_events: precise,
        tokenizer_path: precise.then(|| tokenizer.display().to_string()),
        ..RouterArgs::default()
    };
    let mut routers = Vec::new();
    for _ in 0..row.replicas.max(1) {
        let router = wasm_router::server::start(Config::load(&router_args)?).await?;
        wait_until_ready(&router).await?;
        if precise {
            wait_until_following(&router, fleet.len()).await?;
            // A SUB socket misses what is published before it connects
            // (ZMQ's slow joiner): let the subscriptions settle first.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        routers.push(router);
    }
    let policy = match row.replicas {
        1 => row.policy.to_string(),
        n => format!("{} x{n}", row.policy),
    };
    let client = wasm_router::client::client();
    let total = prompts.len();
    let progress = |done: usize| {
        if show_progress {
            let width = 30;
            let filled = done * width / total.max(1);
            eprint!(
                "\r{policy:>12} [{}{}] {done}/{total}",
                "#".repeat(filled),
                ".".repeat(width - filled)
            );
            if done == total {
                eprintln!();
            }
            let _flushed = std::io::stderr().flush();
        }
    };
    let bases: Vec<String> = routers
        .iter()
        .map(|r| format!("http://{}", r.addr))
        .collect();
    let deadline = Duration::from_secs(args.max_secs);
    let report = workload::drive(
        &client,
        &bases,
        prompts,
        spec.output_tokens,
        args.concurrency,
        deadline,
        progress,
    )
    .await;
    if !show_progress {
        eprintln!(
            "{policy}: {} of {total} requests answered in {:.1} s",
            report.ok,
            report.elapsed.as_secs_f64()
        );
    }
    for router in routers {
        router.shutdown().await?;
    }
    let counts: Vec<u64> = fleet
        .iter()
        .map(|w| {
            w.sim
                .counters
                .requests
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .collect();
    let all: u64 = counts.iter().sum::<u64>().max(1);
    let prompt: u64 = fleet
        .iter()
        .map(|w| {
            w.sim
                .counters
                .prompt_tokens
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum();
    let cached: u64 = fleet
        .iter()
        .map(|w| {
            w.sim
                .counters
                .cached_tokens
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum();
    fleet.iter().for_each(|w| w.stop());
    Ok(PolicyResult {
        policy,
        hit_rate: if prompt == 0 {
            0.0
        } else {
            cached as f64 / prompt as f64
        },
        report,
        shares: counts.iter().map(|&c| c as f64 / all as f64).collect(),
    })
}

async fn wait_until_ready(router: &wasm_router::server::Running) -> anyhow::Result<()> {
    for _ in 0..500 {
        if router
            .state
            .registry
            .all()
            .iter()
            .all(|w| w.is_healthy() && !w.model().is_empty())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!("the simulated workers did not become healthy within 5 s")
}

/// Wait until `router` follows the KV events of all `workers`.
async fn wait_until_following(
    router: &wasm_router::server::Running,
    workers: usize,
) -> anyhow::Result<()> {
    for _ in 0..500 {
        if router
            .state
            .kv_events
            .as_ref()
            .is_some_and(|s| s.len() == workers)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!("the router did not follow the simulated workers' KV events within 5 s")
}

/// The results as a table.
pub fn table(results: &[PolicyResult]) -> String {
    let mut out = String::from(
        "policy                  cache hit  TTFT p50   TTFT p99   req/s   failed  share per worker\n\
         ----------------------  ---------  ---------  ---------  ------  ------  ----------------\n",
    );
    for r in results {
        let shares: Vec<String> = r
            .shares
            .iter()
            .map(|s| format!("{:.0}%", s * 100.0))
            .collect();
        out.push_str(&format!(
            "{:<22}  {:>8.1}%  {:>6.1} ms  {:>6.1} ms  {:>6.1}  {:>6}  {}\n",
            r.policy,
            r.hit_rate * 100.0,
            r.report.ttft_ms(0.5),
            r.report.ttft_ms(0.99),
            r.report.throughput(),
            r.report.failed,
            shares.join(" ")
        ));
    }
    out
}
