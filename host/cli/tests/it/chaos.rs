//! Issue 15's chaos test: 64 clients with random deadlines that give up at
//! random points, against workers that misbehave per request (stall after
//! the headers, hang before them, reset the connection, dribble the answer
//! byte by byte, or answer at once). Afterwards nothing may be left behind:
//! every worker's in-flight count is 0, the admission queue is empty, the
//! serving threads have no more tasks than before, and the process's RSS
//! did not grow past its first round's. Every request that completed got
//! its worker's exact bytes.
//!
//! Ignored in the test step (RSS is the whole test process's, so other
//! tests would blur it): the soak step runs it alone, bounded (3 rounds of
//! 64 clients × 4 requests, each at most 2.5 s).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wasm_router::config::RouterArgs;

use crate::mock::{eventually, router};

const MODES: [&str; 5] = ["ok", "dribble", "stall", "hang", "reset"];
const CLIENTS: usize = 64;
const REQUESTS_PER_CLIENT: usize = 4;
const ROUNDS: usize = 3;

/// The exact body a worker answers request `id` with.
fn expected_body(id: u64) -> String {
    format!(
        "{{\"id\":{id},\"pad\":\"{}\"}}",
        "x".repeat((id % 300) as usize)
    )
}

/// A worker on loopback speaking raw HTTP/1.1, so that it can misbehave at
/// the byte level: the request's `mode` says how. Answers close their
/// connection, so the router's pool keeps none open (and the serving
/// threads' task count can come back to where it was).
async fn chaos_worker() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let open = Arc::new(AtomicUsize::new(0));
    let count = open.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let count = count.clone();
            tokio::spawn(async move {
                serve_one(socket).await;
                count.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (url, open)
}

/// Read one request (head and `content-length` body); `None` if the peer
/// went away first.
async fn read_request(socket: &mut TcpStream) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let mut buf = [0; 4096];
    loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if seen.len() >= end + 4 + length {
                return Some(seen[end + 4..end + 4 + length].to_vec());
            }
        }
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Wait until the peer closes the connection.
async fn until_closed(socket: &mut TcpStream) {
    let mut buf = [0; 1024];
    while let Ok(1..) = socket.read(&mut buf).await {}
}

async fn serve_one(mut socket: TcpStream) {
    let Some(body) = read_request(&mut socket).await else {
        return;
    };
    if body.is_empty() {
        // A health check (GET /health) or model question.
        let answer = "{\"model_path\":\"m\",\"data\":[{\"id\":\"m\"}]}";
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
            answer.len()
        );
        let _sent = socket.write_all(reply.as_bytes()).await;
        return;
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = request["id"].as_u64().unwrap_or(0);
    let answer = expected_body(id);
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        answer.len()
    );
    match request["mode"].as_str().unwrap_or("ok") {
        "dribble" => {
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for byte in answer.as_bytes() {
                if socket.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        "stall" => {
            let half = &answer.as_bytes()[..answer.len() / 2];
            if socket.write_all(head.as_bytes()).await.is_ok()
                && socket.write_all(half).await.is_ok()
            {
                until_closed(&mut socket).await;
            }
        }
        "hang" => until_closed(&mut socket).await,
        "reset" => {
            // Closing with unread data pending and linger 0 sends a reset.
            let _set = socket.set_zero_linger();
            drop(socket);
        }
        _ => {
            let _sent = socket.write_all(format!("{head}{answer}").as_bytes()).await;
        }
    }
}

/// What a client saw of its requests.
#[derive(Default)]
struct Tally {
    completed: usize,
    /// Completed with a body other than the worker's.
    wrong: Vec<String>,
}

/// One client: `REQUESTS_PER_CLIENT` requests, each with a random mode and
/// a random deadline at which the client gives up (drops the request, or
/// its body half read).
async fn client(base: String, seed: u64) -> Tally {
    let mut rng = fastrand::Rng::with_seed(seed);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut tally = Tally::default();
    for n in 0..REQUESTS_PER_CLIENT {
        let id = seed * 100 + n as u64;
        let mode = MODES[rng.usize(..MODES.len())];
        let deadline = Duration::from_millis(rng.u64(50..2500));
        let call = async {
            let resp = http
                .post(format!("{base}/generate"))
                .json(&json!({"text": "chaos", "id": id, "mode": mode}))
                .send()
                .await
                .ok()?;
            let status = resp.status().as_u16();
            let body = resp.text().await.ok()?;
            Some((status, body))
        };
        if let Ok(Some((200, body))) = tokio::time::timeout(deadline, call).await {
            tally.completed += 1;
            if body != expected_body(id) {
                tally.wrong.push(format!("{mode} #{id}: {body}"));
            }
        }
    }
    tally
}

fn rss_kb() -> u64 {
    crate::soak::status_kb(std::process::id(), "VmRSS:").expect("this process's RSS")
}

/// The serving threads' task count once it holds still: each thread
/// starts a task of its own as it comes up (axum's shutdown watch), which a
/// count taken right after the start may or may not include yet.
async fn settled_tasks(r: &wasm_router::server::Running) -> usize {
    let mut last = r.serving_tasks();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = r.serving_tasks();
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the serving threads' task count did not settle ({last} last)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run alone by the soak step: it reads the process's RSS"]
async fn chaos_clients_and_workers_leave_nothing_behind() {
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(chaos_worker().await);
    }
    let args = RouterArgs {
        host: Some([127, 0, 0, 1].into()),
        port: Some(0),
        prometheus_port: Some(0),
        worker_urls: workers.iter().map(|(url, _)| url.clone()).collect(),
        policy: Some("round_robin".into()),
        retry_max_retries: Some(1),
        retry_initial_backoff_ms: Some(1),
        retry_jitter_factor: Some(0.0),
        request_timeout_secs: Some(3),
        stream_idle_timeout_secs: Some(1),
        max_concurrent_requests: Some(32),
        queue_size: Some(64),
        // A reset or hung worker must not drop out for good: each fails
        // only the requests that ask it to.
        disable_circuit_breaker: true,
        disable_health_check: true,
        policy_call_deadline_ms: Some(5000),
        ..RouterArgs::default()
    };
    let r = router(args).await;
    let base = format!("http://{}", r.addr);
    let baseline_tasks = settled_tasks(&r).await;
    let mut rss_after_first = 0;
    let mut completed = 0;
    for round in 0..ROUNDS {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| tokio::spawn(client(base.clone(), (round * CLIENTS + c) as u64)))
            .collect();
        for c in clients {
            let tally = c.await.unwrap();
            assert!(tally.wrong.is_empty(), "{:?}", tally.wrong);
            completed += tally.completed;
        }
        if round == 0 {
            rss_after_first = rss_kb();
        }
    }
    assert!(completed > 0, "some requests (answered at once) completed");
    eventually("every worker's in-flight count is 0", async || {
        r.state.registry.all().iter().all(|w| w.load() == 0)
    })
    .await;
    assert_eq!(r.state.queued(), 0, "the admission queue is empty");
    eventually("the serving threads' tasks are back to none", async || {
        r.serving_tasks() <= baseline_tasks
    })
    .await;
    eventually("the workers' connections are closed", async || {
        workers
            .iter()
            .all(|(_, open)| open.load(Ordering::SeqCst) == 0)
    })
    .await;
    let rss_end = rss_kb();
    assert!(
        rss_end <= rss_after_first + (rss_after_first / 4).max(32 * 1024),
        "RSS grew from {rss_after_first} kB after the first round to {rss_end} kB"
    );
    println!(
        "chaos: {completed} of {} requests completed; serving tasks {baseline_tasks} before, {} after; RSS {rss_after_first} kB after round 1, {rss_end} kB at the end",
        ROUNDS * CLIENTS * REQUESTS_PER_CLIENT,
        r.serving_tasks()
    );
    r.shutdown().await.unwrap();
}
