//! Every failure a client can see, named, and the one place that maps them
//! to HTTP statuses and OpenAI's error shape
//! `{"error": {"message", "type", "code"}}`. Clients get a safe message; the
//! log gets the cause.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A request the router answers itself with an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The body is not the JSON the route expects.
    #[error("invalid request body: {0}")]
    BadRequest(String),
    /// Missing or wrong API key.
    #[error("missing or invalid API key: send `Authorization: Bearer <key>`")]
    Unauthorized,
    /// A bearer token taken as a JWT did not verify.
    #[error("bearer token refused: {0}")]
    InvalidToken(String),
    /// An admin route refused to this client.
    #[error("{0}")]
    Forbidden(String),
    /// No such route or resource.
    #[error("{0}")]
    NotFound(String),
    /// No worker serves the requested model.
    #[error("no worker serves model {0:?}; GET /v1/models lists the models served")]
    ModelNotFound(String),
    /// Waited in the queue too long.
    #[error("request waited in the queue longer than --queue-timeout-secs")]
    QueueTimeout,
    /// Body larger than `--max-payload-size`.
    #[error("request body is larger than --max-payload-size ({0} bytes)")]
    PayloadTooLarge(usize),
    /// The queue is full.
    #[error("too many requests: the router's queue is full, retry later")]
    QueueFull,
    /// A worker with that URL is already registered.
    #[error("worker {0} is already registered")]
    WorkerExists(String),
    /// An admin asked to remove a worker that service discovery keeps.
    #[error(
        "worker {0} was discovered from Kubernetes pod {1}: it leaves when the pod stops being ready, is deleted or loses the selector's labels; change the pod, not the router"
    )]
    DiscoveredWorker(String, String),
    /// No healthy worker could take the request.
    #[error("no healthy worker is available for this request")]
    NoHealthyWorker,
    /// The routing policy declined the request.
    #[error("routing policy declined the request: {0}")]
    PolicyDeclined(String),
    /// The router is shutting down.
    #[error("the router is shutting down")]
    ShuttingDown,
    /// Every attempt to reach a worker failed.
    #[error("could not reach a worker: {0}")]
    UpstreamConnect(String),
    /// A forced policy reload failed; the old policy keeps serving.
    #[error("policy reload failed, the old policy keeps serving: {0}")]
    PolicyReload(String),
    /// The worker did not answer, or finish its answer, in time.
    #[error("the worker did not respond within --request-timeout-secs")]
    UpstreamTimeout,
    /// The worker's response paused longer than `--stream-idle-timeout-secs`.
    #[error("the worker sent nothing for --stream-idle-timeout-secs; the response was cut off")]
    UpstreamIdle,
    /// The client's body did not arrive in time.
    #[error(
        "the request body did not arrive within --request-timeout-secs, or paused longer than --stream-idle-timeout-secs"
    )]
    BodyTimeout,
}

impl ApiError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::ModelNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::QueueTimeout | ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::WorkerExists(_) | ApiError::DiscoveredWorker(..) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::QueueFull => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NoHealthyWorker | ApiError::PolicyDeclined(_) | ApiError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::PolicyReload(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UpstreamConnect(_) => StatusCode::BAD_GATEWAY,
            ApiError::UpstreamTimeout | ApiError::UpstreamIdle => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// OpenAI's `type` and a stable machine-readable `code`.
    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::BadRequest(_) => ("invalid_request_error", "invalid_request"),
            ApiError::Unauthorized => ("authentication_error", "invalid_api_key"),
            ApiError::InvalidToken(_) => ("authentication_error", "invalid_token"),
            ApiError::Forbidden(_) => ("permission_error", "admin_forbidden"),
            ApiError::NotFound(_) => ("invalid_request_error", "not_found"),
            ApiError::ModelNotFound(_) => ("invalid_request_error", "model_not_found"),
            ApiError::QueueTimeout => ("timeout_error", "queue_timeout"),
            ApiError::PayloadTooLarge(_) => ("invalid_request_error", "payload_too_large"),
            ApiError::QueueFull => ("rate_limit_error", "queue_full"),
            ApiError::WorkerExists(_) => ("invalid_request_error", "worker_exists"),
            ApiError::DiscoveredWorker(..) => ("invalid_request_error", "worker_discovered"),
            ApiError::NoHealthyWorker => ("service_unavailable", "no_healthy_worker"),
            ApiError::PolicyDeclined(_) => ("service_unavailable", "policy_declined"),
            ApiError::ShuttingDown => ("service_unavailable", "shutting_down"),
            ApiError::PolicyReload(_) => ("invalid_request_error", "policy_reload_failed"),
            ApiError::UpstreamConnect(_) => ("upstream_error", "upstream_unreachable"),
            ApiError::UpstreamTimeout => ("timeout_error", "upstream_timeout"),
            ApiError::UpstreamIdle => ("timeout_error", "upstream_idle_timeout"),
            ApiError::BodyTimeout => ("timeout_error", "request_body_timeout"),
        }
    }

    /// The error in OpenAI's shape, as the body of a response or of an SSE
    /// event.
    pub fn to_json(&self) -> serde_json::Value {
        let (kind, code) = self.kind();
        json!({"error": {"message": self.to_string(), "type": kind, "code": code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(self.to_json())).into_response()
    }
}
