//! What the host gives contract-0.2 policies, one file per import: the
//! getters of the `request` and `candidates` they are lent (`request.rs`),
//! and `log`, `metrics`, `state`, `prefix-index` and `needs` (`log.rs`,
//! `metrics.rs`, `state.rs`, `prefix_index.rs`, `needs.rs`).
//!
//! `log`'s rate limit, the metric registry, the key-value store and the
//! prefix index ([`crate::index::Approximate`]) belong
//! to the policy's key ([`PolicyHost`], kept by [`HostShelf`] for the
//! engine's life), not to an instance: every instance of the policy shares
//! them, and they outlive faults (a rebuilt instance finds them) and reloads
//! (a new build of the same file does too). Each instance holds an [`Host`]:
//! its handle on them, and its own cache of metric handles, so recording a
//! metric takes no lock.

mod log;
mod metrics;
mod needs;
mod prefix_index;
mod request;
mod state;
#[cfg(test)]
mod tests;

pub use log::{LOG_BURST, LOG_PER_SECOND, MAX_LOG_FIELD};
pub use metrics::{MAX_LABEL_VALUES, MAX_METRICS, METRIC_PREFIX};
pub use state::{MAX_STATE_BYTES, MAX_STATE_KEY, MAX_STATE_KEYS, MAX_STATE_VALUE, Store};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use wasmtime::component::Resource;

use super::bindings::v2::wasm_router::policy::types;
use super::lent::{CandidatesData, RequestData};
use super::{RouteRequest, WorkerId};
use crate::config::Labels;
use log::LogBucket;
use metrics::{Declared, Handle};

/// A policy's key: the file's stem, or the built-in's name. See `state` in
/// `wit/policy.wit`.
pub fn policy_key(source: &super::PolicySource) -> String {
    match source {
        super::PolicySource::Builtin(name) => name.to_string(),
        super::PolicySource::File(path) => path
            .file_stem()
            .map_or_else(|| "policy".into(), |s| s.to_string_lossy().into_owned()),
    }
}

/// A duration in whole microseconds, at most `u32::MAX` (71 minutes).
fn saturating_micros(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// What `prefix-index.match-kv` reads: the index the workers' KV events
/// feed, matched with the tokens the router gave the request before the
/// call (never tokenized inside it: that would count against the policy's
/// deadline).
#[derive(Debug, Clone, Default)]
pub struct KvView {
    /// The precise index (`--kv-events`); `None`: no worker is followed.
    pub index: Option<Arc<crate::index::Precise>>,
    /// The router's tokenizer (`--tokenizer-path`), which tokenizes
    /// requests for policies that match KV pages; `None`: requests carry no
    /// tokens.
    pub tokenizer: Option<Arc<crate::tokenizer::Tokenizer>>,
}

impl KvView {
    /// Refuse policy `name`, which matches KV pages, when this router
    /// could not give it matches: it must follow events and tokenize.
    pub fn check_matchable(&self, name: &str) -> Result<(), super::LoadError> {
        let (why, missing) = match (&self.index, &self.tokenizer) {
            (Some(_), Some(_)) => return Ok(()),
            (None, None) => (
                "follows no KV events and has no tokenizer",
                "--kv-events and --tokenizer-path (or --model-path)",
            ),
            (None, Some(_)) => ("follows no KV events", "--kv-events"),
            (Some(_), None) => ("has no tokenizer", "--tokenizer-path (or --model-path)"),
        };
        Err(super::LoadError::KvNotFollowed {
            name: name.to_string(),
            why,
            missing,
        })
    }
}

/// Every policy key's [`PolicyHost`], for as long as the engine lives.
#[derive(Debug, Default)]
pub struct HostShelf {
    hosts: Mutex<HashMap<String, Arc<PolicyHost>>>,
    kv: KvView,
}

impl HostShelf {
    /// A shelf whose policies read the workers' KV caches through `kv`.
    pub fn with_kv(kv: KvView) -> Self {
        HostShelf {
            hosts: Mutex::default(),
            kv,
        }
    }

    /// What its policies read of the workers' KV caches.
    pub fn kv(&self) -> &KvView {
        &self.kv
    }

    /// The host side of policy `key`, made on first use.
    pub fn get(&self, key: &str) -> Arc<PolicyHost> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts
            .entry(key.to_string())
            .or_insert_with(|| Arc::new(PolicyHost::new(key, self.kv.clone())))
            .clone()
    }
}

/// What the host keeps for one policy key. See the module docs.
#[derive(Debug)]
pub struct PolicyHost {
    key: String,
    log: Mutex<LogBucket>,
    metrics: Mutex<Vec<Declared>>,
    state: Store,
    index: crate::index::Approximate,
    kv: KvView,
}

impl PolicyHost {
    fn new(key: &str, kv: KvView) -> Self {
        PolicyHost {
            key: key.to_string(),
            log: Mutex::new(LogBucket::full(std::time::Instant::now())),
            metrics: Mutex::new(Vec::new()),
            state: Store::default(),
            index: crate::index::Approximate::default(),
            kv,
        }
    }

    /// The key-value store.
    pub fn state(&self) -> &Store {
        &self.state
    }

    /// The prefix index.
    pub fn index(&self) -> &crate::index::Approximate {
        &self.index
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves its data whole.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One instance's side of the imports.
#[derive(Debug)]
pub struct Host {
    policy: Arc<PolicyHost>,
    request: RequestData,
    candidates: CandidatesData,
    /// Handles of the metrics this instance recorded: by declared handle,
    /// then label value.
    metrics: HashMap<u32, HashMap<String, Handle>>,
    /// Handles in `metrics`.
    cached_metrics: usize,
    /// What the candidates' `weights` and `label` columns read: the
    /// workers' static attributes by id, from the last `workers-changed`
    /// (so a `select` copies none of them unless the policy asks).
    workers: HashMap<WorkerId, Attributes>,
    /// What the instance declared it reads (`needs.declare`) during `init`.
    declared: Option<super::Reads>,
    /// Whether `init` has returned: later declarations are ignored.
    initialised: bool,
}

/// What a worker was registered with that does not change while it is.
#[derive(Debug)]
struct Attributes {
    weight: u32,
    labels: Arc<Labels>,
}

impl Host {
    /// An instance's side of policy `policy`'s imports.
    pub fn new(policy: Arc<PolicyHost>) -> Self {
        Host {
            policy,
            request: RequestData::default(),
            candidates: CandidatesData::default(),
            metrics: HashMap::new(),
            cached_metrics: 0,
            workers: HashMap::new(),
            declared: None,
            initialised: false,
        }
    }

    /// Keep the attributes of `workers`, the list `workers-changed` is
    /// about to give the instance.
    pub(super) fn know_workers(&mut self, workers: &[super::WorkerInfo]) {
        self.workers.clear();
        self.workers.extend(workers.iter().map(|w| {
            let attributes = Attributes {
                weight: w.weight,
                labels: w.labels.clone(),
            };
            (w.id, attributes)
        }));
    }

    /// The prompt tokens `worker` holds in its KV cache, as the last
    /// `select`'s `prefix-index.match-kv` found them; `None` when it did
    /// not ask, or the router follows no events of that worker.
    pub(super) fn cached_tokens(&self, worker: u32) -> Option<u32> {
        let cached = &self.request.kv_cached;
        cached.iter().find(|(w, _)| *w == worker).map(|&(_, n)| n)
    }

    /// Lend `req` and `candidates` to the next `select`.
    pub(super) fn lend(
        &mut self,
        req: &RouteRequest<'_>,
        candidates: &[super::Candidate],
    ) -> (Resource<RequestData>, Resource<CandidatesData>) {
        self.request.fill(req);
        self.candidates.fill(candidates);
        // One of each is lent at a time, for one call: the handles' numbers
        // are never looked up.
        (Resource::new_borrow(0), Resource::new_borrow(0))
    }
}

impl types::Host for Host {}
