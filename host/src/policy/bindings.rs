//! Host bindings generated from both contracts the router loads, and
//! conversions from the seam's types to them. The only file with `bindgen!`.
//!
//! - [`v1`]: `wit/0.1.0/policy.wit`, world `policy` (functions at world
//!   level, the request a record).
//! - [`v2`]: `wit/policy.wit`, world `routing-policy` (the exported
//!   interface `policy`, the request and the candidates resources backed by
//!   [`super::lent`], host imports in [`super::imports`]).

use std::time::Duration;

use super as seam;

/// Contract 0.1.0.
pub mod v1 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "policy",
    });
}

/// Contract 0.2.0.
pub mod v2 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "routing-policy",
        with: {
            "wasm-router:policy/types.request": crate::policy::lent::RequestData,
            "wasm-router:policy/types.candidates": crate::policy::lent::CandidatesData,
        },
    });
}

use v2::wasm_router::policy::types as t2;

fn route_v1(route: seam::Route) -> v1::Route {
    match route {
        seam::Route::Generate => v1::Route::Generate,
        seam::Route::Completions => v1::Route::Completions,
        seam::Route::ChatCompletions => v1::Route::ChatCompletions,
        seam::Route::Embeddings => v1::Route::Embeddings,
        seam::Route::Other => v1::Route::Other,
    }
}

/// The route as 0.2 policies see it.
pub(super) fn route_v2(route: seam::Route) -> t2::Route {
    match route {
        seam::Route::Generate => t2::Route::Generate,
        seam::Route::Completions => t2::Route::Completions,
        seam::Route::ChatCompletions => t2::Route::ChatCompletions,
        seam::Route::Embeddings => t2::Route::Embeddings,
        seam::Route::Other => t2::Route::Other,
    }
}

impl From<&seam::RouteRequest<'_>> for v1::Request {
    fn from(r: &seam::RouteRequest<'_>) -> Self {
        v1::Request {
            id: r.id,
            route: route_v1(r.route),
            model: r.model.to_string(),
            text: r.text.to_string(),
            routing_key: r.routing_key.map(str::to_string),
        }
    }
}

impl From<&seam::Candidate> for v1::Candidate {
    fn from(c: &seam::Candidate) -> Self {
        v1::Candidate {
            id: c.id,
            load: c.load,
        }
    }
}

impl From<&seam::WorkerInfo> for v1::WorkerInfo {
    fn from(w: &seam::WorkerInfo) -> Self {
        v1::WorkerInfo {
            id: w.id,
            url: w.url.clone(),
            model: w.model.clone(),
            role: match w.role {
                seam::Role::Regular => v1::Role::Regular,
                seam::Role::Prefill => v1::Role::Prefill,
                seam::Role::Decode => v1::Role::Decode,
            },
            dp_rank: w.dp_rank,
        }
    }
}

impl From<&seam::WorkerInfo> for t2::WorkerInfo {
    fn from(w: &seam::WorkerInfo) -> Self {
        t2::WorkerInfo {
            id: w.id,
            url: w.url.clone(),
            model: w.model.clone(),
            role: match w.role {
                seam::Role::Regular => t2::Role::Regular,
                seam::Role::Prefill => t2::Role::Prefill,
                seam::Role::Decode => t2::Role::Decode,
            },
            dp_rank: w.dp_rank,
        }
    }
}

impl From<&seam::Outcome> for v1::Outcome {
    fn from(o: &seam::Outcome) -> Self {
        v1::Outcome {
            request_id: o.request_id,
            worker: o.worker,
            status: o.status,
            latency_us: o.latency_us,
            prompt_tokens: o.prompt_tokens,
            cached_tokens: o.cached_tokens,
            completion_tokens: o.completion_tokens,
        }
    }
}

impl From<&seam::Outcome> for t2::Outcome {
    fn from(o: &seam::Outcome) -> Self {
        t2::Outcome {
            request_id: o.request_id,
            worker: o.worker,
            attempt: o.attempt,
            status: o.status,
            error: o.error.map(|e| match e {
                seam::AttemptError::Connect => t2::ErrorKind::Connect,
                seam::AttemptError::Timeout => t2::ErrorKind::Timeout,
                seam::AttemptError::Status => t2::ErrorKind::Status,
                seam::AttemptError::ClientAbort => t2::ErrorKind::ClientAbort,
                seam::AttemptError::BrokenBody => t2::ErrorKind::BrokenBody,
                seam::AttemptError::Cancelled => t2::ErrorKind::Cancelled,
            }),
            ttft_us: o.ttft_us,
            latency_us: o.latency_us,
            prompt_tokens: o.prompt_tokens,
            cached_tokens: o.cached_tokens,
            completion_tokens: o.completion_tokens,
        }
    }
}

fn tick_interval(ms: u32) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms.into()))
}

impl From<v1::PolicyInfo> for seam::PolicyInfo {
    fn from(i: v1::PolicyInfo) -> Self {
        seam::PolicyInfo {
            name: i.name,
            needs_text: i.needs_text,
            wants_feedback: i.wants_feedback,
            tick_interval: tick_interval(i.tick_interval_ms),
            instances: seam::Instances::Shared,
            reads: seam::Reads::default(),
        }
    }
}

impl From<t2::PolicyInfo> for seam::PolicyInfo {
    fn from(i: t2::PolicyInfo) -> Self {
        seam::PolicyInfo {
            name: i.name,
            needs_text: i.needs_text,
            wants_feedback: i.wants_feedback,
            tick_interval: tick_interval(i.tick_interval_ms),
            instances: match i.instances {
                t2::Instances::PerThread => seam::Instances::PerThread,
                t2::Instances::Shared => seam::Instances::Shared,
            },
            // Known from the component, not from `init`: filled in by
            // `Live::start`.
            reads: seam::Reads::default(),
        }
    }
}
