//! Router settings in two stages: [`RouterArgs`] (flags, raw) and
//! [`FileConfig`] (the TOML file, raw) merge into a validated [`Config`],
//! flags winning over the file and the file over the defaults. Only `Config`
//! goes further. Names and defaults follow the SGLang router.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::policy::{Limits, Role, engine};
use crate::workers::WorkerSpec;

mod args;
mod file;

pub use args::RouterArgs;
pub use file::FileConfig;
use file::PrefillEntry;

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

/// Retry settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Retries after the first attempt (0 when disabled).
    pub max_retries: u32,
    /// First back-off.
    pub initial_backoff: Duration,
    /// Longest back-off.
    pub max_backoff: Duration,
    /// Growth per retry.
    pub multiplier: f64,
    /// Random share of each back-off.
    pub jitter: f64,
}

/// Circuit breaker settings; `None` in [`Config`] when disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failures within `window` that open the breaker.
    pub failure_threshold: u32,
    /// Half-open successes that close it.
    pub success_threshold: u32,
    /// How long it stays open before a trial.
    pub open_for: Duration,
    /// Window over which failures count.
    pub window: Duration,
}

/// Health check settings; `None` in [`Config`] when disabled.
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
}

/// Admission control; `None` in [`Config`] for no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Requests forwarded at once.
    pub max_concurrent: usize,
    /// Requests that may wait.
    pub queue_size: usize,
    /// How long one may wait.
    pub timeout: Duration,
}

/// Prefill/decode disaggregation (`--pd-disaggregation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdConfig {
    /// The prefill workers, then the decode workers.
    pub workers: Vec<WorkerSpec>,
    /// The prefill workers' policy (the decode workers' is
    /// [`Config::policy`]).
    pub prefill_policy: String,
}

/// Which of a router's policies: the main one (of regular workers, or of
/// decode workers in PD mode) or PD mode's prefill policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySlot {
    /// Regular workers, or decode workers in PD mode.
    Main,
    /// Prefill workers in PD mode.
    Prefill,
}

/// Validated settings of a router run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the router listens.
    pub listen: SocketAddr,
    /// Initial workers (validated URLs, no trailing slash).
    pub worker_urls: Vec<String>,
    /// PD mode, with its workers; `None` for the regular mode.
    pub pd: Option<PdConfig>,
    /// Expand workers per data-parallel rank.
    pub dp_aware: bool,
    /// How often to read workers' `/get_load`; `None`: never.
    pub worker_load_check_interval: Option<Duration>,
    /// Policy name or path (of the decode workers in PD mode).
    pub policy: String,
    /// JSON object passed to the policy's `init`.
    pub policy_config: String,
    /// Limits of policy instances.
    pub policy_limits: Limits,
    /// Where compiled policies are cached.
    pub policy_cache_dir: Option<PathBuf>,
    /// Largest request body.
    pub max_payload_size: usize,
    /// Time allowed for a worker's response headers.
    pub request_timeout: Duration,
    /// Time allowed for one attempt's response headers before retrying
    /// elsewhere; `None`: the whole `request_timeout`, without retry.
    pub attempt_timeout: Option<Duration>,
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
    /// Keys accepted on admin routes; empty: loopback clients only, unless
    /// `allow_remote_admin`.
    pub admin_api_keys: Vec<String>,
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
    pub tls: Option<crate::tls::ServerTls>,
    /// TLS towards workers.
    pub client_tls: crate::tls::ClientTls,
}

impl Config {
    /// Merge flags over the `--config` file over defaults, and validate.
    pub fn load(args: &RouterArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
        };
        Self::merge(args, file)
    }

    fn merge(a: &RouterArgs, f: FileConfig) -> Result<Config, ConfigError> {
        let pick_vec = |flag: &Vec<String>, file: Vec<String>| {
            if flag.is_empty() { file } else { flag.clone() }
        };
        let worker_urls = pick_vec(&a.worker_urls, f.worker_urls)
            .iter()
            .map(|u| validate_worker_url(u))
            .collect::<Result<Vec<_>, _>>()?;
        let policy = a
            .policy
            .clone()
            .or(f.policy_name)
            .unwrap_or_else(|| crate::policy::builtin::DEFAULT.into());
        let pd = if a.pd_disaggregation || f.pd_disaggregation {
            if !worker_urls.is_empty() {
                return Err(invalid(
                    "--worker-urls",
                    "PD mode takes its workers from --prefill and --decode",
                ));
            }
            Some(pd_config(
                a,
                f.prefill,
                pick_vec(&a.decode, f.decode),
                a.prefill_policy.clone().or(f.prefill_policy),
                &policy,
            )?)
        } else {
            let pd_workers_given = !a.prefill.is_empty()
                || !a.decode.is_empty()
                || !f.prefill.is_empty()
                || !f.decode.is_empty();
            if pd_workers_given {
                return Err(invalid("--prefill/--decode", "need --pd-disaggregation"));
            }
            None
        };
        let policy = match &pd {
            Some(_) => a
                .decode_policy
                .clone()
                .or(f.decode_policy)
                .unwrap_or(policy),
            None => policy,
        };

        let cache_threshold = a.cache_threshold.or(f.cache_threshold).unwrap_or(0.3);
        if !(0.0..=1.0).contains(&cache_threshold) {
            return Err(invalid(
                "--cache-threshold",
                format!("{cache_threshold} is not between 0 and 1"),
            ));
        }
        let mut policy_config = Map::new();
        policy_config.insert("cache_threshold".into(), cache_threshold.into());
        policy_config.insert(
            "balance_abs_threshold".into(),
            a.balance_abs_threshold
                .or(f.balance_abs_threshold)
                .unwrap_or(64)
                .into(),
        );
        policy_config.insert(
            "balance_rel_threshold".into(),
            a.balance_rel_threshold
                .or(f.balance_rel_threshold)
                .unwrap_or(1.5)
                .into(),
        );
        policy_config.insert(
            "eviction_interval_secs".into(),
            a.eviction_interval_secs
                .or(f.eviction_interval_secs)
                .unwrap_or(120)
                .into(),
        );
        policy_config.insert(
            "max_tree_size".into(),
            a.max_tree_size
                .or(f.max_tree_size)
                .unwrap_or(1 << 26)
                .into(),
        );
        let assignment_mode = a
            .assignment_mode
            .clone()
            .or(f.assignment_mode)
            .unwrap_or_else(|| "random".into());
        if !["random", "min_load", "min_group"].contains(&assignment_mode.as_str()) {
            return Err(invalid(
                "--assignment-mode",
                format!("{assignment_mode:?} is not random, min_load or min_group"),
            ));
        }
        policy_config.insert("assignment_mode".into(), assignment_mode.into());
        let max_idle_secs = a.max_idle_secs.or(f.max_idle_secs).unwrap_or(3600);
        if max_idle_secs == 0 {
            return Err(invalid("--max-idle-secs", "must be above 0"));
        }
        policy_config.insert("max_idle_secs".into(), max_idle_secs.into());
        // The `[policy]` table is the policy's own: it wins over the flags.
        policy_config.extend(f.policy);

        let retry = RetryConfig {
            max_retries: if a.disable_retries || f.disable_retries {
                0
            } else {
                a.retry_max_retries.or(f.retry_max_retries).unwrap_or(5)
            },
            initial_backoff: Duration::from_millis(
                a.retry_initial_backoff_ms
                    .or(f.retry_initial_backoff_ms)
                    .unwrap_or(50),
            ),
            max_backoff: Duration::from_millis(
                a.retry_max_backoff_ms
                    .or(f.retry_max_backoff_ms)
                    .unwrap_or(30_000),
            ),
            multiplier: a
                .retry_backoff_multiplier
                .or(f.retry_backoff_multiplier)
                .unwrap_or(1.5),
            jitter: a
                .retry_jitter_factor
                .or(f.retry_jitter_factor)
                .unwrap_or(0.2),
        };
        if retry.multiplier.is_nan() || retry.multiplier < 1.0 {
            return Err(invalid("--retry-backoff-multiplier", "must be 1 or more"));
        }
        if !(0.0..=1.0).contains(&retry.jitter) {
            return Err(invalid("--retry-jitter-factor", "must be between 0 and 1"));
        }

        let breaker =
            (!(a.disable_circuit_breaker || f.disable_circuit_breaker)).then(|| BreakerConfig {
                failure_threshold: a
                    .cb_failure_threshold
                    .or(f.cb_failure_threshold)
                    .unwrap_or(10),
                success_threshold: a
                    .cb_success_threshold
                    .or(f.cb_success_threshold)
                    .unwrap_or(3),
                open_for: Duration::from_secs(
                    a.cb_timeout_duration_secs
                        .or(f.cb_timeout_duration_secs)
                        .unwrap_or(60),
                ),
                window: Duration::from_secs(
                    a.cb_window_duration_secs
                        .or(f.cb_window_duration_secs)
                        .unwrap_or(120),
                ),
            });
        if let Some(b) = &breaker
            && (b.failure_threshold == 0 || b.success_threshold == 0)
        {
            return Err(invalid(
                "--cb-failure-threshold/--cb-success-threshold",
                "must be at least 1",
            ));
        }

        let health = (!(a.disable_health_check || f.disable_health_check)).then(|| HealthConfig {
            failure_threshold: a
                .health_failure_threshold
                .or(f.health_failure_threshold)
                .unwrap_or(3),
            success_threshold: a
                .health_success_threshold
                .or(f.health_success_threshold)
                .unwrap_or(2),
            timeout: Duration::from_secs(
                a.health_check_timeout_secs
                    .or(f.health_check_timeout_secs)
                    .unwrap_or(5),
            ),
            interval: Duration::from_secs(
                a.health_check_interval_secs
                    .or(f.health_check_interval_secs)
                    .unwrap_or(60),
            ),
            endpoint: a
                .health_check_endpoint
                .clone()
                .or(f.health_check_endpoint)
                .unwrap_or_else(|| "/health".into()),
        });
        if let Some(h) = &health {
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
        }

        let max_concurrent = a
            .max_concurrent_requests
            .or(f.max_concurrent_requests)
            .unwrap_or(256);
        let queue = (max_concurrent > 0).then(|| QueueConfig {
            max_concurrent,
            queue_size: a.queue_size.or(f.queue_size).unwrap_or(100),
            timeout: Duration::from_secs(
                a.queue_timeout_secs.or(f.queue_timeout_secs).unwrap_or(60),
            ),
        });

        let max_payload_size = a
            .max_payload_size
            .or(f.max_payload_size)
            .unwrap_or(512 << 20);
        if max_payload_size == 0 {
            return Err(invalid("--max-payload-size", "must be above 0"));
        }
        let request_timeout = a
            .request_timeout_secs
            .or(f.request_timeout_secs)
            .unwrap_or(1800);
        if request_timeout == 0 {
            return Err(invalid("--request-timeout-secs", "must be above 0"));
        }
        let attempt_timeout = a.attempt_timeout_secs.or(f.attempt_timeout_secs);
        if attempt_timeout.is_some_and(|secs| secs == 0 || secs > request_timeout) {
            return Err(invalid(
                "--attempt-timeout-secs",
                "must be above 0 and at most --request-timeout-secs",
            ));
        }
        let api_key = a.api_key.clone().or(f.api_key);
        if api_key.as_deref() == Some("") {
            return Err(invalid("--api-key", "must not be empty"));
        }
        let admin_api_keys = if a.admin_api_keys.is_empty() {
            f.admin_api_keys
        } else {
            a.admin_api_keys.clone()
        };
        if admin_api_keys.iter().any(String::is_empty) {
            return Err(invalid("--admin-api-key", "must not be empty"));
        }
        let call_deadline = a.policy_call_deadline_ms.or(f.policy_call_deadline_ms);
        if call_deadline == Some(0) {
            return Err(invalid("--policy-call-deadline-ms", "must be above 0"));
        }
        let memory_mb = a.policy_memory_limit_mb.or(f.policy_memory_limit_mb);
        if memory_mb.is_some_and(|mb| mb == 0 || mb > 4096) {
            return Err(invalid(
                "--policy-memory-limit-mb",
                "must be between 1 and 4096",
            ));
        }
        let policy_limits = Limits {
            call_deadline: call_deadline
                .map_or(engine::DEFAULT_CALL_DEADLINE, Duration::from_millis),
            memory: memory_mb.map_or(engine::DEFAULT_MEMORY_LIMIT, |mb| mb << 20),
            ..Limits::default()
        };
        let request_id_headers = pick_vec(&a.request_id_headers, f.request_id_headers);
        let request_id_headers = if request_id_headers.is_empty() {
            [
                "x-request-id",
                "x-correlation-id",
                "x-trace-id",
                "request-id",
            ]
            .map(String::from)
            .to_vec()
        } else {
            request_id_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect()
        };
        for h in &request_id_headers {
            if axum::http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(invalid(
                    "--request-id-headers",
                    format!("{h:?} is not a header name"),
                ));
            }
        }

        let tls = match (
            a.tls_cert_path.clone().or(f.tls_cert_path),
            a.tls_key_path.clone().or(f.tls_key_path),
        ) {
            (Some(cert), Some(key)) => Some(crate::tls::ServerTls {
                cert: readable("--tls-cert-path", cert)?,
                key: readable("--tls-key-path", key)?,
            }),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "--tls-cert-path/--tls-key-path",
                    "give both or neither",
                ));
            }
        };
        let identity = match (
            a.client_cert_path.clone().or(f.client_cert_path),
            a.client_key_path.clone().or(f.client_key_path),
        ) {
            (Some(cert), Some(key)) => Some((
                readable("--client-cert-path", cert)?,
                readable("--client-key-path", key)?,
            )),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "--client-cert-path/--client-key-path",
                    "give both or neither",
                ));
            }
        };
        let ca_certs = if a.ca_cert_paths.is_empty() {
            f.ca_cert_paths
        } else {
            a.ca_cert_paths.clone()
        };
        let client_tls = crate::tls::ClientTls {
            ca_certs: ca_certs
                .into_iter()
                .map(|p| readable("--ca-cert-paths", p))
                .collect::<Result<_, _>>()?,
            identity,
        };

        Ok(Config {
            listen: SocketAddr::new(
                a.host.or(f.host).unwrap_or(IpAddr::from([127, 0, 0, 1])),
                a.port.or(f.port).unwrap_or(30000),
            ),
            worker_urls,
            pd,
            dp_aware: a.dp_aware || f.dp_aware,
            worker_load_check_interval: Some(
                a.worker_load_check_interval
                    .or(f.worker_load_check_interval)
                    .unwrap_or(10),
            )
            .filter(|&secs| secs > 0)
            .map(Duration::from_secs),
            policy,
            policy_config: Value::Object(policy_config).to_string(),
            policy_limits,
            policy_cache_dir: if a.no_policy_cache {
                None
            } else {
                crate::policy::PolicyEngine::default_cache_dir()
            },
            max_payload_size,
            request_timeout: Duration::from_secs(request_timeout),
            attempt_timeout: attempt_timeout.map(Duration::from_secs),
            retry,
            breaker,
            health,
            queue,
            api_key,
            admin_api_keys,
            allow_remote_admin: a.allow_remote_admin || f.allow_remote_admin,
            prometheus: SocketAddr::new(
                a.prometheus_host
                    .or(f.prometheus_host)
                    .unwrap_or(IpAddr::from([127, 0, 0, 1])),
                a.prometheus_port.or(f.prometheus_port).unwrap_or(29000),
            ),
            request_id_headers,
            shutdown_grace: Duration::from_secs(
                a.shutdown_grace_period_secs
                    .or(f.shutdown_grace_period_secs)
                    .unwrap_or(180),
            ),
            watch: !a.no_watch,
            reload_from: a.config.is_some().then(|| a.clone()),
            tls,
            client_tls,
        })
    }
}

/// PD mode's workers and prefill policy, from flags (winning) or the file.
fn pd_config(
    a: &RouterArgs,
    file_prefill: Vec<PrefillEntry>,
    decode: Vec<String>,
    prefill_policy: Option<String>,
    policy: &str,
) -> Result<PdConfig, ConfigError> {
    let prefill = if a.prefill.is_empty() {
        file_prefill
            .into_iter()
            .map(|e| (e.url, e.bootstrap_port))
            .collect()
    } else {
        parse_prefill(&a.prefill)?
    };
    if prefill.is_empty() || decode.is_empty() {
        return Err(invalid(
            "--prefill/--decode",
            "PD mode needs at least one prefill and one decode worker",
        ));
    }
    let mut workers = Vec::with_capacity(prefill.len() + decode.len());
    for (url, bootstrap_port) in prefill {
        workers.push(WorkerSpec {
            role: Role::Prefill,
            bootstrap_port,
            ..WorkerSpec::regular(&validate_worker_url(&url)?)
        });
    }
    for url in decode {
        workers.push(WorkerSpec {
            role: Role::Decode,
            ..WorkerSpec::regular(&validate_worker_url(&url)?)
        });
    }
    Ok(PdConfig {
        workers,
        prefill_policy: prefill_policy.unwrap_or_else(|| policy.to_string()),
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

impl Config {
    /// The policy (name or path) in `slot`.
    pub fn policy_of(&self, slot: PolicySlot) -> &str {
        match (slot, &self.pd) {
            (PolicySlot::Prefill, Some(pd)) => &pd.prefill_policy,
            _ => &self.policy,
        }
    }

    /// The files a running router watches for the policy in `slot`: its file
    /// (if the policy is a path) and the config file.
    pub fn watched_files(&self, slot: PolicySlot) -> Vec<PathBuf> {
        let mut files = Vec::new();
        if let Ok(crate::policy::PolicySource::File(path)) =
            crate::policy::PolicySource::parse(self.policy_of(slot))
        {
            files.push(path);
        }
        if let Some(path) = self.reload_from.as_ref().and_then(|a| a.config.clone()) {
            files.push(path);
        }
        files
    }

    /// Where reloads find the policy in `slot`: the config file again when
    /// there is one (so a changed `[policy]` table re-inits the policy),
    /// else the settings of this run.
    pub fn wanted_policy(&self, slot: PolicySlot) -> crate::policy::reload::WantedSource {
        use crate::policy::reload::Wanted;
        let fixed = Wanted {
            policy: self.policy_of(slot).to_string(),
            config: self.policy_config.clone(),
        };
        match self.reload_from.clone() {
            None => Box::new(move || Ok(fixed.clone())),
            Some(args) => Box::new(move || {
                let config = Config::load(&args).map_err(|e| e.to_string())?;
                Ok(Wanted {
                    policy: config.policy_of(slot).to_string(),
                    config: config.policy_config,
                })
            }),
        }
    }
}

/// A file setting must name a readable file.
fn readable(setting: &'static str, path: PathBuf) -> Result<PathBuf, ConfigError> {
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => Ok(path),
        Ok(_) => Err(invalid(
            setting,
            format!("{} is not a file", path.display()),
        )),
        Err(e) => Err(invalid(setting, format!("{}: {e}", path.display()))),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let file: FileConfig = toml::from_str(
            "port = 1234\nhost = \"0.0.0.0\"\ncache_threshold = 0.5\nworker_urls = [\"http://127.0.0.1:1\"]\n[policy]\nmax_tree_size = 99\n",
        )
        .unwrap();
        let args = RouterArgs {
            port: Some(4321),
            ..RouterArgs::default()
        };
        let c = Config::merge(&args, file).unwrap();
        assert_eq!(c.listen, "0.0.0.0:4321".parse().unwrap());
        assert_eq!(c.worker_urls, vec!["http://127.0.0.1:1"]);
        let policy: Value = serde_json::from_str(&c.policy_config).unwrap();
        assert_eq!(policy["cache_threshold"], 0.5);
        assert_eq!(policy["max_tree_size"], 99);
        assert_eq!(c.retry.max_retries, 5);
    }

    #[test]
    fn errors_name_the_setting() {
        let args = RouterArgs {
            cache_threshold: Some(3.0),
            ..RouterArgs::default()
        };
        let err = Config::merge(&args, FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--cache-threshold"), "{err}");
        let args = RouterArgs {
            assignment_mode: Some("fastest".into()),
            ..RouterArgs::default()
        };
        let err = Config::merge(&args, FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--assignment-mode"), "{err}");
        let err = toml::from_str::<FileConfig>("prot = 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("prot"), "{err}");
    }

    fn parse_flags(argv: &[&str]) -> Result<Config, ConfigError> {
        use clap::Parser;
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            args: RouterArgs,
        }
        let flags = Flags::try_parse_from([&["router"], argv].concat()).unwrap();
        Config::merge(&flags.args, FileConfig::default())
    }

    #[test]
    fn pd_flags_give_prefill_and_decode_workers_and_their_policies() {
        let c = parse_flags(&[
            "--pd-disaggregation",
            "--prefill",
            "http://127.0.0.1:1",
            "8998",
            "--prefill",
            "http://127.0.0.1:2",
            "--prefill",
            "http://127.0.0.1:3",
            "none",
            "--decode",
            "http://127.0.0.1:4",
            "--decode",
            "http://127.0.0.1:5/",
            "--policy",
            "random",
            "--decode-policy",
            "round_robin",
        ])
        .unwrap();
        let pd = c.pd.as_ref().unwrap();
        let workers: Vec<_> = pd
            .workers
            .iter()
            .map(|w| (w.url.as_str(), w.role, w.bootstrap_port))
            .collect();
        assert_eq!(
            workers,
            vec![
                ("http://127.0.0.1:1", Role::Prefill, Some(8998)),
                ("http://127.0.0.1:2", Role::Prefill, None),
                ("http://127.0.0.1:3", Role::Prefill, None),
                ("http://127.0.0.1:4", Role::Decode, None),
                ("http://127.0.0.1:5", Role::Decode, None),
            ]
        );
        assert_eq!(c.policy_of(PolicySlot::Prefill), "random");
        assert_eq!(c.policy_of(PolicySlot::Main), "round_robin");
    }

    #[test]
    fn pd_workers_can_come_from_the_file() {
        let file: FileConfig = toml::from_str(
            "pd_disaggregation = true\nprefill_policy = \"random\"\ndecode = [\"http://127.0.0.1:2\"]\n\
             prefill = [{ url = \"http://127.0.0.1:1\", bootstrap_port = 8998 }, { url = \"http://127.0.0.1:3\" }]\n",
        )
        .unwrap();
        let c = Config::merge(&RouterArgs::default(), file).unwrap();
        let ports: Vec<_> =
            c.pd.unwrap()
                .workers
                .iter()
                .map(|w| (w.role, w.bootstrap_port))
                .collect();
        assert_eq!(
            ports,
            vec![
                (Role::Prefill, Some(8998)),
                (Role::Prefill, None),
                (Role::Decode, None)
            ]
        );
    }

    #[test]
    fn pd_mistakes_name_the_flag() {
        for (argv, flag) in [
            (
                &["--pd-disaggregation", "--decode", "http://h:1"][..],
                "--prefill/--decode",
            ),
            (
                &["--prefill", "http://h:1", "--decode", "http://h:2"][..],
                "--pd-disaggregation",
            ),
            (
                &[
                    "--pd-disaggregation",
                    "--prefill",
                    "http://h:1",
                    "99999",
                    "--decode",
                    "http://h:2",
                ][..],
                "--prefill",
            ),
            (
                &[
                    "--pd-disaggregation",
                    "--prefill",
                    "h:1",
                    "--decode",
                    "http://h:2",
                ][..],
                "--prefill",
            ),
            (
                &[
                    "--pd-disaggregation",
                    "--worker-urls",
                    "http://h:3",
                    "--prefill",
                    "http://h:1",
                    "--decode",
                    "http://h:2",
                ][..],
                "--worker-urls",
            ),
        ] {
            let err = parse_flags(argv).unwrap_err().to_string();
            assert!(err.contains(flag), "{argv:?}: {err}");
        }
    }

    #[test]
    fn worker_urls_are_validated() {
        assert_eq!(
            validate_worker_url("http://127.0.0.1:8000/").unwrap(),
            "http://127.0.0.1:8000"
        );
        for bad in [
            "127.0.0.1:8000",
            "ftp://h:1",
            "http://",
            "http://h:1/?a=b",
            "http://h:0",
            "http://h:65536",
            "http://:secret@h:1",
            "http://user@h:1",
            "not a url",
        ] {
            assert!(validate_worker_url(bad).is_err(), "{bad}");
        }
    }
}
