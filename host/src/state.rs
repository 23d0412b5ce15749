//! What the HTTP handlers share: [`AppState`]. Its own module so that the routes
//! ([`crate::server`], [`crate::admin`]) and forwarding share it without
//! importing each other.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::admission::Admission;
use crate::client::client_with_tls;
use crate::config::Config;
use crate::jwt::Verifier;
use crate::policy::Seam;
use crate::policy::imports::KvView;
use crate::policy::reload::PolicyManager;
use crate::tokenizer::Tokenizer;
use crate::upstream::Upstream;
use crate::workers::Registry;

/// Everything handlers share.
pub struct AppState {
    /// Validated settings.
    pub config: Config,
    /// The workers.
    pub registry: Arc<Registry>,
    /// The active policy, swapped whole on reload.
    pub policy: Seam,
    /// Client for the router's own calls to workers (health, models,
    /// flushes).
    pub client: reqwest::Client,
    /// Client that forwards clients' requests to workers.
    pub upstream: Upstream,
    /// Loads and reloads the policy behind `policy`.
    pub policies: Arc<PolicyManager>,
    /// PD mode: loads and reloads the prefill workers' policy (`policy` is
    /// the decode workers').
    pub prefill_policies: Option<Arc<PolicyManager>>,
    /// Verifies OIDC bearer tokens at the admin boundary (`--jwt-*`).
    pub jwt: Option<Arc<Verifier>>,
    /// The router's tokenizer (`--tokenizer-path`, `--model-path`).
    pub tokenizer: Option<Arc<Tokenizer>>,
    /// The workers' KV event subscriptions and the precise index they feed
    /// (`--kv-events`).
    pub kv_events: Option<Arc<crate::events::Subscriptions>>,
    /// Where decision records go (`--decision-log`).
    pub decisions: Option<crate::lab::DecisionLog>,
    /// The shadow policies (`--shadow-policy`).
    pub shadows: Option<Arc<crate::lab::Shadows>>,
    pub(crate) admission: Option<Admission>,
    /// The tracer, with `--enable-trace`.
    pub(crate) traces: Option<crate::traces::Traces>,
    /// Tokenizations running at once ([`crate::server`]'s requests for the
    /// precise index): one per core, so a burst of long prompts queues
    /// here instead of growing the blocking pool to hundreds of threads.
    pub(crate) tokenize_slots: Arc<tokio::sync::Semaphore>,
    pub(crate) seq: AtomicU64,
}

impl AppState {
    /// State over a registry and the policy managers that feed the seam;
    /// `kv` is what those policies read of the workers' KV caches, which
    /// the router then follows into `kv.index`; `shadows` are asked after
    /// the live policy.
    pub fn new(
        config: Config,
        registry: Arc<Registry>,
        policies: Arc<PolicyManager>,
        prefill_policies: Option<Arc<PolicyManager>>,
        kv: KvView,
        shadows: Option<crate::lab::Shadows>,
    ) -> anyhow::Result<Self> {
        let client = client_with_tls(&config.client_tls)?;
        let traces = match &config.otlp_traces {
            Some(endpoint) => Some(crate::traces::Traces::start(endpoint)?),
            None => None,
        };
        Ok(AppState {
            decisions: config
                .decision_log
                .as_ref()
                .map(crate::lab::DecisionLog::start)
                .transpose()?,
            shadows: shadows.map(Arc::new),
            admission: config.queue.map(Admission::new),
            traces,
            jwt: config
                .jwt
                .clone()
                .map(|jwt| Arc::new(Verifier::new(jwt, client.clone()))),
            tokenizer: kv.tokenizer,
            kv_events: kv
                .index
                .map(|index| Arc::new(crate::events::Subscriptions::new(index))),
            client,
            upstream: Upstream::new(&config.client_tls, config.connect_timeout)?,
            config,
            registry,
            policy: policies.active(),
            policies,
            prefill_policies,
            tokenize_slots: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            )),
            seq: AtomicU64::new(0),
        })
    }
}

impl AppState {
    /// Requests waiting in the admission queue.
    pub fn queued(&self) -> usize {
        self.admission.as_ref().map_or(0, Admission::waiting)
    }

    /// Admission slots free now (tokens in the bucket); `None` without a
    /// limit.
    pub fn free_slots(&self) -> Option<usize> {
        self.admission.as_ref().map(Admission::free)
    }

    /// Every policy manager with what it routes: one, or prefill and decode
    /// in PD mode.
    pub fn managers(&self) -> Vec<(&'static str, &Arc<PolicyManager>)> {
        match &self.prefill_policies {
            None => vec![("regular", &self.policies)],
            Some(prefill) => vec![("prefill", prefill), ("decode", &self.policies)],
        }
    }
}
