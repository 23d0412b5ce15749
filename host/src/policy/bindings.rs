//! Host bindings generated from `wit/policy.wit`, and conversions from the
//! seam's types to them. The only file with `bindgen!`.

use std::time::Duration;

use super as seam;

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "policy",
    });
}

pub use generated::{
    Candidate, Outcome, Policy as Bindings, PolicyPre as BindingsPre, Request, WorkerInfo,
};
use generated::{PolicyInfo, Role, Route};

impl From<&seam::RouteRequest<'_>> for Request {
    fn from(r: &seam::RouteRequest<'_>) -> Self {
        Request {
            id: r.id,
            route: match r.route {
                seam::Route::Generate => Route::Generate,
                seam::Route::Completions => Route::Completions,
                seam::Route::ChatCompletions => Route::ChatCompletions,
                seam::Route::Embeddings => Route::Embeddings,
                seam::Route::Other => Route::Other,
            },
            model: r.model.to_string(),
            text: r.text.to_string(),
            routing_key: r.routing_key.map(str::to_string),
        }
    }
}

impl From<&seam::Candidate> for Candidate {
    fn from(c: &seam::Candidate) -> Self {
        Candidate {
            id: c.id,
            load: c.load,
        }
    }
}

impl From<&seam::WorkerInfo> for WorkerInfo {
    fn from(w: &seam::WorkerInfo) -> Self {
        WorkerInfo {
            id: w.id,
            url: w.url.clone(),
            model: w.model.clone(),
            role: match w.role {
                seam::Role::Regular => Role::Regular,
                seam::Role::Prefill => Role::Prefill,
                seam::Role::Decode => Role::Decode,
            },
            dp_rank: w.dp_rank,
        }
    }
}

impl From<&seam::Outcome> for Outcome {
    fn from(o: &seam::Outcome) -> Self {
        Outcome {
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

impl From<PolicyInfo> for seam::PolicyInfo {
    fn from(i: PolicyInfo) -> Self {
        seam::PolicyInfo {
            name: i.name,
            needs_text: i.needs_text,
            wants_feedback: i.wants_feedback,
            tick_interval: (i.tick_interval_ms > 0)
                .then(|| Duration::from_millis(i.tick_interval_ms.into())),
        }
    }
}
