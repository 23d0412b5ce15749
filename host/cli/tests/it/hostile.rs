//! Hostile policies beyond the engine's basics (issue 9): deep recursion, a
//! megabyte result, garbage fed to `restore`, allocation to the limit on
//! every call, a spin in `tick`. Each leaves the router serving, with the
//! fault counted and shown.

use std::time::Duration;

use wasm_router::config::Limits;
use wasm_router::policy::{LoadError, Policy, PolicyFault, PolicySource, SelectError, WasmPolicy};

use crate::fixtures::{engine, generous_limits, hostile, idle, request, wait_until};
use crate::mock::{
    MockWorker, args, eventually, generate, get_json, get_text, http, post_json, router,
};

fn load(config: &str, limits: Limits) -> Result<WasmPolicy, LoadError> {
    WasmPolicy::load(&engine(), PolicySource::File(hostile(None)), config, limits)
}

/// The fixture with a generous call deadline (the deadline itself is tested
/// in engine.rs; `tick` keeps its own).
fn hostile_policy(config: &str) -> WasmPolicy {
    load(config, generous_limits()).unwrap()
}

fn select(p: &WasmPolicy, key: &str) -> Result<wasm_router::policy::Decision, SelectError> {
    p.select(&request("", Some(key)), &idle(&[1, 2]))
}

/// The next ordinary call is answered by the policy itself, not the fallback.
fn assert_serves(p: &WasmPolicy) {
    wait_until("the policy runs", || p.is_running());
    assert_eq!(select(p, "ordinary").unwrap().fallback, None);
}

#[test]
fn deep_recursion_overflows_the_stack_into_a_trap() {
    let p = hostile_policy("{}");
    let decision = select(&p, "recurse").unwrap();
    match decision.fallback {
        Some(PolicyFault::PolicyTrap(report)) => {
            assert!(report.len() < 1100, "the trap report is capped");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_eq!(p.faults(), 1);
    assert!(p.last_fault().unwrap().starts_with("policy trapped"));
    assert_serves(&p);
}

#[test]
fn a_megabyte_refusal_reaches_the_client_cut_short() {
    let p = hostile_policy("{}");
    match select(&p, "huge-error") {
        Err(SelectError::Declined(message)) => {
            assert!(message.len() < 1100, "{} bytes", message.len());
            assert!(
                message.ends_with("(cut from 8388608 bytes)"),
                "{message:.80}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(p.faults(), 0, "a refusal is an answer, not a fault");
    assert_serves(&p);
}

#[test]
fn restore_refuses_garbage_and_a_trap_in_restore_is_a_fault() {
    let p = hostile_policy("{}");
    let error = p.restore(b"\xff garbage").unwrap_err();
    assert!(error.contains("refuses a 9-byte snapshot"), "{error}");
    assert_eq!(p.faults(), 0);
    p.restore(&p.snapshot().unwrap().unwrap()).unwrap();
    assert_serves(&p);

    let p = hostile_policy(r#"{"mode": "trap-in-restore"}"#);
    let error = p.restore(b"hostile-state").unwrap_err();
    assert!(error.starts_with("policy trapped"), "{error}");
    assert_eq!(p.faults(), 1);
    assert_serves(&p);
}

/// A checkpoint whose `restore` traps in the rebuilt instance is dropped:
/// the next rebuild starts fresh, and the policy serves again.
#[test]
fn a_checkpoint_that_traps_in_restore_is_dropped_not_retried() {
    let p = hostile_policy(r#"{"mode": "trap-in-restore"}"#);
    assert_serves(&p);
    assert!(p.checkpoint(), "a shared instance that was called");
    assert!(select(&p, "recurse").unwrap().fallback.is_some());
    assert_serves(&p);
    assert_eq!(
        p.faults(),
        1,
        "the failed rebuild is retried, not a request's fault"
    );
}

#[test]
fn allocating_to_the_limit_on_every_call_is_contained_every_time() {
    let limits = Limits {
        memory: 32 << 20,
        ..generous_limits()
    };
    let p = load("{}", limits).unwrap();
    for round in 1..=4 {
        wait_until("the policy restarts", || p.is_running());
        let decision = select(&p, "alloc").unwrap();
        assert_eq!(decision.fallback, Some(PolicyFault::PolicyMemoryLimit));
        assert_eq!(p.faults(), round);
    }
    assert_serves(&p);
    assert!(
        p.memory_bytes() < 8 << 20,
        "a fresh instance starts small, not at the limit: {} bytes",
        p.memory_bytes()
    );
}

#[test]
fn a_spin_in_tick_hits_the_tick_deadline() {
    let p = hostile_policy(r#"{"mode": "spin-in-tick"}"#);
    assert_eq!(p.info().tick_interval, Some(Duration::from_millis(5)));
    p.tick(0);
    assert_eq!(p.faults(), 1);
    assert_eq!(
        p.last_fault().as_deref(),
        Some("policy call exceeded its deadline")
    );
    // Between ticks, requests are served by the policy.
    assert_serves(&p);
}

/// Inside the router, guests are called from tokio worker threads, where
/// wasmtime-wasi's blocking WASI calls cannot run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_io_on_a_runtime_thread_prints_or_faults_but_never_panics() {
    let p = hostile_policy("{}");
    let printed = select(&p, "print").unwrap();
    assert_eq!((printed.worker, printed.fallback), (1, None));
    let slept = select(&p, "sleep").unwrap();
    match slept.fallback {
        Some(PolicyFault::PolicyTrap(report)) => {
            assert!(report.contains("may not wait or sleep"), "{report}")
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_serves(&p);
    let read = select(&p, "stdin");
    match read {
        // A closed stdin may also read as end of file.
        Err(SelectError::Declined(message)) => assert_eq!(message, "read 0 bytes from stdin"),
        Ok(decision) => assert!(matches!(
            decision.fallback,
            Some(PolicyFault::PolicyTrap(_))
        )),
        other => panic!("unexpected {other:?}"),
    }
    assert_serves(&p);
}

#[tokio::test]
async fn a_router_with_a_ticking_spinner_keeps_serving_and_shows_the_faults() {
    let w = MockWorker::start("a", "m").await;
    let dir = tempdir("spin-in-tick");
    let toml = dir.join("router.toml");
    std::fs::write(
        &toml,
        format!(
            "policy_name = {:?}\n[policy]\nmode = \"spin-in-tick\"\n",
            hostile(None).display().to_string()
        ),
    )
    .unwrap();
    let mut a = args(&[&w]);
    a.policy = None;
    a.config = Some(toml);
    let r = router(a).await;
    let base = format!("http://{}", r.addr);
    for i in 0..20 {
        assert_eq!(generate(&r, &format!("q{i}")).await.unwrap(), "a");
    }
    eventually("GET /policies shows the tick faults", async || {
        let status = &get_json(&format!("{base}/policies")).await["policies"][0];
        status["faults"].as_u64().unwrap_or(0) >= 2
            && status["last_fault"] == "policy call exceeded its deadline"
    })
    .await;
    let metrics = get_text(&format!("http://{}/metrics", r.metrics_addr)).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("wasm_router_policy_faults_total")
                && l.contains("policy=\"hostile-ticker\"")
                && l.contains("kind=\"deadline\"")),
        "{metrics}"
    );
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn through_the_router_recursion_falls_back_and_a_huge_refusal_is_a_short_503() {
    let w = MockWorker::start("a", "m").await;
    let mut a = args(&[&w]);
    a.policy = Some(hostile(None).display().to_string());
    let r = router(a).await;
    let keyed = |key: &'static str| {
        http()
            .post(format!("http://{}/generate", r.addr))
            .header("x-routing-key", key)
            .json(&serde_json::json!({"text": "hi"}))
            .send()
    };
    let recursed = keyed("recurse").await.unwrap();
    assert_eq!(recursed.status(), 200, "the fallback served it");
    // The trapped instance is rebuilt in the background; until then the
    // fallback answers (200, no fault counted). Then the refusal comes.
    let mut body = None;
    eventually("the rebuilt instance refuses", async || {
        let refused = keyed("huge-error").await.unwrap();
        if refused.status() != 503 {
            return false;
        }
        body = Some(refused.bytes().await.unwrap());
        true
    })
    .await;
    let body = body.unwrap();
    assert!(body.len() < 2048, "{} bytes", body.len());
    let (status, _) = post_json(&r, "/generate", serde_json::json!({"text": "after"})).await;
    assert_eq!(status, 200);
    let policies = get_json(&format!("http://{}/policies", r.addr)).await;
    assert_eq!(policies["policies"][0]["faults"], 1);
    r.shutdown().await.unwrap();
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("hostile-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
