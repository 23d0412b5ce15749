//! The simulated worker over HTTP, and `router demo`.

use serde_json::{Value, json};
use wasm_router_cli::demo::{self, DemoArgs};
use wasm_router_cli::sim::cache::Lookup;
use wasm_router_cli::sim::{self, SimArgs};

use crate::mock::http;

fn instant() -> SimArgs {
    SimArgs {
        time_scale: 0.0,
        ..SimArgs::default()
    }
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    let resp = http().post(url).json(&body).send().await.unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_repeated_prefix_is_reported_as_cached_in_both_shapes() {
    let w = sim::start(instant(), true).await.unwrap();
    let system = "s".repeat(640);
    let (status, first) = post(
        &format!("{}/generate", w.url()),
        json!({"text": format!("{system} one")}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(first["meta_info"]["cached_tokens"], 0);
    let (_, second) = post(
        &format!("{}/generate", w.url()),
        json!({"text": format!("{system} two")}),
    )
    .await;
    assert_eq!(
        second["meta_info"]["cached_tokens"], 160,
        "640 chars = 160 tokens, ten full blocks"
    );
    let (_, chat) = post(
        &format!("{}/v1/chat/completions", w.url()),
        json!({"messages": [{"role": "user", "content": format!("{system} three")}], "max_tokens": 3}),
    )
    .await;
    assert_eq!(chat["usage"]["prompt_tokens_details"]["cached_tokens"], 160);
    assert_eq!(chat["usage"]["completion_tokens"], 3);
    assert_eq!(chat["choices"][0]["message"]["content"], "tok tok tok");
    assert!(w.sim.hit_rate() > 0.0);
    w.stop();
}

#[tokio::test]
async fn streams_end_with_usage_and_done() {
    let w = sim::start(instant(), true).await.unwrap();
    let text = http()
        .post(format!("{}/v1/completions", w.url()))
        .json(&json!({"prompt": "hello", "stream": true, "max_tokens": 8}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 5, "four pieces and [DONE]: {text}");
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    let last: Value = serde_json::from_str(events[3].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(last["usage"]["completion_tokens"], 8);
    w.stop();
}

#[tokio::test]
async fn failure_knobs_fail_as_told() {
    let w = sim::start(
        SimArgs {
            fail_first: 2,
            fail_status: 503,
            ..instant()
        },
        true,
    )
    .await
    .unwrap();
    let url = format!("{}/generate", w.url());
    assert_eq!(post(&url, json!({"text": "a"})).await.0, 503);
    assert_eq!(post(&url, json!({"text": "a"})).await.0, 503);
    assert_eq!(post(&url, json!({"text": "a"})).await.0, 200);
    let crashy = sim::start(
        SimArgs {
            crash_after: Some(1),
            ..instant()
        },
        true,
    )
    .await
    .unwrap();
    let url = format!("{}/generate", crashy.url());
    assert_eq!(post(&url, json!({"text": "a"})).await.0, 200);
    assert_eq!(post(&url, json!({"text": "a"})).await.0, 503);
    let addr = crashy.addr;
    crate::mock::eventually("the crashed worker stops listening", async || {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
}

/// `/get_load` in SGLang's shape: a running request's prompt tokens are
/// held in the KV cache (`num_tokens`) until it ends.
#[tokio::test]
async fn get_load_counts_the_kv_tokens_of_running_requests() {
    let w = sim::start(
        SimArgs {
            latency_ms: 400,
            ..SimArgs::default()
        },
        true,
    )
    .await
    .unwrap();
    let load = async || crate::mock::get_json(&format!("{}/get_load", w.url())).await;
    assert_eq!(
        load().await,
        json!([{"dp_rank": 0, "num_reqs": 0, "num_waiting_reqs": 0, "num_tokens": 0}])
    );
    let url = format!("{}/generate", w.url());
    let running = tokio::spawn(async move { post(&url, json!({"text": "t".repeat(640)})).await });
    let mut seen = Value::Null;
    crate::mock::eventually("the running request holds tokens", async || {
        seen = load().await;
        seen[0]["num_tokens"] != 0
    })
    .await;
    assert_eq!(seen[0]["num_tokens"], 160, "640 chars = 160 tokens: {seen}");
    assert_eq!(seen[0]["num_reqs"], 1, "{seen}");
    assert_eq!(running.await.unwrap().0, 200);
    assert_eq!(load().await[0]["num_tokens"], 0, "ended: nothing held");
    w.stop();
}

/// `--serial-prefill`: a GPU's prefill compute is shared, so a second
/// prompt waits for the first one's prefill, and counts as waiting
/// (`num_waiting_reqs`) meanwhile.
#[tokio::test]
async fn serial_prefill_queues_a_prompt_behind_the_one_in_prefill() {
    let w = sim::start(
        SimArgs {
            serial_prefill: true,
            prefill_us_per_token: 2_000,
            output_tokens: 1,
            ..SimArgs::default()
        },
        true,
    )
    .await
    .unwrap();
    // 160 tokens each, different texts: 320 ms of prefill apiece.
    let start = std::time::Instant::now();
    let send = |c: char| {
        let url = format!("{}/generate", w.url());
        tokio::spawn(async move {
            let (status, _) = post(&url, json!({"text": c.to_string().repeat(640)})).await;
            (status, start.elapsed())
        })
    };
    let first = send('a');
    let load = async || crate::mock::get_json(&format!("{}/get_load", w.url())).await;
    crate::mock::eventually("the first prompt is in prefill", async || {
        load().await[0]["num_reqs"] == 1
    })
    .await;
    let second = send('b');
    let mut seen = Value::Null;
    crate::mock::eventually("the second prompt waits", async || {
        seen = load().await;
        seen[0]["num_reqs"] == 2
    })
    .await;
    assert_eq!(seen[0]["num_waiting_reqs"], 1, "{seen}");
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!((first.0, second.0), (200, 200));
    // Both prefills, one after the other (sleeps are never shorter than
    // asked); overlapping, it would end about 320 ms after it was sent.
    assert!(
        second.1 >= std::time::Duration::from_millis(640),
        "{:?}",
        second.1
    );
    w.stop();
}

#[tokio::test]
async fn prefill_time_grows_with_uncached_tokens() {
    let w = sim::start(
        SimArgs {
            prefill_us_per_token: 100,
            latency_ms: 0,
            ..SimArgs::default()
        },
        true,
    )
    .await
    .unwrap();
    let time = |cached| {
        w.sim.prefill_time(Lookup {
            prompt_tokens: 1000,
            cached_tokens: cached,
        })
    };
    assert_eq!(time(0).as_micros(), 100_000);
    assert_eq!(time(900).as_micros(), 10_000);
    assert!(time(0) > time(500) && time(500) > time(1000));
    w.stop();
}

#[tokio::test]
async fn the_quick_demo_shows_cache_aware_beating_round_robin() {
    let args = DemoArgs {
        quick: true,
        workers: 4,
        groups: 8,
        prompts_per_group: 24,
        concurrency: 8,
        cache_tokens: 2500,
        time_scale: 0.2,
        max_secs: 60,
        replicas: 3,
    };
    let results = demo::run(&args, false).await.unwrap();
    let table = demo::table(&results);
    let by = |name: &str| results.iter().find(|r| r.policy == name).unwrap();
    let (rr, ca) = (by("round_robin"), by("cache_aware"));
    assert!(ca.hit_rate > rr.hit_rate, "{table}");
    // Behind three replicas too, every request is served (precise's
    // replicas each following the four workers' events).
    for row in [
        "round_robin",
        "cache_aware",
        "cache_aware x3",
        "precise_cache_aware x3",
    ] {
        let r = by(row);
        assert_eq!((r.report.ok, r.report.failed), (32, 0), "{row}:\n{table}");
    }
}
