//! The cache-affine example (examples/cache-affine) in every language,
//! built from source with each language's SDK and toolchain: each loads,
//! declares what it reads, and picks what the Rust build picks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use wasm_router::policy::{Candidate, Policy, PolicySource, Reads, WasmPolicy, WorkerInfo};

use crate::fixtures::{engine, generous_limits, request, workspace};

/// A language the example is written in.
#[derive(Debug, Clone, Copy)]
enum Lang {
    Rust,
    Python,
}

/// The example built in `lang`, as `cache_affine_<lang>.wasm`: a file stem
/// of its own, so each build has its own prefix index in the router.
fn cache_affine(lang: Lang) -> PathBuf {
    static RUST: OnceLock<PathBuf> = OnceLock::new();
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    match lang {
        Lang::Rust => RUST
            .get_or_init(|| {
                let built = crate::fixtures::cache_affine_rust();
                let out = tmp.join("cache_affine_rust.wasm");
                std::fs::copy(built, &out).unwrap();
                out
            })
            .clone(),
        Lang::Python => PYTHON
            .get_or_init(|| {
                let out = tmp.join("cache_affine_python.wasm");
                build_script("examples/cache-affine/python/build.sh", &out, "python");
                out
            })
            .clone(),
    }
}

/// Run an example's `build.sh` with `OUT=out` (its toolchain in a venv or
/// node_modules under the test's target directory).
fn build_script(script: &str, out: &Path, toolchain: &str) {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let status = Command::new(workspace().join(script))
        .env("OUT", out)
        .env("VENV", tmp.join(format!("{toolchain}-venv")))
        .status()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(status.success(), "{script} failed");
}

fn load(file: &Path) -> WasmPolicy {
    let source = PolicySource::File(file.to_path_buf());
    WasmPolicy::load(&engine(), source, "{}", generous_limits()).expect("the example loads")
}

fn workers(ids: &[u32]) -> Vec<WorkerInfo> {
    ids.iter()
        .map(|&id| WorkerInfo {
            id,
            url: format!("http://127.0.0.1:{}", 9000 + id),
            model: "m".into(),
            ..Default::default()
        })
        .collect()
}

/// The picks over a scripted sequence: conversations that grow (their
/// prefix cached on the worker that had them), new texts, loads within the
/// slack and past it, and a worker leaving half way.
fn scripted_picks(policy: &WasmPolicy) -> Vec<u32> {
    policy.workers_changed(&workers(&[1, 2, 3, 4]));
    let mut conversations = vec![String::new(); 6];
    let mut picks = Vec::new();
    for i in 0..90u32 {
        if i == 45 {
            policy.workers_changed(&workers(&[1, 2, 4]));
        }
        let ids: &[u32] = if i < 45 { &[1, 2, 3, 4] } else { &[1, 2, 4] };
        let candidates: Vec<Candidate> = ids
            .iter()
            .map(|&id| Candidate::idle(id, (id * 5 + i * 3) % if i % 7 == 6 { 30 } else { 6 }))
            .collect();
        let talk = &mut conversations[(i % 6) as usize];
        talk.push_str(&format!("turn {i} of conversation {}; ", i % 6));
        let decision = policy
            .select(&request(talk, None), &candidates)
            .expect("a pick");
        assert_eq!(decision.fallback, None, "call {i} fell back");
        picks.push(decision.worker);
    }
    picks
}

#[test]
fn the_rust_example_follows_the_cache_within_the_load_slack() {
    let picks = scripted_picks(&load(&cache_affine(Lang::Rust)));
    // The least loaded candidate at each call, for comparison.
    let least: Vec<u32> = (0..90u32)
        .map(|i| {
            let ids: &[u32] = if i < 45 { &[1, 2, 3, 4] } else { &[1, 2, 4] };
            *ids.iter()
                .min_by_key(|&&id| ((id * 5 + i * 3) % if i % 7 == 6 { 30 } else { 6 }, id))
                .unwrap()
        })
        .collect();
    let followed = picks.iter().zip(&least).filter(|(p, l)| p != l).count();
    assert!(
        followed >= 10,
        "the cache was followed over the least loaded {followed} times: {picks:?}"
    );
    assert!(
        followed < 80,
        "the load rule never won: {picks:?} against {least:?}"
    );
}

fn same_picks_as_rust(lang: Lang) {
    let rust = scripted_picks(&load(&cache_affine(Lang::Rust)));
    let other = load(&cache_affine(lang));
    assert_eq!(
        other.info().reads,
        Reads {
            headers: false,
            kv_matches: false,
            declared: true
        },
        "{lang:?}'s SDK declares what the example reads"
    );
    assert!(other.info().needs_text);
    assert_eq!(scripted_picks(&other), rust, "{lang:?} against Rust");
}

#[test]
fn the_python_example_picks_what_the_rust_one_picks() {
    same_picks_as_rust(Lang::Python);
}
