//! Routing policies: the seam between the data plane and the decision.
//!
//! This module knows nothing of HTTP. The proxy builds a [`RouteRequest`] and
//! a list of [`Candidate`]s and asks a [`Policy`] for a [`Decision`].
//!
//! - [`WasmPolicy`] runs a component written against `wit/policy.wit`
//!   (contract 0.2.0) or `wit/0.1.0/policy.wit` (wasmtime settings live in
//!   [`engine`], the sandbox in `sandbox`, what the host gives 0.2 policies
//!   in `imports`).
//! - [`componentize`] wraps a core module (AssemblyScript) into a component.
//! - [`LeastLoad`] is native: the fallback when a component faults, and the
//!   policy of choice in data-plane tests.

mod bindings;
pub mod builtin;
pub mod check;
pub mod componentize;
pub mod engine;
mod error;
pub mod imports;
mod instance;
mod lent;
mod native;
pub mod reload;
mod sandbox;
mod source;
mod ticker;
mod wasm;
pub mod watch;

pub use engine::PolicyEngine;
pub use error::{LoadError, PolicyFault, SelectError};
pub use native::LeastLoad;
pub use source::PolicySource;
pub use wasm::{CHECKPOINT_INTERVAL, WasmPolicy};

/// The inference route, as policies see it.
pub use crate::route::Route;

use std::time::Duration;

use crate::config::{Labels, Role};

/// The contract version this router's SDK and new policies speak: the
/// package version of `wit/policy.wit`.
pub const CONTRACT_VERSION: &str = "0.2.0";

/// Every contract version the router loads, newest first.
pub const CONTRACT_VERSIONS: [&str; 2] = [CONTRACT_VERSION, "0.1.0"];

/// A worker's id as the router assigns it: stable while the worker is
/// registered, never reused.
pub type WorkerId = u32;

/// A worker as policies see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Router-assigned id.
    pub id: WorkerId,
    /// Base URL.
    pub url: String,
    /// Model served; empty when unknown.
    pub model: String,
    /// Its part in PD mode.
    pub role: Role,
    /// Data-parallel rank, when expanded per rank.
    pub dp_rank: Option<u32>,
    /// Its share of traffic relative to the others, as its entry gave it
    /// (1 unless given): what weighted policies divide by.
    pub weight: u32,
    /// Its labels, as its entry gave them.
    pub labels: std::sync::Arc<Labels>,
}

impl Default for WorkerInfo {
    /// Worker 0 at no URL, weight 1, no labels: what tests fill in.
    fn default() -> Self {
        WorkerInfo {
            id: 0,
            url: String::new(),
            model: String::new(),
            role: Role::Regular,
            dp_rank: None,
            weight: 1,
            labels: Default::default(),
        }
    }
}

/// The request metadata a policy decides on. Borrowed from the proxy's
/// request so that building it costs no copy.
#[derive(Debug, Clone, Copy)]
pub struct RouteRequest<'a> {
    /// Router-assigned sequence number, echoed in [`Outcome::request_id`].
    pub id: u64,
    /// Route the request came in on.
    pub route: Route,
    /// The body's `model`; empty when absent.
    pub model: &'a str,
    /// Routing text; empty unless the policy declared `needs_text`.
    pub text: &'a str,
    /// The routing text's tokens, when the router tokenized it before the
    /// call (`--kv-events` with a tokenizer); `prefix-index.match-kv`
    /// matches them. Without them nothing matches: a policy call never
    /// tokenizes. They may be the text's start only (past it no worker
    /// holds the pages): then `prompt_tokens` counts the whole.
    pub tokens: Option<&'a [u32]>,
    /// The whole routing text's tokens, when `tokens` is its start only
    /// (estimated); `None`: as many as `tokens`.
    pub prompt_tokens: Option<u32>,
    /// `x-routing-key` (or `x-smg-routing-key`) header.
    pub routing_key: Option<&'a str>,
    /// The client's headers, for a policy that reads them
    /// ([`Reads::headers`]); `None` otherwise.
    pub headers: Option<&'a axum::http::HeaderMap>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The most tokens the client asked to be generated.
    pub max_new_tokens: Option<u32>,
}

/// A worker that may take the request, with its current load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Candidate {
    /// Worker id.
    pub id: WorkerId,
    /// `in_flight`, or the worker's own count (`reported_load`) when that is
    /// higher.
    pub load: u32,
    /// Requests in flight from this router to it.
    pub in_flight: u32,
    /// The worker's own count of requests at its last `/get_load` (see
    /// [`crate::workers::load`]).
    pub reported_load: Option<u32>,
    /// Of those, the ones waiting in its queue, when it says.
    pub queued: Option<u32>,
    /// Its circuit breaker is half-open: it takes trial requests only.
    pub half_open: bool,
    /// This router's moving average of its time to first byte, over its
    /// successful responses ([`crate::workers::Worker::ttft_ewma`]).
    pub ttft_ewma: Option<std::time::Duration>,
    /// The same for the time to a response's end.
    pub latency_ewma: Option<std::time::Duration>,
    /// The tokens its requests hold in its KV cache at its last
    /// `/get_load`, when it says ([`crate::workers::Worker::reported_kv_tokens`]).
    pub kv_tokens: Option<u32>,
    /// How many tokens its KV cache holds, once the router learned it.
    pub kv_capacity: Option<u32>,
    /// The prefill this router sent it whose answer has not begun
    /// ([`crate::workers::Worker::prefill_ahead`]).
    pub prefill_ahead: PrefillWork,
}

/// Prefill work queued at a worker: requests, and the prompt tokens they
/// must compute (those not in its KV cache).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PrefillWork {
    /// Requests.
    pub requests: u32,
    /// Their prompt tokens to compute, estimated at routing.
    pub tokens: u32,
}

impl Candidate {
    /// A candidate with `load` requests in flight and nothing else known:
    /// what tests and the check's test call need.
    pub fn idle(id: WorkerId, load: u32) -> Self {
        Candidate {
            id,
            load,
            in_flight: load,
            ..Candidate::default()
        }
    }
}

/// Why an attempt failed, as policies are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptError {
    /// The worker could not be reached.
    Connect,
    /// A router timeout ran out.
    Timeout,
    /// The worker answered with an error status.
    Status,
    /// The client went away first.
    ClientAbort,
    /// The response body broke off.
    BrokenBody,
    /// The router called it off (the other half of a PD pair failed).
    Cancelled,
}

/// How a request ended, reported to policies that want feedback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// [`RouteRequest::id`] of the request.
    pub request_id: u64,
    /// The worker that served it.
    pub worker: WorkerId,
    /// 1 for a request's first attempt, 2 for its first retry...
    pub attempt: u32,
    /// Why the attempt failed; `None` if it did not.
    pub error: Option<AttemptError>,
    /// Send to first body byte, in microseconds; `None` if none came.
    pub ttft_us: Option<u64>,
    /// HTTP status from the worker; 0 if it could not be reached or gave no
    /// answer; 499 if the client went away before the response's end, 504
    /// if a timeout cut the response off, 502 if its body broke off.
    pub status: u16,
    /// Send to last byte, in microseconds.
    pub latency_us: u64,
    /// Prompt tokens the worker reported.
    pub prompt_tokens: Option<u32>,
    /// Prompt tokens the worker served from its KV cache.
    pub cached_tokens: Option<u32>,
    /// Generated tokens the worker reported.
    pub completion_tokens: Option<u32>,
}

/// What a policy declared about itself at `init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    /// Short name for logs, metrics and `GET /policies`.
    pub name: String,
    /// Whether the proxy must extract the routing text.
    pub needs_text: bool,
    /// Whether the proxy reports [`Outcome`]s.
    pub wants_feedback: bool,
    /// How often to call [`Policy::tick`]; `None` for never.
    pub tick_interval: Option<Duration>,
    /// One instance per thread, or one shared.
    pub instances: Instances,
    /// What the policy reads that the router prepares only for policies
    /// that read it: as it declared in `init`, else as its imports tell.
    pub reads: Reads,
}

/// What a policy reads that costs the router work before each call, so that
/// it does that work only for a policy that uses it. Declared in `init`
/// (`needs.declare`), else read from the component's imports at load
/// (toolchains like Rust's import only the functions a policy calls); 0.1
/// components and native policies read neither.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reads {
    /// `request.header`: the router lends the client's headers.
    pub headers: bool,
    /// `prefix-index.match-kv`: the router tokenizes the routing text
    /// before the call, and refuses the policy unless it follows KV events
    /// and has a tokenizer.
    pub kv_matches: bool,
    /// Whether the policy declared these (`needs.declare`) rather than
    /// having them read from its imports.
    pub declared: bool,
}

/// How many instances of a policy run (contract 0.2 lets the policy say;
/// 0.1 policies are always shared).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Instances {
    /// One per router thread: the policy keeps no private state.
    PerThread,
    /// One for the whole router, called one call at a time.
    #[default]
    Shared,
}

impl Instances {
    /// Its name in `router policy check` and `GET /policies`.
    pub fn label(self) -> &'static str {
        match self {
            Instances::PerThread => "per-thread",
            Instances::Shared => "shared",
        }
    }
}

/// A routing decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The chosen worker; always one of the candidates.
    pub worker: WorkerId,
    /// Set when the policy could not decide and the native fallback did.
    pub fallback: Option<PolicyFault>,
    /// The prompt tokens the chosen worker holds in its KV cache, as
    /// `prefix-index.match-kv` told the policy, when it asked.
    pub cached_tokens: Option<u32>,
}

/// The seam between the data plane and routing.
///
/// Implementations are shared by all requests (`&self`) and must be cheap to
/// call: `select` is on every request's path.
pub trait Policy: Send + Sync {
    /// What the policy declared at `init`.
    fn info(&self) -> &PolicyInfo;

    /// The full list of workers; called at start and after every change.
    fn workers_changed(&self, workers: &[WorkerInfo]);

    /// Pick one of `candidates` for `req`. A returned worker is always one of
    /// the candidates: faults are answered by the native fallback and
    /// reported in [`Decision::fallback`].
    fn select(
        &self,
        req: &RouteRequest<'_>,
        candidates: &[Candidate],
    ) -> Result<Decision, SelectError>;

    /// Feedback after a response ended; only if `info().wants_feedback`.
    fn on_complete(&self, outcome: &Outcome);

    /// Periodic housekeeping; `now_ms` is milliseconds since the Unix epoch.
    fn tick(&self, now_ms: u64);

    /// Keep a copy of the policy's private state, off the request path, for
    /// the instance rebuilt after a fault; whether one was taken. Called
    /// every [`CHECKPOINT_INTERVAL`]; only a policy with private state
    /// that changed since its last checkpoint takes one.
    fn checkpoint(&self) -> bool {
        false
    }

    /// Resolves when a `select` that answered [`SelectError::Busy`] may be
    /// asked again. Only a policy that can be busy needs to say more than
    /// "now".
    fn until_ready(&self) -> ReadyWait<'_> {
        Box::pin(std::future::ready(()))
    }

    /// The hex sha256 of the component, for a Wasm policy (traces name the
    /// exact policy that decided).
    fn component_sha256(&self) -> Option<&str> {
        None
    }

    /// The prefix index the host keeps for it (`prefix-index`), for a Wasm
    /// policy: where decision records and shadows look up matched
    /// prefixes.
    fn prefix_index(&self) -> Option<&crate::index::Approximate> {
        None
    }
}

/// What [`Policy::until_ready`] returns.
pub type ReadyWait<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// Where the data plane finds the active policy: swapped whole on reload.
pub type Seam = std::sync::Arc<arc_swap::ArcSwap<Box<dyn Policy>>>;

/// The policy one request is routed by, as loaded from its [`Seam`] when
/// the request began, and that seam: the request's outcomes are reported
/// to the instance serving when they come ([`Loaded::report`]), so a
/// reload in between hands them to the new one.
#[derive(Clone)]
pub struct Loaded {
    /// Decides this request.
    pub policy: std::sync::Arc<Box<dyn Policy>>,
    seam: Seam,
}

impl Loaded {
    /// The policy serving now.
    pub fn from(seam: &Seam) -> Self {
        Loaded {
            policy: seam.load_full(),
            seam: seam.clone(),
        }
    }

    /// Report `outcome` to the instance serving now.
    pub fn report(&self, outcome: &Outcome) {
        self.seam.load().on_complete(outcome);
    }
}

/// A shared policy is a policy: the reload manager keeps its own handle on
/// the instance it put behind the seam.
impl<P: Policy + ?Sized> Policy for std::sync::Arc<P> {
    fn info(&self) -> &PolicyInfo {
        (**self).info()
    }

    fn workers_changed(&self, workers: &[WorkerInfo]) {
        (**self).workers_changed(workers)
    }

    fn select(
        &self,
        req: &RouteRequest<'_>,
        candidates: &[Candidate],
    ) -> Result<Decision, SelectError> {
        (**self).select(req, candidates)
    }

    fn on_complete(&self, outcome: &Outcome) {
        (**self).on_complete(outcome)
    }

    fn tick(&self, now_ms: u64) {
        (**self).tick(now_ms)
    }

    fn checkpoint(&self) -> bool {
        (**self).checkpoint()
    }

    fn until_ready(&self) -> ReadyWait<'_> {
        (**self).until_ready()
    }

    fn component_sha256(&self) -> Option<&str> {
        (**self).component_sha256()
    }

    fn prefix_index(&self) -> Option<&crate::index::Approximate> {
        (**self).prefix_index()
    }
}
