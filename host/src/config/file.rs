//! The TOML config file (`--config`), raw, before validation.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value};

/// The TOML config file: the same settings as the flags, plus `[policy]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub(super) host: Option<IpAddr>,
    pub(super) port: Option<u16>,
    #[serde(default)]
    pub(super) worker_urls: Vec<String>,
    /// `policy = "cache_aware"` or a path; `[policy]` is the config table.
    #[serde(default, rename = "policy_name")]
    pub(super) policy_name: Option<String>,
    #[serde(default)]
    pub(super) policy: Map<String, Value>,
    pub(super) cache_threshold: Option<f64>,
    pub(super) balance_abs_threshold: Option<u32>,
    pub(super) balance_rel_threshold: Option<f64>,
    pub(super) eviction_interval_secs: Option<u64>,
    pub(super) max_tree_size: Option<u64>,
    pub(super) assignment_mode: Option<String>,
    pub(super) max_idle_secs: Option<u64>,
    #[serde(default)]
    pub(super) pd_disaggregation: bool,
    #[serde(default)]
    pub(super) prefill: Vec<PrefillEntry>,
    #[serde(default)]
    pub(super) decode: Vec<String>,
    pub(super) prefill_policy: Option<String>,
    pub(super) decode_policy: Option<String>,
    #[serde(default)]
    pub(super) dp_aware: bool,
    pub(super) worker_load_check_interval: Option<u64>,
    pub(super) max_payload_size: Option<usize>,
    pub(super) request_timeout_secs: Option<u64>,
    pub(super) attempt_timeout_secs: Option<u64>,
    pub(super) retry_max_retries: Option<u32>,
    pub(super) retry_initial_backoff_ms: Option<u64>,
    pub(super) retry_max_backoff_ms: Option<u64>,
    pub(super) retry_backoff_multiplier: Option<f64>,
    pub(super) retry_jitter_factor: Option<f64>,
    #[serde(default)]
    pub(super) disable_retries: bool,
    pub(super) cb_failure_threshold: Option<u32>,
    pub(super) cb_success_threshold: Option<u32>,
    pub(super) cb_timeout_duration_secs: Option<u64>,
    pub(super) cb_window_duration_secs: Option<u64>,
    #[serde(default)]
    pub(super) disable_circuit_breaker: bool,
    pub(super) health_failure_threshold: Option<u32>,
    pub(super) health_success_threshold: Option<u32>,
    pub(super) health_check_timeout_secs: Option<u64>,
    pub(super) health_check_interval_secs: Option<u64>,
    pub(super) health_check_endpoint: Option<String>,
    #[serde(default)]
    pub(super) disable_health_check: bool,
    pub(super) max_concurrent_requests: Option<usize>,
    pub(super) queue_size: Option<usize>,
    pub(super) queue_timeout_secs: Option<u64>,
    pub(super) api_key: Option<String>,
    #[serde(default)]
    pub(super) admin_api_keys: Vec<String>,
    #[serde(default)]
    pub(super) allow_remote_admin: bool,
    pub(super) prometheus_host: Option<IpAddr>,
    pub(super) prometheus_port: Option<u16>,
    #[serde(default)]
    pub(super) request_id_headers: Vec<String>,
    pub(super) shutdown_grace_period_secs: Option<u64>,
    pub(super) policy_call_deadline_ms: Option<u64>,
    pub(super) policy_memory_limit_mb: Option<usize>,
    pub(super) tls_cert_path: Option<PathBuf>,
    pub(super) tls_key_path: Option<PathBuf>,
    #[serde(default)]
    pub(super) ca_cert_paths: Vec<PathBuf>,
    pub(super) client_cert_path: Option<PathBuf>,
    pub(super) client_key_path: Option<PathBuf>,
}

/// A prefill worker in the file: `prefill = [{ url = "http://h:1", bootstrap_port = 8998 }]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefillEntry {
    pub(super) url: String,
    pub(super) bootstrap_port: Option<u16>,
}
