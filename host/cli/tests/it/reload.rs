//! Hot reload through the running router: file replaced under load, broken
//! files, config changes, and state carried across a reload.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::Value;

use crate::fixtures::picker;
use crate::mock::{MockWorker, args, eventually, generate, get_json, http, router};

/// A fresh directory for a policy file.
fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("reload-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Replace `path` the way `cp x tmp && mv tmp path` does: by rename.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn status(base: &str) -> Value {
    let v: Value = get_json(&format!("{base}/policies")).await;
    v["policies"][0].clone()
}

/// Poll until `generate` answers from `worker`.
async fn until_served_by(r: &wasm_router::server::Running, worker: &str) {
    eventually(&format!("{worker} serves"), async || {
        generate(r, "probe").await.is_ok_and(|w| w == worker)
    })
    .await;
}

/// Poll until `GET /policies` shows the component with this sha256.
async fn until_sha(base: &str, sha: &str) {
    eventually(&format!("the reload to {sha}"), async || {
        status(base).await["sha256"] == sha
    })
    .await;
}

/// Poll until `GET /policies` shows no error.
async fn until_no_error(base: &str) {
    eventually("the error clears", async || {
        status(base).await["last_error"].is_null()
    })
    .await;
}

async fn until_error(base: &str) -> String {
    eventually("the broken file is reported", async || {
        status(base).await["last_error"].is_string()
    })
    .await;
    status(base).await["last_error"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn replacing_the_file_under_load_switches_policies_and_fails_nothing() {
    let (first, last) = (
        std::fs::read(picker("first")).unwrap(),
        std::fs::read(picker("last")).unwrap(),
    );
    let a_ = MockWorker::start("a", "m").await;
    let b_ = MockWorker::start("b", "m").await;
    let file = dir("load").join("policy.wasm");
    replace(&file, &first);
    let mut a = args(&[&a_, &b_]);
    a.policy = Some(file.display().to_string());
    let r = Arc::new(router(a).await);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (r, stop, ok, failed) = (r.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                // Bounded: stops when told, or after 20 000 requests.
                for i in 0..20_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match generate(&r, &format!("client {c} request {i}")).await {
                        Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                        Err(e) => {
                            eprintln!("failed: {e:?}");
                            failed.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                }
            })
        })
        .collect();
    until_served_by(&r, "a").await;
    let base = format!("http://{}", r.addr);
    let round_robin =
        std::fs::read(crate::fixtures::workspace().join("policies/round_robin.wasm")).unwrap();
    // last, round_robin, first, round_robin, ...: once GET /policies shows
    // the new component, every request must follow it; the markers show in
    // which worker answers.
    let sha = |bytes: &[u8]| wasm_router::policy::engine::sha256_hex(bytes);
    for round in 0..8 {
        let (bytes, expect) = match round % 4 {
            0 => (&last, Some("b")),
            2 => (&first, Some("a")),
            _ => (&round_robin, None),
        };
        replace(&file, bytes);
        until_sha(&base, &sha(bytes)).await;
        if let Some(worker) = expect {
            for i in 0..5 {
                assert_eq!(
                    generate(&r, &format!("round {round} probe {i}"))
                        .await
                        .unwrap(),
                    worker
                );
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0);
    assert!(ok.load(Ordering::SeqCst) > 0);
    let s = status(&base).await;
    assert!(s["reload_count"].as_u64().unwrap() >= 8, "{s}");
    assert!(s["last_error"].is_null(), "{s}");
}

#[tokio::test]
async fn broken_files_keep_the_old_policy_and_a_fixed_file_recovers() {
    let good = std::fs::read(picker("last")).unwrap();
    let a_ = MockWorker::start("a", "m").await;
    let b_ = MockWorker::start("b", "m").await;
    let file = dir("broken").join("policy.wasm");
    replace(&file, &good);
    let mut a = args(&[&a_, &b_]);
    a.policy = Some(file.display().to_string());
    let r = router(a).await;
    let base = format!("http://{}", r.addr);
    let sha = status(&base).await["sha256"].clone();
    for (what, bytes) in [
        ("corrupted", b"\0asm\x0d\0\x01\0garbage".to_vec()),
        ("truncated", good[..good.len() / 2].to_vec()),
    ] {
        replace(&file, &bytes);
        let error = until_error(&base).await;
        assert!(error.contains("policy.wasm"), "{what}: {error}");
        for i in 0..3 {
            assert_eq!(
                generate(&r, &format!("{what} {i}")).await.unwrap(),
                "b",
                "{what}: the old policy serves"
            );
        }
        assert_eq!(status(&base).await["sha256"], sha);
        // A forced reload of the broken file says why, and changes nothing.
        let resp = http()
            .post(format!("{base}/policies/reload"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 422, "{what}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "policy_reload_failed");
        replace(&file, &good);
        until_no_error(&base).await;
    }
    let fixed = std::fs::read(picker("first")).unwrap();
    replace(&file, &fixed);
    until_served_by(&r, "a").await;
}

#[tokio::test]
async fn a_changed_policy_table_re_inits_and_a_trap_in_init_keeps_the_old() {
    let a_ = MockWorker::start("a", "m").await;
    let b_ = MockWorker::start("b", "m").await;
    let d = dir("toml");
    let policy = d.join("policy.wasm");
    replace(
        &policy,
        &std::fs::read(crate::fixtures::hostile(None)).unwrap(),
    );
    let toml = d.join("router.toml");
    let write_toml = |table: &str| {
        let text = format!(
            "policy_name = {:?}\n[policy]\n{table}\n",
            policy.display().to_string()
        );
        replace(&toml, text.as_bytes());
    };
    write_toml("note = \"first\"");
    let mut a = args(&[&a_, &b_]);
    a.policy = None;
    a.config = Some(toml.clone());
    let r = router(a).await;
    let base = format!("http://{}", r.addr);
    assert!(generate(&r, "x").await.is_ok());
    write_toml("\"trap-in-init\" = true");
    let error = until_error(&base).await;
    assert!(error.contains("faulted while starting"), "{error}");
    assert!(generate(&r, "still served").await.is_ok());
    write_toml("note = \"fixed\"");
    until_no_error(&base).await;
    let s = status(&base).await;
    assert!(s["last_error"].is_null(), "{s}");
    assert!(s["reload_count"].as_u64().unwrap() >= 1, "{s}");
}

#[tokio::test]
async fn cache_aware_keeps_its_affinity_across_a_reload() {
    let a_ = MockWorker::start("a", "m").await;
    let b_ = MockWorker::start("b", "m").await;
    let mut a = args(&[&a_, &b_]);
    a.policy = Some("cache_aware".into());
    let r = router(a).await;
    let base = format!("http://{}", r.addr);
    // On empty trees the policy's tie-break picks: predict it from the
    // workers' URLs, as cache_aware does.
    let mut ties = wasm_router_policy::TieBreak::default();
    ties.workers_changed(&[worker_info(0, &a_.url), worker_info(1, &b_.url)]);
    let prefers = |text: &str| {
        let key = wasm_router_policy::TieBreak::key(text);
        if ties.rank(key, 0) < ties.rank(key, 1) {
            "a"
        } else {
            "b"
        }
    };
    let p1 = "First family of prompts, with a long shared system prompt. Q: ";
    let (first, other) = match prefers(&format!("{p1}one")) {
        "a" => ("a", "b"),
        _ => ("b", "a"),
    };
    // A second family that the tie-break sends where the first went: only
    // the tree sends it elsewhere.
    let p2 = (0..)
        .map(|i| format!("Second family ({i}), unrelated to the first one. Q: "))
        .find(|p| prefers(&format!("{p}two")) == first)
        .unwrap();
    assert_eq!(
        generate(&r, &format!("{p1}one")).await.unwrap(),
        first,
        "empty trees: the tie-break"
    );
    assert_eq!(
        generate(&r, &format!("{p2}one")).await.unwrap(),
        other,
        "a different prefix: the smaller tree"
    );
    let resp = http()
        .post(format!("{base}/policies/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(status(&base).await["reload_count"], 1);
    // A fresh tree would send p2 where p1 went (empty trees, the tie-break).
    assert_eq!(generate(&r, &format!("{p2}two")).await.unwrap(), other);
    assert_eq!(generate(&r, &format!("{p1}two")).await.unwrap(), first);
}

#[tokio::test]
async fn in_pd_mode_the_prefill_policy_file_is_watched_and_reloaded_alone() {
    use wasm_router::policy::builtin;
    let (prefill, decode) = (
        MockWorker::start("prefill", "m").await,
        MockWorker::start("decode", "m").await,
    );
    let file = dir("pd").join("prefill.wasm");
    replace(&file, builtin::get("round_robin").unwrap());
    let a = wasm_router::config::RouterArgs {
        pd_disaggregation: true,
        prefill: vec![prefill.url.clone()],
        decode: vec![decode.url.clone()],
        prefill_policy: Some(file.display().to_string()),
        decode_policy: Some("random".into()),
        ..args(&[])
    };
    let r = router(a).await;
    let base = format!("http://{}", r.addr);
    let names = async || -> Vec<String> {
        let v: Value = get_json(&format!("{base}/policies")).await;
        v["policies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                format!(
                    "{}:{}",
                    p["serves"].as_str().unwrap(),
                    p["name"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(names().await, ["prefill:round_robin", "decode:random"]);
    replace(&file, builtin::get("bucket").unwrap());
    eventually("the prefill policy is reloaded", async || {
        names().await == ["prefill:bucket", "decode:random"]
    })
    .await;
    assert_eq!(generate(&r, "after").await.as_deref(), Ok("decode"));
    r.shutdown().await.unwrap();
}

/// What `workers-changed` tells a policy about a worker.
fn worker_info(id: u32, url: &str) -> wasm_router_policy::WorkerInfo {
    wasm_router_policy::WorkerInfo {
        id,
        url: url.to_string(),
        model: String::new(),
        role: wasm_router_policy::Role::Regular,
        dp_rank: None,
    }
}
