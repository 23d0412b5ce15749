//! Issue 17: no global lock on the request path. A per-thread policy runs
//! an instance per core, taking calls side by side; a shared policy busy
//! with maintenance holds no serving thread.
//!
//! The hostile fixture makes the overlap deterministic: its calls spin
//! until the test sets the host-held key `go`, so "while one call runs"
//! is a state the test holds, not a timing it hopes for.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Waker};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use wasm_router::config::Config;
use wasm_router::policy::{Outcome, Policy, PolicySource, SelectError, WasmPolicy};
use wasm_router::server::start;

use crate::fixtures::{engine, generous_limits, hostile, idle, request, wait_until};
use crate::mock::{args, http};

fn hostile_with(config: &str) -> Arc<WasmPolicy> {
    Arc::new(
        WasmPolicy::load(
            &engine(),
            PolicySource::File(hostile(None)),
            config,
            wasm_router::config::Limits {
                tick_deadline: Duration::from_secs(30),
                ..generous_limits()
            },
        )
        .unwrap(),
    )
}

#[test]
fn per_thread_instances_take_calls_side_by_side() {
    let policy = hostile_with(r#"{"mode": "per-thread"}"#);
    assert!(policy.instances() >= 2, "{} instances", policy.instances());
    // One call holds an instance until `go`...
    let waiting = std::thread::spawn({
        let policy = policy.clone();
        move || policy.select(&request("", Some("wait-for-go")), &idle(&[1]))
    });
    wait_until("the first call is inside its instance", || {
        policy.state().get("go").is_none() && !waiting.is_finished()
    });
    // ...and another thread's call is answered by another instance
    // meanwhile. With one instance it would wait for the first, which waits
    // for `go`, which is set only after this answer: the test would hang
    // until the call deadline, and the first call would fault.
    let (done, answered) = std::sync::mpsc::channel();
    std::thread::spawn({
        let policy = policy.clone();
        move || {
            done.send(policy.select(&request("", None), &idle(&[2])))
                .unwrap()
        }
    });
    let other = answered
        .recv_timeout(Duration::from_secs(20))
        .expect("the second call waited for the first");
    assert_eq!(other.unwrap().worker, 2);
    policy.state().set("go", vec![1]).unwrap();
    let first = waiting.join().unwrap().unwrap();
    assert_eq!((first.worker, first.fallback), (1, None));
    assert_eq!(policy.faults(), 0);
}

#[test]
fn a_shared_instance_in_maintenance_says_busy_and_keeps_outcomes() {
    let policy = hostile_with(r#"{"mode": "tick-until-go"}"#);
    assert_eq!(policy.instances(), 1);
    policy.state().set("hold-tick", vec![1]).unwrap();
    let ticking = std::thread::spawn({
        let policy = policy.clone();
        move || policy.tick(0)
    });
    wait_until("the tick holds the instance", || {
        policy.state().get("held-ticks").is_some()
    });
    // A serving thread is not held: it is told to come back...
    assert_eq!(
        policy.select(&request("", None), &idle(&[1])),
        Err(SelectError::Busy)
    );
    let mut ready = policy.until_ready();
    let mut cx = Context::from_waker(Waker::noop());
    assert!(ready.as_mut().poll(&mut cx).is_pending());
    // ...and an outcome is kept for the instance, not dropped or waited on.
    policy.on_complete(&Outcome::default());
    assert_eq!(policy.state().get("outcomes"), None);
    policy.state().set("go", vec![1]).unwrap();
    ticking.join().unwrap();
    assert!(ready.as_mut().poll(&mut cx).is_ready());
    assert_eq!(
        policy.state().add("outcomes", 0),
        Ok(1),
        "the kept outcome arrived"
    );
    let answered = policy.select(&request("", None), &idle(&[1])).unwrap();
    assert_eq!((answered.worker, answered.fallback), (1, None));
    assert_eq!(policy.faults(), 0);
}

/// The issue's case: a stream keeps flowing while the shared instance's
/// `tick` runs and requests on the router's serving threads wait for it.
/// Before, each waiting request parked its serving thread on the
/// instance's lock, and every connection of that thread stalled: here the
/// stream then stops until `go`, which is set only once it has moved on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_keeps_flowing_while_the_shared_policy_ticks() {
    // A stream of 2,000 chunks 5 ms apart (10 s at most).
    let worker = wasm_router_cli::sim::start(
        wasm_router_cli::sim::SimArgs {
            decode_us_per_token: 5_000,
            output_tokens: 2_000,
            stream_pieces: 2_000,
            max_running: 64,
            ..Default::default()
        },
        true,
    )
    .await
    .unwrap();
    let mut a = args(&[]);
    a.worker_urls = vec![worker.url()];
    a.policy = Some(hostile(None).display().to_string());
    a.max_concurrent_requests = Some(16);
    let toml = std::env::temp_dir().join(format!("tick-until-go-{}.toml", std::process::id()));
    std::fs::write(
        &toml,
        format!(
            "policy_name = {:?}\n[policy]\nmode = \"tick-until-go\"\n",
            hostile(None).display().to_string()
        ),
    )
    .unwrap();
    a.policy = None;
    a.config = Some(toml);
    let mut config = Config::load(&a).unwrap();
    config.policy_cache_dir =
        Some(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("policy-cache"));
    config.policy_limits.tick_deadline = Duration::from_secs(30);
    let r = start(config).await.unwrap();
    let base = format!("http://{}", r.addr);
    crate::mock::eventually("the worker is up", async || {
        r.state
            .registry
            .all()
            .iter()
            .all(|w| w.is_healthy() && !w.model().is_empty())
    })
    .await;
    let policy = r.state.policies.current();

    let chunks = Arc::new(AtomicUsize::new(0));
    let stream = http()
        .post(format!("{base}/generate"))
        .json(&json!({"text": "s", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let reader = tokio::spawn({
        let chunks = chunks.clone();
        async move {
            let mut body = stream.bytes_stream();
            while let Some(Ok(_)) = body.next().await {
                chunks.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    crate::mock::eventually("the stream flows", async || {
        chunks.load(Ordering::SeqCst) > 3
    })
    .await;

    policy.state().set("hold-tick", vec![1]).unwrap();
    crate::mock::eventually("a tick holds the instance", async || {
        policy.state().get("held-ticks").is_some()
    })
    .await;
    // Requests on every serving thread, each waiting for the instance.
    let waiting: Vec<_> = (0..8)
        .map(|i| {
            let url = format!("{base}/generate");
            tokio::spawn(async move {
                http()
                    .post(url)
                    .json(
                        &json!({"text": format!("w{i}"), "sampling_params": {"max_new_tokens": 1}}),
                    )
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    crate::mock::eventually("the requests are admitted and waiting", async || {
        r.state.free_slots() == Some(16 - 9)
    })
    .await;
    let before = chunks.load(Ordering::SeqCst);
    crate::mock::eventually("the stream keeps flowing", async || {
        chunks.load(Ordering::SeqCst) >= before + 20
    })
    .await;
    assert!(waiting.iter().all(|w| !w.is_finished()), "they waited");
    policy.state().set("go", vec![1]).unwrap();
    for w in waiting {
        assert_eq!(w.await.unwrap(), 200);
    }
    assert_eq!(policy.faults(), 0);
    reader.abort();
    r.shutdown().await.unwrap();
}
