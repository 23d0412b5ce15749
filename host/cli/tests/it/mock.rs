//! Mock workers on loopback for the data-plane tests: each answers with its
//! name, and can be told to fail, hang, go unhealthy, or hold a stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use wasm_router::config::{Config, RouterArgs};
use wasm_router::server::{Running, start};

/// What a mock worker does; change it while the test runs.
pub struct Behaviour {
    pub name: String,
    pub model: String,
    /// Answer inference with this status (0 = 200).
    pub status: AtomicU16,
    /// Fail this many inference requests with 503 first.
    pub fail_first: AtomicUsize,
    /// Health checks fail while set.
    pub unhealthy: AtomicBool,
    /// Inference requests wait for a permit here while set.
    pub hold: AtomicBool,
    pub gate: Semaphore,
    /// Inference requests seen.
    pub hits: AtomicUsize,
    /// What `/get_load` reports.
    pub load: AtomicU32,
    /// When set, `/get_load` answers in SGLang's shape with these KV cache
    /// tokens, and `/get_server_info` gives a capacity of [`KV_CAPACITY`].
    pub kv_tokens: AtomicU32,
    /// Answer this many model questions (`/get_model_info`, `/v1/models`)
    /// with 503 first: a worker still loading its model.
    pub model_fails: AtomicUsize,
    /// The last inference request's headers and body.
    pub last: std::sync::Mutex<Option<(HeaderMap, Bytes)>>,
}

/// The KV cache size a mock worker reports.
pub const KV_CAPACITY: u32 = 12_000;

pub struct MockWorker {
    pub url: String,
    pub b: Arc<Behaviour>,
}

impl MockWorker {
    pub async fn start(name: &str, model: &str) -> MockWorker {
        let b = Arc::new(Behaviour {
            name: name.into(),
            model: model.into(),
            status: AtomicU16::new(0),
            fail_first: AtomicUsize::new(0),
            unhealthy: AtomicBool::new(false),
            hold: AtomicBool::new(false),
            gate: Semaphore::new(0),
            hits: AtomicUsize::new(0),
            load: AtomicU32::new(0),
            kv_tokens: AtomicU32::new(0),
            model_fails: AtomicUsize::new(0),
            last: std::sync::Mutex::new(None),
        });
        let app = Router::new()
            .route("/generate", post(infer))
            .route("/v1/completions", post(infer))
            .route("/v1/chat/completions", post(infer))
            .route("/health", get(health))
            .route(
                "/get_model_info",
                get(|State(b): State<Arc<Behaviour>>| async move {
                    model_answer(&b, json!({"model_path": b.model}))
                }),
            )
            .route(
                "/v1/models",
                get(|State(b): State<Arc<Behaviour>>| async move {
                    model_answer(
                        &b,
                        json!({"object": "list", "data": [{"id": b.model, "owned_by": b.name}]}),
                    )
                }),
            )
            .route(
                "/get_server_info",
                get(
                    |State(b): State<Arc<Behaviour>>, headers: HeaderMap| async move {
                        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                        Json(json!({
                            "worker": b.name,
                            "authorization": auth,
                            "max_total_num_tokens": KV_CAPACITY,
                        }))
                    },
                ),
            )
            .route("/flush_cache", post(|| async { "flushed" }))
            .route(
                "/get_load",
                get(|State(b): State<Arc<Behaviour>>| async move {
                    let load = b.load.load(Ordering::SeqCst);
                    match b.kv_tokens.load(Ordering::SeqCst) {
                        0 => Json(json!({"load": load})),
                        tokens => Json(json!([{
                            "dp_rank": 0,
                            "num_reqs": load,
                            "num_waiting_reqs": 0,
                            "num_tokens": tokens,
                        }])),
                    }
                }),
            )
            .with_state(b.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        MockWorker {
            url: format!("http://{addr}"),
            b,
        }
    }

    pub fn hits(&self) -> usize {
        self.b.hits.load(Ordering::SeqCst)
    }

    /// Let `n` held requests (or stream second halves) proceed.
    pub fn release(&self, n: usize) {
        self.b.gate.add_permits(n);
    }
}

/// `answer`, unless the worker still fails model questions.
fn model_answer(b: &Behaviour, answer: Value) -> Response {
    let failing = b
        .model_fails
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    match failing {
        Ok(_) => (StatusCode::SERVICE_UNAVAILABLE, "loading").into_response(),
        Err(_) => Json(answer).into_response(),
    }
}

async fn health(State(b): State<Arc<Behaviour>>) -> StatusCode {
    if b.unhealthy.load(Ordering::SeqCst) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

async fn wait_gate(b: &Behaviour) {
    b.gate.acquire().await.unwrap().forget();
}

async fn infer(State(b): State<Arc<Behaviour>>, headers: HeaderMap, body: Bytes) -> Response {
    b.hits.fetch_add(1, Ordering::SeqCst);
    *b.last.lock().unwrap() = Some((headers, body.clone()));
    if b.fail_first.load(Ordering::SeqCst) > 0 {
        b.fail_first.fetch_sub(1, Ordering::SeqCst);
        return (StatusCode::SERVICE_UNAVAILABLE, "warming up").into_response();
    }
    let status = b.status.load(Ordering::SeqCst);
    if status != 0 {
        return (
            StatusCode::from_u16(status).unwrap(),
            format!("{} fails", b.name),
        )
            .into_response();
    }
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if parsed["stream"] == true {
        let b = b.clone();
        let chunks = async_stream(b);
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(chunks))
            .unwrap();
    }
    if b.hold.load(Ordering::SeqCst) {
        wait_gate(&b).await;
    }
    Json(json!({"worker": b.name, "text": "ok", "meta_info": {"cached_tokens": 0}})).into_response()
}

/// First chunk at once; the second after the gate opens.
fn async_stream(
    b: Arc<Behaviour>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(0, move |step| {
        let b = b.clone();
        async move {
            let chunk = match step {
                0 => format!("data: {{\"worker\": \"{}\", \"part\": 1}}\n\n", b.name),
                1 => {
                    wait_gate(&b).await;
                    "data: {\"part\": 2}\n\ndata: [DONE]\n\n".to_string()
                }
                _ => return None,
            };
            Some((Ok(Bytes::from(chunk)), step + 1))
        }
    })
}

/// A worker of `routes` and what a router asks before it sends work
/// (`/health`, `/get_model_info` with model `m`), served on loopback: its
/// URL.
pub async fn serve_worker(routes: Router) -> String {
    let app = routes.route("/health", get(|| async { "ok" })).route(
        "/get_model_info",
        get(|| async { Json(json!({"model_path": "m"})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Router flags for tests: loopback, ephemeral ports, fast health checks,
/// no jitter, a generous policy deadline, a shared compile cache.
pub fn args(urls: &[&MockWorker]) -> RouterArgs {
    RouterArgs {
        host: Some([127, 0, 0, 1].into()),
        port: Some(0),
        prometheus_port: Some(0),
        worker_urls: urls.iter().map(|w| w.url.clone()).collect(),
        policy: Some("round_robin".into()),
        retry_jitter_factor: Some(0.0),
        retry_initial_backoff_ms: Some(1),
        health_check_interval_secs: Some(1),
        health_failure_threshold: Some(1),
        health_success_threshold: Some(1),
        // Generous: on a busy machine the 10 ms default could fire first
        // and answer with the fallback instead of the behaviour under test.
        policy_call_deadline_ms: Some(5000),
        ..RouterArgs::default()
    }
}

/// Start a router and wait until every worker (registered as it starts) is
/// healthy with its model.
pub async fn router(args: RouterArgs) -> Running {
    let mut config = Config::load(&args).unwrap();
    config.policy_cache_dir =
        Some(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("policy-cache"));
    let running = start(config).await.unwrap();
    let registry = running.state.registry.clone();
    eventually("the workers come up", async || {
        let all = registry.all();
        all.iter().all(|w| w.is_healthy() && !w.model().is_empty())
    })
    .await;
    running
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// GET `url` and parse the body as JSON.
pub async fn get_json(url: &str) -> Value {
    http().get(url).send().await.unwrap().json().await.unwrap()
}

/// GET `url` and return the body as text.
pub async fn get_text(url: &str) -> String {
    http().get(url).send().await.unwrap().text().await.unwrap()
}

/// A chat request with the routing key `key` in `header` (none if `None`);
/// the name of the worker that answered.
pub async fn worker_for_key(r: &Running, header: &str, key: Option<&str>) -> String {
    let mut req = http().post(format!("http://{}/v1/chat/completions", r.addr));
    if let Some(key) = key {
        req = req.header(header, key);
    }
    let body: Value = req
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["worker"].as_str().unwrap().to_string()
}

/// POST a JSON body to the router; return status and parsed body.
pub async fn post_json(r: &Running, path: &str, body: Value) -> (u16, Value) {
    let resp = http()
        .post(format!("http://{}{path}", r.addr))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// `/generate` with this text; the worker's name, or the error.
pub async fn generate(r: &Running, text: &str) -> Result<String, (u16, Value)> {
    match post_json(r, "/generate", json!({"text": text})).await {
        (200, body) => Ok(body["worker"].as_str().unwrap().to_string()),
        other => Err(other),
    }
}

/// Poll `f` every 20 ms for up to 10 s.
pub async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    for _ in 0..500 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}
