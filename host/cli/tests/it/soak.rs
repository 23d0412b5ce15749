//! The soak test (issue 9): the `router` binary in front of four simulated
//! worker processes, under concurrent streaming and non-streaming load,
//! while faults are injected:
//!
//! - workers 1 and 2 are killed (SIGKILL) and restarted in turn, one at a
//!   time, so a healthy worker always exists;
//! - worker 3 hangs on every inference request (`--attempt-timeout-secs`
//!   moves its requests on);
//! - worker 4 answers every inference request with a 500;
//! - the policy file is replaced every second (two builds of the hostile
//!   fixture), and the policy traps on every 50th request of an instance.
//!
//! Non-streaming requests must all succeed, except where no healthy worker
//! existed (the router answers those 503 `no_healthy_worker`). Streams cut
//! by a killed worker are counted apart. The router's RSS is read at start
//! and end. The report is printed and written to target/soak-report.json.
//!
//! Ignored in the plain test run (it loads both cores for its whole length);
//! tests/run.sh runs it on its own:
//! `cargo test -p wasm-router-cli --test it soak -- --ignored --nocapture`, for
//! `WASM_ROUTER_SOAK_SECS` seconds (default 60).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::fixtures::{picker, workspace};
use crate::mock::{get_json, http};

const CLIENTS: usize = 16;
/// An upper bound on requests per client, besides the time bound.
const MAX_REQUESTS_PER_CLIENT: u64 = 1_000_000;

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Err(e) = self.0.kill() {
            eprintln!("soak: could not kill child {}: {e}", self.0.id());
        }
        if let Err(e) = self.0.wait() {
            eprintln!("soak: could not reap child {}: {e}", self.0.id());
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn router_cmd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_router"));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env(
            "XDG_CACHE_HOME",
            concat!(env!("CARGO_TARGET_TMPDIR"), "/soak-cache"),
        );
    cmd
}

fn sim_worker(port: u16, knobs: &[&str]) -> Proc {
    let mut cmd = router_cmd();
    cmd.args([
        "sim-worker",
        "--port",
        &port.to_string(),
        "--time-scale",
        "0.02",
    ])
    .args(knobs);
    Proc(cmd.spawn().expect("start a simulated worker"))
}

/// A memory field of `pid`'s `/proc/PID/status` (`VmRSS:`, `VmHWM:`), in
/// KiB; `None` if the process or the field is gone.
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `pid`'s RSS in KiB, 0 if it is gone.
pub fn rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmRSS:").unwrap_or(0)
}

/// Replace `to` with a copy of `from` by rename, as deploy tools do.
fn replace(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    ok: AtomicU64,
    failed_no_worker: AtomicU64,
    failed_with_worker: AtomicU64,
}

impl Counts {
    fn json(&self) -> Value {
        json!({
            "sent": self.sent.load(Ordering::Relaxed),
            "succeeded": self.ok.load(Ordering::Relaxed),
            "failed_no_healthy_worker": self.failed_no_worker.load(Ordering::Relaxed),
            "failed_with_healthy_worker": self.failed_with_worker.load(Ordering::Relaxed),
        })
    }
}

/// One request; `Ok` if it succeeded, else whether no worker was healthy.
async fn one(client: &reqwest::Client, base: &str, i: u64, stream: bool) -> Result<(), bool> {
    let (path, body) = if stream {
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": format!("soak {i}")}], "stream": true}),
        )
    } else {
        (
            "/generate",
            json!({"text": format!("soak prompt {}", i % 64)}),
        )
    };
    let response = client
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .map_err(|_| false)?;
    let status = response.status().as_u16();
    if status != 200 {
        let error: Value = response.json().await.unwrap_or(Value::Null);
        return Err(status == 503 && error["error"]["code"] == "no_healthy_worker");
    }
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        body.extend_from_slice(&chunk.map_err(|_| false)?);
    }
    let complete = if stream {
        body.windows(6).any(|w| w == b"[DONE]")
    } else {
        serde_json::from_slice::<Value>(&body).is_ok()
    };
    if complete { Ok(()) } else { Err(false) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run by tests/run.sh with --ignored"]
async fn soak_under_faults_loses_no_request() {
    let secs: u64 = std::env::var("WASM_ROUTER_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let builds: [PathBuf; 2] = [picker("first"), picker("last")];
    let policy = dir.join("policy.wasm");
    replace(&builds[0], &policy);
    let toml = dir.join("router.toml");
    std::fs::write(
        &toml,
        format!(
            "policy_name = {:?}\n[policy]\nmode = \"trap-sometimes\"\n",
            policy.display().to_string()
        ),
    )
    .unwrap();

    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let mut restartable = [sim_worker(ports[0], &[]), sim_worker(ports[1], &[])];
    let _hangs = sim_worker(ports[2], &["--hang"]);
    let _fails = sim_worker(ports[3], &["--fail-rate", "1"]);
    let (port, metrics_port) = (free_port(), free_port());
    let mut cmd = router_cmd();
    cmd.current_dir(workspace())
        .args(["--config", toml.to_str().unwrap()])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--prometheus-port", &metrics_port.to_string()])
        .arg("--worker-urls")
        .args(ports.iter().map(|p| format!("http://127.0.0.1:{p}")))
        .args([
            "--attempt-timeout-secs",
            "1",
            "--retry-initial-backoff-ms",
            "1",
        ])
        .args([
            "--health-check-interval-secs",
            "1",
            "--health-check-timeout-secs",
            "1",
        ])
        .args([
            "--health-failure-threshold",
            "1",
            "--health-success-threshold",
            "1",
        ])
        .args(["--log-level", "error"]);
    let router = Proc(cmd.spawn().expect("start the router"));
    let base = format!("http://127.0.0.1:{port}");
    let client = http();
    let started = Instant::now();
    loop {
        let ready = client.get(format!("{base}/readiness")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the router did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_start = rss_kb(router.0.id());

    let deadline = Instant::now() + Duration::from_secs(secs);
    let plain = Arc::new(Counts::default());
    let streams = Arc::new(Counts::default());
    let mut clients = Vec::new();
    for c in 0..CLIENTS as u64 {
        let (plain, streams, client, base) =
            (plain.clone(), streams.clone(), client.clone(), base.clone());
        clients.push(tokio::spawn(async move {
            for i in 0..MAX_REQUESTS_PER_CLIENT {
                if Instant::now() >= deadline {
                    break;
                }
                let stream = (c + i) % 4 == 0;
                let counts = if stream { &streams } else { &plain };
                counts.sent.fetch_add(1, Ordering::Relaxed);
                let counter =
                    match one(&client, &base, c * MAX_REQUESTS_PER_CLIENT + i, stream).await {
                        Ok(()) => &counts.ok,
                        Err(true) => &counts.failed_no_worker,
                        Err(false) => &counts.failed_with_worker,
                    };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // The faults, once a second: replace the policy; every other second,
    // kill worker 1 or 2 (taking turns), or start it again.
    let mut kills = 0;
    let mut second = 0u64;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        second += 1;
        replace(&builds[(second % 2) as usize], &policy);
        let which = ((second / 4) % 2) as usize;
        match second % 4 {
            1 => {
                let old = &mut restartable[which];
                old.0.kill().unwrap();
                old.0.wait().unwrap();
                kills += 1;
            }
            2 => restartable[which] = sim_worker(ports[which], &[]),
            _ => {}
        }
    }
    for client in clients {
        client.await.unwrap();
    }
    let rss_end = rss_kb(router.0.id());
    let status = get_json(&format!("{base}/policies")).await;
    let report = json!({
        "seconds": secs,
        "clients": CLIENTS,
        "non_streaming": plain.json(),
        "streaming": streams.json(),
        "workers_killed": kills,
        "policy_reloads": status["policies"][0]["reload_count"],
        "policy_faults_of_the_last_instance": status["policies"][0]["faults"],
        "router_rss_kb": {"start": rss_start, "end": rss_end},
    });
    let text = serde_json::to_string_pretty(&report).unwrap();
    println!("soak report:\n{text}");
    std::fs::write(workspace().join("target/soak-report.json"), &text).unwrap();

    assert!(plain.ok.load(Ordering::Relaxed) > 0, "requests succeeded");
    assert_eq!(
        plain.failed_with_worker.load(Ordering::Relaxed),
        0,
        "no non-streaming request may fail while a healthy worker exists"
    );
    assert!(
        status["policies"][0]["reload_count"].as_u64().unwrap() > 0,
        "the policy was reloaded"
    );
    assert!(kills > 0 || secs < 2, "workers were killed");
    assert!(
        rss_end <= (rss_start * 2).max(rss_start + 64 * 1024),
        "router RSS grew from {rss_start} kB to {rss_end} kB"
    );
}
