//! Every built-in policy, selected by name, routes real requests; the
//! key-based ones keep a key on its worker.

use wasm_router::policy::builtin;

use crate::mock::{MockWorker, args, eventually, generate, router, worker_for_key};

#[tokio::test]
async fn every_builtin_routes_requests_by_name() {
    let ws = [
        MockWorker::start("a", "m").await,
        MockWorker::start("b", "m").await,
    ];
    for name in builtin::names() {
        let mut a = args(&ws.iter().collect::<Vec<_>>());
        a.policy = Some(name.to_string());
        if name == "precise_cache_aware" {
            // It matches KV pages: the router must follow events and
            // tokenize (the mock workers publish none: it routes on what
            // it sent).
            a.kv_events = true;
            a.tokenizer_path = Some(
                crate::fixtures::workspace()
                    .join("host/cli/assets/tokenizer/tokenizer.json")
                    .display()
                    .to_string(),
            );
        }
        let r = router(a).await;
        for i in 0..8 {
            let worker = generate(&r, &format!("{name} {i}")).await;
            assert!(
                matches!(worker.as_deref(), Ok("a" | "b")),
                "{name}: {worker:?}"
            );
        }
        r.shutdown().await.unwrap();
    }
}

/// The worker a request with this routing key went to (SGLang's header).
async fn keyed(r: &wasm_router::server::Running, key: &str) -> String {
    worker_for_key(r, "x-smg-routing-key", Some(key)).await
}

#[tokio::test]
async fn manual_with_min_group_spreads_keys_and_keeps_them() {
    let ws = [
        MockWorker::start("a", "m").await,
        MockWorker::start("b", "m").await,
    ];
    let mut a = args(&ws.iter().collect::<Vec<_>>());
    a.policy = Some("manual".into());
    a.assignment_mode = Some("min_group".into());
    let r = router(a).await;
    let mut first = Vec::new();
    for key in 0..6 {
        first.push(keyed(&r, &format!("user-{key}")).await);
    }
    // min_group: alternate between the two workers, smaller id first.
    assert_eq!(first, ["a", "b", "a", "b", "a", "b"]);
    for (key, worker) in first.iter().enumerate() {
        assert_eq!(&keyed(&r, &format!("user-{key}")).await, worker);
    }
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn consistent_hash_keeps_each_key_on_one_worker() {
    let ws = [
        MockWorker::start("a", "m").await,
        MockWorker::start("b", "m").await,
        MockWorker::start("c", "m").await,
    ];
    let mut a = args(&ws.iter().collect::<Vec<_>>());
    a.policy = Some("consistent_hash".into());
    let r = router(a).await;
    let mut owners = std::collections::HashSet::new();
    for key in 0..12 {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3 {
            seen.insert(keyed(&r, &format!("user-{key}")).await);
        }
        assert_eq!(seen.len(), 1, "user-{key} went to {seen:?}");
        owners.extend(seen);
    }
    assert!(
        owners.len() >= 2,
        "12 keys spread over the ring: {owners:?}"
    );
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn power_of_two_sees_the_load_workers_report() {
    let ws = [
        MockWorker::start("busy", "m").await,
        MockWorker::start("idle", "m").await,
    ];
    // Another router's traffic: this router sends none, the worker says so.
    ws[0].b.load.store(100, std::sync::atomic::Ordering::SeqCst);
    let mut a = args(&ws.iter().collect::<Vec<_>>());
    a.policy = Some("power_of_two".into());
    a.worker_load_check_interval = Some(1);
    let r = router(a).await;
    // Before the first read both look idle and the pick is a coin flip;
    // after it, two candidates always include the idle one, which wins.
    let workers = async || crate::mock::get_json(&format!("http://{}/workers", r.addr)).await;
    eventually("the reported load is read", async || {
        workers().await["workers"][0]["reported_load"] == 100
    })
    .await;
    for i in 0..20 {
        assert_eq!(generate(&r, &format!("r{i}")).await.as_deref(), Ok("idle"));
    }
    r.shutdown().await.unwrap();
}

/// Issue 31: while requests flow, the workers' own load is read every
/// A streamed request counts in its worker's prefill ahead (what
/// `candidates.prefill-ahead` gives policies, and `GET /workers` shows)
/// from its routing to its first chunk, with its prompt's tokens (4
/// characters a token: this router does not tokenize).
#[tokio::test]
async fn a_request_counts_as_prefill_ahead_until_its_answer_begins() {
    let worker = wasm_router_cli::sim::start(
        wasm_router_cli::sim::SimArgs {
            serial_prefill: true,
            prefill_us_per_token: 5_000,
            decode_us_per_token: 100_000,
            output_tokens: 40,
            stream_pieces: 40,
            ..Default::default()
        },
        true,
    )
    .await
    .unwrap();
    let mut a = args(&[]);
    a.worker_urls = vec![worker.url()];
    // A policy that reads the text: the router counts its tokens.
    a.policy = Some("cache_aware".into());
    let r = router(a).await;
    let ahead = async || {
        crate::mock::get_json(&format!("http://{}/workers", r.addr)).await["workers"][0]
            ["prefill_ahead"]
            .clone()
    };
    assert_eq!(
        ahead().await,
        serde_json::json!({"requests": 0, "tokens": 0})
    );
    // 400 characters: 100 tokens, 500 ms of prefill.
    let mut stream = crate::mock::http()
        .post(format!("http://{}/generate", r.addr))
        .json(&serde_json::json!({"text": "p".repeat(400), "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(
        ahead().await,
        serde_json::json!({"requests": 1, "tokens": 100})
    );
    assert!(stream.chunk().await.unwrap().is_some_and(|c| !c.is_empty()));
    // Decoding (40 tokens at 100 ms): past its prefill, still in flight.
    eventually("the answer began", async || ahead().await["requests"] == 0).await;
    assert_eq!(ahead().await["tokens"], 0);
    drop(stream);
    r.shutdown().await.unwrap();
    worker.stop();
}

/// A vLLM worker has no `/get_load`: its load is read from its Prometheus
/// `/metrics`, running plus waiting requests.
#[tokio::test]
async fn a_vllm_workers_load_is_read_from_its_metrics() {
    use axum::routing::get;
    let metrics = "# TYPE vllm:num_requests_running gauge\n\
        vllm:num_requests_running{model_name=\"m\"} 4.0\n\
        vllm:num_requests_waiting{model_name=\"m\"} 3.0\n";
    let models = || async { axum::Json(serde_json::json!({"data": [{"id": "m"}]})) };
    let app = axum::Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/v1/models", get(models))
        .route("/metrics", get(move || async move { metrics }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let mut a = args(&[]);
    a.worker_urls = vec![format!("http://{addr}")];
    a.worker_load_check_interval = Some(1);
    let r = router(a).await;
    let reported = async || {
        crate::mock::get_json(&format!("http://{}/workers", r.addr)).await["workers"][0]
            ["reported_load"]
            .clone()
    };
    eventually("the load is read", async || reported().await == 7).await;
    r.shutdown().await.unwrap();
    server.abort();
}

/// 100 ms or so, not every `--worker-load-check-interval`: another
/// replica's burst on a worker shows within a request or two.
#[tokio::test]
async fn the_workers_load_is_read_often_while_requests_flow() {
    let ws = [
        MockWorker::start("a", "m").await,
        MockWorker::start("b", "m").await,
    ];
    let mut a = args(&ws.iter().collect::<Vec<_>>());
    a.worker_load_check_interval = Some(3600);
    let r = router(a).await;
    let reported = async || {
        crate::mock::get_json(&format!("http://{}/workers", r.addr)).await["workers"][0]
            ["reported_load"]
            .clone()
    };
    // The round at start read no load; idle, the next is an hour away.
    ws[0].b.load.store(40, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_ne!(reported().await, 40, "read while idle");
    // Traffic: the next rounds come at the busy interval.
    let mut i = 0;
    eventually("the burst is seen", async || {
        i += 1;
        generate(&r, &format!("r{i}")).await.unwrap();
        reported().await == 40
    })
    .await;
    r.shutdown().await.unwrap();
}
