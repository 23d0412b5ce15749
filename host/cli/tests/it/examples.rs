//! The custom-policy examples, built from source and routing real requests.

use crate::fixtures::session_affinity;
use crate::mock::{MockWorker, args, eventually, router, worker_for_key};

async fn with_key(r: &wasm_router::server::Running, key: Option<&str>) -> String {
    worker_for_key(r, "x-routing-key", key).await
}

#[tokio::test]
async fn the_rust_example_keeps_sessions_on_their_worker() {
    let ws = [
        MockWorker::start("a", "m").await,
        MockWorker::start("b", "m").await,
    ];
    let mut a = args(&ws.iter().collect::<Vec<_>>());
    a.policy = Some(session_affinity().display().to_string());
    let r = router(a).await;
    // Idle fleet: a new key goes to the least loaded, ties to the smaller id.
    for _ in 0..4 {
        assert_eq!(with_key(&r, Some("alice")).await, "a");
    }
    assert_eq!(with_key(&r, None).await, "a");
    // alice's worker leaves: she moves to b, and stays there when a returns.
    let a_id = r.state.registry.by_url(&ws[0].url).unwrap().id;
    r.state.registry.remove(a_id);
    assert_eq!(with_key(&r, Some("alice")).await, "b");
    let back = r.state.registry.add(&ws[0].url).unwrap();
    eventually("a passes its health check again", async || {
        back.is_healthy()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(with_key(&r, Some("alice")).await, "b");
    }
    r.shutdown().await.unwrap();
}
