//! Issue 17: contract 0.2.0 beside 0.1.0. Components built against 0.1.0
//! keep loading and deciding as before; the host's imports (`state`, `log`,
//! `metrics`) hold what 0.2 policies keep, across faults and reloads, and
//! cap a policy that floods them.

use wasm_router::policy::imports::{MAX_METRICS, MAX_STATE_VALUE};
use wasm_router::policy::{Candidate, Policy, PolicySource, Reads, SelectError, WasmPolicy};

use crate::fixtures::{
    contract_0_1, contract_0_2_early, engine, generous_limits, hostile, idle, request, wait_until,
    workers,
};
use serde_json::json;

use crate::mock::{MockWorker, args, get_text, http, router};

/// What a component reads is known from its imports: cache_aware matches
/// routed text only, precise_cache_aware calls `match-kv` (so the router
/// tokenizes for it), and neither reads headers.
#[test]
fn what_a_component_reads_comes_from_its_imports() {
    let engine = engine();
    let reads = |name| load(&engine, PolicySource::Builtin(name)).info().reads;
    assert_eq!(reads("cache_aware"), Reads::default());
    assert_eq!(reads("round_robin"), Reads::default());
    assert_eq!(
        reads("precise_cache_aware"),
        Reads {
            headers: false,
            kv_matches: true,
            declared: false,
        }
    );
    let early = load(&engine, PolicySource::File(contract_0_1("round_robin")));
    assert_eq!(early.info().reads, Reads::default(), "0.1 reads neither");
}

/// A declaration in `init` (`needs.declare`) overrides what the imports
/// tell: the hostile fixture imports `request.header`, and is lent the
/// client's headers unless it declares that it reads nothing.
#[tokio::test]
async fn a_declared_need_overrides_the_imports() {
    let file = hostile(None);
    let engine = engine();
    let loaded = |config| {
        let source = PolicySource::File(file.clone());
        WasmPolicy::load(&engine, source, config, generous_limits())
            .expect("the policy loads")
            .info()
            .reads
    };
    let guessed = Reads {
        headers: true,
        kv_matches: false,
        declared: false,
    };
    assert_eq!(loaded("{}"), guessed);
    let declared = Reads {
        headers: false,
        kv_matches: false,
        declared: true,
    };
    assert_eq!(loaded(r#"{"declare-nothing": true}"#), declared);

    let w = MockWorker::start("a", "m").await;
    for (config, seen) in [
        ("{}", r#"x-tenant=Some(\"acme\")"#),
        (r#"{"declare-nothing": true}"#, "x-tenant=None"),
    ] {
        let mut a = args(&[&w]);
        a.policy = Some(file.display().to_string());
        a.policy_table = serde_json::from_str(config).unwrap();
        let r = router(a).await;
        let answer = http()
            .post(format!("http://{}/generate", r.addr))
            .header("x-routing-key", "header")
            .header("x-tenant", "acme")
            .json(&json!({"text": "hello"}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 503);
        let text = answer.text().await.unwrap();
        assert!(text.contains(seen), "config {config}: {text}");
        r.shutdown().await.unwrap();
    }
}

fn load(engine: &wasm_router::policy::PolicyEngine, source: PolicySource) -> WasmPolicy {
    WasmPolicy::load(engine, source, "{}", generous_limits()).expect("the policy loads")
}

/// The picks of `policy` over a scripted sequence: prompts that share
/// prefixes and prompts that do not, loads that stay within cache_aware's
/// thresholds and loads past them, and a worker leaving half way.
fn scripted_picks(policy: &WasmPolicy) -> Vec<u32> {
    policy.workers_changed(&workers(&[1, 2, 3, 4]));
    let systems = ["You are a helpful assistant. ", "Translate to French: ", ""];
    let mut picks = Vec::new();
    for i in 0..120u32 {
        if i == 60 {
            policy.workers_changed(&workers(&[1, 2, 4]));
        }
        let ids: &[u32] = if i < 60 { &[1, 2, 3, 4] } else { &[1, 2, 4] };
        let candidates: Vec<Candidate> = ids
            .iter()
            .map(|&id| Candidate::idle(id, (id * 7 + i * 13) % if i % 10 == 9 { 200 } else { 20 }))
            .collect();
        let text = format!(
            "{}question number {} about topic {}",
            systems[(i % 3) as usize],
            i % 17,
            i % 5
        );
        let decision = policy
            .select(&request(&text, None), &candidates)
            .expect("a pick");
        assert_eq!(
            decision.fallback, None,
            "call {i} was answered by the fallback"
        );
        picks.push(decision.worker);
    }
    picks
}

#[test]
fn a_0_1_component_loads_and_its_0_2_build_picks_the_same() {
    let engine = engine();
    for name in ["round_robin", "cache_aware"] {
        let old = load(&engine, PolicySource::File(contract_0_1(name)));
        let new = load(&engine, PolicySource::Builtin(name));
        assert_eq!((old.contract(), new.contract()), ("0.1.0", "0.2.0"));
        assert_eq!(old.info().name, new.info().name);
        assert_eq!(old.info().needs_text, new.info().needs_text);
        let (old_picks, new_picks) = (scripted_picks(&old), scripted_picks(&new));
        assert_eq!(old_picks, new_picks, "{name}: 0.1 and 0.2 builds disagree");
        // The script means something: it spreads over several workers.
        let mut used = old_picks.clone();
        used.sort_unstable();
        used.dedup();
        assert!(used.len() >= 2, "{name} picked only {used:?}");
    }
}

#[test]
fn components_built_before_additions_to_0_2_load_and_route() {
    let engine = engine();
    for name in ["cache_aware", "precise_cache_aware"] {
        let early = load(&engine, PolicySource::File(contract_0_2_early(name)));
        assert_eq!(early.contract(), "0.2.0");
        assert_eq!(early.info().name, name);
        // Every call decided by the component itself, over several workers.
        let mut used = scripted_picks(&early);
        used.sort_unstable();
        used.dedup();
        assert!(used.len() >= 2, "{name} picked only {used:?}");
    }
    // And the early cache_aware still keeps a prefix on one worker.
    let early = load(
        &engine,
        PolicySource::File(contract_0_2_early("cache_aware")),
    );
    let text = "A long shared system prompt for every question. Q: ";
    let picks: Vec<u32> = (0..4)
        .map(|i| {
            early
                .select(&request(&format!("{text}{i}"), None), &idle(&[1, 2, 3]))
                .unwrap()
                .worker
        })
        .collect();
    assert!(picks.iter().all(|&p| p == picks[0]), "{picks:?}");
}

/// What the hostile fixture answers a routing key with (it errs with it).
fn said(policy: &WasmPolicy, key: &str) -> String {
    match policy.select(&request("", Some(key)), &idle(&[1])) {
        Err(SelectError::Declined(message)) => message,
        other => panic!("{key}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn host_held_state_survives_a_trap_and_a_reload() {
    let engine = engine();
    let file = hostile(None);
    let policy = load(&engine, PolicySource::File(file.clone()));
    assert_eq!(said(&policy, "count"), "count 1");
    let trapped = policy
        .select(&request("", Some("count-then-panic")), &idle(&[1]))
        .unwrap();
    assert!(trapped.fallback.is_some(), "the panic is a fault");
    wait_until("the instance is rebuilt", || policy.is_running());
    // The instance that counted is gone; what it kept in the host is not.
    assert_eq!(said(&policy, "count"), "count 3");
    // A reload is a new WasmPolicy from the same file on the same engine.
    drop(policy);
    let reloaded = load(&engine, PolicySource::File(file));
    assert_eq!(said(&reloaded, "count"), "count 4");
    assert_eq!(
        reloaded.state().get("count"),
        Some(4i64.to_le_bytes().to_vec())
    );
}

#[test]
fn a_policy_flooding_its_state_is_refused_and_keeps_serving() {
    let engine = engine();
    let policy = load(&engine, PolicySource::File(hostile(None)));
    let stored: usize = said(&policy, "flood-state")
        .strip_prefix("stored ")
        .unwrap()
        .parse()
        .unwrap();
    // 16 MiB of 64 KiB values with their keys: one short of 256.
    let limit = wasm_router::policy::imports::MAX_STATE_BYTES / (MAX_STATE_VALUE + 16);
    assert!(
        (limit - 1..=limit).contains(&stored),
        "stored {stored}, expected about {limit}"
    );
    assert_eq!(policy.state().len(), stored);
    // Refused, not trapped: the same instance answers the next call.
    assert_eq!(policy.faults(), 0);
    let ordinary = policy.select(&request("", None), &idle(&[5])).unwrap();
    assert_eq!((ordinary.worker, ordinary.fallback), (5, None));
}

/// Over HTTP: a policy's metrics are on `/metrics` with its `policy` label,
/// at most [`MAX_METRICS`] of them and 65 label values each, and a policy
/// writing 10,000 log lines at once has most of them counted, not written.
#[tokio::test]
async fn policy_metrics_are_exported_and_floods_are_capped() {
    let w = MockWorker::start("a", "m").await;
    let mut a = args(&[&w]);
    a.policy = Some(hostile(None).display().to_string());
    let r = router(a).await;
    let keyed = async |key: &str| {
        let answer = http()
            .post(format!("http://{}/generate", r.addr))
            .header("x-routing-key", key)
            .json(&serde_json::json!({"text": "hi"}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 503);
        answer.text().await.unwrap()
    };
    let status = crate::mock::get_json(&format!("http://{}/policies", r.addr)).await;
    let status = &status["policies"][0];
    assert_eq!(
        (&status["contract"], &status["instances"]),
        (&json!("0.2.0"), &json!("shared"))
    );
    let declared = keyed("flood-metrics").await;
    assert!(
        declared.contains(&format!("declared {MAX_METRICS}")),
        "{declared}"
    );
    assert!(keyed("flood-log").await.contains("logged 10000"));
    let text = get_text(&format!("http://{}/metrics", r.metrics_addr)).await;
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("wasm_router_policy_flood_"))
        .filter(|l| l.contains("policy=\"hostile_policy-current\""))
        .collect();
    let flood_0 = ours
        .iter()
        .filter(|l| l.starts_with("wasm_router_policy_flood_0{"))
        .count();
    assert_eq!(
        flood_0,
        65,
        "64 label values and `other`:\n{}",
        ours.join("\n")
    );
    assert!(ours.iter().any(|l| l.contains("n=\"other\"")));
    let other: f64 = ours
        .iter()
        .find(|l| l.starts_with("wasm_router_policy_flood_0{") && l.contains("n=\"other\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert_eq!(
        other,
        1000.0 - 64.0,
        "every value past the cap counted as other"
    );
    let suppressed: f64 = text
        .lines()
        .find(|l| {
            l.starts_with("wasm_router_policy_log_lines_suppressed_total")
                && l.contains("policy=\"hostile_policy-current\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no suppressed-lines counter in:\n{text}"));
    assert!(
        (9000.0..=9900.0).contains(&suppressed),
        "{suppressed} of 10000 lines held back"
    );
    // And the router keeps routing.
    let ok = http()
        .post(format!("http://{}/generate", r.addr))
        .json(&serde_json::json!({"text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    r.shutdown().await.unwrap();
}
