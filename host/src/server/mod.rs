//! The HTTP layer: [`app`] builds the routes over an [`AppState`]; [`start`]
//! (in `start.rs`) wires config, policy, workers, background tasks and the
//! serving threads. Handlers
//! stay short; forwarding lives in [`crate::proxy`], admin in [`crate::admin`],
//! the state they share in [`crate::state`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::json;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};

use crate::errors::ApiError;
use crate::policy::{Loaded, Role, Route};
use crate::proxy::pd;
use crate::proxy::{self, Forward};
use crate::state::AppState;
use crate::upstream;
use crate::{admin, extract, metrics as m};

mod models;
mod start;
mod tokenize;

pub use start::{Running, start};

/// All routes.
pub fn app(state: Arc<AppState>) -> Router {
    let guarded = Router::new()
        .route("/generate", post(|s, r| inference(s, Route::Generate, r)))
        .route(
            "/v1/completions",
            post(|s, r| inference(s, Route::Completions, r)),
        )
        .route(
            "/v1/chat/completions",
            post(|s, r| inference(s, Route::ChatCompletions, r)),
        )
        .route(
            "/v1/embeddings",
            post(|s, r| inference(s, Route::Embeddings, r)),
        )
        .route("/v1/models", get(models::models))
        .route("/v1/tokenize", post(tokenize::tokenize))
        .route("/v1/detokenize", post(tokenize::detokenize))
        .route("/get_server_info", get(to_one_worker))
        .route("/get_model_info", get(to_one_worker))
        .route("/health_generate", any(to_one_worker))
        .route("/get_loads", get(admin::get_loads))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ))
        .layer(cors(&state.config.cors_allowed_origins));
    // Admin routes allow only listed origins: open to any, a web page in
    // the browser of someone on the router's host would pass the loopback
    // rule that guards them without a key.
    let mut admin = admin::routes(state.clone());
    if !state.config.cors_allowed_origins.is_empty() {
        admin = admin.layer(cors(&state.config.cors_allowed_origins));
    }
    Router::new()
        .merge(guarded)
        .merge(admin)
        .route("/health", get(|| async { "ok" }))
        .route("/liveness", get(|| async { "ok" }))
        .route("/readiness", get(readiness))
        .fallback(|req: Request| async move {
            ApiError::NotFound(format!(
                "no route for {} {}",
                req.method(),
                req.uri().path()
            ))
        })
        // tower-http's request ids: the outer layer gives each request its
        // id as `x-request-id` (forwarded to the worker), the inner one
        // puts it on the response.
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
        .layer(SetRequestIdLayer::new(
            X_REQUEST_ID,
            ClientOrNewId::new(&state.config.request_id_headers),
        ))
        .with_state(state)
}

/// Browser access (CORS), as sglang-router 0.3.2 answers it: without
/// `--cors-allowed-origins`, any origin, method and header (on the
/// inference routes; see [`app`] for the admin routes); with them,
/// those origins only, GET, POST and OPTIONS, the content type and
/// authorization headers, and `x-request-id` readable by the page.
/// Preflights are cached for an hour.
fn cors(origins: &[HeaderValue]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{Any, CorsLayer};
    let layer = CorsLayer::new().max_age(std::time::Duration::from_secs(3600));
    if origins.is_empty() {
        return layer
            .allow_origin(Any)
            .allow_methods(Any)
            .allow_headers(Any)
            .expose_headers(Any);
    }
    layer
        .allow_origin(origins.to_vec())
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            axum::http::header::CONTENT_TYPE,
            axum::http::header::AUTHORIZATION,
        ])
        .expose_headers([X_REQUEST_ID])
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A request's id: the first of `--request-id-headers` the client sent,
/// else a new random one.
#[derive(Clone)]
struct ClientOrNewId(Arc<Vec<HeaderName>>);

impl ClientOrNewId {
    fn new(headers: &[String]) -> Self {
        // Validation checked that each is a header name.
        let names = headers
            .iter()
            .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
            .collect();
        ClientOrNewId(Arc::new(names))
    }
}

impl MakeRequestId for ClientOrNewId {
    fn make_request_id<B>(&mut self, req: &axum::http::Request<B>) -> Option<RequestId> {
        let sent = self
            .0
            .iter()
            .find_map(|h| req.headers().get(h).filter(|v| v.to_str().is_ok()));
        let id = match sent {
            Some(id) => id.clone(),
            None => HeaderValue::from_str(&format!("{:032x}", fastrand::u128(..)))
                .expect("hex digits make a header value"),
        };
        Some(RequestId::new(id))
    }
}

/// The id [`ClientOrNewId`] gave the request.
fn request_id(parts: &axum::http::request::Parts) -> &str {
    parts
        .extensions
        .get::<RequestId>()
        .and_then(|r| r.header_value().to_str().ok())
        .unwrap_or("")
}

async fn require_api_key(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(key) = &s.config.api_key else {
        return next.run(req).await;
    };
    match admin::bearer(&req) {
        Some(p) if admin::constant_time_eq(p.as_bytes(), key.as_bytes()) => next.run(req).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

/// Ready once a request can be served: a healthy worker, or in PD mode a
/// healthy prefill and a healthy decode worker.
async fn readiness(State(s): State<Arc<AppState>>) -> Response {
    let workers = s.registry.all();
    let healthy_with = |role: Role| {
        workers
            .iter()
            .filter(|w| w.role == role && w.is_healthy())
            .count()
    };
    let (healthy, ready) = match s.config.pd {
        None => {
            let n = healthy_with(Role::Regular);
            (n, n > 0)
        }
        Some(_) => {
            let (p, d) = (healthy_with(Role::Prefill), healthy_with(Role::Decode));
            (p + d, p > 0 && d > 0)
        }
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({"ready": ready, "healthy_workers": healthy})),
    )
        .into_response()
}

/// Read the client's body once, bounded in size (`--max-payload-size`) and
/// time: whole by the request's `deadline`, with no pause between two
/// chunks longer than `--stream-idle-timeout-secs`. `Limited` itself rather
/// than tower-http's `RequestBodyLimitLayer`, whose early 413 is not in
/// OpenAI's error shape.
async fn read_body(s: &AppState, body: Body, deadline: Instant) -> Result<Bytes, ApiError> {
    use http_body::Body as _;
    use http_body_util::{BodyExt, LengthLimitError, Limited};
    let limit = s.config.max_payload_size;
    let mut body = Limited::new(body, limit);
    // One chunk is kept as it came; more are copied into one buffer of the
    // announced size, so a body is held once, not twice.
    let mut first = None::<Bytes>;
    let mut whole = bytes::BytesMut::new();
    loop {
        let pause_ends = (Instant::now() + s.config.stream_idle_timeout).min(deadline);
        let data = match tokio::time::timeout_at(pause_ends, body.frame()).await {
            Err(_elapsed) => return Err(ApiError::BodyTimeout),
            Ok(None) => break,
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => data,
                Err(_trailers) => continue,
            },
            Ok(Some(Err(e))) if e.is::<LengthLimitError>() => {
                return Err(ApiError::PayloadTooLarge(limit));
            }
            Ok(Some(Err(e))) => return Err(ApiError::BadRequest(format!("unreadable body: {e}"))),
        };
        match first.take() {
            None if whole.is_empty() => first = Some(data),
            held => {
                if let Some(held) = held {
                    let announced = body.size_hint().lower() as usize;
                    whole.reserve((held.len() + data.len() + announced).min(limit));
                    whole.extend_from_slice(&held);
                }
                whole.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| whole.freeze()))
}

async fn inference(State(s): State<Arc<AppState>>, route: Route, req: Request) -> Response {
    let started = Instant::now();
    let result = forward(&s, route, req).await;
    let resp = result.unwrap_or_else(|e| {
        metrics::counter!(m::ERRORS, "route" => route.label(), "code" => e.status().as_str().to_owned()).increment(1);
        e.into_response()
    });
    let handles = m::for_route(route);
    if resp.status() == StatusCode::OK {
        handles.ok.increment(1);
    } else {
        let status = resp.status().as_str().to_owned();
        metrics::counter!(m::REQUESTS, "route" => route.label(), "status" => status).increment(1);
    }
    handles.duration.record(started.elapsed());
    resp
}

/// The routing text's tokens, for `prefix-index.match-kv`, when the router
/// follows the workers' KV events, has a tokenizer, and a policy of this
/// request calls `match-kv` (`reads`: its component imports it; so
/// cache_aware's requests are not tokenized). Tokenized on the
/// blocking pool, one per core at a time (`tokenize_slots`): a long prompt
/// takes milliseconds (BENCHMARKS.md), which must neither stall the other
/// connections of this serving thread nor count against the policy's call
/// deadline. The text comes back with them; a text the tokenizer refuses
/// has none (the policy then sees no match).
async fn tokenize_for_kv(s: &AppState, reads: bool, text: String) -> (String, Option<Vec<u32>>) {
    let (Some(tokenizer), Some(_)) = (&s.tokenizer, &s.kv_events) else {
        return (text, None);
    };
    if !reads || text.is_empty() {
        return (text, None);
    }
    // Never closed, so a permit always comes. It goes with the work: a
    // client that leaves meanwhile does not free the slot early.
    let Ok(slot) = s.tokenize_slots.clone().acquire_owned().await else {
        return (text, None);
    };
    let tokenizer = tokenizer.clone();
    let copy = text.clone();
    let tokens = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        // With special tokens, as a worker tokenizes a /generate prompt.
        tokenizer.encode(&copy, true).ok()
    })
    .await
    .ok()
    .flatten();
    (text, tokens)
}

async fn forward(s: &AppState, route: Route, req: Request) -> Result<Response, ApiError> {
    let deadline = Instant::now() + s.config.request_timeout;
    let (parts, body) = req.into_parts();
    // Admitted first: only admitted requests hold a body in memory.
    let slot = match &s.admission {
        Some(a) => Some(a.admit().await?),
        None => None,
    };
    let body = read_body(s, body, deadline).await?;
    let policy = Loaded::from(&s.policy);
    let prefill_policy = s
        .prefill_policies
        .as_ref()
        .map(|m| Loaded::from(&m.active()));
    let peek = extract::peek(&body)?;
    let either = |wants: fn(&crate::policy::PolicyInfo) -> bool| {
        wants(policy.policy.info())
            || prefill_policy
                .as_ref()
                .is_some_and(|p| wants(p.policy.info()))
    };
    let needs_text = either(|i| i.needs_text);
    let text = if needs_text {
        peek.routing_text()?
    } else {
        String::new()
    };
    let (text, tokens) = tokenize_for_kv(s, either(|i| i.reads.kv_matches), text).await;
    let model = peek.model.as_deref().unwrap_or("");
    let routing_key = ["x-routing-key", "x-smg-routing-key"]
        .iter()
        .find_map(|h| parts.headers.get(*h)?.to_str().ok());
    let request_id = request_id(&parts);
    let forward = Forward {
        route,
        path_and_query: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        headers: &parts.headers,
        body: body.clone(),
        request_id,
        seq: s.seq.fetch_add(1, Ordering::Relaxed),
        model,
        text: &text,
        tokens: tokens.as_deref(),
        routing_key,
        stream: peek.streams(),
        max_new_tokens: peek.max_new_tokens(),
        deadline,
    };
    match prefill_policy {
        None => proxy::forward(&s.config, &s.upstream, &s.registry, policy, forward, slot).await,
        Some(prefill) => {
            let policies = pd::PdPolicies {
                prefill,
                decode: policy,
            };
            pd::forward(
                &s.config,
                &s.upstream,
                &s.registry,
                policies,
                forward,
                &peek,
                slot,
            )
            .await
        }
    }
}

/// Informational routes: the least-loaded healthy worker answers.
async fn to_one_worker(State(s): State<Arc<AppState>>, req: Request) -> Result<Response, ApiError> {
    let worker = s.registry.least_loaded().ok_or(ApiError::NoHealthyWorker)?;
    let deadline = Instant::now() + s.config.request_timeout;
    let (parts, body) = req.into_parts();
    let body = read_body(&s, body, deadline).await?;
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let method = if parts.method == Method::POST {
        Method::POST
    } else {
        Method::GET
    };
    let _in_flight = worker.start_request();
    let url = format!("{}{path}", worker.url);
    let request_id = request_id(&parts);
    // The client's own headers (its `Authorization` among them).
    let headers = proxy::upstream_headers(&parts.headers, request_id);
    let send = s.upstream.send(method, &url, headers, body);
    match tokio::time::timeout_at(deadline, send).await {
        Ok(Ok(resp)) => match resp.relay(deadline).await {
            Ok(answer) => Ok(answer),
            Err(upstream::BodyError::Timeout) => Err(ApiError::UpstreamTimeout),
            Err(e) => Err(ApiError::UpstreamConnect(e.to_string())),
        },
        Ok(Err(e)) => {
            tracing::warn!(worker = %worker.url, "worker unreachable: {e}");
            Err(ApiError::UpstreamConnect(
                "the worker did not answer".into(),
            ))
        }
        Err(_elapsed) => Err(ApiError::UpstreamTimeout),
    }
}
