//! `router bench`: replay a seeded workload against any router or worker URL
//! (or several router replicas, alternating between them) and report what the client saw, plus the cache hit rate from the workers'
//! own counters when their URLs are given (simulated workers' `/metrics`).

use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::json;

use crate::workload::{self, Shape, Spec};

/// Which workload to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkloadKind {
    /// Groups sharing a system prompt, evenly popular.
    SharedPrefix,
    /// The same, with Zipf-skewed group popularity.
    Zipf,
    /// Conversations whose prompt grows every turn.
    MultiTurn,
}

/// `router bench` flags.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Base URLs to send `/generate` requests to; with several (router
    /// replicas), requests alternate between them, as behind an L4 balancer.
    #[arg(long, num_args = 1.., required = true)]
    pub url: Vec<String>,
    /// Workload shape.
    #[arg(long, value_enum, default_value = "shared-prefix")]
    pub workload: WorkloadKind,
    /// Groups (system prompts or conversations).
    #[arg(long, default_value_t = 8)]
    pub groups: usize,
    /// Prompts per group (turns, for multi-turn).
    #[arg(long, default_value_t = 24)]
    pub prompts_per_group: usize,
    /// Characters per system prompt.
    #[arg(long, default_value_t = 2400)]
    pub system_chars: usize,
    /// Characters per question.
    #[arg(long, default_value_t = 200)]
    pub question_chars: usize,
    /// Tokens generated per request.
    #[arg(long, default_value_t = 32)]
    pub output_tokens: usize,
    /// Zipf exponent for `--workload zipf`.
    #[arg(long, default_value_t = 1.2)]
    pub zipf_s: f64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seed of the workload generator.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Stop sending after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub max_secs: u64,
    /// Simulated workers whose `/metrics` give the cache hit rate.
    #[arg(long, num_args = 1..)]
    pub worker_metrics: Vec<String>,
}

/// Sum of (prompt tokens, cached tokens) over simulated workers' counters.
async fn cache_counters(
    client: &reqwest::Client,
    workers: &[String],
) -> anyhow::Result<(f64, f64)> {
    let mut totals = (0.0, 0.0);
    for w in workers {
        let text = client
            .get(format!("{w}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let value = |p: Option<&str>| p.and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            match parts.next() {
                Some("sim_prompt_tokens_total") => totals.0 += value(parts.next()),
                Some("sim_cached_tokens_total") => totals.1 += value(parts.next()),
                _ => {}
            }
        }
    }
    Ok(totals)
}

/// Run the workload and return a JSON report.
pub async fn run(args: &BenchArgs) -> anyhow::Result<serde_json::Value> {
    let spec = Spec {
        shape: match args.workload {
            WorkloadKind::SharedPrefix => Shape::SharedPrefix,
            WorkloadKind::Zipf => Shape::Zipf(args.zipf_s),
            WorkloadKind::MultiTurn => Shape::MultiTurn,
        },
        groups: args.groups,
        prompts_per_group: args.prompts_per_group,
        system_chars: args.system_chars,
        question_chars: args.question_chars,
        output_tokens: args.output_tokens,
        seed: args.seed,
    };
    let client = wasm_router::client::client();
    let before = cache_counters(&client, &args.worker_metrics).await?;
    let prompts = spec.prompts();
    let bases: Vec<String> = args
        .url
        .iter()
        .map(|u| u.trim_end_matches('/').to_string())
        .collect();
    let deadline = Duration::from_secs(args.max_secs);
    let report = workload::drive(
        &client,
        &bases,
        &prompts,
        spec.output_tokens,
        args.concurrency,
        deadline,
        |_| {},
    )
    .await;
    let after = cache_counters(&client, &args.worker_metrics).await?;
    let prompt = after.0 - before.0;
    let hit_rate = (prompt > 0.0).then(|| (after.1 - before.1) / prompt);
    Ok(json!({
        "workload": format!("{:?}", args.workload),
        "requests": prompts.len(),
        "ok": report.ok,
        "failed": report.failed,
        "cache_hit_rate": hit_rate,
        "ttft_p50_ms": report.ttft_ms(0.5),
        "ttft_p99_ms": report.ttft_ms(0.99),
        "requests_per_sec": report.throughput(),
        "elapsed_secs": report.elapsed.as_secs_f64(),
    }))
}
