//! A client that stops reading a fast stream: the router buffers a bounded
//! amount for it and the worker is held back (TCP backpressure), and when
//! the client reads again every byte arrives. Beside it, a client that reads
//! all along, through the same router.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use axum::routing::post;
use futures_util::StreamExt;

use crate::mock::{eventually, http, serve_worker};
use crate::soak::{Proc, free_port, status_kb};

/// One SSE event of 64 KiB.
const CHUNK: usize = 64 << 10;
/// The stream: 4,096 events, 256 MiB.
const CHUNKS: u64 = 4096;
const TOTAL: u64 = CHUNKS * CHUNK as u64;

/// A worker that streams [`CHUNKS`] events as fast as it is read, and
/// counts the bytes its server has taken from the stream so far.
async fn fast_streaming_worker() -> (String, Arc<AtomicU64>) {
    let taken = Arc::new(AtomicU64::new(0));
    let mut event = b"data: ".to_vec();
    event.resize(CHUNK - 2, b'x');
    event.extend_from_slice(b"\n\n");
    let event = Bytes::from(event);
    let counter = taken.clone();
    let url = serve_worker(axum::Router::new().route(
        "/generate",
        post(move || {
            let (event, counter) = (event.clone(), counter.clone());
            async move {
                let body = futures_util::stream::iter(0..CHUNKS).map(move |_| {
                    counter.fetch_add(CHUNK as u64, Ordering::Relaxed);
                    Ok::<_, std::io::Error>(event.clone())
                });
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(Body::from_stream(body))
                    .unwrap()
            }
        }),
    ))
    .await;
    (url, taken)
}

/// The router's peak RSS so far, in KiB.
fn peak_kb(pid: u32) -> u64 {
    status_kb(pid, "VmHWM:").expect("the router's peak RSS")
}

/// Read the stream to its end: its bytes.
async fn read_rest(
    stream: &mut (impl futures_util::Stream<Item = reqwest::Result<Bytes>> + Unpin),
) -> u64 {
    let mut n = 0;
    while let Some(chunk) = stream.next().await {
        n += chunk.expect("the stream breaks off").len() as u64;
    }
    n
}

/// Most the router's peak RSS may grow by, from before the streams: a
/// stream passes through hyper's buffers of some 400 KiB per connection,
/// and the allocator keeps some of what they freed (a debug build's peak
/// grew by 12 MiB after the first stream, 22 MiB after the second here;
/// buffering what the client does not read would take most of the 256).
const BOUND_KB: u64 = 48 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_back_the_worker_not_router_memory() {
    let (worker, taken) = fast_streaming_worker().await;
    let port = free_port();
    let router = Proc(
        Command::new(env!("CARGO_BIN_EXE_router"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--prometheus-port", &free_port().to_string()])
            .args(["--policy", "round_robin", "--worker-urls", &worker])
            .args(["--log-level", "warn"])
            .env(
                "XDG_CACHE_HOME",
                concat!(env!("CARGO_TARGET_TMPDIR"), "/streams-cache"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the router"),
    );
    let pid = router.0.id();
    let url = format!("http://127.0.0.1:{port}/generate");
    let body = serde_json::json!({"text": "hi", "stream": true});
    let open = async || {
        let resp = http().post(&url).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes_stream()
    };
    eventually("the router serves", async || {
        http()
            .get(format!("http://127.0.0.1:{port}/readiness"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;

    let base = peak_kb(pid);

    // Reading all along: the whole stream, through bounded memory.
    let mut reading = open().await;
    assert_eq!(read_rest(&mut reading).await, TOTAL, "the reading client");
    let peak = peak_kb(pid);
    assert!(
        peak < base + BOUND_KB,
        "the router's peak RSS grew from {base} KiB to {peak} KiB passing a {TOTAL}-byte stream on"
    );

    // Stopped after its first chunk, for 5 s.
    taken.store(0, Ordering::Relaxed);
    let mut stopped = open().await;
    let first = stopped.next().await.unwrap().unwrap().len() as u64;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let held_back = taken.load(Ordering::Relaxed);
    let stalled_peak = peak_kb(pid);
    assert!(
        held_back < TOTAL / 2,
        "the worker streamed {held_back} of {TOTAL} bytes to a client that reads none: no backpressure"
    );
    assert!(
        stalled_peak < base + BOUND_KB,
        "the router's peak RSS grew from {base} KiB to {stalled_peak} KiB while its client did not read \
         ({held_back} bytes taken from the worker)"
    );
    assert_eq!(
        first + read_rest(&mut stopped).await,
        TOTAL,
        "after the pause, every byte arrives"
    );
}
