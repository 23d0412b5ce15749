//! Every built-in policy, selected by name, routes real requests; the
//! key-based ones keep a key on its worker.

use wasm_router::policy::builtin;

use crate::mock::{MockWorker, args, generate, router, worker_for_key};

#[tokio::test]
async fn every_builtin_routes_requests_by_name() {
    let ws = [
        MockWorker::start("a", "m").await,
        MockWorker::start("b", "m").await,
    ];
    for name in builtin::names() {
        let mut a = args(&ws.iter().collect::<Vec<_>>());
        a.policy = Some(name.to_string());
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
