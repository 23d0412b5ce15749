use super::*;
use wasm_router_policy::Role;

fn policy() -> CacheAware {
    CacheAware::init("{}").unwrap().0
}

fn req(text: &str) -> Request<'static> {
    Request::new(text, None)
}

fn idle(ids: &[u32]) -> Candidates<'static> {
    ids.iter().map(|&id| Candidate::idle(id, 0)).collect()
}

fn worker(id: u32) -> WorkerInfo {
    WorkerInfo {
        id,
        url: format!("http://127.0.0.1:{}", 9000 + id),
        model: String::new(),
        role: Role::Regular,
        dp_rank: None,
    }
}

const SYSTEM_A: &str = "You are a helpful assistant that answers questions about astronomy. ";
const SYSTEM_B: &str = "Tu es un assistant qui répond en français aux questions de cuisine. ";

#[test]
fn a_shared_prefix_sticks_to_one_worker() {
    let mut p = policy();
    let first = p
        .select(
            &req(&format!("{SYSTEM_A}What is a quasar?")),
            &idle(&[1, 2, 3]),
        )
        .unwrap();
    for q in [
        "How far is Mars?",
        "Why is the sky dark?",
        "What is a pulsar?",
    ] {
        let pick = p
            .select(&req(&format!("{SYSTEM_A}{q}")), &idle(&[1, 2, 3]))
            .unwrap();
        assert_eq!(pick, first, "{q}");
    }
}

#[test]
fn a_different_prefix_goes_elsewhere() {
    let mut p = policy();
    let a = p
        .select(
            &req(&format!("{SYSTEM_A}What is a quasar?")),
            &idle(&[1, 2]),
        )
        .unwrap();
    let b = p
        .select(
            &req(&format!("{SYSTEM_B}Comment faire un roux ?")),
            &idle(&[1, 2]),
        )
        .unwrap();
    assert_ne!(a, b, "the empty tree of the other worker is smaller");
    let b_again = p
        .select(
            &req(&format!("{SYSTEM_B}Et une béchamel ?")),
            &idle(&[1, 2]),
        )
        .unwrap();
    assert_eq!(b_again, b);
}

#[test]
fn imbalance_overrides_affinity() {
    let mut p = policy();
    let text = format!("{SYSTEM_A}What is a quasar?");
    let home = p.select(&req(&text), &idle(&[1, 2])).unwrap();
    let other = if home == 1 { 2 } else { 1 };
    // Within the thresholds (gap 60 <= 64) affinity wins.
    let mild = Candidates::from(vec![Candidate::idle(home, 70), Candidate::idle(other, 10)]);
    assert_eq!(p.select(&req(&text), &mild).unwrap(), home);
    // Past both (gap 90 > 64, 100 > 10 * 1.5) the least loaded wins.
    let loaded = Candidates::from(vec![Candidate::idle(home, 100), Candidate::idle(other, 10)]);
    assert_eq!(p.select(&req(&text), &loaded).unwrap(), other);
}

#[test]
fn a_short_match_below_the_threshold_goes_to_the_least_loaded() {
    let mut p = policy();
    let home = p.select(&req("abcdefghij"), &idle(&[1, 2])).unwrap();
    let other = if home == 1 { 2 } else { 1 };
    let loads = Candidates::from(vec![Candidate::idle(home, 3), Candidate::idle(other, 2)]);
    // 2 of 20 chars match: 10% is under the 30% threshold.
    assert_eq!(
        p.select(&req("abXXXXXXXXXXXXXXXXXX"), &loads).unwrap(),
        other
    );
}

fn size(worker: u32) -> u64 {
    prefix_index::sizes(&[worker])[0]
}

fn matched(text: &str, worker: u32) -> u64 {
    prefix_index::match_request(&req(text), &[worker]).matched_chars
}

#[test]
fn eviction_forgets_the_least_recently_used() {
    let (mut p, _) = CacheAware::init(r#"{"max_tree_size": 40}"#).unwrap();
    let old = "the oldest prompt, sent first and never again";
    let new = "a newer prompt that was sent after it";
    let w = p.select(&req(old), &idle(&[1])).unwrap();
    p.select(&req(new), &idle(&[1])).unwrap();
    assert!(size(w) > 40);
    p.tick(0);
    assert!(size(w) <= 40, "size {}", size(w));
    assert_eq!(matched(old, w), 0, "old text forgotten");
    assert!(matched(new, w) > 0, "new text kept");
}

#[test]
fn a_removed_worker_is_never_returned() {
    let mut p = policy();
    let text = format!("{SYSTEM_A}What is a quasar?");
    let home = p.select(&req(&text), &idle(&[1, 2])).unwrap();
    let other = if home == 1 { 2 } else { 1 };
    p.workers_changed(vec![worker(other)]);
    assert_eq!(size(home), 0);
    // Even offered again (a stale candidate list), it has no affinity left.
    for _ in 0..3 {
        assert_eq!(p.select(&req(&text), &idle(&[other])).unwrap(), other);
    }
}

/// The tree is the router's, not the instance's: a fresh instance (after a
/// reload, a fault, or another serving thread's) picks as the first did.
#[test]
fn a_fresh_instance_keeps_the_picks() {
    let mut p = policy();
    let texts = [
        format!("{SYSTEM_A}What is a quasar?"),
        format!("{SYSTEM_B}Comment faire un roux ?"),
        "🚀 unicode ünïcödé prompt".to_string(),
    ];
    let picks: Vec<u32> = texts
        .iter()
        .map(|t| p.select(&req(t), &idle(&[1, 2, 3])).unwrap())
        .collect();
    let mut fresh = policy();
    for (t, want) in texts.iter().zip(picks) {
        assert_eq!(fresh.select(&req(t), &idle(&[1, 2, 3])).unwrap(), want);
    }
}

#[test]
fn config_errors_name_the_setting() {
    let err = CacheAware::init(r#"{"cache_threshold": 2}"#).unwrap_err();
    assert!(err.contains("cache_threshold"), "{err}");
    let err = CacheAware::init("not json").unwrap_err();
    assert!(err.contains("invalid config"), "{err}");
}
