//! Router settings in two stages: raw [`RouterArgs`], the one declaration
//! of every setting, read from the flags and from the `--config` TOML file,
//! layered (flags over the file, `layer`), then validated into a [`Config`]
//! with the defaults applied (`validate.rs`, one file per concern beside
//! it). Only `Config` goes further. Names and defaults follow the SGLang
//! router.
//!
//! A leaf: the settings' types live here and the modules they configure
//! (`workers`, `tls`, `admission`, `policy`, `events`) take them from here;
//! nothing here imports another module of the router.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

mod args;
pub mod defaults;
mod discovery;
mod kv_events;
mod lab;
mod policy;
mod requests;
mod security;
mod sglang;
#[cfg(test)]
mod tests;
mod validate;
mod workers;

pub use args::{RouterArgs, WorkerEntry};
pub use defaults::show_defaults;
pub use discovery::{BOOTSTRAP_PORT_ANNOTATION, Discovery, Selector};
pub use kv_events::{KvEndpoint, endpoint_from_config};
pub use lab::{DecisionLogConfig, LogTarget};
pub use policy::{
    DEFAULT_CALL_DEADLINE, DEFAULT_MAINTENANCE_DEADLINE, DEFAULT_MEMORY_LIMIT,
    DEFAULT_TICK_DEADLINE, Limits, PolicySlot, TokenizerCache, default_cache_dir,
};
pub use requests::{QueueConfig, RetryConfig};
pub use security::{AdminKey, ClientTls, JwtConfig, ServerTls};
use validate::readable;
pub use workers::{
    BreakerConfig, HealthConfig, Labels, PdConfig, Role, Source, WorkerSpec, validate_worker_entry,
    validate_worker_url,
};

/// A setting that cannot be used, named so the user can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these settings.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its position.
        message: String,
    },
    /// A setting of sglang-router's that this router does not offer, given
    /// a value other than its default.
    #[error("{setting} is not supported: {why}")]
    Unsupported {
        /// The flag.
        setting: &'static str,
        /// Why, or what to use instead.
        why: &'static str,
    },
    /// A setting with an unusable value.
    #[error("invalid {setting}: {reason}")]
    Invalid {
        /// The flag (or key) name.
        setting: &'static str,
        /// Why, and what is accepted.
        reason: String,
    },
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        reason: reason.into(),
    }
}

/// Validated settings of a router run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the router listens.
    pub listen: SocketAddr,
    /// Initial regular workers: `--worker-urls`, then the file's
    /// `[[workers]]`.
    pub workers: Vec<WorkerSpec>,
    /// PD mode, with its workers; `None` for the regular mode.
    pub pd: Option<PdConfig>,
    /// Workers found as Kubernetes pods (`--service-discovery`), beside
    /// the ones given.
    pub discovery: Option<Discovery>,
    /// Where to export OpenTelemetry traces (`--enable-trace`: the
    /// collector's `--otlp-traces-endpoint`); `None`: no tracing.
    pub otlp_traces: Option<String>,
    /// Expand workers per data-parallel rank.
    pub dp_aware: bool,
    /// Follow the workers' KV cache events (`--kv-events`).
    pub kv_events: bool,
    /// How often to read workers' `/get_load`; `None`: never.
    pub worker_load_check_interval: Option<Duration>,
    /// Policy name or path (of the decode workers in PD mode).
    pub policy: String,
    /// JSON object passed to the policy's `init`.
    pub policy_config: String,
    /// Limits of policy instances.
    pub policy_limits: Limits,
    /// Decision records (`--decision-log`); `None`: none written.
    pub decision_log: Option<DecisionLogConfig>,
    /// Shadow policies (`--shadow-policy`): names or paths.
    pub shadows: Vec<String>,
    /// Where compiled policies are cached.
    pub policy_cache_dir: Option<PathBuf>,
    /// The router's tokenizer.json (`--tokenizer-path`, `--model-path`).
    pub tokenizer: Option<PathBuf>,
    /// Its caches of routing tokenizations.
    pub tokenizer_cache: TokenizerCache,
    /// Largest request body.
    pub max_payload_size: usize,
    /// Origins allowed by CORS; empty: any (`--cors-allowed-origins`).
    pub cors_allowed_origins: Vec<axum::http::HeaderValue>,
    /// Bucket bounds of the request-duration and time-to-first-byte
    /// histograms; `None`: the built-in ones.
    pub duration_buckets: Option<Vec<f64>>,
    /// Workers with series of their own in `/metrics`, the first
    /// registered first (`--prometheus-worker-series`).
    pub worker_series: usize,
    /// Time allowed for a whole request, body upload and response stream
    /// included.
    pub request_timeout: Duration,
    /// Time allowed for one attempt's response headers before retrying
    /// elsewhere; `None`: the rest of `request_timeout`, without retry.
    pub attempt_timeout: Option<Duration>,
    /// Time allowed for a TCP connection to a worker.
    pub connect_timeout: Duration,
    /// Longest pause between two chunks of a body, either way.
    pub stream_idle_timeout: Duration,
    /// Retries.
    pub retry: RetryConfig,
    /// Circuit breakers.
    pub breaker: Option<BreakerConfig>,
    /// Health checks.
    pub health: Option<HealthConfig>,
    /// Concurrency limit and queue.
    pub queue: Option<QueueConfig>,
    /// Key clients must present on inference routes.
    pub api_key: Option<String>,
    /// Keys of the admin routes (`--admin-api-key`, and
    /// `--control-plane-api-keys` with their roles); empty: loopback
    /// clients only, unless `allow_remote_admin`.
    pub admin_keys: Vec<AdminKey>,
    /// OIDC bearer tokens accepted at the admin boundary.
    pub jwt: Option<JwtConfig>,
    /// One log line per admin request: who, what, outcome
    /// (`--control-plane-audit-enabled`).
    pub audit_admin: bool,
    /// Admin routes open to any client when no admin key is set.
    pub allow_remote_admin: bool,
    /// Prometheus endpoint.
    pub prometheus: SocketAddr,
    /// Request id headers, lowercase.
    pub request_id_headers: Vec<String>,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_grace: Duration,
    /// Whether to watch policy and config files.
    pub watch: bool,
    /// The flags, when a config file is in use: reloads re-read it.
    pub reload_from: Option<RouterArgs>,
    /// Serve HTTPS.
    pub tls: Option<ServerTls>,
    /// TLS towards workers.
    pub client_tls: ClientTls,
}

impl Config {
    /// Layer the flags over the `--config` file (when given), apply the
    /// defaults and validate.
    pub fn load(flags: &RouterArgs) -> Result<Config, ConfigError> {
        let settings = match &flags.config {
            None => flags.clone(),
            Some(path) => layer(read_file(path)?, flags),
        };
        let mut config = Config::validate(settings)?;
        config.reload_from = flags.config.is_some().then(|| flags.clone());
        Ok(config)
    }

    /// The policy (name or path) in `slot`.
    pub fn policy_of(&self, slot: PolicySlot) -> &str {
        match (slot, &self.pd) {
            (PolicySlot::Prefill, Some(pd)) => &pd.prefill_policy,
            _ => &self.policy,
        }
    }
}

/// The `--config` file's settings.
fn read_file(path: &std::path::Path) -> Result<RouterArgs, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// `flags` over `file`: a setting given as a flag (set, `true`, or a
/// non-empty list) replaces the file's; the others keep the file's value.
/// One rule for every setting, through their serde form.
fn layer(file: RouterArgs, flags: &RouterArgs) -> RouterArgs {
    let (Ok(Value::Object(mut merged)), Ok(Value::Object(given))) =
        (serde_json::to_value(&file), serde_json::to_value(flags))
    else {
        unreachable!("settings serialize to a JSON object")
    };
    for (key, value) in given {
        let is_given = match &value {
            Value::Null | Value::Bool(false) => false,
            Value::Array(values) => !values.is_empty(),
            Value::Object(table) => !table.is_empty(),
            _ => true,
        };
        if is_given {
            merged.insert(key, value);
        }
    }
    let mut layered: RouterArgs = serde_json::from_value(Value::Object(merged))
        .expect("settings read back from their own serde form");
    layered.config.clone_from(&flags.config);
    layered
}
