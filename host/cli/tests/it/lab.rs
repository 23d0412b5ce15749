//! The policy lab over HTTP: decision records under concurrent clients, a
//! writer that falls behind, shadows that misbehave or agree, promotion.

use std::collections::HashMap;
use std::io::BufRead;

use serde_json::{Value, json};

use crate::fixtures;
use crate::mock::{MockWorker, args, eventually, get_json, http, router};
use wasm_router::lab::DecisionRecord;
use wasm_router::server::Running;

/// A fresh directory for one test.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("lab-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// POST `/generate` with `text`, request id `id` and routing key `key`;
/// the answering worker's name (panics on anything but a 200).
async fn generate(r: &Running, text: &str, id: &str, key: Option<&str>) -> String {
    let mut req = http()
        .post(format!("http://{}/generate", r.addr))
        .header("x-request-id", id)
        .timeout(std::time::Duration::from_secs(30));
    if let Some(key) = key {
        req = req.header("x-routing-key", key);
    }
    let resp = req.json(&json!({"text": text})).send().await.unwrap();
    assert_eq!(resp.status(), 200, "request {id}");
    let body: Value = resp.json().await.unwrap();
    body["worker"].as_str().unwrap().to_string()
}

/// 8 clients, `per_client` requests each, with ids `c-n` and texts sharing
/// a long prefix per client.
async fn eight_clients(r: &Running, per_client: usize, text_len: usize) {
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let prefix = format!("client {c} ").repeat(text_len / 9 + 1);
            let url = format!("http://{}/generate", r.addr);
            tokio::spawn(async move {
                for n in 0..per_client {
                    let resp = http()
                        .post(&url)
                        .header("x-request-id", format!("{c}-{n}"))
                        .timeout(std::time::Duration::from_secs(30))
                        .json(&json!({"text": format!("{prefix} turn {n}")}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 200);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_has_one_record_with_its_outcome() {
    let (a, b) = (
        MockWorker::start("a", "m").await,
        MockWorker::start("b", "m").await,
    );
    let log = scratch("records").join("decisions.jsonl");
    let mut flags = args(&[&a, &b]);
    flags.policy = Some("cache_aware".into());
    flags.decision_log = Some(log.display().to_string());
    let r = router(flags).await;
    eight_clients(&r, 25, 300).await;
    let read = || -> Vec<DecisionRecord> {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    eventually("200 records are written", async || read().len() >= 200).await;
    let records = read();
    assert_eq!(records.len(), 200, "one record per request, no more");
    let mut by_id: HashMap<&str, &DecisionRecord> = HashMap::new();
    for record in &records {
        assert!(
            by_id.insert(&record.request_id, record).is_none(),
            "{} twice",
            record.request_id
        );
        assert_eq!(record.outcome.status, 200, "{record:?}");
        assert!(record.outcome.latency_us > 0 && record.outcome.ttfb_us.is_some());
        assert_eq!(record.policy, "cache_aware");
        assert!(record.digest.is_some());
        assert_eq!(record.candidates.len(), 2);
        assert!([&a.url, &b.url].contains(&&record.pick));
        assert_eq!(
            record.blocks.len(),
            (record.prompt_bytes as usize).div_ceil(64)
        );
        assert!(record.text.is_none(), "no text without --decision-log-text");
    }
    for c in 0..8 {
        for n in 0..25 {
            assert!(by_id.contains_key(format!("{c}-{n}").as_str()));
        }
    }
    // A client's later turns share its prefix: cache_aware found it.
    let matched = records
        .iter()
        .filter(|r| r.matched_chars.unwrap_or(0) > 300)
        .count();
    assert!(
        matched > 100,
        "only {matched} records matched their client's prefix"
    );
    let served: Value = get_json(&format!("http://{}/decisions?last=5", r.addr)).await;
    let last = served["decisions"].as_array().unwrap();
    assert_eq!(last.len(), 5);
    assert_eq!(served["dropped"], 0);
    let newest: DecisionRecord = serde_json::from_value(last[4].clone()).unwrap();
    assert_eq!(&newest, records.last().unwrap());
    r.shutdown().await.unwrap();
    // `router replay` reads them back: the same requests and prefixes.
    let args = crate::replay::fleet(log.clone(), &["round_robin"]);
    let trace = wasm_router_cli::replay::read_trace(&log, &args).unwrap();
    assert_eq!(trace.len(), 200);
    assert!(
        trace
            .iter()
            .all(|t| t.block_tokens == 16 && !t.blocks.is_empty())
    );
    let shared = trace
        .iter()
        .filter(|t| t.blocks[0] == trace[0].blocks[0])
        .count();
    assert_eq!(
        shared, 25,
        "a client's requests share their first block, no one else's"
    );
}

/// The writer is stuck (a pipe nobody reads): records beyond the channel
/// are dropped and counted, and every request is answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_behind_drops_and_counts_and_requests_do_not_wait() {
    let a = MockWorker::start("a", "m").await;
    let fifo = scratch("behind").join("decisions.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // The reader opens (the router's open waits for it) and reads nothing
    // until told.
    let (go, wait) = std::sync::mpsc::channel::<u64>();
    let (done, lines) = std::sync::mpsc::channel::<u64>();
    std::thread::spawn({
        let fifo = fifo.clone();
        move || {
            let file = std::fs::File::open(&fifo).unwrap();
            let expected = wait.recv().unwrap();
            let mut read = std::io::BufReader::new(file).lines();
            let mut n = 0;
            while n < expected && read.next().is_some() {
                n += 1;
            }
            done.send(n).unwrap();
        }
    });
    let mut flags = args(&[&a]);
    flags.decision_log = Some(fifo.display().to_string());
    flags.decision_log_buffer = Some(4);
    let r = router(flags).await;
    // 240 records of over 1 KB each: past the pipe's 64 KB and the channel.
    let text = "y".repeat(3000);
    for n in 0..240 {
        generate(&r, &text, &format!("r{n}"), None).await;
    }
    let dropped = r.state.decisions.as_ref().unwrap().dropped();
    assert!(dropped > 0, "a stuck writer dropped nothing");
    go.send(240 - dropped).unwrap();
    let written = lines
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the records not dropped reach the log");
    assert_eq!(
        written + dropped,
        240,
        "every record written or counted as dropped"
    );
    r.shutdown().await.unwrap();
}

/// Each routing key once per client, 8 clients at once; the worker each
/// key went to (the same for every client, or the test fails).
async fn keyed_requests(r: &Running, keys: &[&str]) -> HashMap<String, String> {
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let url = format!("http://{}/generate", r.addr);
            let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for key in keys {
                    let resp = http()
                        .post(&url)
                        .header("x-routing-key", &key)
                        .timeout(std::time::Duration::from_secs(30))
                        .json(&json!({"text": format!("client {c}")}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 200, "key {key}");
                    let body: Value = resp.json().await.unwrap();
                    seen.push((key, body["worker"].as_str().unwrap().to_string()));
                }
                seen
            })
        })
        .collect();
    let mut by_key = HashMap::new();
    for client in clients {
        for (key, worker) in client.await.unwrap() {
            let before = by_key.insert(key.clone(), worker.clone());
            assert!(before.is_none_or(|b| b == worker), "key {key} moved");
        }
    }
    by_key
}

/// One request with routing key `key`.
async fn keyed_requests_once(r: &Running, key: &str) {
    let resp = http()
        .post(format!("http://{}/generate", r.addr))
        .header("x-routing-key", key)
        .json(&json!({"text": "once"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "key {key}");
}

/// Issue 34: a shadow that traps, loops to its deadline or picks a worker
/// that is not a candidate changes no live answer and is counted; a
/// shadow identical to the live policy agrees on every request; a shadow
/// can be promoted to live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadows_never_change_live_answers_and_are_counted() {
    let workers = [
        MockWorker::start("a", "m").await,
        MockWorker::start("b", "m").await,
        MockWorker::start("c", "m").await,
    ];
    let refs: Vec<_> = workers.iter().collect();
    let keys = [
        "k0", "k1", "k2", "k3", "k4", "panic", "loop", "bad-id", "k5", "k6",
    ];
    let mut flags = args(&refs);
    flags.policy = Some("consistent_hash".into());
    flags.policy_call_deadline_ms = Some(50);
    let alone = router(flags.clone()).await;
    let expected = keyed_requests(&alone, &keys).await;
    alone.shutdown().await.unwrap();

    let hostile = fixtures::hostile(None).display().to_string();
    flags.shadow_policy = vec!["consistent_hash".into(), hostile.clone()];
    flags.decision_log = Some(scratch("shadows").join("d.jsonl").display().to_string());
    let r = router(flags).await;
    let answered = keyed_requests(&r, &keys).await;
    assert_eq!(answered, expected, "shadows changed live answers");
    let total = (8 * keys.len()) as u64;
    let shadows = || async {
        let policies = get_json(&format!("http://{}/policies", r.addr)).await;
        policies["shadows"].as_array().unwrap().clone()
    };
    eventually(
        "every shadow answered or dropped every question",
        async || {
            shadows()
                .await
                .iter()
                .all(|s| s["asked"].as_u64().unwrap() + s["dropped"].as_u64().unwrap() == total)
        },
    )
    .await;
    let all = shadows().await;
    let twin = &all[0];
    assert_eq!(twin["shadow"], "consistent_hash");
    assert_eq!(twin["dropped"], 0);
    assert_eq!(
        twin["agreed"], total,
        "the identical shadow disagreed: {twin}"
    );
    let bad = &all[1];
    let hostile_questions = 8 * 3;
    assert!(
        bad["faults"].as_u64().unwrap() >= hostile_questions,
        "faults not counted: {bad}"
    );
    // Each misbehaviour alone, once the shadow serves again (a trap or a
    // deadline rebuilds its instance; meanwhile it answers `restarting`).
    let stat = |field: &'static str| {
        let shadows = &shadows;
        async move { shadows().await[1][field].as_u64().unwrap() }
    };
    for key in ["bad-id", "loop", "panic"] {
        let mut healthy = false;
        for _ in 0..100 {
            let (asked, faults) = (stat("asked").await, stat("faults").await);
            keyed_requests_once(&r, "k0").await;
            eventually("the shadow answered", async || {
                stat("asked").await == asked + 1
            })
            .await;
            if stat("faults").await == faults {
                healthy = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(healthy, "the hostile shadow never came back");
        let asked = stat("asked").await;
        keyed_requests_once(&r, key).await;
        eventually("the shadow answered", async || {
            stat("asked").await == asked + 1
        })
        .await;
    }
    let metrics = crate::mock::get_text(&format!("http://{}/metrics", r.metrics_addr)).await;
    for kind in ["trap", "deadline", "not_a_candidate"] {
        assert!(
            metrics.contains(&format!(
                "wasm_router_shadow_faults_total{{shadow=\"{hostile}\",kind=\"{kind}\"}}"
            )),
            "no {kind} fault counted"
        );
    }
    // The records carry the shadows' answers.
    let recent = get_json(&format!("http://{}/decisions?last=1000", r.addr)).await;
    let with_twin = recent["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| {
            d["shadows"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|a| a["shadow"] == "consistent_hash" && a["agreed"] == true)
            })
        })
        .count();
    assert!(with_twin > 0, "no record carries the twin's answer");

    let (status, body) =
        crate::mock::post_json(&r, "/policies/promote", json!({"shadow": "nope"})).await;
    assert_eq!(status, 404);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--shadow-policy")
    );
    let (status, body) =
        crate::mock::post_json(&r, "/policies/promote", json!({"shadow": hostile})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["policy"]["source"], hostile);
    let before = shadows().await;
    let (twin_before, asked_before) = (before[0]["asked"].as_u64(), before[1]["asked"].as_u64());
    for _ in 0..8 {
        keyed_requests_once(&r, "k0").await;
    }
    eventually("the twin answered the new requests", async || {
        shadows().await[0]["asked"].as_u64() == twin_before.map(|n| n + 8)
    })
    .await;
    assert_eq!(
        shadows().await[1]["asked"].as_u64(),
        asked_before,
        "a promoted shadow is no longer asked"
    );
    r.shutdown().await.unwrap();
}
