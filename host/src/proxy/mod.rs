//! Forwarding a request to the worker the policy picks: retries (only
//! before any byte reached the client, each asking the policy again without
//! the workers that failed), breaker bookkeeping, and streaming the worker's
//! response back chunk by chunk as it arrives. Knows nothing of Wasm: the
//! policy is a [`Policy`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::admission::Slot;
use crate::config::{Config, RetryConfig};
use crate::errors::ApiError;
use crate::metrics as m;
use crate::policy::{Outcome, Policy, Role, Route, RouteRequest, SelectError};
use crate::upstream::{self, Upstream};
use crate::workers::{InFlight, Registry, Worker};

/// Worker statuses worth another worker's try.
pub(crate) const RETRYABLE: [u16; 6] = [408, 429, 500, 502, 503, 504];

/// Headers that belong to one connection and are not forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_idle_timeout(upstream::POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(upstream::POOL_MAX_IDLE_PER_WORKER)
}

/// The HTTP client for the router's own calls to workers (health, models,
/// flushes; forwarding uses [`Upstream`]): pooled HTTP/1.1, no proxy from
/// the environment, Nagle off, webpki roots only.
pub fn client() -> reqwest::Client {
    builder()
        .build()
        .expect("the HTTP client builds with static settings")
}

/// The same client with extra roots and a client certificate.
pub fn client_with_tls(tls: &crate::tls::ClientTls) -> anyhow::Result<reqwest::Client> {
    Ok(builder()
        .use_preconfigured_tls(tls.rustls_config()?)
        .build()?)
}

/// One request to forward.
#[derive(Debug)]
pub struct Forward<'a> {
    /// Route, for the policy and metrics.
    pub route: Route,
    /// Path and query to request on the worker.
    pub path_and_query: &'a str,
    /// The client's headers.
    pub headers: &'a HeaderMap,
    /// The client's body, unchanged.
    pub body: Bytes,
    /// Request id (echoed and forwarded).
    pub request_id: &'a str,
    /// Router sequence number, for the policy.
    pub seq: u64,
    /// The body's `model`.
    pub model: &'a str,
    /// Routing text (empty unless the policy needs it).
    pub text: &'a str,
    /// Routing key header.
    pub routing_key: Option<&'a str>,
}

/// Forward `req`, retrying as configured; the response streams back.
pub async fn forward(
    config: &Config,
    upstream: &Upstream,
    registry: &Registry,
    policy: Arc<Box<dyn Policy>>,
    req: Forward<'_>,
    slot: Option<Slot>,
) -> Result<Response, ApiError> {
    let mut excluded = Vec::new();
    let mut last_error = ApiError::NoHealthyWorker;
    let headers = upstream_headers(req.headers, req.request_id);
    for attempt in 0..=config.retry.max_retries {
        if attempt > 0 {
            metrics::counter!(m::RETRIES, "route" => m::route_label(req.route)).increment(1);
            tokio::time::sleep(backoff(&config.retry, attempt)).await;
        }
        let Some(worker) = pick(registry, &**policy, Role::Regular, &req, &excluded)? else {
            return Err(last_error);
        };
        let in_flight = worker.start_request();
        let sent = Instant::now();
        let url = format!("{}{}", worker.url, req.path_and_query);
        let send = upstream.send(
            Method::POST,
            &url,
            headers.clone(),
            body_for(&worker, &req.body),
        );
        let timeout = config.attempt_timeout.unwrap_or(config.request_timeout);
        let response = match tokio::time::timeout(timeout, send).await {
            Err(_elapsed) => {
                worker.breaker.record(false, Instant::now());
                tracing::warn!(worker = %worker.url, request_id = req.request_id, attempt, "no response headers within {timeout:?}");
                // Without --attempt-timeout-secs the worker may still be
                // working on it and the request's time is up: no retry.
                if config.attempt_timeout.is_none() || attempt >= config.retry.max_retries {
                    return Err(ApiError::UpstreamTimeout);
                }
                last_error = ApiError::UpstreamTimeout;
                excluded.push(worker.id);
                continue;
            }
            Ok(Err(cause)) => {
                worker.breaker.record(false, Instant::now());
                tracing::warn!(worker = %worker.url, request_id = req.request_id, attempt, "worker unreachable: {cause}");
                // Clients learn what failed, not the fleet's addresses.
                last_error = ApiError::UpstreamConnect(format!(
                    "{} attempt(s) failed: {cause}",
                    attempt + 1
                ));
                excluded.push(worker.id);
                continue;
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        worker
            .breaker
            .record(!status.is_server_error(), Instant::now());
        if RETRYABLE.contains(&status.as_u16()) && attempt < config.retry.max_retries {
            tracing::warn!(worker = %worker.url, request_id = req.request_id, attempt, %status, "retrying on another worker");
            excluded.push(worker.id);
            continue;
        }
        m::for_route(req.route).ttfb.record(sent.elapsed());
        let feedback = Feedback::wanted(&policy, req.seq, &worker, status.as_u16(), sent);
        return Ok(stream_back(
            response,
            req.request_id,
            in_flight,
            slot,
            feedback,
        ));
    }
    Err(last_error)
}

/// Ask `policy` to pick one of the `role` workers that may take `req`,
/// except `excluded`; `None` when there is none.
pub(crate) fn pick(
    registry: &Registry,
    policy: &dyn Policy,
    role: Role,
    req: &Forward<'_>,
    excluded: &[u32],
) -> Result<Option<Arc<Worker>>, ApiError> {
    let workers = registry.candidates(req.model, role, excluded)?;
    if workers.is_empty() {
        return Ok(None);
    }
    let candidates = Registry::as_candidates(&workers);
    let asked = Instant::now();
    let decision = policy
        .select(
            &RouteRequest {
                id: req.seq,
                route: req.route,
                model: req.model,
                text: req.text,
                routing_key: req.routing_key,
            },
            &candidates,
        )
        .map_err(|e| match e {
            SelectError::NoCandidates => ApiError::NoHealthyWorker,
            SelectError::Declined(message) => ApiError::PolicyDeclined(message),
        })?;
    m::policy_decision().record(asked.elapsed());
    let worker = workers
        .into_iter()
        .find(|w| w.id == decision.worker)
        .expect("policies return one of the candidates");
    Ok(Some(worker))
}

/// The body for `worker`: the client's bytes, plus `data_parallel_rank`
/// when the worker entry stands for one rank (`--dp-aware`).
pub(crate) fn body_for(worker: &Worker, body: &Bytes) -> Bytes {
    match worker.dp_rank {
        Some(rank) => crate::extract::with_fields(body, &format!("\"data_parallel_rank\":{rank}")),
        None => body.clone(),
    }
}

/// Back-off before retry number `attempt` (1-based), with jitter.
pub fn backoff(retry: &RetryConfig, attempt: u32) -> Duration {
    let base = retry.initial_backoff.as_secs_f64() * retry.multiplier.powi(attempt as i32 - 1);
    let capped = base.min(retry.max_backoff.as_secs_f64());
    let jitter = 1.0 + retry.jitter * (fastrand::f64() * 2.0 - 1.0);
    Duration::from_secs_f64((capped * jitter).max(0.0))
}

pub(crate) fn upstream_headers(client: &HeaderMap, request_id: &str) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(client.len() + 1);
    for (name, value) in client {
        if !HOP_BY_HOP.contains(name) {
            out.append(name.clone(), value.clone());
        }
    }
    if let Ok(id) = HeaderValue::from_str(request_id) {
        out.insert(HeaderName::from_static("x-request-id"), id);
    }
    out
}

/// The client's response: the worker's status and headers, and its body
/// passed through as it arrives. The in-flight count, the admission slot and
/// the policy feedback live until the body ends or the client goes away.
pub(crate) fn stream_back(
    response: upstream::Response,
    request_id: &str,
    in_flight: InFlight,
    slot: Option<Slot>,
    feedback: Option<Feedback>,
) -> Response {
    let head = response_head(&response, request_id);
    respond_with(head, response.into_body(), in_flight, slot, feedback)
}

/// The status and headers the client gets for a worker's `response`.
pub(crate) fn response_head(
    response: &upstream::Response,
    request_id: &str,
) -> (StatusCode, HeaderMap) {
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = HeaderMap::with_capacity(response.headers().len() + 1);
    for (name, value) in response.headers() {
        if !HOP_BY_HOP.contains(name) || name == header::CONTENT_LENGTH {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), id);
    }
    (status, headers)
}

/// The client's response: `head`, and `body` passed through as it arrives;
/// see [`stream_back`].
pub(crate) fn respond_with<B>(
    (status, headers): (StatusCode, HeaderMap),
    body: B,
    in_flight: InFlight,
    slot: Option<Slot>,
    feedback: Option<Feedback>,
) -> Response
where
    B: http_body::Body<Data = Bytes, Error = hyper::Error> + Send + Unpin + 'static,
{
    let body = Tracked {
        body,
        _in_flight: in_flight,
        _slot: slot,
        feedback,
    };
    let mut out = Response::new(Body::new(body));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// A worker's response body on its way to the client, with what lives as
/// long as it does: the in-flight count, the admission slot, and the
/// policy feedback, which reads token counts on the way and reports when
/// dropped (the body ended or the client went away).
struct Tracked<B> {
    body: B,
    _in_flight: InFlight,
    _slot: Option<Slot>,
    feedback: Option<Feedback>,
}

impl<B> http_body::Body for Tracked<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        if let (Some(feedback), Some(Ok(frame))) = (this.feedback.as_mut(), &frame)
            && let Some(data) = frame.data_ref()
        {
            feedback.scan(data);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Reports a response's [`Outcome`] to the policy when dropped (the body
/// ended or the client went away), with token counts found in the body.
pub(crate) struct Feedback {
    policy: Arc<Box<dyn Policy>>,
    outcome: Outcome,
    sent: Instant,
    /// The end of the previous chunk, so a field split across chunks is found.
    tail: Vec<u8>,
}

impl Feedback {
    const TAIL: usize = 64;

    /// Feedback on request `seq` served by `worker`, if the policy wants it.
    pub(crate) fn wanted(
        policy: &Arc<Box<dyn Policy>>,
        seq: u64,
        worker: &Worker,
        status: u16,
        sent: Instant,
    ) -> Option<Feedback> {
        policy.info().wants_feedback.then(|| Feedback {
            policy: policy.clone(),
            outcome: Outcome {
                request_id: seq,
                worker: worker.id,
                status,
                ..Outcome::default()
            },
            sent,
            tail: Vec::new(),
        })
    }

    /// Look for token counts in the next piece of the body.
    pub(crate) fn scan(&mut self, chunk: &Bytes) {
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(chunk);
        let o = &mut self.outcome;
        for (field, slot) in [
            ("\"prompt_tokens\":", &mut o.prompt_tokens),
            ("\"cached_tokens\":", &mut o.cached_tokens),
            ("\"completion_tokens\":", &mut o.completion_tokens),
        ] {
            if let Some(n) = last_number_after(&window, field.as_bytes()) {
                *slot = Some(n);
            }
        }
        let keep = window.len().saturating_sub(Self::TAIL);
        self.tail = window.split_off(keep);
    }
}

impl Drop for Feedback {
    fn drop(&mut self) {
        self.outcome.latency_us = self.sent.elapsed().as_micros() as u64;
        self.policy.on_complete(&self.outcome);
    }
}

/// The number after the last `field` in `haystack`, if complete.
fn last_number_after(haystack: &[u8], field: &[u8]) -> Option<u32> {
    let at = haystack.windows(field.len()).rposition(|w| w == field)?;
    let rest = &haystack[at + field.len()..];
    let digits: Vec<u8> = rest
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let retry = RetryConfig {
            max_retries: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(250),
            multiplier: 2.0,
            jitter: 0.0,
        };
        let waits: Vec<_> = (1..=3).map(|a| backoff(&retry, a).as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 250]);
    }

    #[test]
    fn token_counts_are_found_across_chunks() {
        let policy: Arc<Box<dyn Policy>> = Arc::new(Box::new(crate::policy::LeastLoad::default()));
        let mut f = Feedback {
            policy,
            outcome: Outcome::default(),
            sent: Instant::now(),
            tail: Vec::new(),
        };
        f.scan(&Bytes::from_static(
            br#"{"usage": {"prompt_tokens": 12, "prompt_tokens_details": {"cached_to"#,
        ));
        f.scan(&Bytes::from_static(
            br#"kens": 8}, "completion_tokens": 3}}"#,
        ));
        assert_eq!(f.outcome.prompt_tokens, Some(12));
        assert_eq!(f.outcome.cached_tokens, Some(8));
        assert_eq!(f.outcome.completion_tokens, Some(3));
    }
}
