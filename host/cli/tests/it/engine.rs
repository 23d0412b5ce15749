//! The sandbox and fault handling, against the hostile fixture: each fault
//! is answered by the fallback, counted, and followed by a fresh instance.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use wasm_router::config::Limits;
use wasm_router::policy::{
    Candidate, Decision, LoadError, Policy, PolicyEngine, PolicyFault, PolicySource, SelectError,
    WasmPolicy,
};

use crate::fixtures::{engine, generous_limits, hostile, idle, request, wait_until};

fn hostile_file() -> PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| hostile(None)).clone()
}

fn load_hostile(config: &str, limits: Limits) -> Result<WasmPolicy, LoadError> {
    WasmPolicy::load(
        &engine(),
        PolicySource::File(hostile_file()),
        config,
        limits,
    )
}

/// The hostile policy with a 1 s call deadline: an ordinary call does not
/// reach it even on a busy machine (10 ms can), and `loop` ends in a second.
fn hostile_policy() -> WasmPolicy {
    let limits = Limits {
        call_deadline: Duration::from_secs(1),
        ..Limits::default()
    };
    load_hostile("{}", limits).unwrap()
}

/// Send a request with this routing key to idle workers 1 and 2.
fn select(p: &WasmPolicy, key: &str) -> Result<Decision, SelectError> {
    p.select(&request("", Some(key)), &idle(&[1, 2]))
}

/// After a fault: the next call is answered by a fresh instance.
fn assert_recovers(p: &WasmPolicy) {
    wait_until("the policy restarts", || p.is_running());
    let decision = select(p, "ordinary").unwrap();
    assert_eq!(decision.fallback, None, "served by the fresh instance");
    assert_eq!(decision.worker, 1);
}

#[test]
fn an_ordinary_call_is_answered_by_the_policy() {
    let p = hostile_policy();
    let busy_and_idle = [Candidate::idle(7, 3), Candidate::idle(9, 1)];
    let decision = p.select(&request("", None), &busy_and_idle).unwrap();
    assert_eq!(decision.worker, 9);
    assert_eq!(decision.fallback, None);
    assert_eq!(p.faults(), 0);
}

#[test]
fn an_infinite_loop_hits_the_deadline_and_the_fallback_serves() {
    let p = hostile_policy();
    let decision = select(&p, "loop").unwrap();
    assert!(decision.fallback.is_some(), "answered by the fallback");
    assert!([1, 2].contains(&decision.worker));
    assert_eq!(p.faults(), 1);
    assert_recovers(&p);
}

/// The epoch ticker sleeps when no call has run for a while (an idle
/// router wakes no thread a thousand times a second); a call arms it again,
/// so a spin after a quiet spell still meets its deadline.
#[test]
fn after_a_quiet_spell_the_ticker_sleeps_and_a_spin_still_meets_its_deadline() {
    let engine = crate::fixtures::engine();
    let p = WasmPolicy::load(
        &engine,
        PolicySource::File(hostile(None)),
        "{}",
        Limits::default(),
    )
    .unwrap();
    wait_until("the ticker sleeps", || engine.ticker_asleep());
    let decision = select(&p, "loop").unwrap();
    assert_eq!(decision.fallback, Some(PolicyFault::PolicyDeadline));
    assert_eq!(p.faults(), 1);
}

#[test]
fn each_fault_is_named() {
    let p = hostile_policy();
    let named = |key: &str| {
        wait_until("the policy restarts", || p.is_running());
        select(&p, key)
            .unwrap()
            .fallback
            .expect("answered by the fallback")
    };
    assert_eq!(named("loop"), PolicyFault::PolicyDeadline);
    assert!(matches!(named("panic"), PolicyFault::PolicyTrap(_)));
    assert_eq!(named("bad-id"), PolicyFault::NotACandidate(u32::MAX));
}

#[test]
fn unbounded_allocation_hits_the_memory_limit() {
    // A generous deadline, so that only the memory limit can stop the guest.
    let limits = Limits {
        memory: 32 << 20,
        ..generous_limits()
    };
    let p = load_hostile("{}", limits).unwrap();
    // Inside the limit: an ordinary call works.
    assert_eq!(select(&p, "ordinary").unwrap().fallback, None);
    // Past it: a fault, answered by the fallback.
    let decision = select(&p, "alloc").unwrap();
    assert_eq!(decision.fallback, Some(PolicyFault::PolicyMemoryLimit));
    assert_eq!(p.faults(), 1);
    assert_recovers(&p);
}

#[test]
fn a_memory_limit_below_what_the_guest_needs_to_start_is_a_start_fault() {
    let limits = Limits {
        memory: 64 << 10,
        ..Limits::default()
    };
    match load_hostile("{}", limits) {
        Err(LoadError::StartFault { fault, .. }) => {
            assert_eq!(fault, PolicyFault::PolicyMemoryLimit)
        }
        other => panic!("expected a memory-limit start fault, got {other:?}"),
    }
}

#[test]
fn a_trap_in_select_is_answered_by_the_fallback() {
    let p = hostile_policy();
    let decision = select(&p, "panic").unwrap();
    assert!(decision.fallback.is_some());
    assert_eq!(p.faults(), 1);
    assert_recovers(&p);
}

#[test]
fn repeated_faults_are_all_answered_and_counted() {
    let p = hostile_policy();
    for round in 1..=3 {
        wait_until("the policy restarts", || p.is_running());
        assert!(select(&p, "panic").unwrap().fallback.is_some());
        assert_eq!(p.faults(), round);
    }
    assert_recovers(&p);
}

#[test]
fn a_trap_in_init_refuses_the_load() {
    match load_hostile(r#"{"trap-in-init": true}"#, Limits::default()) {
        Err(LoadError::StartFault {
            fault: PolicyFault::PolicyTrap(msg),
            ..
        }) => {
            assert!(
                msg.contains("unreachable") || msg.contains("panic"),
                "{msg}"
            )
        }
        other => panic!("expected a trap at start, got {other:?}"),
    }
}

#[test]
fn an_init_error_refuses_the_load_with_the_policy_message() {
    let err = load_hostile(r#"{"refuse-init": true}"#, Limits::default()).unwrap_err();
    assert!(matches!(err, LoadError::InitRefused { .. }));
    assert!(err.to_string().contains("refuses this config"), "{err}");
}

#[test]
fn an_id_that_is_not_a_candidate_is_a_fault_and_the_instance_stays() {
    let p = hostile_policy();
    let decision = select(&p, "bad-id").unwrap();
    assert_eq!(
        decision.fallback,
        Some(PolicyFault::NotACandidate(u32::MAX))
    );
    assert!([1, 2].contains(&decision.worker));
    assert_eq!(p.faults(), 1);
    assert!(p.is_running(), "no trap, no restart");
    assert_eq!(select(&p, "ordinary").unwrap().fallback, None);
}

#[test]
fn the_guest_cannot_read_files_or_the_environment() {
    // SAFETY: tests in this binary do not read or write this variable
    // concurrently; it only has to exist for the guest to miss it.
    unsafe { std::env::set_var("WASM_ROUTER_TEST_SECRET", "hunter2") };
    let p = hostile_policy();
    match select(&p, "snoop") {
        Err(SelectError::Declined(report)) => {
            assert!(report.contains("file: denied"), "{report}");
            assert!(report.contains("env vars: 0"), "{report}");
            assert!(report.contains("root: denied"), "{report}");
        }
        other => panic!("expected the snoop report, got {other:?}"),
    }
}

#[test]
fn a_declined_request_carries_the_policy_message() {
    let p = hostile_policy();
    assert_eq!(
        select(&p, "decline").unwrap_err(),
        SelectError::Declined("hostile policy declines".into())
    );
    assert_eq!(p.faults(), 0, "declining is not a fault");
}

#[test]
fn no_candidates_is_an_error_without_calling_the_policy() {
    let p = hostile_policy();
    assert_eq!(
        p.select(&request("", None), &[]).unwrap_err(),
        SelectError::NoCandidates
    );
}

#[test]
fn another_contract_version_is_refused_with_what_to_do() {
    let file = hostile(Some("0.0.9"));
    let err =
        WasmPolicy::load(&engine(), PolicySource::File(file), "{}", Limits::default()).unwrap_err();
    assert!(matches!(err, LoadError::ContractVersion { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("0.0.9") && msg.contains("rebuild it against wit/policy.wit"),
        "{msg}"
    );
}

#[test]
fn files_that_are_not_components_are_refused_clearly() {
    let dir = tempdir();
    let text = dir.join("notes.wasm");
    std::fs::write(&text, "hello").unwrap();
    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let load = |path: &PathBuf| {
        WasmPolicy::load(
            &engine(),
            PolicySource::File(path.clone()),
            "{}",
            Limits::default(),
        )
    };
    assert!(matches!(load(&text), Err(LoadError::NotWasm(_))));
    let err = load(&core).unwrap_err();
    assert!(matches!(err, LoadError::CoreModule(_)));
    assert!(
        err.to_string().contains("router policy componentize"),
        "{err}"
    );
    assert!(matches!(
        load(&dir.join("missing.wasm")),
        Err(LoadError::Read { .. })
    ));
}

#[test]
fn unknown_names_list_the_builtins() {
    let err = PolicySource::parse("fastest").unwrap_err().to_string();
    assert!(
        err.contains("cache_aware") && err.contains("round_robin"),
        "{err}"
    );
    assert_eq!(
        PolicySource::parse("round_robin").unwrap(),
        PolicySource::Builtin("round_robin")
    );
}

#[test]
fn compiled_components_are_cached_and_a_corrupt_cache_file_is_ignored() {
    let dir = tempdir();
    let engine = PolicyEngine::new(Some(dir.clone())).unwrap();
    let load = || {
        WasmPolicy::load(
            &engine,
            PolicySource::Builtin("round_robin"),
            "{}",
            Limits::default(),
        )
    };
    load().unwrap();
    let cached: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(cached[0].extension().is_some_and(|e| e == "cwasm"));
    // Loading again uses it; a corrupt one is replaced, not fatal.
    load().unwrap();
    std::fs::write(&cached[0], b"garbage").unwrap();
    let p = load().unwrap();
    assert_eq!(p.select(&request("", None), &idle(&[5])).unwrap().worker, 5);
    assert_ne!(std::fs::read(&cached[0]).unwrap(), b"garbage");
}

/// A fresh directory under the test target directory.
fn tempdir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "engine-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_contract_version_is_the_wit_package_version_everywhere() {
    let wit = std::fs::read_to_string(crate::fixtures::workspace().join("wit/policy.wit")).unwrap();
    let declared = wit
        .lines()
        .find_map(|l| l.trim().strip_prefix("package wasm-router:policy@"))
        .and_then(|v| v.strip_suffix(';'))
        .expect("wit/policy.wit declares its package version");
    assert_eq!(declared, wasm_router::policy::CONTRACT_VERSION, "host");
    assert_eq!(declared, wasm_router_policy::CONTRACT_VERSION, "Rust SDK");
}
