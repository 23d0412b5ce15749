//! Issue 17: what a shared policy's slow `tick` does to streams on other
//! connections. Gaps between streamed chunks, at the client, while other
//! clients' requests need the policy: with a policy that never ticks (the
//! baseline), and with one whose tick takes 100 ms of every 200 ms (the
//! hostile fixture's `slow-tick`), in the same run.
//!
//! Run: `cargo bench -p wasm-router-cli --bench tick_stall`
//! (it builds the hostile fixture for wasm32-wasip2 first).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use wasm_router::config::{Config, RouterArgs};
use wasm_router::server::start;
use wasm_router_cli::sim::{self, SimArgs};

/// Streams at once, each 1,000 chunks 5 ms apart (about 5 s).
const STREAMS: usize = 4;
/// Clients sending short requests back to back meanwhile (each needs a
/// `select`, which waits while a tick runs).
const CLIENTS: usize = 2;
const TOKENS: usize = 1000;

fn hostile() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-fixtures");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&workspace)
        .args(["build", "--locked", "--quiet", "--target", "wasm32-wasip2"])
        .args([
            "--profile",
            "policy",
            "-p",
            "hostile-policy",
            "--target-dir",
        ])
        .arg(&target)
        .env_remove("RUSTFLAGS")
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the hostile fixture failed");
    target.join("wasm32-wasip2/policy/hostile_policy.wasm")
}

fn percentile(gaps: &mut [f64], q: f64) -> f64 {
    gaps.sort_by(f64::total_cmp);
    gaps[((gaps.len() - 1) as f64 * q).round() as usize]
}

/// Chunk gaps in milliseconds over every stream, with the policy `mode`.
async fn gaps(policy: &Path, mode: &str, worker: &str) -> Vec<f64> {
    let args = RouterArgs {
        port: Some(0),
        prometheus_port: Some(0),
        policy: Some(policy.display().to_string()),
        worker_urls: vec![worker.to_string()],
        max_concurrent_requests: Some(0),
        ..RouterArgs::default()
    };
    let mut config = Config::load(&args).expect("config");
    config.policy_config = json!({ "mode": mode }).to_string();
    // The slow tick takes 100 ms: keep the deadline out of its way.
    config.policy_limits.tick_deadline = Duration::from_secs(1);
    let r = start(config).await.expect("router starts");
    while !r.state.registry.all().iter().all(|w| w.is_healthy()) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let base = format!("http://{}", r.addr);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, base, stop, served) =
                (client.clone(), base.clone(), stop.clone(), served.clone());
            tokio::spawn(async move {
                // Bounded in count; stopped when the streams are done.
                for i in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let sent = client
                        .post(format!("{base}/generate"))
                        .json(&json!({"text": format!("q{i}"), "sampling_params": {"max_new_tokens": 1}}))
                        .send()
                        .await;
                    if matches!(sent, Ok(r) if r.status().is_success()) {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let streams: Vec<_> = (0..STREAMS)
        .map(|s| {
            let (client, base) = (client.clone(), base.clone());
            tokio::spawn(async move {
                let response = client
                    .post(format!("{base}/generate"))
                    .json(&json!({"text": format!("stream {s}"), "stream": true}))
                    .send()
                    .await
                    .expect("stream starts");
                let mut body = response.bytes_stream();
                let mut last = Instant::now();
                let mut gaps = Vec::with_capacity(TOKENS);
                while let Some(Ok(_chunk)) = body.next().await {
                    let now = Instant::now();
                    gaps.push(now.duration_since(last).as_secs_f64() * 1e3);
                    last = now;
                }
                // The first gap is the request's own time to first chunk.
                gaps.remove(0);
                gaps
            })
        })
        .collect();
    let mut all = Vec::new();
    for s in streams {
        all.extend(s.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let ticks = r.state.policies.status().ticks;
    println!(
        "  {mode:>10}: {} chunk gaps, {} short requests served meanwhile, {ticks} ticks",
        all.len(),
        served.load(Ordering::Relaxed)
    );
    r.shutdown().await.unwrap();
    all
}

#[tokio::main]
async fn main() {
    let policy = hostile();
    let sim = sim::start(
        SimArgs {
            decode_us_per_token: 5_000,
            prefill_us_per_token: 0,
            output_tokens: TOKENS,
            stream_pieces: TOKENS as u32,
            max_running: 1024,
            ..SimArgs::default()
        },
        true,
    )
    .await
    .unwrap();
    println!("streamed-chunk gaps (ms) with {CLIENTS} clients needing the policy meanwhile:");
    let mut rows = Vec::new();
    for mode in ["none", "slow-tick"] {
        let mut g = gaps(&policy, mode, &sim.url()).await;
        rows.push((
            mode,
            percentile(&mut g, 0.5),
            percentile(&mut g, 0.99),
            percentile(&mut g, 1.0),
        ));
    }
    for (mode, p50, p99, max) in &rows {
        println!("  {mode:>10}: p50 {p50:.2}, p99 {p99:.2}, max {max:.2}");
    }
    println!(
        "  p99 with 100 ms ticks / without: {:.2}x",
        rows[1].2 / rows[0].2
    );
}
