//! Issue 18: a worker's KV cache events over real ZMQ sockets on loopback
//! reach the router's precise index: stores, removals and clears; a gap
//! replayed from the replay socket; a gap without one, and a publisher
//! restart, clearing what can no longer be trusted.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rmpv::Value;
use wasm_router::config::KvEndpoint;
use wasm_router::events::Subscriptions;
use wasm_router::index::Precise;
use zeromq::{PubSocket, RouterSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

const WORKER: u32 = 7;
const PAGE: u32 = 4;

/// `["BlockStored", [hash], parent, tokens, 4, nil, "GPU"]`, SGLang's shape.
fn stored(hash: i64, parent: Option<i64>, tokens: &[u32]) -> Value {
    Value::Array(vec![
        "BlockStored".into(),
        Value::Array(vec![hash.into()]),
        parent.map_or(Value::Nil, Value::from),
        Value::Array(tokens.iter().map(|&t| t.into()).collect()),
        PAGE.into(),
        Value::Nil,
        "GPU".into(),
    ])
}

fn removed(hash: i64) -> Value {
    Value::Array(vec!["BlockRemoved".into(), Value::Array(vec![hash.into()])])
}

fn batch(events: Vec<Value>) -> Vec<u8> {
    let mut out = Vec::new();
    let value = Value::Array(vec![1.0.into(), Value::Array(events)]);
    rmpv::encode::write_value(&mut out, &value).unwrap();
    out
}

/// Page `n` of the prompt 1..=12.
fn page(n: u32) -> Vec<u32> {
    (n * PAGE + 1..=n * PAGE + PAGE).collect()
}

fn prompt() -> Vec<u32> {
    (1..=12).collect()
}

/// Every batch a publisher sent, by sequence number, for its replay socket.
type Sent = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

/// A worker's publisher: PUB, and a ROUTER replaying what it sent.
struct Publisher {
    socket: PubSocket,
    endpoint: String,
    sent: Sent,
    replay: Option<String>,
    next: u64,
}

fn port_of(endpoint: &zeromq::Endpoint) -> u16 {
    match endpoint {
        zeromq::Endpoint::Tcp(_, port) => *port,
        other => panic!("not tcp: {other}"),
    }
}

impl Publisher {
    async fn start(with_replay: bool) -> Publisher {
        let mut socket = PubSocket::new();
        let bound = socket.bind("tcp://127.0.0.1:0").await.unwrap();
        let sent = Sent::default();
        let replay = if with_replay {
            let mut router = RouterSocket::new();
            let at = router.bind("tcp://127.0.0.1:0").await.unwrap();
            let buffer = sent.clone();
            tokio::spawn(async move {
                while let Ok(request) = router.recv().await {
                    // [identity, empty, start]
                    let frames = request.into_vec();
                    let start = u64::from_be_bytes(frames[2].as_ref().try_into().unwrap());
                    let replies: Vec<(u64, Vec<u8>)> = buffer
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|(n, _)| *n >= start)
                        .cloned()
                        .collect();
                    let end = (u64::MAX, Vec::new());
                    for (n, payload) in replies.into_iter().chain([end]) {
                        let reply = ZmqMessage::try_from(vec![
                            frames[0].clone(),
                            Bytes::new(),
                            Bytes::copy_from_slice(&n.to_be_bytes()),
                            Bytes::from(payload),
                        ])
                        .unwrap();
                        router.send(reply).await.unwrap();
                    }
                }
            });
            Some(format!("tcp://127.0.0.1:{}", port_of(&at)))
        } else {
            None
        };
        Publisher {
            socket,
            endpoint: format!("tcp://127.0.0.1:{}", port_of(&bound)),
            sent,
            replay,
            next: 0,
        }
    }

    fn endpoint(&self) -> KvEndpoint {
        KvEndpoint {
            publisher: self.endpoint.clone(),
            replay: self.replay.clone(),
            topic: String::new(),
        }
    }

    /// Publish `payload` as the next batch; `lose` keeps it for replay only,
    /// as if the subscriber had missed it.
    async fn publish(&mut self, payload: Vec<u8>, lose: bool) {
        let n = self.next;
        self.next += 1;
        self.sent.lock().unwrap().push((n, payload.clone()));
        if lose {
            return;
        }
        let message = ZmqMessage::try_from(vec![
            Bytes::new(),
            Bytes::copy_from_slice(&n.to_be_bytes()),
            Bytes::from(payload),
        ])
        .unwrap();
        self.socket.send(message).await.unwrap();
    }

    /// Publish `payload` every 20 ms until `arrived` (at most 10 s, else
    /// fail saying `what` did not happen): a PUB socket drops what it
    /// sends before the subscription reaches it.
    async fn publish_until(&mut self, payload: Vec<u8>, what: &str, arrived: impl Fn() -> bool) {
        let start = Instant::now();
        while !arrived() {
            assert!(start.elapsed() < Duration::from_secs(10), "{what}");
            self.publish(payload.clone(), false).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Wait (bounded) until the index says `done`.
async fn until(what: &str, index: &Precise, done: impl Fn(&Precise) -> bool) {
    let start = Instant::now();
    while !done(index) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn gpu(index: &Precise) -> u32 {
    index.matched(&prompt(), &[WORKER])[0].gpu
}

/// Subscribe, and publish page 0 until it arrives: a PUB socket drops what
/// it sends before the subscription reaches it.
async fn subscribed(publisher: &mut Publisher) -> (Subscriptions, Arc<Precise>) {
    let index = Arc::new(Precise::default());
    let subscriptions = Subscriptions::new(index.clone());
    subscriptions.follow(WORKER, publisher.endpoint());
    let page_0 = batch(vec![stored(10, None, &page(0))]);
    publisher
        .publish_until(page_0, "no event arrived", || gpu(&index) > 0)
        .await;
    (subscriptions, index)
}

#[tokio::test]
async fn stores_removals_and_clears_reach_the_index() {
    let mut publisher = Publisher::start(false).await;
    let (subscriptions, index) = subscribed(&mut publisher).await;
    publisher
        .publish(
            batch(vec![
                stored(11, Some(10), &page(1)),
                stored(12, Some(11), &page(2)),
            ]),
            false,
        )
        .await;
    until("three pages match", &index, |i| gpu(i) == 12).await;
    publisher.publish(batch(vec![removed(11)]), false).await;
    until("the removal ends the prefix", &index, |i| gpu(i) == 4).await;
    // A payload that does not decode is skipped; the next one still lands.
    publisher.publish(b"\xc1 not msgpack".to_vec(), false).await;
    publisher
        .publish(
            batch(vec![Value::Array(vec!["AllBlocksCleared".into()])]),
            false,
        )
        .await;
    until("the clear empties it", &index, |i| i.is_empty()).await;
    subscriptions.forget(WORKER);
    assert!(subscriptions.is_empty());
}

#[tokio::test]
async fn a_gap_is_replayed_from_the_replay_socket() {
    let mut publisher = Publisher::start(true).await;
    let (_subscriptions, index) = subscribed(&mut publisher).await;
    // Page 1 is lost on the PUB socket; page 2, its child, arrives.
    publisher
        .publish(batch(vec![stored(11, Some(10), &page(1))]), true)
        .await;
    publisher
        .publish(batch(vec![stored(12, Some(11), &page(2))]), false)
        .await;
    until("the replayed page joins the chain", &index, |i| {
        gpu(i) == 12
    })
    .await;
}

#[tokio::test]
async fn a_gap_without_replay_or_a_restart_clears_what_cannot_be_trusted() {
    let mut publisher = Publisher::start(false).await;
    let (_subscriptions, index) = subscribed(&mut publisher).await;
    publisher
        .publish(batch(vec![stored(11, Some(10), &page(1))]), true)
        .await;
    // Its child arrives after the gap: the worker's entries are cleared, and
    // the child, whose parent is gone, is not stored.
    publisher
        .publish(batch(vec![stored(12, Some(11), &page(2))]), false)
        .await;
    until("the gap clears the worker", &index, |i| i.is_empty()).await;
    // New events rebuild it.
    publisher
        .publish(batch(vec![stored(20, None, &page(0))]), false)
        .await;
    until("new events rebuild it", &index, |i| gpu(i) == 4).await;
    // The publisher restarts: its sequence starts again at 0.
    publisher.next = 0;
    publisher.publish(batch(vec![removed(999)]), false).await;
    until("the restart clears it", &index, |i| i.is_empty()).await;
}

/// A worker that says, in /get_server_info, where it publishes.
async fn announcing_worker(kv_events_config: String) -> String {
    use axum::routing::get;
    crate::mock::serve_worker(
        axum::Router::new().route(
            "/get_server_info",
            get(move || {
                let config = kv_events_config.clone();
                async move {
                    axum::Json(serde_json::json!({"kv_events_config": config, "page_size": PAGE}))
                }
            }),
        ),
    )
    .await
}

/// The router with `--kv-events` finds the publisher through the worker's
/// /get_server_info (wildcard host and all), follows it, counts on
/// /metrics, and forgets the worker's pages when it leaves.
#[tokio::test]
async fn the_router_follows_what_its_workers_announce() {
    let mut publisher = Publisher::start(false).await;
    let port = publisher.endpoint.rsplit(':').next().unwrap().to_string();
    let config = format!(r#"{{"publisher": "zmq", "endpoint": "tcp://*:{port}"}}"#);
    let url = announcing_worker(config).await;
    let args = wasm_router::config::RouterArgs {
        worker_urls: vec![url.clone()],
        kv_events: true,
        ..crate::mock::args(&[])
    };
    let r = crate::mock::router(args).await;
    let index = r.state.kv_events.as_ref().unwrap().index().clone();
    let id = r.state.registry.by_url(&url).unwrap().id;
    let page_0 = batch(vec![stored(10, None, &page(0))]);
    publisher
        .publish_until(page_0, "the router did not follow", || {
            index.matched(&prompt(), &[id])[0].gpu > 0
        })
        .await;
    let text = crate::mock::get_text(&format!("http://{}/metrics", r.metrics_addr)).await;
    assert!(text.contains("wasm_router_kv_events_total"), "{text}");
    r.state.registry.remove(id);
    until("the departed worker's pages are gone", &index, |i| {
        i.is_empty()
    })
    .await;
    r.shutdown().await.unwrap();
}

/// Issue 31: a worker that publishes no events is named in the log and
/// counted on /metrics, not silently left to the approximate index.
#[tokio::test]
async fn a_worker_without_events_is_counted() {
    let url = announcing_worker(r#"{"publisher": "null"}"#.into()).await;
    let args = wasm_router::config::RouterArgs {
        worker_urls: vec![url],
        kv_events: true,
        ..crate::mock::args(&[])
    };
    let r = crate::mock::router(args).await;
    let metrics = format!("http://{}/metrics", r.metrics_addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = crate::mock::get_text(&metrics).await;
        if text.contains("wasm_router_kv_event_workers_silent 1") {
            break;
        }
        assert!(Instant::now() < deadline, "not counted: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r.shutdown().await.unwrap();
}

/// Issue 31: a policy that matches KV pages in a router that follows no
/// events was served by its fallback path (tokenizing inside its call, and
/// missing its deadline); now the router refuses to start, and says which
/// flag is missing.
#[tokio::test]
async fn precise_routing_without_kv_events_is_refused_at_start() {
    let tokenizer = crate::fixtures::workspace().join("host/cli/assets/tokenizer/tokenizer.json");
    let args = wasm_router::config::RouterArgs {
        policy: Some("precise_cache_aware".into()),
        tokenizer_path: Some(tokenizer.display().to_string()),
        ..crate::mock::args(&[])
    };
    let config = wasm_router::config::Config::load(&args).unwrap();
    let Err(error) = wasm_router::server::start(config).await else {
        panic!("the router started");
    };
    let message = format!("{error:#}");
    assert!(
        message.contains("precise_cache_aware") && message.contains("with --kv-events"),
        "{message}"
    );
}

/// A worker whose `/get_server_info` says nothing of its events (as vLLM's)
/// is followed at the endpoint `POST /workers` gives; a config the router
/// cannot follow, or would not use (no `--kv-events`), is refused in the
/// OpenAI error shape.
#[tokio::test]
async fn a_worker_added_with_its_event_config_is_followed_there() {
    let mut publisher = Publisher::start(false).await;
    let silent = crate::mock::MockWorker::start("silent", "m").await;
    let args = wasm_router::config::RouterArgs {
        kv_events: true,
        ..crate::mock::args(&[])
    };
    let r = crate::mock::router(args).await;
    let add = async |body: serde_json::Value| crate::mock::post_json(&r, "/workers", body).await;
    for (config, why) in [
        (serde_json::json!({"publisher": "zmq"}), "no endpoint"),
        (
            serde_json::json!({"publisher": "kafka", "endpoint": "x"}),
            "zmq",
        ),
        (
            serde_json::json!({"publisher": "zmq", "endpoint": "ipc:///tmp/x"}),
            "tcp://",
        ),
    ] {
        let (status, body) =
            add(serde_json::json!({"url": silent.url, "kv_events_config": config})).await;
        assert_eq!(status, 400, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{why:?} not in {message:?}");
    }
    assert!(
        r.state.registry.by_url(&silent.url).is_none(),
        "refused means not added"
    );
    // Without --kv-events the config would go unused: refused, not dropped.
    let plain = crate::mock::router(crate::mock::args(&[])).await;
    let config = serde_json::json!({"publisher": "zmq", "endpoint": "tcp://*:5557"});
    let body = serde_json::json!({"url": silent.url, "kv_events_config": config});
    let (status, body) = crate::mock::post_json(&plain, "/workers", body).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("--kv-events"), "{message}");
    plain.shutdown().await.unwrap();
    let port = publisher.endpoint.rsplit(':').next().unwrap().to_string();
    let config = serde_json::json!({"publisher": "zmq", "endpoint": format!("tcp://*:{port}")});
    let (status, body) =
        add(serde_json::json!({"url": silent.url, "kv_events_config": config})).await;
    assert_eq!(status, 202, "{body}");
    let index = r.state.kv_events.as_ref().unwrap().index().clone();
    let id = r.state.registry.by_url(&silent.url).unwrap().id;
    let page_0 = batch(vec![stored(10, None, &page(0))]);
    publisher
        .publish_until(
            page_0,
            "the router did not follow the given endpoint",
            || index.matched(&prompt(), &[id])[0].gpu > 0,
        )
        .await;
    r.shutdown().await.unwrap();
}

/// End to end inside the router: `precise_cache_aware` asks
/// `prefix-index.match-kv`, the router tokenizes the request with its
/// tokenizer and matches it against the pages each worker's events stored;
/// a worker it does not follow falls back to the approximate index.
#[test]
fn precise_cache_aware_routes_to_the_pages_the_events_stored() {
    use wasm_router::index::{Medium, StoredPages};
    use wasm_router::policy::imports::KvView;
    use wasm_router::policy::{Policy, PolicySource, WasmPolicy};

    let tokenizer = wasm_router::tokenizer::Tokenizer::load(
        &crate::fixtures::workspace().join("host/cli/assets/tokenizer/tokenizer.json"),
        Default::default(),
    )
    .unwrap();
    let text = "You are a careful assistant who answers questions about routing \
                KV caches across many GPU workers. Explain prefix caching.";
    let tokens = tokenizer.encode(text, true).unwrap();
    let full = tokens.len() / PAGE as usize * PAGE as usize;
    assert!(full >= 8, "the text makes at least two pages");
    let index = Arc::new(Precise::default());
    let store = |worker: u32, pages: usize| {
        index.follow(worker);
        let hashes: Vec<u64> = (0..pages as u64)
            .map(|h| h + 1000 * u64::from(worker))
            .collect();
        index
            .store(
                worker,
                StoredPages {
                    medium: Medium::Gpu,
                    parent: None,
                    hashes: &hashes,
                    tokens: &tokens[..pages * PAGE as usize],
                    block_size: PAGE,
                    seed: 0,
                },
            )
            .unwrap();
    };
    store(1, 1);
    store(2, full / PAGE as usize);
    let tokenizer = Arc::new(tokenizer);
    // A router: its own engine (and approximate index), the shared events.
    let router = || {
        let engine = crate::fixtures::engine().with_kv(KvView {
            index: Some(index.clone()),
            tokenizer: Some(tokenizer.clone()),
        });
        WasmPolicy::load(
            &engine,
            PolicySource::Builtin("precise_cache_aware"),
            "{}",
            crate::fixtures::generous_limits(),
        )
        .unwrap()
    };
    let candidates = crate::fixtures::idle(&[1, 2, 3]);
    // Tokenized before the call, as the router does.
    let req = wasm_router::policy::RouteRequest {
        tokens: Some(&tokens),
        ..crate::fixtures::request(text, None)
    };
    let decision = router().select(&req, &candidates).unwrap();
    assert_eq!(decision.worker, 2);
    // What it holds goes with the pick: the router counts only the rest as
    // the prefill it sent there.
    assert_eq!(decision.cached_tokens, Some(full as u32));
    // The time to first token wins, not the cache alone: with four times
    // the prompt's length of prefill ahead there (weighed 0.3 by default),
    // worker 1 (one page) is quicker.
    let mut busy = candidates.clone();
    busy[1].prefill_ahead = wasm_router::policy::PrefillWork {
        requests: 3,
        tokens: 4 * tokens.len() as u32,
    };
    let decision = router().select(&req, &busy).unwrap();
    assert_eq!((decision.worker, decision.cached_tokens), (1, Some(PAGE)));
    // Worker 2's cache is cleared: for a router that did not just send it
    // the text, worker 1's one page makes it the cheapest (worker 3, whose
    // events are not followed, was never sent the text).
    index.clear(2);
    let decision = router().select(&req, &candidates).unwrap();
    assert_eq!(decision.worker, 1);
    assert_eq!(decision.cached_tokens, Some(PAGE));
}

/// The whole loop with simulated workers: each tokenizes, pages and
/// publishes its cache as SGLang does (one of them in vLLM's format); the
/// router follows both, tokenizes each request with the same tokenizer,
/// and `precise_cache_aware` keeps a shared system prompt on the worker
/// whose cache holds it, which then serves it from its cache.
#[tokio::test]
async fn simulated_workers_publish_and_precise_routing_follows_their_caches() {
    use wasm_router_cli::sim::{self, SimArgs, kv_events::Format};

    let tokenizer = crate::fixtures::workspace().join("host/cli/assets/tokenizer/tokenizer.json");
    let worker = async |format| {
        sim::start(
            SimArgs {
                time_scale: 0.0,
                tokenizer: Some(tokenizer.clone()),
                kv_events_port: Some(0),
                kv_events_format: format,
                ..SimArgs::default()
            },
            true,
        )
        .await
        .unwrap()
    };
    let sims = [worker(Format::Sglang).await, worker(Format::Vllm).await];
    let args = wasm_router::config::RouterArgs {
        worker_urls: sims.iter().map(|s| s.url()).collect(),
        kv_events: true,
        tokenizer_path: Some(tokenizer.display().to_string()),
        policy: Some("precise_cache_aware".into()),
        ..crate::mock::args(&[])
    };
    let r = crate::mock::router(args).await;
    let index = r.state.kv_events.as_ref().unwrap().index().clone();
    // Longer than the tie-break's prefix: every question below ties the
    // same way.
    let system = "You are the routing assistant of a large GPU fleet. Answer in \
                  short sentences, cite the worker, and never guess a cache hit. "
        .repeat(3);
    assert!(system.len() > wasm_router_policy::tie_break::PREFIX_BYTES);
    let generate = async |text: String| {
        let (status, body) =
            crate::mock::post_json(&r, "/generate", serde_json::json!({"text": text})).await;
        assert_eq!(status, 200, "{body}");
    };
    // The system prompt reaches a worker's cache directly, not through the
    // router: only its events can tell the router. It is the worker the
    // tie-break of an idle fleet would not pick, so a policy blind to the
    // events sends the questions elsewhere.
    let mut ties = wasm_router_policy::TieBreak::default();
    ties.workers_changed(
        &sims
            .iter()
            .zip(0..)
            .map(|(s, id)| wasm_router_policy::WorkerInfo {
                id,
                url: s.url(),
                model: String::new(),
                role: wasm_router_policy::Role::Regular,
                dp_rank: None,
            })
            .collect::<Vec<_>>(),
    );
    let key = wasm_router_policy::TieBreak::key(&system);
    let (blind, target) = if ties.rank(key, 0) < ties.rank(key, 1) {
        (0, 1)
    } else {
        (1, 0)
    };
    let direct = crate::mock::http()
        .post(format!("{}/generate", sims[target].url()))
        .json(&serde_json::json!({"text": format!("{system}A question asked elsewhere?")}))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 200);
    let target_id = r.state.registry.by_url(&sims[target].url()).unwrap().id;
    until("the worker's pages are followed", &index, |i| {
        i.pages_of(target_id) > 0
    })
    .await;
    for n in 0..6 {
        generate(format!("{system}Question number {n}?")).await;
    }
    let requests = |i: usize| {
        sims[i]
            .sim
            .counters
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(
        (requests(blind), requests(target)),
        (0, 7),
        "the system prompt goes where it is cached"
    );
    let hit_rate = sims[target].sim.hit_rate();
    assert!(hit_rate > 0.3, "hit rate {hit_rate}");
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_new_subscriber_catches_up_from_the_replay_socket() {
    let mut publisher = Publisher::start(true).await;
    // Published before this router subscribed: only the replay holds them.
    publisher
        .publish(batch(vec![stored(10, None, &page(0))]), true)
        .await;
    publisher
        .publish(batch(vec![stored(11, Some(10), &page(1))]), true)
        .await;
    let index = Arc::new(Precise::default());
    let subscriptions = Subscriptions::new(index.clone());
    subscriptions.follow(WORKER, publisher.endpoint());
    // Page 2 alone is an orphan (its parent is unknown) and stores nothing:
    // the index fills only from the replay.
    let page_2 = batch(vec![stored(12, Some(11), &page(2))]);
    publisher
        .publish_until(
            page_2,
            "nothing reached the index: no catch-up from the replay",
            || !index.is_empty(),
        )
        .await;
    until(
        "the pages from before the subscription are there",
        &index,
        |i| gpu(i) == 12,
    )
    .await;
}
