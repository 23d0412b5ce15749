//! Validation: layered [`RouterArgs`] to a [`Config`], each concern checked
//! by its own file (`workers`, `policy`, `requests`, `security`), with the
//! defaults of [`super::defaults`] and errors that name the flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{
    Config, ConfigError, RouterArgs, defaults as d, discovery, invalid, lab, policy, requests,
    security, workers,
};

impl Config {
    /// Apply the defaults to layered settings and check them.
    pub(super) fn validate(s: RouterArgs) -> Result<Config, ConfigError> {
        super::sglang::check(&s)?;
        let workers = workers::regular_workers(&s)?;
        let discovery = discovery::discovery(&s)?;
        let policy = s.policy.clone().unwrap_or_else(|| d::POLICY.into());
        let pd = if s.pd_disaggregation {
            if !workers.is_empty() {
                return Err(invalid(
                    "--worker-urls",
                    "PD mode takes its workers from --prefill and --decode, not --worker-urls or [[workers]]",
                ));
            }
            Some(workers::pd_config(&s, &policy, discovery.is_some())?)
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
        let timeouts = requests::timeouts(&s)?;
        Ok(Config {
            listen: SocketAddr::new(s.host.unwrap_or(d::HOST), s.port.unwrap_or(d::PORT)),
            workers,
            pd,
            discovery,
            otlp_traces: requests::otlp_traces(&s)?,
            dp_aware: s.dp_aware,
            kv_events: s.kv_events,
            worker_load_check_interval: Some(
                s.worker_load_check_interval
                    .unwrap_or(d::WORKER_LOAD_CHECK_INTERVAL),
            )
            .filter(|&secs| secs > 0)
            .map(Duration::from_secs),
            policy,
            policy_config: policy::init_config(&s)?,
            policy_limits: policy::limits(&s)?,
            decision_log: lab::decision_log(&s)?,
            shadows: lab::shadows(&s)?,
            policy_cache_dir: if s.no_policy_cache {
                None
            } else {
                policy::default_cache_dir()
            },
            tokenizer: policy::tokenizer_file(&s)?,
            tokenizer_cache: policy::tokenizer_cache(&s),
            max_payload_size: requests::max_payload_size(&s)?,
            cors_allowed_origins: requests::cors_allowed_origins(&s)?,
            duration_buckets: requests::duration_buckets(&s)?,
            worker_series: s
                .prometheus_worker_series
                .unwrap_or(d::PROMETHEUS_WORKER_SERIES),
            request_timeout: timeouts.request,
            attempt_timeout: timeouts.attempt,
            connect_timeout: timeouts.connect,
            stream_idle_timeout: timeouts.stream_idle,
            retry: requests::retry(&s)?,
            breaker: workers::breaker(&s)?,
            health: workers::health(&s)?,
            queue: requests::queue(&s)?,
            api_key: security::api_key(&s)?,
            admin_keys: security::admin_keys(&s)?,
            jwt: security::jwt_config(&s)?,
            audit_admin: s.control_plane_audit_enabled,
            allow_remote_admin: s.allow_remote_admin,
            prometheus: SocketAddr::new(
                s.prometheus_host.unwrap_or(d::PROMETHEUS_HOST),
                s.prometheus_port.unwrap_or(d::PROMETHEUS_PORT),
            ),
            request_id_headers: requests::request_id_headers(&s)?,
            shutdown_grace: Duration::from_secs(
                s.shutdown_grace_period_secs
                    .unwrap_or(d::SHUTDOWN_GRACE_PERIOD_SECS),
            ),
            watch: !s.no_watch,
            // Set by `load`, which has the flags.
            reload_from: None,
            tls: security::server_tls(&s)?,
            client_tls: security::client_tls(&s)?,
        })
    }
}

/// A file setting must name a readable file.
pub(super) fn readable(setting: &'static str, path: PathBuf) -> Result<PathBuf, ConfigError> {
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => Ok(path),
        Ok(_) => Err(invalid(
            setting,
            format!("{} is not a file", path.display()),
        )),
        Err(e) => Err(invalid(setting, format!("{}: {e}", path.display()))),
    }
}
