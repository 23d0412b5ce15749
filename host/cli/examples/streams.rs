//! Thousands of open SSE streams through a router, for
//! `host/benches/streams.sh`: this process is both the worker (an SSE
//! stream per request, one event every `--cadence-ms`) and the clients
//! (one connection each, plain TCP); the router runs apart, between them.
//! It opens `--streams` streams, holds them `--hold-secs` and prints one
//! JSON line: the router's RSS before and with the streams open, its CPU
//! while they flow, and the gaps between events as the clients saw them.
//!
//!   cargo run --release --example streams -- --router 127.0.0.1:PORT \
//!       --router-pid-file FILE --worker-port WPORT [--streams 10000]
//!
//! Start it first (it serves the worker on `--worker-port`), then the
//! router with `--worker-urls http://127.0.0.1:WPORT`, and write the
//! router's pid to FILE. Loopback only; bounded in time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::body::{Body, Bytes};
use axum::response::Response;
use axum::routing::{get, post};
use clap::Parser;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
struct Args {
    /// The router's address, host:port.
    #[arg(long)]
    router: SocketAddr,
    /// A file that holds the router's process id once it started, for its
    /// RSS and CPU time.
    #[arg(long)]
    router_pid_file: std::path::PathBuf,
    /// Where this process serves the worker.
    #[arg(long)]
    worker_port: u16,
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// The worker's time between two events of a stream.
    #[arg(long, default_value_t = 500)]
    cadence_ms: u64,
    /// Streams opened per second.
    #[arg(long, default_value_t = 2_000)]
    ramp_per_sec: usize,
    /// How long all streams stay open and are measured.
    #[arg(long, default_value_t = 10)]
    hold_secs: u64,
}

/// Gaps between events, in 1 ms buckets up to 60 s.
struct Gaps(Vec<AtomicU64>);

impl Gaps {
    fn new() -> Gaps {
        Gaps((0..60_000).map(|_| AtomicU64::new(0)).collect())
    }

    fn record(&self, gap: Duration) {
        let ms = usize::try_from(gap.as_millis()).unwrap_or(usize::MAX);
        self.0[ms.min(self.0.len() - 1)].fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.0.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The gap in ms at quantile `q`.
    fn quantile(&self, q: f64) -> usize {
        let total = self.count();
        let want = (q * total as f64).ceil() as u64;
        let mut seen = 0;
        for (ms, b) in self.0.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= want.max(1) {
                return ms;
            }
        }
        self.0.len()
    }

    fn max(&self) -> usize {
        self.0
            .iter()
            .rposition(|b| b.load(Ordering::Relaxed) > 0)
            .unwrap_or(0)
    }
}

/// `/proc/PID/status` field in KiB.
fn status_kb(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} for pid {pid}"))
}

/// utime + stime of `pid`, in seconds.
fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = &stat[stat.rfind(')').context("stat")? + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks as f64 / clock_ticks())
}

/// Clock ticks per second: 100 on Linux unless the kernel says otherwise.
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The worker: each `/generate` is an SSE stream of `events` events,
/// `cadence` apart.
async fn serve_worker(port: u16, cadence: Duration, events: u64) -> anyhow::Result<()> {
    let generate = move || async move {
        let start = tokio::time::Instant::now();
        let body = futures_util::stream::iter(0..events).then(move |i| async move {
            tokio::time::sleep_until(start + cadence * u32::try_from(i).unwrap_or(u32::MAX)).await;
            Ok::<_, std::io::Error>(Bytes::from(format!(
                "data: {{\"text\": \"token {i}\", \"index\": 0}}\n\n"
            )))
        });
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(body))
            .expect("a valid response")
    };
    let app = axum::Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/get_model_info",
            get(|| async { axum::Json(serde_json::json!({"model_path": "m"})) }),
        )
        .route("/generate", post(generate));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// One client: open a stream, then record the gap before each read that
/// brings bytes while `measuring`; ends when the stream does.
async fn client(
    router: SocketAddr,
    gaps: Arc<Gaps>,
    measuring: Arc<AtomicBool>,
    open: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    let mut conn = tokio::net::TcpStream::connect(router).await?;
    conn.set_nodelay(true)?;
    let body = r#"{"text": "Tell me a story.", "stream": true}"#;
    let request = format!(
        "POST /generate HTTP/1.1\r\nhost: {router}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await?;
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await?;
    if !buf[..n].starts_with(b"HTTP/1.1 200") {
        bail!(
            "the router answered {:?}",
            String::from_utf8_lossy(&buf[..n.min(200)])
        );
    }
    open.fetch_add(1, Ordering::Relaxed);
    let mut last = Instant::now();
    loop {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        let now = Instant::now();
        if measuring.load(Ordering::Relaxed) {
            gaps.record(now - last);
        }
        last = now;
    }
    open.fetch_sub(1, Ordering::Relaxed);
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cadence = Duration::from_millis(args.cadence_ms);
    let ramp = Duration::from_secs_f64(args.streams as f64 / args.ramp_per_sec as f64);
    let settle = Duration::from_secs(3);
    let hold = Duration::from_secs(args.hold_secs);
    let lasts = ramp + settle + hold + Duration::from_secs(5);
    let events = lasts.as_millis() as u64 / args.cadence_ms + 1;
    let worker = tokio::spawn(serve_worker(args.worker_port, cadence, events));

    // Wait for the router and its worker.
    let ready = Instant::now();
    loop {
        let answered = async {
            let mut conn = tokio::net::TcpStream::connect(args.router).await.ok()?;
            let ask = format!("GET /readiness HTTP/1.1\r\nhost: {}\r\n\r\n", args.router);
            conn.write_all(ask.as_bytes()).await.ok()?;
            let mut buf = [0u8; 64];
            let n = conn.read(&mut buf).await.ok()?;
            Some(buf[..n].starts_with(b"HTTP/1.1 200"))
        };
        if answered.await == Some(true) {
            break;
        }
        if ready.elapsed() > Duration::from_secs(60) || worker.is_finished() {
            bail!("the router at {} never became ready", args.router);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid: u32 = std::fs::read_to_string(&args.router_pid_file)
        .with_context(|| format!("read {}", args.router_pid_file.display()))?
        .trim()
        .parse()
        .context("the router's pid")?;
    let rss_idle = status_kb(pid, "VmRSS:")?;

    let gaps = Arc::new(Gaps::new());
    let measuring = Arc::new(AtomicBool::new(false));
    let open = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::with_capacity(args.streams);
    for i in 0..args.streams {
        let due = started + Duration::from_secs_f64(i as f64 / args.ramp_per_sec as f64);
        tokio::time::sleep_until(due.into()).await;
        let (gaps, measuring, open, failures) = (
            gaps.clone(),
            measuring.clone(),
            open.clone(),
            failures.clone(),
        );
        clients.push(tokio::spawn(async move {
            if let Err(e) = client(args.router, gaps, measuring, open).await
                && failures.fetch_add(1, Ordering::Relaxed) == 0
            {
                eprintln!("a stream failed: {e:#}");
            }
        }));
    }
    tokio::time::sleep(settle).await;
    let opened = open.load(Ordering::Relaxed);
    let rss_open = status_kb(pid, "VmRSS:")?;
    let cpu_before = cpu_secs(pid)?;
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(hold).await;
    measuring.store(false, Ordering::Relaxed);
    let cpu = cpu_secs(pid)? - cpu_before;
    let still_open = open.load(Ordering::Relaxed);
    let rss_peak = status_kb(pid, "VmHWM:")?;
    let report = serde_json::json!({
        "streams": args.streams,
        "opened": opened,
        "open_at_end": still_open,
        "failed": failures.load(Ordering::Relaxed),
        "cadence_ms": args.cadence_ms,
        "rss_idle_kb": rss_idle,
        "rss_open_kb": rss_open,
        "rss_peak_kb": rss_peak,
        "kb_per_stream": (rss_open.saturating_sub(rss_idle)) as f64 / opened.max(1) as f64,
        "events_measured": gaps.count(),
        "gap_p50_ms": gaps.quantile(0.50),
        "gap_p99_ms": gaps.quantile(0.99),
        "gap_max_ms": gaps.max(),
        "router_cpu_share": cpu / hold.as_secs_f64(),
    });
    println!("{report}");
    for c in clients {
        c.abort();
    }
    worker.abort();
    Ok(())
}
