//! The data plane end to end: a real router over loopback in front of mock
//! workers. One test per behaviour; waits are bounded polls, never sleeps
//! that a slow machine could outrun.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use crate::fixtures::picker;
use crate::mock::{
    MockWorker, args, eventually, generate, get_json, get_text, http, post_json, router,
};

fn assert_openai_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["error"]["type"].is_string(), "{body}");
}

#[tokio::test]
async fn requests_reach_the_policys_pick() {
    let ws = [
        MockWorker::start("a", "m").await,
        MockWorker::start("b", "m").await,
        MockWorker::start("c", "m").await,
    ];
    let r = router(args(&ws.iter().collect::<Vec<_>>())).await;
    let mut seen = Vec::new();
    for i in 0..6 {
        seen.push(generate(&r, &format!("prompt {i}")).await.unwrap());
    }
    // round_robin: each worker in turn, in a fixed cycle.
    assert_eq!(seen[..3], seen[3..]);
    let mut cycle = seen[..3].to_vec();
    cycle.sort();
    assert_eq!(cycle, vec!["a", "b", "c"]);
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn cache_aware_keeps_a_prefix_on_one_worker() {
    let ws = [
        MockWorker::start("a", "m").await,
        MockWorker::start("b", "m").await,
    ];
    let mut a = args(&ws.iter().collect::<Vec<_>>());
    a.policy = Some("cache_aware".into());
    let r = router(a).await;
    let system = "You are a helpful assistant. Please answer the following question carefully: ";
    let first = generate(&r, &format!("{system}one")).await.unwrap();
    for q in ["two", "three", "four"] {
        assert_eq!(generate(&r, &format!("{system}{q}")).await.unwrap(), first);
    }
    let other = generate(&r, "Completely different prompt with nothing in common")
        .await
        .unwrap();
    assert_ne!(other, first);
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn streaming_chunks_reach_the_client_before_the_worker_finishes() {
    let w = MockWorker::start("a", "m").await;
    let r = router(args(&[&w])).await;
    let mut resp = http()
        .post(format!("http://{}/v1/chat/completions", r.addr))
        .json(&json!({"stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    // The worker holds its second chunk until we have read the first.
    let first = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"part\": 1"));
    w.release(1);
    let mut rest = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    let rest = String::from_utf8(rest).unwrap();
    assert!(
        rest.contains("\"part\": 2") && rest.ends_with("data: [DONE]\n\n"),
        "{rest}"
    );
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_failing_worker_is_retried_on_a_healthy_one() {
    let bad = MockWorker::start("bad", "m").await;
    let good = MockWorker::start("good", "m").await;
    bad.b.status.store(503, Ordering::SeqCst);
    let r = router(args(&[&bad, &good])).await;
    for i in 0..4 {
        assert_eq!(generate(&r, &format!("p{i}")).await.unwrap(), "good");
    }
    assert!(
        bad.hits() >= 1,
        "round robin sent some to the bad worker first"
    );
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_retries_disabled_the_workers_error_is_returned() {
    let bad = MockWorker::start("bad", "m").await;
    bad.b.status.store(500, Ordering::SeqCst);
    let mut a = args(&[&bad]);
    a.disable_retries = true;
    let r = router(a).await;
    let (status, _) = generate(&r, "x").await.unwrap_err();
    assert_eq!(status, 500);
    assert_eq!(bad.hits(), 1);
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_worker_is_skipped() {
    let good = MockWorker::start("good", "m").await;
    let dead = MockWorker::start("dead", "m").await;
    let mut a = args(&[&good, &dead]);
    a.disable_health_check = true;
    let r = router(a).await;
    // Point the registry at a port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let dead_id = r.state.registry.by_url(&dead.url).unwrap().id;
    r.state.registry.remove(dead_id);
    r.state.registry.add(&closed).unwrap();
    for i in 0..4 {
        assert_eq!(generate(&r, &format!("p{i}")).await.unwrap(), "good");
    }
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_circuit_breaker_opens_and_recovers() {
    let flaky = MockWorker::start("flaky", "m").await;
    let good = MockWorker::start("good", "m").await;
    let mut a = args(&[&flaky, &good]);
    a.cb_failure_threshold = Some(2);
    a.cb_success_threshold = Some(1);
    a.cb_timeout_duration_secs = Some(1);
    a.disable_health_check = true;
    let r = router(a).await;
    flaky.b.status.store(500, Ordering::SeqCst);
    for i in 0..10 {
        assert_eq!(generate(&r, &format!("p{i}")).await.unwrap(), "good");
    }
    assert_eq!(flaky.hits(), 2, "the breaker opened after two failures");
    let id = r.state.registry.by_url(&flaky.url).unwrap().id;
    let state = async || {
        let v: Value = get_json(&format!("http://{}/workers/{id}", r.addr)).await;
        v["circuit_breaker"].as_str().unwrap().to_string()
    };
    assert_eq!(state().await, "open");
    flaky.b.status.store(0, Ordering::SeqCst);
    // After the open period a trial goes through and closes it.
    eventually("flaky serves again", async || {
        generate(&r, "trial").await.unwrap() == "flaky"
    })
    .await;
    assert_eq!(state().await, "closed");
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_checks_remove_and_restore_a_worker() {
    let a_ = MockWorker::start("a", "m").await;
    let b_ = MockWorker::start("b", "m").await;
    let r = router(args(&[&a_, &b_])).await;
    a_.b.unhealthy.store(true, Ordering::SeqCst);
    let registry = r.state.registry.clone();
    eventually("a is unhealthy", async || {
        !registry.by_url(&a_.url).unwrap().is_healthy()
    })
    .await;
    let before = a_.hits();
    for i in 0..4 {
        assert_eq!(generate(&r, &format!("p{i}")).await.unwrap(), "b");
    }
    assert_eq!(a_.hits(), before);
    a_.b.unhealthy.store(false, Ordering::SeqCst);
    eventually("a is healthy", async || {
        registry.by_url(&a_.url).unwrap().is_healthy()
    })
    .await;
    let mut seen = Vec::new();
    for i in 0..4 {
        seen.push(generate(&r, &format!("q{i}")).await.unwrap());
    }
    assert!(seen.contains(&"a".to_string()), "{seen:?}");
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_full_queue_is_429_and_a_long_wait_is_408() {
    let w = MockWorker::start("a", "m").await;
    w.b.hold.store(true, Ordering::SeqCst);
    let mut a = args(&[&w]);
    a.max_concurrent_requests = Some(1);
    a.queue_size = Some(1);
    a.queue_timeout_secs = Some(1);
    let r = std::sync::Arc::new(router(a).await);
    let holder = tokio::spawn({
        let r = r.clone();
        async move { generate(&r, "first").await }
    });
    eventually("the first request reached the worker", async || {
        w.hits() == 1
    })
    .await;
    let waiter = tokio::spawn({
        let r = r.clone();
        async move { post_json(&r, "/generate", json!({"text": "second"})).await }
    });
    eventually("the second request waits in the queue", async || {
        r.state.queued() == 1
    })
    .await;
    // The waiter occupies the only queue place; a third is turned away.
    let (status, body) = post_json(&r, "/generate", json!({"text": "third"})).await;
    assert_eq!(status, 429);
    assert_openai_error(&body, "queue_full");
    let (status, body) = waiter.await.unwrap();
    assert_eq!(status, 408);
    assert_openai_error(&body, "queue_timeout");
    w.release(1);
    assert_eq!(holder.await.unwrap().unwrap(), "a");
}

/// Issue 16: with `--rate-limit-tokens-per-second`, the limit is
/// sglang-router's refilled bucket: a second request gets in while the
/// first still runs, once a token was added.
#[tokio::test]
async fn a_refilled_token_admits_a_request_past_max_concurrent() {
    let w = MockWorker::start("a", "m").await;
    w.b.hold.store(true, Ordering::SeqCst);
    let mut a = args(&[&w]);
    a.max_concurrent_requests = Some(1);
    a.queue_size = Some(0);
    a.rate_limit_tokens_per_second = Some(1);
    let r = std::sync::Arc::new(router(a).await);
    let held = |text: &'static str| {
        let r = r.clone();
        tokio::spawn(async move { generate(&r, text).await })
    };
    let first = held("first");
    eventually("the first request runs", async || w.hits() == 1).await;
    let (status, _) = post_json(&r, "/generate", json!({"text": "refused"})).await;
    assert_eq!(status, 429, "the bucket is empty");
    // One token a second: the 429 above came well before it.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let second = held("second");
    eventually("the second runs beside the first", async || w.hits() == 2).await;
    w.release(2);
    assert_eq!(first.await.unwrap().unwrap(), "a");
    assert_eq!(second.await.unwrap().unwrap(), "a");
}

#[tokio::test]
async fn an_oversized_body_is_413() {
    let w = MockWorker::start("a", "m").await;
    let mut a = args(&[&w]);
    a.max_payload_size = Some(100);
    let r = router(a).await;
    let (status, body) = post_json(&r, "/generate", json!({"text": "x".repeat(200)})).await;
    assert_eq!(status, 413, "{body}");
    assert_openai_error(&body, "payload_too_large");
    assert_eq!(w.hits(), 0);
    assert!(generate(&r, "small").await.is_ok());
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_worker_that_does_not_answer_in_time_is_504() {
    let w = MockWorker::start("a", "m").await;
    w.b.hold.store(true, Ordering::SeqCst);
    let mut a = args(&[&w]);
    a.request_timeout_secs = Some(1);
    let r = router(a).await;
    let (status, body) = post_json(&r, "/generate", json!({"text": "slow"})).await;
    assert_eq!(status, 504);
    assert_openai_error(&body, "upstream_timeout");
    w.release(1);
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_an_attempt_timeout_a_hung_worker_is_retried_elsewhere() {
    let hung = MockWorker::start("hung", "m").await;
    let ok = MockWorker::start("ok", "m").await;
    hung.b.hold.store(true, Ordering::SeqCst);
    let mut a = args(&[&hung, &ok]);
    a.policy = Some(picker("first").display().to_string());
    a.attempt_timeout_secs = Some(1);
    let r = router(a).await;
    // The first worker (smallest id) hangs; the request moves on.
    assert_eq!(generate(&r, "q").await.unwrap(), "ok");
    assert_eq!(hung.hits(), 1);
    hung.release(1);
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_api_key_is_required_when_set() {
    let w = MockWorker::start("a", "m").await;
    let mut a = args(&[&w]);
    a.api_key = Some("s3cret".into());
    let r = router(a).await;
    let url = format!("http://{}/generate", r.addr);
    let resp = http()
        .post(&url)
        .json(&json!({"text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_openai_error(&resp.json().await.unwrap(), "invalid_api_key");
    let wrong = http()
        .post(&url)
        .bearer_auth("s3cres")
        .json(&json!({"text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = http()
        .post(&url)
        .bearer_auth("s3cret")
        .json(&json!({"text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // The client's authorization goes on to the worker.
    let (headers, _) = w.b.last.lock().unwrap().clone().unwrap();
    assert_eq!(headers["authorization"], "Bearer s3cret");
    assert_eq!(
        http()
            .get(format!("http://{}/health", r.addr))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    r.shutdown().await.unwrap();
}

/// Issue 16: `--cors-allowed-origins`, answered as sglang-router 0.3.2
/// answers (seen by running it): any origin without the flag, the listed
/// ones with it.
#[tokio::test]
async fn cors_answers_as_sglang_router_does() {
    let w = MockWorker::start("a", "m").await;
    let preflight = async |r: &wasm_router::server::Running, origin: &str| {
        http()
            .request(
                reqwest::Method::OPTIONS,
                format!("http://{}/v1/chat/completions", r.addr),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
            .await
            .unwrap()
    };
    let open = router(args(&[&w])).await;
    let answer = preflight(&open, "http://a.example").await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["access-control-allow-origin"], "*");
    // Not the admin routes, which a page in a local browser would reach
    // as a loopback client.
    let admin = http()
        .request(
            reqwest::Method::OPTIONS,
            format!("http://{}/workers", open.addr),
        )
        .header("origin", "http://a.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(admin.headers().get("access-control-allow-origin").is_none());
    open.shutdown().await.unwrap();
    let mut a = args(&[&w]);
    a.cors_allowed_origins = vec!["http://a.example".into()];
    let listed = router(a).await;
    let answer = preflight(&listed, "http://a.example").await;
    assert_eq!(
        answer.headers()["access-control-allow-origin"],
        "http://a.example"
    );
    assert_eq!(answer.headers()["access-control-max-age"], "3600");
    let other = preflight(&listed, "http://b.example").await;
    assert!(other.headers().get("access-control-allow-origin").is_none());
    listed.shutdown().await.unwrap();
}

#[tokio::test]
async fn request_ids_are_echoed_and_forwarded() {
    let w = MockWorker::start("a", "m").await;
    let r = router(args(&[&w])).await;
    let url = format!("http://{}/generate", r.addr);
    let resp = http()
        .post(&url)
        .header("x-correlation-id", "corr-42")
        .header("traceparent", "00-abc-def-01")
        .json(&json!({"text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "corr-42");
    let (headers, _) = w.b.last.lock().unwrap().clone().unwrap();
    assert_eq!(headers["x-request-id"], "corr-42");
    assert_eq!(headers["traceparent"], "00-abc-def-01");
    // Without one, the router makes one up and still echoes it.
    let resp = http()
        .post(&url)
        .json(&json!({"text": "x"}))
        .send()
        .await
        .unwrap();
    let generated = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 32);
    let (headers, _) = w.b.last.lock().unwrap().clone().unwrap();
    assert_eq!(headers["x-request-id"], generated.as_str());
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_body_is_forwarded_unchanged() {
    let w = MockWorker::start("a", "m").await;
    let r = router(args(&[&w])).await;
    let raw = r#"{"text":  "spacing and  order kept", "sampling_params": {"max_new_tokens": 8}, "z": 1, "a": 2}"#;
    http()
        .post(format!("http://{}/generate", r.addr))
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    let (_, body) = w.b.last.lock().unwrap().clone().unwrap();
    assert_eq!(body, raw.as_bytes());
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn workers_are_added_and_removed_at_runtime() {
    let a_ = MockWorker::start("a", "m").await;
    let b_ = MockWorker::start("b", "m").await;
    let r = router(args(&[&a_])).await;
    let base = format!("http://{}", r.addr);
    let resp = http()
        .post(format!("{base}/workers"))
        .json(&json!({"url": b_.url}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let added: Value = resp.json().await.unwrap();
    // Ids are strings, as sglang-router 0.3.2 gives them (issue 32: a
    // client testing `if worker_id:` refused a numeric 0).
    let id = added["id"].as_str().unwrap().to_string();
    assert!(!id.is_empty());
    // sglang-router 0.3.2's names, beside ours (issue 16).
    assert_eq!(added["worker_id"], id.as_str());
    assert_eq!(added["status"], "accepted");
    let worker_id = added["worker_id"].as_str().unwrap();
    eventually("b is healthy", async || {
        let v: Value = get_json(&format!("{base}/workers/{worker_id}")).await;
        v["healthy"] == true && v["model"] == "m" && v["is_healthy"] == true && v["model_id"] == "m"
    })
    .await;
    let listed = get_json(&format!("{base}/workers")).await;
    assert_eq!(listed["total"], 2);
    assert_eq!(listed["stats"]["regular_count"], 2);
    assert_eq!(listed["workers"][0]["worker_type"], "regular");
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..4 {
        seen.insert(generate(&r, &format!("p{i}")).await.unwrap());
    }
    assert_eq!(seen.len(), 2);
    let dup = http()
        .post(format!("{base}/workers"))
        .json(&json!({"url": b_.url}))
        .send()
        .await
        .unwrap();
    assert_eq!(dup.status(), 409);
    let bad = http()
        .post(format!("{base}/workers"))
        .json(&json!({"url": "ftp://x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    // 202 Accepted, as sglang-router answers a removal.
    assert_eq!(
        http()
            .delete(format!("{base}/workers/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
    assert_eq!(
        http()
            .get(format!("{base}/workers/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    for i in 0..3 {
        assert_eq!(generate(&r, &format!("q{i}")).await.unwrap(), "a");
    }
    // The older routes.
    let legacy = http()
        .post(format!("{base}/add_worker?url={}", b_.url))
        .send()
        .await
        .unwrap();
    assert_eq!(legacy.status(), 200);
    let list: Value = get_json(&format!("{base}/list_workers")).await;
    assert_eq!(list["urls"].as_array().unwrap().len(), 2);
    let removed = http()
        .post(format!("{base}/remove_worker?url={}", b_.url))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 200);
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_model_picks_the_worker_pool() {
    let l1 = MockWorker::start("llama-1", "llama").await;
    let l2 = MockWorker::start("llama-2", "llama").await;
    let q = MockWorker::start("qwen-1", "qwen").await;
    let r = router(args(&[&l1, &l2, &q])).await;
    for _ in 0..3 {
        let (status, body) = post_json(
            &r,
            "/v1/completions",
            json!({"model": "qwen", "prompt": "x"}),
        )
        .await;
        assert_eq!((status, body["worker"].as_str()), (200, Some("qwen-1")));
        let (_, body) = post_json(
            &r,
            "/v1/completions",
            json!({"model": "llama", "prompt": "x"}),
        )
        .await;
        assert!(body["worker"].as_str().unwrap().starts_with("llama"));
    }
    let (status, body) = post_json(
        &r,
        "/v1/completions",
        json!({"model": "mistral", "prompt": "x"}),
    )
    .await;
    assert_eq!(status, 404);
    assert_openai_error(&body, "model_not_found");
    r.shutdown().await.unwrap();
}

/// Issue 15: `/v1/models` answered from one worker, so a multi-model
/// fleet listed one model.
#[tokio::test]
async fn v1_models_lists_every_model_of_the_fleet_once() {
    let l1 = MockWorker::start("llama-1", "llama").await;
    let l2 = MockWorker::start("llama-2", "llama").await;
    let q = MockWorker::start("qwen-1", "qwen").await;
    let r = router(args(&[&l1, &l2, &q])).await;
    let models = get_json(&format!("http://{}/v1/models", r.addr)).await;
    assert_eq!(models["object"], "list");
    let mut ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["llama", "qwen"], "{models}");
    r.shutdown().await.unwrap();
}

/// Issue 15: model discovery ran once, so a worker still loading its model
/// when registered kept model "" and, in a multi-model fleet, was never a
/// candidate. `router` waits until every worker's model is known.
#[tokio::test]
async fn a_worker_that_cannot_say_its_model_yet_is_asked_again() {
    let l = MockWorker::start("llama-1", "llama").await;
    let q = MockWorker::start("qwen-1", "qwen").await;
    // Both questions of the first discovery fail.
    q.b.model_fails.store(2, Ordering::SeqCst);
    let mut a = args(&[&l, &q]);
    // Without health checks, whose recovery also asks again.
    a.disable_health_check = true;
    let r = router(a).await;
    let (status, body) = post_json(
        &r,
        "/v1/completions",
        json!({"model": "qwen", "prompt": "x"}),
    )
    .await;
    assert_eq!((status, body["worker"].as_str()), (200, Some("qwen-1")));
    r.shutdown().await.unwrap();
}

/// Issue 16: sglang-router's worker start-up waiting. A worker that does
/// not pass a health check within --worker-startup-timeout-secs of its
/// registration is removed; one that passes in time stays.
#[tokio::test]
async fn a_worker_that_never_comes_up_is_removed_after_the_startup_timeout() {
    let late = MockWorker::start("late", "m").await;
    late.b.unhealthy.store(true, Ordering::SeqCst);
    let mut a = args(&[&late]);
    a.worker_urls.push("http://127.0.0.1:1".into());
    a.worker_startup_timeout_secs = Some(3);
    a.worker_startup_check_interval = Some(1);
    // Periodic checks only after the start-up window: the start-up checks
    // are what is tested.
    a.health_check_interval_secs = Some(60);
    let mut config = wasm_router::config::Config::load(&a).unwrap();
    config.policy_cache_dir =
        Some(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("policy-cache"));
    let r = wasm_router::server::start(config).await.unwrap();
    assert_eq!(r.state.registry.all().len(), 2);
    late.b.unhealthy.store(false, Ordering::SeqCst);
    eventually("the late worker comes up", async || {
        r.state
            .registry
            .all()
            .iter()
            .any(|w| w.url == late.url && w.is_healthy())
    })
    .await;
    eventually("the dead worker is removed", async || {
        r.state.registry.all().len() == 1
    })
    .await;
    assert_eq!(r.state.registry.all()[0].url, late.url);
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_bodies_are_400_and_the_router_keeps_serving() {
    let w = MockWorker::start("a", "m").await;
    let r = router(args(&[&w])).await;
    let url = format!("http://{}/v1/chat/completions", r.addr);
    for body in [
        "",
        "{",
        "[]",
        "null",
        "\u{0}\u{1}binary",
        "{\"messages\": [{\"content\": }]}",
    ] {
        let resp = http().post(&url).body(body).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{body:?}");
        assert_openai_error(&resp.json().await.unwrap(), "invalid_request");
    }
    assert_eq!(w.hits(), 0);
    let (status, _) = post_json(
        &r,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let resp = http()
        .get(format!("http://{}/no/such/route", r.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_openai_error(&resp.json().await.unwrap(), "not_found");
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn local_and_fan_out_routes() {
    let a_ = MockWorker::start("a", "m").await;
    let b_ = MockWorker::start("b", "m").await;
    let r = router(args(&[&a_, &b_])).await;
    let base = format!("http://{}", r.addr);
    for path in ["/health", "/liveness", "/readiness"] {
        assert_eq!(
            http()
                .get(format!("{base}{path}"))
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "{path}"
        );
    }
    let info: Value = get_json(&format!("{base}/get_model_info")).await;
    assert_eq!(info["model_path"], "m");
    let models: Value = get_json(&format!("{base}/v1/models")).await;
    assert_eq!(models["data"][0]["id"], "m");
    let flushed = http()
        .post(format!("{base}/flush_cache"))
        .send()
        .await
        .unwrap();
    assert_eq!(flushed.status(), 200);
    let loads: Value = get_json(&format!("{base}/get_loads")).await;
    assert_eq!(loads["workers"].as_array().unwrap().len(), 2);
    assert_eq!(loads["workers"][0]["worker_load"]["load"], 0);
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn readiness_is_503_until_a_worker_is_healthy() {
    let w = MockWorker::start("a", "m").await;
    w.b.unhealthy.store(true, Ordering::SeqCst);
    let mut config = wasm_router::config::Config::load(&args(&[&w])).unwrap();
    config.policy_cache_dir =
        Some(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("policy-cache"));
    let r = wasm_router::server::start(config).await.unwrap();
    let url = format!("http://{}/readiness", r.addr);
    assert_eq!(http().get(&url).send().await.unwrap().status(), 503);
    let (status, body) = post_json(&r, "/generate", json!({"text": "x"})).await;
    assert_eq!(status, 503);
    assert_openai_error(&body, "no_healthy_worker");
    w.b.unhealthy.store(false, Ordering::SeqCst);
    eventually("ready", async || {
        http().get(&url).send().await.unwrap().status() == 200
    })
    .await;
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let w = MockWorker::start("a", "m").await;
    w.b.hold.store(true, Ordering::SeqCst);
    let r = router(args(&[&w])).await;
    let addr = r.addr;
    let in_flight = tokio::spawn(async move {
        http()
            .post(format!("http://{addr}/generate"))
            .json(&json!({"text": "x"}))
            .send()
            .await
    });
    eventually("the request reached the worker", async || w.hits() == 1).await;
    let stopping = tokio::spawn(r.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!stopping.is_finished(), "shutdown waits for the request");
    w.release(1);
    let resp = in_flight.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    stopping.await.unwrap().unwrap();
    // New connections are refused once it stopped.
    assert!(
        http()
            .post(format!("http://{addr}/generate"))
            .json(&json!({"text": "x"}))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn metrics_are_served_in_prometheus_text() {
    let w = MockWorker::start("a", "m").await;
    let r = router(args(&[&w])).await;
    generate(&r, "x").await.unwrap();
    let text = get_text(&format!("http://{}/metrics", r.metrics_addr)).await;
    for name in [
        "wasm_router_requests_total",
        "wasm_router_policy_decision_seconds",
        "wasm_router_time_to_first_byte_seconds",
    ] {
        assert!(text.contains(name), "{name} missing in:\n{text}");
    }
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn admin_routes_need_the_admin_key_and_inference_does_not() {
    let w = MockWorker::start("a", "m").await;
    let spare = MockWorker::start("b", "m").await;
    let mut a = args(&[&w]);
    a.admin_api_keys = vec!["admin-1".into(), "admin-2".into()];
    let r = router(a).await;
    let base = format!("http://{}", r.addr);
    let add = |key: Option<&'static str>| {
        let mut req = http()
            .post(format!("{base}/workers"))
            .json(&json!({"url": spare.url}));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        req.send()
    };
    let denied = add(None).await.unwrap();
    assert_eq!(denied.status(), 401);
    assert_openai_error(&denied.json().await.unwrap(), "invalid_api_key");
    assert_eq!(add(Some("admin-3")).await.unwrap().status(), 401);
    assert_eq!(add(Some("admin-2")).await.unwrap().status(), 202);
    for path in ["/policies", "/list_workers", "/workers"] {
        assert_eq!(
            http()
                .get(format!("{base}{path}"))
                .send()
                .await
                .unwrap()
                .status(),
            401,
            "{path}"
        );
        let ok = http()
            .get(format!("{base}{path}"))
            .bearer_auth("admin-1")
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200, "{path}");
    }
    assert!(generate(&r, "inference needs no admin key").await.is_ok());
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_an_admin_key_loopback_clients_may_administer() {
    let w = MockWorker::start("a", "m").await;
    let mut a = args(&[&w]);
    a.api_key = Some("inference-key".into());
    let r = router(a).await;
    // The inference key is not the admin boundary: loopback passes without it.
    let resp = http()
        .get(format!("http://{}/workers", r.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    r.shutdown().await.unwrap();
}

/// Issue 15: the informational routes sent the worker no client header at
/// all, so a worker behind its own API key refused them.
#[tokio::test]
async fn informational_routes_carry_the_clients_authorization() {
    let w = MockWorker::start("a", "m").await;
    let r = router(args(&[&w])).await;
    let info: Value = http()
        .get(format!("http://{}/get_server_info", r.addr))
        .header("authorization", "Bearer secret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["worker"], "a");
    assert_eq!(info["authorization"], "Bearer secret");
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_workers_moving_averages_follow_its_successful_responses_only() {
    let w = MockWorker::start("w", "m").await;
    let r = router(args(&[&w])).await;
    let worker = r.state.registry.by_url(&w.url).unwrap();
    assert_eq!((worker.ttft_ewma(), worker.latency_ewma()), (None, None));
    w.b.status.store(500, Ordering::SeqCst);
    assert!(generate(&r, "fails").await.is_err());
    assert_eq!(worker.latency_ewma(), None, "a 500 is not a response time");
    w.b.status.store(0, Ordering::SeqCst);
    generate(&r, "succeeds").await.unwrap();
    eventually("the response is folded in", async || {
        worker.latency_ewma().is_some()
    })
    .await;
    let (ttft, latency) = (worker.ttft_ewma().unwrap(), worker.latency_ewma().unwrap());
    assert!(
        ttft <= latency,
        "first byte {ttft:?} after the end {latency:?}"
    );
    r.shutdown().await.unwrap();
}
