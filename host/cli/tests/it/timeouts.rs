//! Issue 15's time bounds, end to end: a stalled stream is cut off with an
//! SSE error event and gives back its slot and its worker's count; a slow
//! upload is read only once admitted, and not for ever.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::mock::{MockWorker, args, generate, http, post_json, router};

#[tokio::test]
async fn a_stalled_stream_ends_with_an_sse_error_event_and_frees_its_slot() {
    let w = MockWorker::start("a", "m").await;
    let mut a = args(&[&w]);
    a.stream_idle_timeout_secs = Some(1);
    a.max_concurrent_requests = Some(1);
    a.queue_size = Some(0);
    let r = router(a).await;
    // The mock sends its first event, then holds the rest until released:
    // never, here.
    let mut resp = http()
        .post(format!("http://{}/generate", r.addr))
        .json(&json!({"text": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = Vec::new();
    let read_all = async {
        while let Some(chunk) = resp.chunk().await.unwrap() {
            body.extend_from_slice(&chunk);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read_all)
        .await
        .expect("the router ends the stalled stream");
    let body = String::from_utf8(body).unwrap();
    let events: Vec<&str> = body.split_terminator("\n\n").collect();
    assert!(events[0].contains("\"part\": 1"), "{body}");
    let last: Value = serde_json::from_str(events.last().unwrap().strip_prefix("data: ").unwrap())
        .expect("the last event is JSON a client can parse");
    assert_eq!(last["error"]["code"], "upstream_idle_timeout", "{body}");
    for worker in r.state.registry.all().iter() {
        assert_eq!(worker.load(), 0, "the worker's in-flight count is back");
    }
    // The only slot is free again: the next request is served, not 429.
    w.b.hold.store(false, Ordering::SeqCst);
    assert_eq!(generate(&r, "next").await.unwrap(), "a");
    w.release(1);
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_slow_upload_is_read_only_once_admitted_and_not_for_ever() {
    let w = MockWorker::start("a", "m").await;
    let mut a = args(&[&w]);
    a.stream_idle_timeout_secs = Some(3);
    a.max_concurrent_requests = Some(1);
    a.queue_size = Some(0);
    let r = router(a).await;
    let mut upload = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    let head = "POST /generate HTTP/1.1\r\nhost: router\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"text\": ";
    upload.write_all(head.as_bytes()).await.unwrap();
    // While its body trickles in, the upload holds the only slot: the
    // router reads bodies after admission, so at most
    // --max-concurrent-requests of them are held.
    crate::mock::eventually("the slow upload holds the only slot", async || {
        r.state.free_slots() == Some(0)
    })
    .await;
    let (status, _) = post_json(&r, "/generate", json!({"text": "other"})).await;
    assert_eq!(status, 429, "no slot, no queue");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), upload.read_to_end(&mut answer))
        .await
        .expect("the router gives up on the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_body_timeout"), "{answer}");
    assert_eq!(generate(&r, "after").await.unwrap(), "a");
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stream_past_the_request_timeout_is_cut_off() {
    let w = MockWorker::start("a", "m").await;
    let mut a = args(&[&w]);
    a.request_timeout_secs = Some(2);
    let r = router(a).await;
    let resp = http()
        .post(format!("http://{}/v1/chat/completions", r.addr))
        .json(&json!({"stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let body = tokio::time::timeout(Duration::from_secs(30), resp.text())
        .await
        .expect("the request's deadline ends the stream")
        .unwrap();
    let last = body.split_terminator("\n\n").last().unwrap();
    let last: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_timeout", "{body}");
    w.release(1);
    r.shutdown().await.unwrap();
}
