//! Prefill/decode disaggregation and data-parallel ranks, end to end: a
//! router over simulated prefill and decode workers (which refuse requests
//! without consistent bootstrap fields, and whose prefill half answers only
//! after the decode half pulled its KV cache) and over mock workers that
//! record what they were sent.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};
use wasm_router::config::RouterArgs;
use wasm_router::server::Running;
use wasm_router_cli::sim::pd::SimRole;
use wasm_router_cli::sim::{self, SimArgs, SimHandle};

use crate::mock::{self, MockWorker, get_json, http, post_json};

fn sim_args(role: SimRole) -> SimArgs {
    SimArgs {
        role,
        time_scale: 0.0,
        // A router that sends the halves one after the other gets a 504
        // from the prefill after this long, instead of a pass.
        bootstrap_timeout_ms: 5_000,
        ..SimArgs::default()
    }
}

/// A simulated worker in this process.
async fn start(args: SimArgs) -> SimHandle {
    sim::start(args, true).await.unwrap()
}

/// A sim of `role` reporting `dp_size` ranks.
async fn start_dp(role: SimRole, dp_size: u32) -> SimHandle {
    start(SimArgs {
        dp_size,
        ..sim_args(role)
    })
    .await
}

async fn sims(role: SimRole, n: usize) -> Vec<SimHandle> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(start(sim_args(role)).await);
    }
    out
}

/// Requests a sim counted per data-parallel rank.
fn by_rank(s: &SimHandle) -> Vec<u64> {
    s.sim
        .counters
        .by_rank
        .iter()
        .map(|n| n.load(Ordering::Relaxed))
        .collect()
}

/// `--prefill URL PORT` with the prefill sim's own port as its bootstrap
/// port (the sim serves KV pulls there).
fn pd_args(prefill: &[String], decode: &[String]) -> RouterArgs {
    let mut prefill_flags = Vec::new();
    for url in prefill {
        prefill_flags.push(url.clone());
        prefill_flags.push(url.rsplit(':').next().unwrap().to_string());
    }
    RouterArgs {
        pd_disaggregation: true,
        worker_urls: Vec::new(),
        prefill: prefill_flags,
        decode: decode.to_vec(),
        ..mock::args(&[])
    }
}

fn urls(sims: &[SimHandle]) -> Vec<String> {
    sims.iter().map(SimHandle::url).collect()
}

fn requests(sims: &[SimHandle]) -> Vec<u64> {
    sims.iter()
        .map(|s| s.sim.counters.requests.load(Ordering::Relaxed))
        .collect()
}

fn pulls(sims: &[SimHandle]) -> u64 {
    sims.iter()
        .map(|s| s.sim.counters.kv_pulls.load(Ordering::Relaxed))
        .sum()
}

async fn pd_router(prefill: &[SimHandle], decode: &[SimHandle]) -> Running {
    mock::router(pd_args(&urls(prefill), &urls(decode))).await
}

#[tokio::test]
async fn each_request_goes_to_a_prefill_and_a_decode_at_once_and_the_decode_answers() {
    let (prefill, decode) = (
        sims(SimRole::Prefill, 2).await,
        sims(SimRole::Decode, 2).await,
    );
    let r = pd_router(&prefill, &decode).await;
    for i in 0..4 {
        let (status, body) = post_json(
            &r,
            "/generate",
            json!({"text": format!("prompt {i}"), "sampling_params": {"max_new_tokens": 5}}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        // A prefill sim computes one token; five come from a decode sim.
        assert_eq!(body["text"], "tok tok tok tok tok", "{body}");
    }
    // round_robin on each side: every worker took half.
    assert_eq!(requests(&prefill), vec![2, 2]);
    assert_eq!(requests(&decode), vec![2, 2]);
    assert_eq!(pulls(&prefill), 4, "every room was pulled from its prefill");
    assert_eq!(pulls(&decode), 4);
}

#[tokio::test]
async fn a_batch_gets_one_room_per_prompt_and_chat_and_completions_work() {
    let (prefill, decode) = (
        sims(SimRole::Prefill, 1).await,
        sims(SimRole::Decode, 1).await,
    );
    let r = pd_router(&prefill, &decode).await;
    let (status, body) = post_json(&r, "/generate", json!({"text": ["a", "b", "c"]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(pulls(&prefill), 3, "three rooms for a batch of three");
    let (status, body) = post_json(
        &r,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
    )
    .await;
    assert_eq!(
        (status, &body["choices"][0]["message"]["content"]),
        (200, &json!("tok tok"))
    );
    let (status, _) = post_json(&r, "/v1/completions", json!({"prompt": ["x", "y"]})).await;
    assert_eq!(status, 200);
    assert_eq!(pulls(&prefill), 6);
}

#[tokio::test]
async fn streams_come_from_the_decode_worker_chunk_by_chunk() {
    let (prefill, decode) = (
        sims(SimRole::Prefill, 1).await,
        sims(SimRole::Decode, 1).await,
    );
    let r = pd_router(&prefill, &decode).await;
    let resp = http()
        .post(format!("http://{}/generate", r.addr))
        .json(&json!({"text": "hello", "stream": true, "sampling_params": {"max_new_tokens": 8}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 5, "four pieces and [DONE]: {text}");
    assert_eq!(events[4], "data: [DONE]");
    let last: Value = serde_json::from_str(events[3].trim_start_matches("data: ")).unwrap();
    assert_eq!(last["meta_info"]["completion_tokens"], 8);
    assert_eq!(pulls(&decode), 1);
}

#[tokio::test]
async fn the_prefill_logprobs_of_the_prompt_are_merged_in_front() {
    let (prefill, decode) = (
        sims(SimRole::Prefill, 1).await,
        sims(SimRole::Decode, 1).await,
    );
    let r = pd_router(&prefill, &decode).await;
    let text = "x".repeat(64);
    let (status, body) = post_json(
        &r,
        "/generate",
        json!({"text": text, "return_logprob": true, "sampling_params": {"max_new_tokens": 3}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let meta = &body["meta_info"];
    // The decode sim reports no prompt logprobs: all of them are the prefill's.
    assert_eq!(meta["prompt_tokens"], 16);
    assert_eq!(meta["input_token_logprobs"].as_array().unwrap().len(), 16);
    assert_eq!(meta["output_token_logprobs"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_streams_first_event_carries_the_prefill_logprobs() {
    let (prefill, decode) = (
        sims(SimRole::Prefill, 1).await,
        sims(SimRole::Decode, 1).await,
    );
    let r = pd_router(&prefill, &decode).await;
    let text = http()
        .post(format!("http://{}/generate", r.addr))
        .json(&json!({"text": "y".repeat(40), "stream": true, "return_logprob": true}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let first: Value = serde_json::from_str(
        text.split("\n\n")
            .next()
            .unwrap()
            .trim_start_matches("data: "),
    )
    .unwrap();
    // 40 characters are 10 prompt tokens, read by the prefill sim; the
    // decode sim streams none of them.
    assert_eq!(
        first["meta_info"]["input_token_logprobs"]
            .as_array()
            .unwrap()
            .len(),
        10,
        "{text}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
}

#[tokio::test]
async fn a_failed_prefill_fails_the_request_with_its_own_error() {
    // 400 is not retried; 503 is, until no prefill worker is left.
    for fail_status in [400, 503] {
        let prefill = start(SimArgs {
            fail_rate: 1.0,
            fail_status,
            ..sim_args(SimRole::Prefill)
        })
        .await;
        let decode = sims(SimRole::Decode, 1).await;
        let r = pd_router(std::slice::from_ref(&prefill), &decode).await;
        let (status, body) = post_json(&r, "/generate", json!({"text": "hi"})).await;
        assert_eq!(status, fail_status, "{body}");
        assert_eq!(body["error"]["message"], "simulated failure", "{body}");
        assert_eq!(body["error"]["type"], "sim_error", "the prefill's own body");
        assert_eq!(pulls(&decode), 0, "the decode half never got the KV cache");
    }
}

#[tokio::test]
async fn a_retry_picks_a_new_pair_without_the_failed_worker() {
    let prefill = sims(SimRole::Prefill, 2).await;
    let failing_decode = start(SimArgs {
        fail_first: 1,
        fail_status: 503,
        ..sim_args(SimRole::Decode)
    })
    .await;
    let decode = vec![failing_decode, start(sim_args(SimRole::Decode)).await];
    let r = pd_router(&prefill, &decode).await;
    let (status, body) = post_json(&r, "/generate", json!({"text": "hi"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        requests(&decode),
        vec![1, 1],
        "the retry went to the other decode worker"
    );
    // round_robin moved on for the prefill too: a new pair, a new room,
    // pulled from the second prefill worker.
    assert_eq!(pulls(&prefill[1..]), 1, "{:?}", requests(&prefill));
    assert_eq!(pulls(&prefill), 1, "only the second pair's room was pulled");
}

#[tokio::test]
async fn bootstrap_fields_name_the_prefill_and_one_room_and_none_is_null() {
    let prefill = MockWorker::start("prefill", "m").await;
    let decode = MockWorker::start("decode", "m").await;
    let args = RouterArgs {
        pd_disaggregation: true,
        prefill: vec![prefill.url.clone(), "none".into()],
        decode: vec![decode.url.clone()],
        ..mock::args(&[])
    };
    let r = mock::router(args).await;
    let (status, body) = post_json(
        &r,
        "/generate",
        json!({"text": "hi", "extra": [1, {"k": null}]}),
    )
    .await;
    assert_eq!(
        (status, &body["worker"]),
        (200, &json!("decode")),
        "the decode's answer"
    );
    let sent = |w: &MockWorker| -> Value {
        let last = w.b.last.lock().unwrap();
        serde_json::from_slice(&last.as_ref().unwrap().1).unwrap()
    };
    let (to_prefill, to_decode) = (sent(&prefill), sent(&decode));
    assert_eq!(to_prefill, to_decode, "both halves get the same body");
    assert_eq!(to_decode["bootstrap_host"], "127.0.0.1");
    assert_eq!(to_decode["bootstrap_port"], Value::Null);
    assert!(to_decode["bootstrap_room"].as_u64().unwrap() < 1 << 63);
    assert_eq!(
        to_decode["extra"],
        json!([1, {"k": null}]),
        "the rest unchanged"
    );
    let (_, _) = post_json(&r, "/generate", json!({"text": "again"})).await;
    assert_ne!(
        sent(&decode)["bootstrap_room"],
        to_decode["bootstrap_room"],
        "a new room per request"
    );
}

#[tokio::test]
async fn pd_readiness_needs_a_healthy_prefill_and_a_healthy_decode() {
    let prefill = MockWorker::start("prefill", "m").await;
    let decode = MockWorker::start("decode", "m").await;
    let args = RouterArgs {
        pd_disaggregation: true,
        prefill: vec![prefill.url.clone()],
        decode: vec![decode.url.clone()],
        ..mock::args(&[])
    };
    let r = mock::router(args).await;
    let ready = async || {
        http()
            .get(format!("http://{}/readiness", r.addr))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(ready().await, 200);
    decode.b.unhealthy.store(true, Ordering::SeqCst);
    mock::eventually("the decode worker is out", async || ready().await == 503).await;
    let (status, _) = post_json(&r, "/generate", json!({"text": "hi"})).await;
    assert_eq!(status, 503, "a prefill alone cannot serve");
}

#[tokio::test]
async fn in_pd_mode_workers_are_added_with_their_role() {
    let (prefill, decode) = (
        sims(SimRole::Prefill, 1).await,
        sims(SimRole::Decode, 2).await,
    );
    let r = pd_router(&prefill, &decode[..1]).await;
    let add = async |body: Value| post_json(&r, "/workers", body).await;
    let (status, body) = add(json!({"url": decode[1].url()})).await;
    assert_eq!(status, 400, "no role in PD mode: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("prefill or decode")
    );
    let (status, body) =
        add(json!({"url": decode[1].url(), "role": "decode", "bootstrap_port": 1})).await;
    assert_eq!(status, 400, "a bootstrap port for a decode worker: {body}");
    let (status, body) =
        add(json!({"url": decode[1].url(), "role": "decode", "worker_type": "decode"})).await;
    assert_eq!(status, 400, "the role given twice: {body}");
    // sglang-router's clients name the role `worker_type`.
    let (status, _) = add(json!({"url": decode[1].url(), "worker_type": "decode"})).await;
    assert_eq!(status, 202);
    let added = r.state.registry.by_url(&decode[1].url()).unwrap();
    assert_eq!(added.role, wasm_router::config::Role::Decode);
    mock::eventually("the new decode worker takes requests", async || {
        post_json(&r, "/generate", json!({"text": "hi"})).await.0 == 200
            && requests(&decode[1..])[0] > 0
    })
    .await;
}

#[tokio::test]
async fn each_side_has_its_own_policy_and_both_are_reported() {
    let (prefill, decode) = (
        sims(SimRole::Prefill, 1).await,
        sims(SimRole::Decode, 1).await,
    );
    let mut args = pd_args(&urls(&prefill), &urls(&decode));
    args.prefill_policy = Some("random".into());
    args.decode_policy = Some("power_of_two".into());
    let r = mock::router(args).await;
    let policies = get_json(&format!("http://{}/policies", r.addr)).await;
    let served: Vec<(String, String)> = policies["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["serves"].as_str().unwrap().into(),
                p["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        served,
        vec![
            ("prefill".into(), "random".into()),
            ("decode".into(), "power_of_two".into())
        ]
    );
    let workers = get_json(&format!("http://{}/workers", r.addr)).await;
    let roles: Vec<&str> = workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, vec!["prefill", "decode"]);
    let (status, _) = post_json(&r, "/generate", json!({"text": "hi"})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn dp_aware_routes_to_every_rank_and_names_it_in_the_body() {
    let four = start_dp(SimRole::Regular, 4).await;
    let two = start_dp(SimRole::Regular, 2).await;
    let args = RouterArgs {
        worker_urls: vec![four.url(), two.url()],
        dp_aware: true,
        ..mock::args(&[])
    };
    let r = mock::router(args).await;
    let workers = get_json(&format!("http://{}/workers", r.addr)).await;
    let ranks: Vec<(String, u64)> = workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["url"].as_str().unwrap().into(),
                w["dp_rank"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = (0..4)
        .map(|r| (four.url(), r))
        .chain((0..2).map(|r| (two.url(), r)))
        .collect();
    assert_eq!(ranks, expected);
    for i in 0..12 {
        let (status, body) = post_json(&r, "/generate", json!({"text": format!("q{i}")})).await;
        assert_eq!(status, 200, "{body}");
    }
    // round_robin over six candidates: two requests per rank, and each sim
    // counts ranks from the body's data_parallel_rank.
    assert_eq!(by_rank(&four), vec![2, 2, 2, 2]);
    assert_eq!(by_rank(&two), vec![2, 2]);
    let listed = get_json(&format!("http://{}/list_workers", r.addr)).await;
    assert_eq!(
        listed["urls"],
        json!([four.url(), two.url()]),
        "each server once"
    );
}

#[tokio::test]
async fn a_sim_refuses_a_rank_it_does_not_have_and_pd_halves_without_bootstrap() {
    let w = start_dp(SimRole::Regular, 2).await;
    let post = |url: String, body: Value| async move {
        let resp = http().post(url).json(&body).send().await.unwrap();
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
    };
    let (status, body) = post(
        format!("{}/generate", w.url()),
        json!({"text": "a", "data_parallel_rank": 2}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let info = get_json(&format!("{}/get_server_info", w.url())).await;
    assert_eq!(info["dp_size"], 2);
    let d = start(sim_args(SimRole::Decode)).await;
    let (status, body) = post(format!("{}/generate", d.url()), json!({"text": "a"})).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bootstrap_room"),
        "{body}"
    );
    // A decode sim whose prefill never saw the room cannot pull it.
    let p = start(SimArgs {
        bootstrap_timeout_ms: 100,
        ..sim_args(SimRole::Prefill)
    })
    .await;
    let port = p.addr.port();
    let lonely = json!({"text": "a", "bootstrap_host": "127.0.0.1", "bootstrap_port": port, "bootstrap_room": 9});
    let (status, body) = post(format!("{}/generate", d.url()), lonely).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("room 9"),
        "{body}"
    );
}

#[tokio::test]
async fn bucket_as_the_prefill_policy_splits_short_and_long_prompts() {
    let (prefill, decode) = (
        sims(SimRole::Prefill, 2).await,
        sims(SimRole::Decode, 1).await,
    );
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bucket-router.toml");
    std::fs::write(&file, "[policy]\nbucket_adjust_interval_secs = 1\n").unwrap();
    let mut args = pd_args(&urls(&prefill), &urls(&decode));
    args.config = Some(file);
    args.prefill_policy = Some("bucket".into());
    let r = mock::router(args).await;
    let (short, long) = ("s".repeat(10), "l".repeat(1000));
    // Which prefill worker took a prompt: the one whose count moved.
    let served_by = async |text: &str| {
        let before = requests(&prefill);
        let (status, body) = post_json(&r, "/generate", json!({"text": text})).await;
        assert_eq!(status, 200, "{body}");
        let after = requests(&prefill);
        (0..2).find(|&i| after[i] > before[i]).unwrap()
    };
    let ticks = async || {
        let status = get_json(&format!("http://{}/policies", r.addr)).await;
        let policies = status["policies"].as_array().unwrap();
        let prefill = policies.iter().find(|p| p["serves"] == "prefill").unwrap();
        prefill["ticks"].as_u64().unwrap()
    };
    // Until the first split every prompt goes to the least loaded worker,
    // which may be either (the previous request's prefill may still count
    // as in flight). A tick after prompts of both lengths splits them:
    // short prompts to the first, long to the second.
    served_by(&short).await;
    served_by(&long).await;
    let seen = ticks().await;
    mock::eventually("a tick after both lengths", async || ticks().await > seen).await;
    for _ in 0..5 {
        assert_eq!((served_by(&short).await, served_by(&long).await), (0, 1));
    }
}

#[tokio::test]
async fn with_dp_aware_a_worker_added_at_runtime_joins_with_every_rank_and_leaves_whole() {
    let first = start_dp(SimRole::Regular, 2).await;
    let added = start_dp(SimRole::Regular, 3).await;
    let args = RouterArgs {
        worker_urls: vec![first.url()],
        dp_aware: true,
        ..mock::args(&[])
    };
    let r = mock::router(args).await;
    let (status, body) = post_json(&r, "/workers", json!({"url": added.url()})).await;
    assert_eq!(status, 202);
    assert_eq!(body["ids"].as_array().unwrap().len(), 3, "{body}");
    let count = async || {
        get_json(&format!("http://{}/workers", r.addr)).await["workers"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(count().await, 5);
    let removed = http()
        .post(format!(
            "http://{}/remove_worker?url={}",
            r.addr,
            added.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 200);
    assert_eq!(count().await, 2, "all three ranks left");
}

#[tokio::test]
async fn pd_with_dp_aware_names_a_rank_on_each_side() {
    let prefill = vec![start_dp(SimRole::Prefill, 2).await];
    let decode = vec![start_dp(SimRole::Decode, 2).await];
    let mut args = pd_args(&urls(&prefill), &urls(&decode));
    args.dp_aware = true;
    let r = mock::router(args).await;
    for i in 0..4 {
        let (status, body) = post_json(&r, "/generate", json!({"text": format!("q{i}")})).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(by_rank(&prefill[0]), vec![2, 2]);
    assert_eq!(by_rank(&decode[0]), vec![2, 2]);
    assert_eq!(pulls(&prefill), 4);
}
