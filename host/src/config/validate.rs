//! Validation: layered [`RouterArgs`] to a [`Config`], with the defaults the
//! help shows and errors that name the flag.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::{
    AdminKey, BreakerConfig, Config, ConfigError, HealthConfig, JwtConfig, PdConfig, QueueConfig,
    RetryConfig, RouterArgs, invalid,
};
use crate::policy::{Limits, Role, engine};
use crate::workers::WorkerSpec;

use super::args::WorkerEntry;

impl Config {
    /// Apply the defaults to layered settings and check them.
    pub(super) fn validate(s: RouterArgs) -> Result<Config, ConfigError> {
        super::sglang::check(&s)?;
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
        let policy = s
            .policy
            .clone()
            .unwrap_or_else(|| crate::policy::builtin::DEFAULT.into());
        let pd = if s.pd_disaggregation {
            if !workers.is_empty() {
                return Err(invalid(
                    "--worker-urls",
                    "PD mode takes its workers from --prefill and --decode, not --worker-urls or [[workers]]",
                ));
            }
            Some(pd_config(&s, &policy)?)
        } else {
            if !s.prefill.is_empty() || !s.decode.is_empty() {
                return Err(invalid("--prefill/--decode", "need --pd-disaggregation"));
            }
            None
        };
        let policy = match &pd {
            Some(_) => s.decode_policy.clone().unwrap_or(policy),
            None => policy,
        };

        let cache_threshold = s.cache_threshold.unwrap_or(0.3);
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
            s.balance_abs_threshold.unwrap_or(64).into(),
        );
        policy_config.insert(
            "balance_rel_threshold".into(),
            s.balance_rel_threshold.unwrap_or(1.5).into(),
        );
        policy_config.insert(
            "eviction_interval_secs".into(),
            s.eviction_interval_secs.unwrap_or(60).into(),
        );
        policy_config.insert(
            "max_tree_size".into(),
            s.max_tree_size.unwrap_or(1 << 26).into(),
        );
        let assignment_mode = s.assignment_mode.clone().unwrap_or_else(|| "random".into());
        if !["random", "min_load", "min_group"].contains(&assignment_mode.as_str()) {
            return Err(invalid(
                "--assignment-mode",
                format!("{assignment_mode:?} is not random, min_load or min_group"),
            ));
        }
        policy_config.insert("assignment_mode".into(), assignment_mode.into());
        let max_idle_secs = s.max_idle_secs.unwrap_or(14400);
        if max_idle_secs == 0 {
            return Err(invalid("--max-idle-secs", "must be above 0"));
        }
        policy_config.insert("max_idle_secs".into(), max_idle_secs.into());
        policy_config.insert(
            "bucket_adjust_interval_secs".into(),
            s.bucket_adjust_interval_secs.unwrap_or(5).into(),
        );
        // The `[policy]` table is the policy's own: it wins over the flags.
        policy_config.extend(s.policy_table.clone());

        let retry = RetryConfig {
            max_retries: if s.disable_retries {
                0
            } else {
                s.retry_max_retries.unwrap_or(5)
            },
            initial_backoff: Duration::from_millis(s.retry_initial_backoff_ms.unwrap_or(50)),
            max_backoff: Duration::from_millis(s.retry_max_backoff_ms.unwrap_or(30_000)),
            multiplier: s.retry_backoff_multiplier.unwrap_or(1.5),
            jitter: s.retry_jitter_factor.unwrap_or(0.2),
        };
        if retry.multiplier.is_nan() || retry.multiplier < 1.0 {
            return Err(invalid("--retry-backoff-multiplier", "must be 1 or more"));
        }
        if !(0.0..=1.0).contains(&retry.jitter) {
            return Err(invalid("--retry-jitter-factor", "must be between 0 and 1"));
        }

        let breaker = (!(s.disable_circuit_breaker)).then(|| BreakerConfig {
            failure_threshold: s.cb_failure_threshold.unwrap_or(10),
            success_threshold: s.cb_success_threshold.unwrap_or(3),
            open_for: Duration::from_secs(s.cb_timeout_duration_secs.unwrap_or(60)),
            window: Duration::from_secs(s.cb_window_duration_secs.unwrap_or(120)),
        });
        if let Some(b) = &breaker
            && (b.failure_threshold == 0 || b.success_threshold == 0)
        {
            return Err(invalid(
                "--cb-failure-threshold/--cb-success-threshold",
                "must be at least 1",
            ));
        }

        let health = (!(s.disable_health_check)).then(|| HealthConfig {
            failure_threshold: s.health_failure_threshold.unwrap_or(3),
            success_threshold: s.health_success_threshold.unwrap_or(2),
            timeout: Duration::from_secs(s.health_check_timeout_secs.unwrap_or(5)),
            interval: Duration::from_secs(s.health_check_interval_secs.unwrap_or(60)),
            endpoint: s
                .health_check_endpoint
                .clone()
                .unwrap_or_else(|| "/health".into()),
            startup_timeout: Duration::from_secs(s.worker_startup_timeout_secs.unwrap_or(1800)),
            startup_check_interval: Duration::from_secs(
                s.worker_startup_check_interval.unwrap_or(30).max(1),
            ),
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

        // sglang-router's default is -1, no limit; ours bounds memory
        // (README.md, flag table).
        let max_concurrent = s.max_concurrent_requests.unwrap_or(256);
        if max_concurrent < -1 {
            return Err(invalid(
                "--max-concurrent-requests",
                "must be a number of requests, or 0 or -1 for no limit",
            ));
        }
        let queue = (max_concurrent > 0).then(|| QueueConfig {
            max_concurrent: usize::try_from(max_concurrent).unwrap_or(usize::MAX),
            queue_size: s.queue_size.unwrap_or(100),
            timeout: Duration::from_secs(s.queue_timeout_secs.unwrap_or(60)),
            refill_per_sec: s
                .rate_limit_tokens_per_second
                .map(|r| u32::try_from(r).unwrap_or(u32::MAX)),
        });
        if s.rate_limit_tokens_per_second == Some(0) {
            return Err(invalid(
                "--rate-limit-tokens-per-second",
                "must be above 0 (leave it out for a strict --max-concurrent-requests)",
            ));
        }

        let duration_buckets = &s.prometheus_duration_buckets;
        if duration_buckets.iter().any(|b| !b.is_finite())
            || duration_buckets.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(invalid(
                "--prometheus-duration-buckets",
                "must be finite seconds in increasing order",
            ));
        }
        let cors_allowed_origins = s
            .cors_allowed_origins
            .iter()
            .map(|o| {
                axum::http::HeaderValue::from_str(o).map_err(|_| {
                    invalid(
                        "--cors-allowed-origins",
                        format!("{o:?} is not an origin (scheme://host[:port])"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max_payload_size = s.max_payload_size.unwrap_or(512 << 20);
        if max_payload_size == 0 {
            return Err(invalid("--max-payload-size", "must be above 0"));
        }
        let request_timeout = s.request_timeout_secs.unwrap_or(1800);
        if request_timeout == 0 {
            return Err(invalid("--request-timeout-secs", "must be above 0"));
        }
        let attempt_timeout = s.attempt_timeout_secs;
        if attempt_timeout.is_some_and(|secs| secs == 0 || secs > request_timeout) {
            return Err(invalid(
                "--attempt-timeout-secs",
                "must be above 0 and at most --request-timeout-secs",
            ));
        }
        let connect_timeout = s.connect_timeout_secs.unwrap_or(10);
        if connect_timeout == 0 {
            return Err(invalid("--connect-timeout-secs", "must be above 0"));
        }
        let stream_idle_timeout = s.stream_idle_timeout_secs.unwrap_or(300);
        if stream_idle_timeout == 0 {
            return Err(invalid("--stream-idle-timeout-secs", "must be above 0"));
        }
        let api_key = s.api_key.clone();
        if api_key.as_deref() == Some("") {
            return Err(invalid("--api-key", "must not be empty"));
        }
        if s.admin_api_keys.iter().any(String::is_empty) {
            return Err(invalid("--admin-api-key", "must not be empty"));
        }
        let mut admin_keys: Vec<AdminKey> = s
            .admin_api_keys
            .iter()
            .map(|key| AdminKey {
                id: "admin-api-key".into(),
                admin: true,
                key: key.clone(),
            })
            .collect();
        for entry in &s.control_plane_api_keys {
            admin_keys.push(control_plane_key(entry)?);
        }
        let jwt = jwt_config(&s)?;
        let tokenizer = tokenizer_file(&s)?;
        let call_deadline = s.policy_call_deadline_ms;
        if call_deadline == Some(0) {
            return Err(invalid("--policy-call-deadline-ms", "must be above 0"));
        }
        let memory_mb = s.policy_memory_limit_mb;
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
        let request_id_headers = if s.request_id_headers.is_empty() {
            [
                "x-request-id",
                "x-correlation-id",
                "x-trace-id",
                "request-id",
            ]
            .map(String::from)
            .to_vec()
        } else {
            s.request_id_headers
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

        let tls = match (s.tls_cert_path.clone(), s.tls_key_path.clone()) {
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
        let identity = match (s.client_cert_path.clone(), s.client_key_path.clone()) {
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
        let client_tls = crate::tls::ClientTls {
            ca_certs: s
                .ca_cert_paths
                .iter()
                .map(|p| readable("--ca-cert-paths", p.clone()))
                .collect::<Result<_, _>>()?,
            identity,
        };

        Ok(Config {
            listen: SocketAddr::new(
                s.host.unwrap_or(IpAddr::from([127, 0, 0, 1])),
                s.port.unwrap_or(30000),
            ),
            workers,
            pd,
            dp_aware: s.dp_aware,
            kv_events: s.kv_events,
            worker_load_check_interval: Some(s.worker_load_check_interval.unwrap_or(10))
                .filter(|&secs| secs > 0)
                .map(Duration::from_secs),
            policy,
            policy_config: Value::Object(policy_config).to_string(),
            policy_limits,
            policy_cache_dir: if s.no_policy_cache {
                None
            } else {
                crate::policy::PolicyEngine::default_cache_dir()
            },
            max_payload_size,
            cors_allowed_origins,
            duration_buckets: (!duration_buckets.is_empty()).then(|| duration_buckets.clone()),
            request_timeout: Duration::from_secs(request_timeout),
            attempt_timeout: attempt_timeout.map(Duration::from_secs),
            connect_timeout: Duration::from_secs(connect_timeout),
            stream_idle_timeout: Duration::from_secs(stream_idle_timeout),
            retry,
            breaker,
            health,
            queue,
            api_key,
            admin_keys,
            jwt,
            tokenizer,
            audit_admin: s.control_plane_audit_enabled,
            allow_remote_admin: s.allow_remote_admin,
            prometheus: SocketAddr::new(
                s.prometheus_host.unwrap_or(IpAddr::from([127, 0, 0, 1])),
                s.prometheus_port.unwrap_or(29000),
            ),
            request_id_headers,
            shutdown_grace: Duration::from_secs(s.shutdown_grace_period_secs.unwrap_or(180)),
            watch: !s.no_watch,
            // Set by `load`, which has the flags.
            reload_from: None,
            tls,
            client_tls,
        })
    }
}

/// A `--control-plane-api-keys` entry, `id:name:role:key` as sglang-router
/// takes them (the key may hold `:`; the role is `admin` or `user`).
fn control_plane_key(entry: &str) -> Result<AdminKey, ConfigError> {
    let bad = |why: &str| {
        invalid(
            "--control-plane-api-keys",
            format!("{why} in an entry: write id:name:role:key, role admin or user"),
        )
    };
    let mut parts = entry.splitn(4, ':');
    let (Some(id), Some(_name), Some(role), Some(key)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("four fields are needed"));
    };
    if id.is_empty() || key.is_empty() {
        return Err(bad("an empty id or key"));
    }
    let admin = match role {
        "admin" => true,
        "user" => false,
        _ => return Err(bad(&format!("role {role:?}"))),
    };
    Ok(AdminKey {
        id: id.into(),
        admin,
        key: key.into(),
    })
}

/// The tokenizer.json named by `--tokenizer-path`, or found in the
/// `--model-path` directory; a model id is refused, as nothing is
/// downloaded.
fn tokenizer_file(s: &RouterArgs) -> Result<Option<PathBuf>, ConfigError> {
    if let Some(path) = &s.tokenizer_path {
        return readable("--tokenizer-path", PathBuf::from(path)).map(Some);
    }
    let Some(model) = &s.model_path else {
        return Ok(None);
    };
    let dir = Path::new(model);
    if !dir.is_dir() {
        return Err(invalid(
            "--model-path",
            format!(
                "{model:?} is not a local directory: the router downloads nothing; give a directory holding tokenizer.json, or --tokenizer-path FILE"
            ),
        ));
    }
    readable("--model-path", dir.join("tokenizer.json")).map(Some)
}

/// `--jwt-issuer` and `--jwt-audience` (both or neither), with the JWKS URL
/// and role mapping that only make sense beside them.
fn jwt_config(s: &RouterArgs) -> Result<Option<JwtConfig>, ConfigError> {
    let (issuer, audience) = match (&s.jwt_issuer, &s.jwt_audience) {
        (Some(issuer), Some(audience)) if !issuer.is_empty() && !audience.is_empty() => {
            (issuer.clone(), audience.clone())
        }
        (None, None) => {
            if s.jwt_jwks_uri.is_some() || !s.jwt_role_mapping.is_empty() {
                return Err(invalid(
                    "--jwt-jwks-uri/--jwt-role-mapping",
                    "they need --jwt-issuer and --jwt-audience",
                ));
            }
            return Ok(None);
        }
        _ => {
            return Err(invalid(
                "--jwt-issuer/--jwt-audience",
                "give both, not empty: tokens are checked for their issuer and their audience",
            ));
        }
    };
    for (setting, url) in [
        ("--jwt-issuer", Some(&issuer)),
        ("--jwt-jwks-uri", s.jwt_jwks_uri.as_ref()),
    ] {
        if let Some(url) = url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(invalid(setting, format!("{url:?} is not an http(s) URL")));
        }
    }
    let role_mapping = s
        .jwt_role_mapping
        .iter()
        .map(|entry| match entry.split_once('=') {
            Some((from, "admin")) if !from.is_empty() => Ok((from.to_owned(), true)),
            Some((from, "user")) if !from.is_empty() => Ok((from.to_owned(), false)),
            _ => Err(invalid(
                "--jwt-role-mapping",
                format!("{entry:?}: write TOKEN_ROLE=admin or TOKEN_ROLE=user"),
            )),
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(JwtConfig {
        issuer,
        audience,
        jwks_uri: s.jwt_jwks_uri.clone(),
        role_mapping,
    }))
}

/// PD mode's workers and prefill policy, from flags (winning) or the file.
fn pd_config(s: &RouterArgs, policy: &str) -> Result<PdConfig, ConfigError> {
    let prefill = parse_prefill(&s.prefill)?;
    if prefill.is_empty() || s.decode.is_empty() {
        return Err(invalid(
            "--prefill/--decode",
            "PD mode needs at least one prefill and one decode worker",
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
        match crate::events::endpoint_from_config(&url, None, config) {
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
        labels: std::sync::Arc::new(entry.labels.clone()),
        kv_events_config: entry.kv_events_config.clone(),
        ..WorkerSpec::regular(&url)
    })
}
