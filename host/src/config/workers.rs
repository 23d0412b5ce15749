//! Settings of the workers: what one is registered as ([`WorkerSpec`]),
//! the health checks and circuit breakers that watch them, and the
//! validation of worker URLs, `[[workers]]` entries and PD mode's lists.

use std::sync::Arc;
use std::time::Duration;

use super::args::WorkerEntry;
use super::{ConfigError, RouterArgs, defaults as d, invalid, kv_events};

/// A worker's labels (`zone = "us-east-1a"`), as its entry gave them: keys
/// in order, each once.
pub type Labels = std::collections::BTreeMap<String, String>;

/// What a worker does in prefill/decode disaggregation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    /// Serves whole requests.
    #[default]
    Regular,
    /// Prefill half of a PD pair.
    Prefill,
    /// Decode half of a PD pair.
    Decode,
}

impl Role {
    /// Its name in `GET /workers` and in logs.
    pub fn label(self) -> &'static str {
        match self {
            Role::Regular => "regular",
            Role::Prefill => "prefill",
            Role::Decode => "decode",
        }
    }
}

/// What a worker is registered as: where it is and what part it plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    /// Base URL, validated, without a trailing slash.
    pub url: String,
    /// Regular, or one half of a prefill/decode pair.
    pub role: Role,
    /// Prefill workers: the port of their KV bootstrap server, sent to the
    /// decode worker as `bootstrap_port` (`None`: the worker's default).
    pub bootstrap_port: Option<u16>,
    /// `--dp-aware`: the data-parallel rank this entry stands for; requests
    /// routed to it carry `data_parallel_rank`.
    pub dp_rank: Option<u32>,
    /// Where it publishes its KV events, as its `--kv-events-config` (given
    /// with `POST /workers` or a `[[workers]]` entry); `None`: ask its
    /// `/get_server_info`.
    pub kv_events_config: Option<serde_json::Value>,
    /// Its share of traffic relative to the others, as given (1 unless
    /// given), for policies that weigh workers.
    pub weight: u32,
    /// Its labels, as given.
    pub labels: Arc<Labels>,
    /// Where it came from.
    pub source: Source,
}

/// Where a worker came from: `GET /workers` shows it, and a discovered
/// worker leaves with its pod only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Source {
    /// The router's flags or config file.
    #[default]
    Given,
    /// `POST /workers` (or `/add_worker`).
    Admin,
    /// Service discovery: the pod `namespace/name`.
    Pod(String),
}

impl Source {
    /// Its name in `GET /workers`.
    pub fn label(&self) -> &'static str {
        match self {
            Source::Given => "config",
            Source::Admin => "api",
            Source::Pod(_) => "kubernetes",
        }
    }
}

impl WorkerSpec {
    /// A regular worker, one entry for the whole server.
    pub fn regular(url: &str) -> Self {
        WorkerSpec {
            url: url.to_string(),
            role: Role::Regular,
            bootstrap_port: None,
            dp_rank: None,
            kv_events_config: None,
            weight: 1,
            labels: Arc::default(),
            source: Source::Given,
        }
    }

    /// The same worker at data-parallel rank `rank`.
    pub fn at_rank(&self, rank: u32) -> Self {
        WorkerSpec {
            dp_rank: Some(rank),
            ..self.clone()
        }
    }

    /// How logs and metrics name it: its URL, with `@RANK` for a
    /// data-parallel rank.
    pub fn name(&self) -> String {
        match self.dp_rank {
            Some(rank) => format!("{}@{rank}", self.url),
            None => self.url.clone(),
        }
    }
}

/// Health check settings; `None` when disabled (`--disable-health-check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Failed checks in a row to mark unhealthy.
    pub failure_threshold: u32,
    /// Passed checks in a row to mark healthy.
    pub success_threshold: u32,
    /// Per-check timeout.
    pub timeout: Duration,
    /// Time between rounds.
    pub interval: Duration,
    /// Path probed.
    pub endpoint: String,
    /// How long a new worker may take to pass its first check before it is
    /// removed (`--worker-startup-timeout-secs`).
    pub startup_timeout: Duration,
    /// How often a new worker that has not passed yet is checked
    /// (`--worker-startup-check-interval`).
    pub startup_check_interval: Duration,
}

/// Circuit breaker settings; `None` when disabled (`--disable-circuit-breaker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failures in a row that open the breaker.
    pub failure_threshold: u32,
    /// Half-open successes that close it.
    pub success_threshold: u32,
    /// How long it stays open before a trial.
    pub open_for: Duration,
    /// A row of failures longer than this starts again.
    pub window: Duration,
}

/// Prefill/decode disaggregation (`--pd-disaggregation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdConfig {
    /// The prefill workers, then the decode workers.
    pub workers: Vec<WorkerSpec>,
    /// The prefill workers' policy (the decode workers' is
    /// [`super::Config::policy`]).
    pub prefill_policy: String,
}

/// `--worker-urls`, then the file's `[[workers]]`, each once.
pub(super) fn regular_workers(s: &RouterArgs) -> Result<Vec<WorkerSpec>, ConfigError> {
    let mut workers = s
        .worker_urls
        .iter()
        .map(|u| Ok(WorkerSpec::regular(&validate_worker_url(u)?)))
        .collect::<Result<Vec<_>, ConfigError>>()?;
    for entry in &s.workers {
        let spec = validate_worker_entry(entry, s.kv_events)?;
        if workers.iter().any(|w| w.url == spec.url) {
            return Err(invalid(
                "workers",
                format!("{} is given twice; give each worker once", spec.url),
            ));
        }
        workers.push(spec);
    }
    Ok(workers)
}

/// The health checks, unless `--disable-health-check`.
pub(super) fn health(s: &RouterArgs) -> Result<Option<HealthConfig>, ConfigError> {
    if s.disable_health_check {
        return Ok(None);
    }
    let h = HealthConfig {
        failure_threshold: s
            .health_failure_threshold
            .unwrap_or(d::HEALTH_FAILURE_THRESHOLD),
        success_threshold: s
            .health_success_threshold
            .unwrap_or(d::HEALTH_SUCCESS_THRESHOLD),
        timeout: Duration::from_secs(
            s.health_check_timeout_secs
                .unwrap_or(d::HEALTH_CHECK_TIMEOUT_SECS),
        ),
        interval: Duration::from_secs(
            s.health_check_interval_secs
                .unwrap_or(d::HEALTH_CHECK_INTERVAL_SECS),
        ),
        endpoint: s
            .health_check_endpoint
            .clone()
            .unwrap_or_else(|| d::HEALTH_CHECK_ENDPOINT.into()),
        startup_timeout: Duration::from_secs(
            s.worker_startup_timeout_secs
                .unwrap_or(d::WORKER_STARTUP_TIMEOUT_SECS),
        ),
        startup_check_interval: Duration::from_secs(
            s.worker_startup_check_interval
                .unwrap_or(d::WORKER_STARTUP_CHECK_INTERVAL)
                .max(1),
        ),
    };
    if h.failure_threshold == 0 || h.success_threshold == 0 {
        return Err(invalid(
            "--health-failure-threshold/--health-success-threshold",
            "must be at least 1",
        ));
    }
    if h.interval.is_zero() || h.timeout.is_zero() {
        return Err(invalid(
            "--health-check-interval-secs/--health-check-timeout-secs",
            "must be at least 1",
        ));
    }
    if !h.endpoint.starts_with('/') {
        return Err(invalid("--health-check-endpoint", "must start with /"));
    }
    Ok(Some(h))
}

/// The circuit breakers, unless `--disable-circuit-breaker`.
pub(super) fn breaker(s: &RouterArgs) -> Result<Option<BreakerConfig>, ConfigError> {
    if s.disable_circuit_breaker {
        return Ok(None);
    }
    let b = BreakerConfig {
        failure_threshold: s.cb_failure_threshold.unwrap_or(d::CB_FAILURE_THRESHOLD),
        success_threshold: s.cb_success_threshold.unwrap_or(d::CB_SUCCESS_THRESHOLD),
        open_for: Duration::from_secs(
            s.cb_timeout_duration_secs
                .unwrap_or(d::CB_TIMEOUT_DURATION_SECS),
        ),
        window: Duration::from_secs(
            s.cb_window_duration_secs
                .unwrap_or(d::CB_WINDOW_DURATION_SECS),
        ),
    };
    if b.failure_threshold == 0 || b.success_threshold == 0 {
        return Err(invalid(
            "--cb-failure-threshold/--cb-success-threshold",
            "must be at least 1",
        ));
    }
    Ok(Some(b))
}

/// PD mode's workers and prefill policy, from flags (winning) or the file.
/// PD mode's settings; `discovered`: service discovery finds the workers,
/// so none need be given.
pub(super) fn pd_config(
    s: &RouterArgs,
    policy: &str,
    discovered: bool,
) -> Result<PdConfig, ConfigError> {
    let prefill = parse_prefill(&s.prefill)?;
    if !discovered && (prefill.is_empty() || s.decode.is_empty()) {
        return Err(invalid(
            "--prefill/--decode",
            "PD mode needs at least one prefill and one decode worker (or --service-discovery)",
        ));
    }
    let mut workers = Vec::with_capacity(prefill.len() + s.decode.len());
    for (url, bootstrap_port) in prefill {
        workers.push(WorkerSpec {
            role: Role::Prefill,
            bootstrap_port,
            ..WorkerSpec::regular(&validate_worker_url(&url)?)
        });
    }
    for url in &s.decode {
        workers.push(WorkerSpec {
            role: Role::Decode,
            ..WorkerSpec::regular(&validate_worker_url(url)?)
        });
    }
    Ok(PdConfig {
        workers,
        prefill_policy: s
            .prefill_policy
            .clone()
            .unwrap_or_else(|| policy.to_string()),
    })
}

/// The values of every `--prefill URL [BOOTSTRAP_PORT|none]`, in order (clap
/// gives them as one list): a URL starts a worker, a port or `none` after it
/// is its bootstrap port.
fn parse_prefill(values: &[String]) -> Result<Vec<(String, Option<u16>)>, ConfigError> {
    let mut workers: Vec<(String, Option<u16>)> = Vec::new();
    let mut port_given = false;
    for value in values {
        let is_url = value.contains("://");
        match workers.last_mut() {
            Some((_, port)) if !is_url && !port_given => {
                port_given = true;
                *port = match value.as_str() {
                    "none" => None,
                    text => match text.parse::<u16>() {
                        Ok(p) if p > 0 => Some(p),
                        _ => {
                            return Err(invalid(
                                "--prefill",
                                format!(
                                    "bootstrap port {text:?} is not a port number (1-65535) or none"
                                ),
                            ));
                        }
                    },
                };
            }
            _ if is_url => {
                workers.push((value.clone(), None));
                port_given = false;
            }
            _ => {
                return Err(invalid(
                    "--prefill",
                    format!(
                        "{value:?} is not a worker URL; expected --prefill URL [BOOTSTRAP_PORT|none]"
                    ),
                ));
            }
        }
    }
    Ok(workers)
}

/// Check a worker URL (http or https, a host, an optional non-zero port, no
/// query or credentials) and return it without a trailing slash.
pub fn validate_worker_url(url: &str) -> Result<String, ConfigError> {
    let bad = |why: &str| {
        invalid(
            "worker url",
            format!("{url:?} {why}; expected http://HOST:PORT"),
        )
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&format!("does not parse ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("is not http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if parsed.port() == Some(0) {
        return Err(bad("has port 0"));
    }
    if parsed.query().is_some()
        || parsed.fragment().is_some()
        || !parsed.username().is_empty()
        || parsed.password().is_some()
    {
        return Err(bad("has a query, fragment or credentials"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Most labels a worker may carry, and the longest key and value: labels
/// are for telling workers apart, not for storing data.
const MAX_LABELS: usize = 32;
const MAX_LABEL_KEY: usize = 63;
const MAX_LABEL_VALUE: usize = 256;

/// Heaviest worker weight: weights are shares, not counts.
const MAX_WEIGHT: u32 = 1000;

/// A `[[workers]]` entry (or a `POST /workers` body) as a regular worker:
/// URL, weight and labels checked; a `kv_events_config` only with
/// `--kv-events` (`kv_events`), and only one the router can follow.
pub fn validate_worker_entry(
    entry: &WorkerEntry,
    kv_events: bool,
) -> Result<WorkerSpec, ConfigError> {
    let url = validate_worker_url(&entry.url)?;
    let weight = entry.weight.unwrap_or(1);
    if !(1..=MAX_WEIGHT).contains(&weight) {
        return Err(invalid(
            "weight",
            format!("{weight} for {url}: a weight is 1 to {MAX_WEIGHT}"),
        ));
    }
    if entry.labels.len() > MAX_LABELS {
        return Err(invalid(
            "labels",
            format!(
                "{url} has {} labels; at most {MAX_LABELS}",
                entry.labels.len()
            ),
        ));
    }
    for (key, value) in &entry.labels {
        let key_ok = (1..=MAX_LABEL_KEY).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b));
        if !key_ok {
            return Err(invalid(
                "labels",
                format!(
                    "key {key:?} of {url}: 1 to {MAX_LABEL_KEY} letters, digits, '_', '.', '-' or '/'"
                ),
            ));
        }
        if value.len() > MAX_LABEL_VALUE {
            return Err(invalid(
                "labels",
                format!("{key} of {url} is longer than {MAX_LABEL_VALUE} bytes"),
            ));
        }
    }
    if let Some(config) = &entry.kv_events_config {
        if !kv_events {
            return Err(invalid(
                "kv_events_config",
                "this router follows no KV events; start it with --kv-events",
            ));
        }
        match kv_events::endpoint_from_config(&url, None, config) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(invalid(
                    "kv_events_config",
                    "the router follows a \"publisher\": \"zmq\" only",
                ));
            }
            Err(why) => return Err(invalid("kv_events_config", why)),
        }
    }
    Ok(WorkerSpec {
        weight,
        labels: Arc::new(entry.labels.clone()),
        kv_events_config: entry.kv_events_config.clone(),
        ..WorkerSpec::regular(&url)
    })
}
