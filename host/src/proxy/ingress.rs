//! The request's way in, from a client's bytes to the worker: every step
//! before forwarding, in the order a request takes them ([`inference`]).
//!
//! 1. Its time (`--request-timeout-secs`) starts at arrival, queueing
//!    included.
//! 2. Admission: a slot of the concurrency limit, or a place in its queue
//!    ([`crate::admission`]); the response body holds the slot until it
//!    ends.
//! 3. The body, read once, bounded in size and time ([`read_body`]); only
//!    what a policy asks for extracted from it ([`crate::extract`]); the
//!    routing text tokenized when a policy matches KV pages.
//! 4. The prepared [`Forward`] goes to one worker
//!    ([`super::forward_to_worker`]) or a prefill/decode pair
//!    ([`super::pd::forward_to_pair`]), which splice in the fields the
//!    router adds (`data_parallel_rank`, the PD bootstrap).
//! 5. The route's request counter and duration histogram, whatever the
//!    answer.
//!
//! One function rather than a tower layer per step: three `from_fn` layers
//! cost 6-8% more router CPU per request (BENCHMARKS.md, design round 2).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;
use tower_http::request_id::RequestId;

use super::{Forward, forward_to_worker, pd};
use crate::errors::ApiError;
use crate::policy::{Loaded, PolicyInfo, Route};
use crate::state::AppState;
use crate::tokenizer::Routed;
use crate::{extract, metrics as m};

/// The handler of the inference routes: the whole way in, counted.
pub async fn inference(State(s): State<Arc<AppState>>, route: Route, req: Request) -> Response {
    let started = Instant::now();
    let deadline = started + s.config.request_timeout;
    let trace = s.traces.as_ref().map(|t| {
        let id = id_of(req.extensions());
        t.request(req.headers(), route, id)
    });
    let resp = match &s.admission {
        None => serve(&s, route, req, deadline, trace.as_ref()).await,
        Some(admission) => match admission.admit().await {
            Ok(slot) => serve(&s, route, req, deadline, trace.as_ref())
                .await
                .map(|resp| slot.hold_until_end(resp)),
            Err(e) => Err(e),
        },
    };
    let resp = resp.unwrap_or_else(|e| {
        let code = e.status().as_str().to_owned();
        metrics::counter!(m::ERRORS, "route" => route.label(), "code" => code).increment(1);
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
    match trace {
        None => resp,
        Some(span) => {
            // The span ends with the response's body.
            span.status(resp.status().as_u16());
            crate::hold::hold_until_end(resp, span)
        }
    }
}

/// Read, extract, prepare, forward, by `deadline`.
async fn serve(
    s: &AppState,
    route: Route,
    req: Request,
    deadline: Instant,
    trace: Option<&crate::traces::RequestSpan>,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let body = read_body(s, body, deadline).await?;
    let policy = Loaded::from(&s.policy);
    let prefill_policy = s
        .prefill_policies
        .as_ref()
        .map(|m| Loaded::from(&m.active()));
    let peek = extract::peek(&body)?;
    // The lab: shadows in regular mode, and a record when sampled.
    let shadows = s.shadows.as_deref().filter(|_| prefill_policy.is_none());
    let log = s
        .decisions
        .as_ref()
        .filter(|d| prefill_policy.is_none() && d.sampled());
    let either = |wants: fn(&PolicyInfo) -> bool| {
        wants(policy.policy.info())
            || prefill_policy
                .as_ref()
                .is_some_and(|p| wants(p.policy.info()))
            || shadows.is_some_and(|s| s.any_wants(wants))
    };
    // A record keeps the text's block keys, so it needs the text.
    let text = if either(|i| i.needs_text) || log.is_some() {
        peek.routing_text()?
    } else {
        String::new()
    };
    let (text, tokens) = tokenize_for_kv(s, either(|i| i.reads.kv_matches), text).await;
    let routing_key = ["x-routing-key", "x-smg-routing-key"]
        .iter()
        .find_map(|h| parts.headers.get(*h)?.to_str().ok());
    let request_id = request_id(&parts);
    let live = (log.is_some() || shadows.is_some()).then(|| policy.policy.clone());
    let lab = live.as_ref().map(|live| crate::lab::Watch {
        log,
        shadows,
        live,
        request_id,
    });
    let forward = Forward {
        route,
        path_and_query: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        headers: &parts.headers,
        body: body.clone(),
        request_id,
        seq: s.seq.fetch_add(1, Ordering::Relaxed),
        model: peek.model.as_deref().unwrap_or(""),
        text: &text,
        tokens: tokens.as_ref().map(|t| &t.tokens[..]),
        prompt_tokens: tokens
            .as_ref()
            .filter(|t| t.total != t.tokens.len())
            .map(|t| u32::try_from(t.total).unwrap_or(u32::MAX)),
        routing_key,
        stream: peek.streams(),
        max_new_tokens: peek.max_new_tokens(),
        deadline,
        trace,
        lab,
    };
    if let Some(span) = trace {
        span.model(forward.model);
    }
    match prefill_policy {
        None => forward_to_worker(&s.config, &s.upstream, &s.registry, policy, forward).await,
        Some(prefill) => {
            let policies = pd::PdPolicies {
                prefill,
                decode: policy,
            };
            let (config, upstream, registry) = (&s.config, &s.upstream, &s.registry);
            pd::forward_to_pair(config, upstream, registry, policies, forward, &peek).await
        }
    }
}

/// When a request that starts now is out of time.
pub fn deadline(s: &AppState) -> Instant {
    Instant::now() + s.config.request_timeout
}

/// The id the request-id layer gave the request.
pub fn request_id(parts: &axum::http::request::Parts) -> &str {
    id_of(&parts.extensions)
}

fn id_of(extensions: &axum::http::Extensions) -> &str {
    extensions
        .get::<RequestId>()
        .and_then(|r| r.header_value().to_str().ok())
        .unwrap_or("")
}

/// Read the client's body once, bounded in size (`--max-payload-size`) and
/// time: whole by the request's `deadline`, with no pause between two
/// chunks longer than `--stream-idle-timeout-secs`. `Limited` itself rather
/// than tower-http's `RequestBodyLimitLayer`, whose early 413 is not in
/// OpenAI's error shape.
pub async fn read_body(s: &AppState, body: Body, deadline: Instant) -> Result<Bytes, ApiError> {
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

/// The routing text's tokens, for `prefix-index.match-kv`, when the router
/// follows the workers' KV events, has a tokenizer, and a policy of this
/// request calls `match-kv` (`reads`: its component imports it; so
/// cache_aware's requests are not tokenized). Only as far as some worker
/// holds every page so far: past that no page can match, and the rest is
/// counted, not tokenized. From the tokenizer's caches on this thread when
/// they hold all that is needed; else tokenized on the blocking pool, one
/// per core at a time (`tokenize_slots`): a long prompt takes milliseconds
/// (BENCHMARKS.md), which must neither stall the other connections of this
/// serving thread nor count against the policy's call deadline. The text
/// comes back with them; a text the tokenizer refuses has none (the policy
/// then sees no match).
async fn tokenize_for_kv(s: &AppState, reads: bool, text: String) -> (String, Option<Routed>) {
    let (Some(tokenizer), Some(events)) = (&s.tokenizer, &s.kv_events) else {
        return (text, None);
    };
    if !reads || text.is_empty() {
        return (text, None);
    }
    let index = events.index().clone();
    if let Some(kept) = tokenizer.cached_for_routing(&text, |ids| index.holds_every_page_of(ids)) {
        return (text, Some(kept));
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
        tokenizer
            .encode_for_routing(&copy, |ids| index.holds_every_page_of(ids))
            .ok()
    })
    .await
    .ok()
    .flatten();
    (text, tokens)
}
