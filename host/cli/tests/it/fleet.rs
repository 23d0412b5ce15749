//! A fleet of a thousand workers behind one router: every worker is
//! routed to and listed, and `/metrics` stays bounded however many there
//! are.

use futures_util::StreamExt;
use serde_json::Value;

use crate::mock::{MockWorker, args, get_json, get_text, http, router};

const WORKERS: usize = 1000;
const SERIES: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_workers_are_all_routed_to_and_reported() {
    // A thousand workers, their connections and the router's take
    // thousands of descriptors, more than a default soft limit of 1,024.
    let limit = wasm_router::server::raise_file_limit().expect("raise the open-file limit");
    assert!(
        limit >= 8 * WORKERS as u64,
        "this test needs {} open files; the hard limit is {limit} (ulimit -Hn)",
        8 * WORKERS
    );
    let workers: Vec<MockWorker> = futures_util::stream::iter(0..WORKERS)
        .then(|i| async move { MockWorker::start(&format!("w{i}"), "m").await })
        .collect()
        .await;
    let mut a = args(&workers.iter().collect::<Vec<_>>());
    // Checks of a thousand workers every second would crowd the test's
    // own requests on a small machine.
    a.health_check_interval_secs = Some(30);
    a.prometheus_worker_series = Some(SERIES);
    let r = router(a).await;

    // Round robin over all of them, 32 requests at a time: two each.
    let url = format!("http://{}/generate", r.addr);
    let answers: Vec<(u16, Value)> = futures_util::stream::iter(0..2 * WORKERS)
        .map(|i| {
            let url = url.clone();
            async move {
                let resp = http()
                    .post(&url)
                    .json(&serde_json::json!({"text": format!("question {i}")}))
                    .send()
                    .await
                    .unwrap();
                (
                    resp.status().as_u16(),
                    resp.json().await.unwrap_or(Value::Null),
                )
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let failed: Vec<_> = answers.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );
    let unvisited: Vec<&str> = workers
        .iter()
        .filter(|w| w.hits() == 0)
        .map(|w| w.b.name.as_str())
        .collect();
    assert!(unvisited.is_empty(), "never routed to: {unvisited:?}");

    let listed = get_json(&format!("http://{}/workers", r.addr)).await;
    let listed = listed["workers"].as_array().map_or(0, Vec::len);
    assert_eq!(listed, WORKERS, "GET /workers lists every worker");

    let metrics = get_text(&format!("http://{}/metrics", r.metrics_addr)).await;
    assert!(
        metrics.contains(&format!(
            "wasm_router_workers{{state=\"healthy\"}} {WORKERS}\n"
        )),
        "the count over all workers: {metrics}"
    );
    let per_worker = |name: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{worker=")))
            .count()
    };
    for name in [
        "wasm_router_worker_in_flight",
        "wasm_router_worker_healthy",
        "wasm_router_worker_circuit_breaker_state",
    ] {
        assert_eq!(
            per_worker(name),
            SERIES,
            "{name}: capped at --prometheus-worker-series"
        );
    }
}
