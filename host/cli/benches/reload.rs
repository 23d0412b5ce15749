//! Hot-reload figures: time from a policy file's change to the first request
//! served by the new policy (median and p90 over repeated reloads): renamed
//! into place (acted on at once) with the compile cache warm and with no
//! cache, written in place (after the debounce), and failed requests while
//! 100 reloads happen under load from concurrent clients (must be 0).
//!
//! Run: `cargo bench -p wasm-router-cli --bench reload`

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasm_router::config::{Config, RouterArgs};
use wasm_router::policy::engine::sha256_hex;
use wasm_router::server::{Running, start};
use wasm_router_cli::sim::{self, SimArgs};

const RELOADS: usize = 100;
const CLIENTS: usize = 4;

fn policies() -> [Vec<u8>; 2] {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    [
        std::fs::read(dir.join("round_robin.wasm")).expect("policies/round_robin.wasm"),
        std::fs::read(dir.join("cache_aware.wasm")).expect("policies/cache_aware.wasm"),
    ]
}

/// How a new version reaches the policy file.
#[derive(Clone, Copy, PartialEq)]
enum Write {
    /// Written beside it, then renamed over it (`mv`, editors, deploys).
    Rename,
    /// Written over it in place (`cp`): the router waits out its debounce.
    InPlace,
}

fn replace(path: &Path, bytes: &[u8], how: Write) {
    if how == Write::InPlace {
        std::fs::write(path, bytes).expect("write the policy");
        return;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write the policy");
    std::fs::rename(&tmp, path).expect("rename the policy into place");
}

async fn router(file: &Path, cache: Option<PathBuf>, workers: &[String]) -> Running {
    let args = RouterArgs {
        port: Some(0),
        prometheus_port: Some(0),
        policy: Some(file.display().to_string()),
        worker_urls: workers.to_vec(),
        max_concurrent_requests: Some(0),
        ..RouterArgs::default()
    };
    let mut config = Config::load(&args).expect("config");
    config.policy_cache_dir = cache;
    let running = start(config).await.expect("router starts");
    while !running.state.registry.all().iter().all(|w| w.is_healthy()) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running
}

/// Put `bytes` in `file` as `how` says, then time until a request is served after
/// `GET /policies` shows the new component.
async fn time_reload(
    client: &reqwest::Client,
    base: &str,
    file: &Path,
    bytes: &[u8],
    how: Write,
) -> Duration {
    let sha = sha256_hex(bytes);
    let started = Instant::now();
    replace(file, bytes, how);
    let deadline = started + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the reload never happened");
        let status: Value = client
            .get(format!("{base}/policies"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["policies"][0]["sha256"] == sha.as_str() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let resp = client
        .post(format!("{base}/generate"))
        .json(&json!({"text": "probe"}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    started.elapsed()
}

fn quantile(times: &mut [Duration], q: f64) -> f64 {
    times.sort();
    times[((times.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3
}

async fn measure(
    label: &str,
    cache: Option<PathBuf>,
    workers: &[String],
    under_load: bool,
    how: Write,
) {
    let dir = std::env::temp_dir().join(format!(
        "wasm-router-reload-bench-{}-{label}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policy.wasm");
    let versions = policies();
    replace(&file, &versions[0], Write::Rename);
    let r = Arc::new(router(&file, cache, workers).await);
    let base = format!("http://{}", r.addr);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..if under_load { CLIENTS } else { 0 })
        .map(|_| {
            let (client, base, stop, ok, failed) = (
                client.clone(),
                base.clone(),
                stop.clone(),
                ok.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                // Bounded in count; stopped when the reloads are done.
                for i in 0..1_000_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let sent = client
                        .post(format!("{base}/generate"))
                        .json(&json!({"text": format!("load {i}")}))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status().is_success() => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    let mut times = Vec::with_capacity(RELOADS);
    for i in 0..RELOADS {
        times.push(time_reload(&client, &base, &file, &versions[(i + 1) % 2], how).await);
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    println!(
        "{label}: change to first request on the new policy, median {:.1} ms, p90 {:.1} ms over {RELOADS} reloads{}",
        quantile(&mut times, 0.5),
        quantile(&mut times, 0.9),
        if under_load {
            format!(
                "; under load from {CLIENTS} clients: {} requests succeeded, {} failed",
                ok.load(Ordering::Relaxed),
                failed.load(Ordering::Relaxed)
            )
        } else {
            String::new()
        }
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::main]
async fn main() {
    let mut workers = Vec::new();
    let mut sims = Vec::new();
    for _ in 0..2 {
        let sim = sim::start(
            SimArgs {
                fixed_response: true,
                ..SimArgs::default()
            },
            true,
        )
        .await
        .unwrap();
        workers.push(sim.url());
        sims.push(sim);
    }
    let cache =
        std::env::temp_dir().join(format!("wasm-router-reload-cache-{}", std::process::id()));
    measure(
        "renamed, warm compile cache",
        Some(cache.clone()),
        &workers,
        false,
        Write::Rename,
    )
    .await;
    let debounce = wasm_router::policy::reload::DEBOUNCE.as_millis();
    measure(
        &format!("written in place ({debounce} ms debounce), warm compile cache"),
        Some(cache.clone()),
        &workers,
        false,
        Write::InPlace,
    )
    .await;
    measure(
        "renamed, no compile cache",
        None,
        &workers,
        false,
        Write::Rename,
    )
    .await;
    measure(
        "renamed, warm compile cache, under load",
        Some(cache.clone()),
        &workers,
        true,
        Write::Rename,
    )
    .await;
    std::fs::remove_dir_all(&cache).ok();
}
