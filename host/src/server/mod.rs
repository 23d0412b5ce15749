//! The HTTP layer: [`app`] builds the routes over an [`AppState`]; [`start`]
//! (in `start.rs`) wires config, policy, workers, background tasks and the
//! serving threads. Handlers stay short: the inference routes' way in and
//! forwarding live in [`crate::proxy`] ([`crate::proxy::ingress`]), admin
//! in [`crate::admin`], the state they share in [`crate::state`].

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get, post};
use serde_json::json;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};

use crate::config::Role;
use crate::errors::ApiError;
use crate::policy::Route;
use crate::proxy;
use crate::proxy::ingress::{self, request_id};
use crate::state::AppState;
use crate::upstream;
use crate::{admin, auth};

mod models;
mod start;
mod tokenize;

pub use start::{Running, raise_file_limit, start};

/// All routes.
pub fn app(state: Arc<AppState>) -> Router {
    let guarded = Router::new()
        .route("/generate", inference(Route::Generate))
        .route("/v1/completions", inference(Route::Completions))
        .route("/v1/chat/completions", inference(Route::ChatCompletions))
        .route("/v1/embeddings", inference(Route::Embeddings))
        .route("/v1/models", get(models::models))
        .route("/v1/tokenize", post(tokenize::tokenize))
        .route("/v1/detokenize", post(tokenize::detokenize))
        .route("/get_server_info", get(to_one_worker))
        .route("/get_model_info", get(to_one_worker))
        .route("/health_generate", any(to_one_worker))
        .route("/get_loads", get(admin::get_loads));
    // No layer at all without a key: a `from_fn` layer costs a few percent
    // of the router's CPU per request (BENCHMARKS.md, design round 2).
    let guarded = match &state.config.api_key {
        Some(key) => guarded.route_layer(middleware::from_fn_with_state(
            Arc::<str>::from(key.as_str()),
            auth::require_api_key,
        )),
        None => guarded,
    }
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

/// An inference route: the way in ([`ingress::inference`]).
fn inference(route: Route) -> MethodRouter<Arc<AppState>> {
    post(move |s, req| ingress::inference(s, route, req))
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

/// Informational routes: the least-loaded healthy worker answers.
async fn to_one_worker(State(s): State<Arc<AppState>>, req: Request) -> Result<Response, ApiError> {
    let worker = s.registry.least_loaded().ok_or(ApiError::NoHealthyWorker)?;
    let deadline = ingress::deadline(&s);
    let (parts, body) = req.into_parts();
    let body = ingress::read_body(&s, body, deadline).await?;
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
