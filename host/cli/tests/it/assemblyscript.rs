//! The AssemblyScript glue (policies/sdk-assemblyscript, contract 0.2.0),
//! through its probe policy: every value the router sends must come back
//! intact, in a pick or in a refusal message, and every host import must
//! answer. Then the AssemblyScript example, routing real requests.

use wasm_router::config::Role;
use wasm_router::policy::{
    AttemptError, Candidate, Instances, LoadError, Outcome, Policy, PolicySource, PrefillWork,
    Route, RouteRequest, SelectError, WasmPolicy, WorkerInfo,
};

use crate::fixtures::{
    assemblyscript_probe, contract_0_1, engine, generous_limits, idle, session_affinity_as,
    wait_until,
};
use crate::mock::{MockWorker, args, router, worker_for_key};

fn probe(config: &str) -> Result<WasmPolicy, LoadError> {
    WasmPolicy::load(
        &engine(),
        PolicySource::File(assemblyscript_probe()),
        config,
        generous_limits(),
    )
}

/// The probe's refusal message for a request with this routing key.
fn ask(p: &WasmPolicy, req: &RouteRequest<'_>, candidates: &[Candidate]) -> String {
    match p.select(req, candidates) {
        Err(SelectError::Declined(message)) => message,
        other => panic!("expected the probe's refusal, got {other:?}"),
    }
}

fn keyed<'a>(key: &'a str, model: &'a str, text: &'a str) -> RouteRequest<'a> {
    RouteRequest {
        id: 42,
        route: Route::ChatCompletions,
        model,
        text,
        tokens: None,
        prompt_tokens: None,
        routing_key: Some(key),
        headers: None,
        stream: false,
        max_new_tokens: None,
    }
}

#[test]
fn init_results_cross_in_both_directions() {
    let p = probe(r#"{"tick_ms": 250}"#).unwrap();
    assert_eq!(p.contract(), "0.2.0");
    let info = wasm_router::policy::Policy::info(&p);
    assert_eq!(info.name, "prøbe ✓");
    assert!(info.needs_text && info.wants_feedback);
    assert_eq!(
        info.tick_interval,
        Some(std::time::Duration::from_millis(250))
    );
    assert_eq!(info.instances, Instances::Shared);
    let per_thread = probe(r#"{"per_thread": true}"#).unwrap();
    assert_eq!(per_thread.info().instances, Instances::PerThread);
    assert!(
        per_thread.instances() >= 2,
        "one instance per serving thread"
    );

    match probe(r#"{"refuse": "ünïcode"}"#) {
        Err(LoadError::InitRefused { message, .. }) => {
            assert_eq!(message, r#"refusé ✓ {"refuse": "ünïcode"}"#)
        }
        Err(other) => panic!("expected InitRefused, got {other}"),
        Ok(_) => panic!("the probe accepted a config it must refuse"),
    }
}

#[test]
fn request_getters_cross_empty_and_non_ascii() {
    let p = probe("{}").unwrap();
    let two = idle(&[1, 2]);
    assert_eq!(
        ask(&p, &keyed("request", "", ""), &two),
        "id=42|route=2|model=|text=|bytes=0|stream=0|max=-1|n=2|start="
    );
    let text = "héllo 世界 🚀 \u{0}end";
    let req = RouteRequest {
        stream: true,
        max_new_tokens: Some(4_000_000_000),
        ..keyed("request", "llamä-3", text)
    };
    assert_eq!(
        ask(&p, &req, &two),
        format!(
            "id=42|route=2|model=llamä-3|text={text}|bytes={}|stream=1|max=4000000000|n=2|start=hé",
            text.len()
        )
    );
}

#[test]
fn every_candidate_column_crosses() {
    let p = probe("{}").unwrap();
    let candidates = [
        Candidate {
            id: 7,
            load: 9,
            in_flight: 3,
            reported_load: Some(9),
            queued: Some(4),
            half_open: false,
            ttft_ewma: Some(std::time::Duration::from_micros(1500)),
            latency_ewma: Some(std::time::Duration::from_secs(5000)),
            kv_tokens: Some(3000),
            kv_capacity: Some(12_000),
            prefill_ahead: PrefillWork {
                requests: 2,
                tokens: 4_000_000,
            },
        },
        Candidate {
            id: 4_000_000_000,
            load: 2,
            in_flight: 2,
            reported_load: None,
            queued: None,
            half_open: true,
            ttft_ewma: None,
            latency_ewma: None,
            // A token count without a known capacity is no usage.
            kv_tokens: Some(5),
            kv_capacity: None,
            prefill_ahead: PrefillWork::default(),
        },
    ];
    assert_eq!(
        ask(&p, &keyed("columns", "", ""), &candidates),
        // 5,000 s is past u32 microseconds: the router saturates it. 3,000
        // of 12,000 tokens is a usage of 0.25; tokens without a capacity, none.
        "7,9,3,9,4,0,1500,4294967295,0.25,2,4000000;4000000000,2,2,-1,-1,1,-1,-1,-1.0,0,0;"
    );
}

#[test]
fn the_host_imports_answer_and_state_outlives_the_instance() {
    let engine = engine();
    let load = || {
        WasmPolicy::load(
            &engine,
            PolicySource::File(assemblyscript_probe()),
            "{}",
            generous_limits(),
        )
        .unwrap()
    };
    let p = load();
    let text = "the same system prompt, then a question";
    // Ids no router in this process gives its workers: the probe records a
    // metric per worker id, and the HTTP test below counts its own worker's.
    let three = idle(&[7001, 7002, 7003]);
    let n = text.len();
    assert_eq!(
        ask(&p, &keyed("host", "", text), &three),
        format!(
            "calls=1|blob=none|set=ok|metric=ok|bad=refused|add-blob=refused\
             |before=0/{n}@-1|after={n}/{n}@7003|sizes=0,0,{n},"
        )
    );
    assert_eq!(p.faults(), 0, "a refused import is an answer, not a trap");
    // A reload is a new instance from the same file on the same engine: what
    // the first kept in the host is still there.
    drop(p);
    let reloaded = load();
    assert_eq!(
        ask(&reloaded, &keyed("host", "", text), &three),
        format!(
            "calls=2|blob=blob ✓ 1|set=ok|metric=ok|bad=refused|add-blob=refused\
             |before={n}/{n}@7003|after={n}/{n}@7003|sizes=0,0,{n},"
        )
    );
    assert_eq!(
        reloaded.state().get("calls"),
        Some(2i64.to_le_bytes().to_vec())
    );
}

#[test]
fn worker_lists_cross_empty_and_full() {
    let p = probe("{}").unwrap();
    p.workers_changed(&[]);
    assert_eq!(ask(&p, &keyed("workers", "", ""), &idle(&[1])), "0");
    let workers = [
        WorkerInfo {
            id: 3,
            url: "http://127.0.0.1:8001".into(),
            model: "qwen".into(),
            role: Role::Regular,
            dp_rank: None,
            ..Default::default()
        },
        WorkerInfo {
            id: 4_000_000_000,
            url: "http://[::1]:9/ünï".into(),
            model: String::new(),
            role: Role::Decode,
            dp_rank: Some(7),
            ..Default::default()
        },
    ];
    p.workers_changed(&workers);
    assert_eq!(
        ask(&p, &keyed("workers", "", ""), &idle(&[1])),
        "2;3,http://127.0.0.1:8001,qwen,0,-1;4000000000,http://[::1]:9/ünï,,2,7"
    );
}

#[test]
fn headers_cross_by_name_and_credentials_never() {
    let p = probe("{}").unwrap();
    assert!(
        p.info().reads.headers,
        "the probe imports request.header: the router must lend it the headers"
    );
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("x-tenant", "äcme".parse().unwrap());
    headers.append("x-tenant", "beta".parse().unwrap());
    headers.insert("authorization", "Bearer secret".parse().unwrap());
    let req = RouteRequest {
        headers: Some(&headers),
        ..keyed("headers", "", "")
    };
    assert_eq!(
        ask(&p, &req, &idle(&[1])),
        "tenant=äcme, beta|auth=-",
        "several values joined, any case of the name, credentials hidden"
    );
    // Not lent (another request): nothing from the last one is left.
    assert_eq!(
        ask(&p, &keyed("headers", "", ""), &idle(&[1])),
        "tenant=-|auth=-"
    );
}

#[test]
fn weights_and_labels_cross_from_the_worker_list() {
    let p = probe("{}").unwrap();
    let labelled = |id, weight, zone: Option<&str>| WorkerInfo {
        id,
        weight,
        labels: std::sync::Arc::new(
            zone.map(|z| ("zone".to_string(), z.to_string()))
                .into_iter()
                .collect(),
        ),
        ..WorkerInfo::default()
    };
    p.workers_changed(&[
        labelled(1, 3, Some("éast-1ä")),
        labelled(2, 1000, None),
        labelled(3, 1, Some("")),
    ]);
    // Worker 9 is not in the list (added since): weight 1, no labels.
    assert_eq!(
        ask(&p, &keyed("attributes", "", ""), &idle(&[3, 1, 9, 2])),
        "1,;3,éast-1ä;1,-;1000,-;"
    );
    // A new list replaces the old one's attributes.
    p.workers_changed(&[labelled(1, 2, Some("west"))]);
    assert_eq!(
        ask(&p, &keyed("attributes", "", ""), &idle(&[1, 3])),
        "2,west;1,-;"
    );
}

#[test]
fn many_candidates_cross_intact_and_memory_stays_bounded() {
    let p = probe("{}").unwrap();
    // Loads are a permutation of 0..1000: the busiest id is predictable and
    // found only if every candidate crossed intact.
    let candidates: Vec<Candidate> = (0..1000u32)
        .map(|i| Candidate::idle(10_000 + i, (i * 7919) % 1000))
        .collect();
    let busiest = candidates.iter().max_by_key(|c| c.load).unwrap().id;
    let text = "x".repeat(4096);
    let req = RouteRequest {
        id: 1,
        route: Route::Generate,
        model: "m",
        text: &text,
        tokens: None,
        prompt_tokens: None,
        routing_key: None,
        headers: None,
        stream: false,
        max_new_tokens: None,
    };
    let decision = p.select(&req, &candidates).unwrap();
    assert_eq!((decision.worker, decision.fallback), (busiest, None));
    let after_one = p.memory_bytes();
    // Parameters are freed and garbage collected: 2000 more calls with a
    // 4 KB text and 8 KB of candidates must not grow memory by their 24 MB.
    for _ in 0..2000 {
        assert_eq!(p.select(&req, &candidates).unwrap().worker, busiest);
    }
    assert!(
        p.memory_bytes() <= after_one + (1 << 20),
        "guest memory grew from {after_one} to {} bytes",
        p.memory_bytes()
    );
}

#[test]
fn an_id_that_is_not_a_candidate_is_a_fault_answered_by_the_fallback() {
    let p = probe("{}").unwrap();
    let decision = p.select(&keyed("bogus", "", ""), &idle(&[1, 2])).unwrap();
    assert!(decision.fallback.is_some());
    assert_eq!(p.faults(), 1);
}

#[test]
fn feedback_and_state_survive_a_snapshot_restore_round_trip() {
    let old = probe("{}").unwrap();
    old.on_complete(&Outcome {
        request_id: u64::MAX,
        worker: 9,
        status: 200,
        latency_us: 1234,
        prompt_tokens: Some(100),
        cached_tokens: Some(0),
        completion_tokens: None,
        attempt: 1,
        ttft_us: Some(5_000_000_000),
        error: None,
    });
    old.on_complete(&Outcome {
        request_id: 5,
        worker: 2,
        attempt: 3,
        error: Some(AttemptError::ClientAbort),
        ..Outcome::default()
    });
    let record = format!(
        "{},9,1,200,-1,5000000000,1234,100,0,-1;5,2,3,0,3,-1,0,-1,-1,-1;",
        u64::MAX
    );
    assert_eq!(
        ask(&old, &keyed("state", "", ""), &idle(&[1])),
        format!("completed={record}|restored=")
    );
    let snapshot = old.snapshot().unwrap().unwrap();
    assert_eq!(snapshot, format!("probe:{record}").into_bytes());

    let new = probe("{}").unwrap();
    new.restore(&snapshot).unwrap();
    assert_eq!(
        ask(&new, &keyed("state", "", ""), &idle(&[1])),
        format!("completed=|restored={record}")
    );
    assert_eq!(
        new.restore(b"garbage").unwrap_err(),
        "not a probe snapshot: garbage"
    );
    new.restore(b"").unwrap_err();
}

/// Issue 17: a shared instance's private state comes back after a fault,
/// from its last checkpoint; not twice in a row without a success between
/// (the state may be why it faults); never for a per-thread policy.
#[test]
fn a_faulted_shared_instance_comes_back_from_its_last_checkpoint() {
    let p = probe("{}").unwrap();
    let outcome = |request_id| Outcome {
        request_id,
        worker: 1,
        ..Outcome::default()
    };
    let record = |id: u64| format!("{id},1,0,0,-1,-1,0,-1,-1,-1;");
    let trap = || {
        let answer = p.select(&keyed("trap", "", ""), &idle(&[1])).unwrap();
        assert!(answer.fallback.is_some(), "the trap is a fault");
        wait_until("the instance is rebuilt", || p.is_running());
    };
    assert!(!p.checkpoint(), "nothing called since the start");
    p.on_complete(&outcome(1));
    assert!(p.checkpoint());
    assert!(!p.checkpoint(), "nothing changed since the last one");
    p.on_complete(&outcome(2));
    trap();
    // What came after the checkpoint is lost; the rest is back.
    let state = |p: &WasmPolicy| ask(p, &keyed("state", "", ""), &idle(&[1]));
    assert_eq!(state(&p), format!("completed=|restored={}", record(1)));
    trap();
    assert_eq!(
        state(&p),
        "completed=|restored=",
        "a second fault in a row starts fresh"
    );

    let pick = p.select(&keyed_none(), &idle(&[1])).unwrap();
    assert_eq!(pick.fallback, None);
    p.on_complete(&outcome(3));
    assert!(p.checkpoint());
    trap();
    assert_eq!(state(&p), format!("completed=|restored={}", record(3)));

    let per_thread = probe(r#"{"per_thread": true}"#).unwrap();
    per_thread.on_complete(&outcome(4));
    assert!(
        !per_thread.checkpoint(),
        "a per-thread policy keeps no private state"
    );
}

fn keyed_none() -> RouteRequest<'static> {
    RouteRequest {
        routing_key: None,
        ..keyed("", "", "")
    }
}

/// A core module built with the 0.1 glue is still wrapped, against 0.1.0,
/// and still routes.
#[test]
fn a_core_module_of_the_0_1_glue_is_still_componentized() {
    let core = std::fs::read(contract_0_1("as_probe.core")).unwrap();
    let component = wasm_router::policy::componentize::componentize(&core).unwrap();
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("as-probe-0.1.wasm");
    std::fs::write(&file, component).unwrap();
    let p = WasmPolicy::load(&engine(), PolicySource::File(file), "{}", generous_limits()).unwrap();
    assert_eq!(p.contract(), "0.1.0");
    assert_eq!(
        ask(&p, &keyed("request", "m", "hi"), &idle(&[1, 2])),
        "id=42|route=2|model=m|text=hi|n=2"
    );
}

/// Over HTTP: `/generate` through router `r` with routing key `key` (which
/// the probe answers) and `headers`; the status and body.
async fn ask_over_http(
    r: &wasm_router::server::Running,
    key: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut req = crate::mock::http()
        .post(format!("http://{}/generate", r.addr))
        .header("x-routing-key", key);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let answer = req
        .json(&serde_json::json!({"text": "hello"}))
        .send()
        .await
        .unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

/// Over HTTP: what the probe logs and records reaches the router's log and
/// `/metrics`, under the policy's label.
#[tokio::test]
async fn the_probes_metric_is_on_the_metrics_endpoint() {
    let w = MockWorker::start("a", "m").await;
    let mut a = args(&[&w]);
    a.policy = Some(assemblyscript_probe().display().to_string());
    let r = router(a).await;
    let (status, answer) = ask_over_http(&r, "host", &[]).await;
    assert_eq!(status, 503);
    assert!(answer.contains("calls=1|"));
    let id = r.state.registry.by_url(&w.url).unwrap().id;
    let text = crate::mock::get_text(&format!("http://{}/metrics", r.metrics_addr)).await;
    // The process's one recorder holds other tests' probe metrics too
    // (under other worker ids): this router's worker's line is the one.
    let worker = format!(r#"worker="{id}""#);
    let line = text
        .lines()
        .find(|l| l.starts_with("wasm_router_policy_probe_calls") && l.contains(&worker))
        .unwrap_or_else(|| panic!("no probe_calls of {worker} on /metrics:\n{text}"));
    assert!(line.contains(r#"policy="as-probe""#), "{line}");
    assert!(line.ends_with(" 2"), "counters drop fractions: {line}");
    r.shutdown().await.unwrap();
}

/// Over HTTP: weights and labels given in the config's `[[workers]]` and
/// with `POST /workers` show in `GET /workers` and reach the policy.
#[tokio::test]
async fn weights_and_labels_given_to_the_router_reach_the_policy() {
    let ws = [
        MockWorker::start("a", "m").await,
        MockWorker::start("b", "m").await,
        MockWorker::start("c", "m").await,
    ];
    let mut a = args(&[&ws[0]]);
    a.workers = vec![wasm_router::config::WorkerEntry {
        url: ws[1].url.clone(),
        weight: Some(5),
        labels: [("zone".to_string(), "nörth".to_string())].into(),
        kv_events_config: None,
    }];
    a.policy = Some(assemblyscript_probe().display().to_string());
    let r = router(a).await;
    let body = serde_json::json!({"url": ws[2].url, "weight": 2, "labels": {"zone": "söuth"}});
    let (status, reply) = crate::mock::post_json(&r, "/workers", body).await;
    assert_eq!(status, 202, "{reply}");
    let bad = serde_json::json!({"url": "http://127.0.0.1:9", "weight": 0});
    let (status, reply) = crate::mock::post_json(&r, "/workers", bad).await;
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("weight"),
        "{reply}"
    );
    let listed = crate::mock::get_json(&format!("http://{}/workers", r.addr)).await;
    let shown: Vec<_> = listed["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["weight"].clone(), w["labels"]["zone"].clone()))
        .collect();
    assert_eq!(
        shown,
        [
            (1.into(), serde_json::Value::Null),
            (5.into(), "nörth".into()),
            (2.into(), "söuth".into())
        ]
    );
    let mut answer = String::new();
    crate::mock::eventually("the policy sees all three workers", async || {
        answer = ask_over_http(&r, "attributes", &[]).await.1;
        answer.contains("1,-;5,nörth;2,söuth;")
    })
    .await;
    r.shutdown().await.unwrap();
}

/// Over HTTP: a worker that reports its KV cache tokens (SGLang's
/// `/get_load`) and size (`/get_server_info`) shows its usage to policies;
/// one that reports neither shows none.
#[tokio::test]
async fn a_workers_reported_kv_usage_reaches_the_policy() {
    let ws = [
        MockWorker::start("a", "m").await,
        MockWorker::start("b", "m").await,
    ];
    ws[0].b.kv_tokens.store(
        crate::mock::KV_CAPACITY / 4,
        std::sync::atomic::Ordering::SeqCst,
    );
    let mut a = args(&ws.iter().collect::<Vec<_>>());
    a.worker_load_check_interval = Some(1);
    a.policy = Some(assemblyscript_probe().display().to_string());
    let r = router(a).await;
    let mut answer = String::new();
    crate::mock::eventually("the router reads the usage", async || {
        answer = ask_over_http(&r, "columns", &[]).await.1;
        answer.contains(",0.25,0,0;")
    })
    .await;
    assert!(
        answer.contains(",-1.0,0,0;"),
        "b reports no tokens: {answer}"
    );
    r.shutdown().await.unwrap();
}

/// Over HTTP: a client's header reaches a policy that reads headers; its
/// credentials do not.
#[tokio::test]
async fn a_clients_headers_reach_a_policy_that_reads_them() {
    let w = MockWorker::start("a", "m").await;
    let mut a = args(&[&w]);
    a.policy = Some(assemblyscript_probe().display().to_string());
    let r = router(a).await;
    let headers = [("x-tenant", "acme"), ("authorization", "Bearer secret")];
    let (status, text) = ask_over_http(&r, "headers", &headers).await;
    assert_eq!(status, 503);
    assert!(text.contains("tenant=acme|auth=-"), "{text}");
    r.shutdown().await.unwrap();
}

async fn with_key(r: &wasm_router::server::Running, key: Option<&str>) -> String {
    worker_for_key(r, "x-routing-key", key).await
}

#[tokio::test]
async fn the_assemblyscript_example_keeps_sessions_on_their_worker() {
    let ws = [
        MockWorker::start("a", "m").await,
        MockWorker::start("b", "m").await,
    ];
    let mut a = args(&ws.iter().collect::<Vec<_>>());
    a.policy = Some(session_affinity_as().display().to_string());
    let r = router(a).await;
    // Idle fleet: a new key goes to the least loaded, ties to the smaller id.
    for _ in 0..3 {
        assert_eq!(with_key(&r, Some("alice")).await, "a");
    }
    // alice's worker leaves: she moves to b, and stays there when a is back.
    let a_id = r.state.registry.by_url(&ws[0].url).unwrap().id;
    r.state.registry.remove(a_id);
    assert_eq!(with_key(&r, Some("alice")).await, "b");
    assert_eq!(with_key(&r, Some("bob")).await, "b");
    let back = r.state.registry.add(&ws[0].url).unwrap();
    crate::mock::eventually("a passes its health check again", async || {
        back.is_healthy()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(with_key(&r, Some("alice")).await, "b");
    }
    // A new key on the idle fleet: the re-added worker's id is larger now,
    // so the tie goes to b.
    assert_eq!(with_key(&r, Some("carol")).await, "b");
    r.shutdown().await.unwrap();
}
