//! Every setting's default, declared once: validation applies these
//! constants, and `--help` shows them ([`show_defaults`] appends
//! `[default: VALUE]` to each flag's help from the same table). A default
//! that is a behaviour rather than a value ("off", "any origin") is said in
//! the flag's own help.

use std::net::{IpAddr, Ipv4Addr};

/// Declares each default as a `pub const` and lists it, by flag id (the
/// `RouterArgs` field), for the help: as the constant prints, or as its
/// `shown` expression says.
macro_rules! defaults {
    ($($flag:literal => $name:ident: $ty:ty = $value:expr $(, shown $shown:expr)?;)*) => {
        $(
            #[doc = concat!("Default of `--", $flag, "`.")]
            pub const $name: $ty = $value;
        )*

        /// Each default as the help shows it: (flag id, text).
        pub fn shown() -> Vec<(&'static str, String)> {
            vec![$(($flag, shown!($name $(, $shown)?))),*]
        }
    };
}

/// A default's text in the help: the constant's, unless given.
macro_rules! shown {
    ($name:ident) => {
        $name.to_string()
    };
    ($name:ident, $shown:expr) => {
        $shown.to_string()
    };
}

defaults! {
    "host" => HOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    "port" => PORT: u16 = 30000;
    "policy" => POLICY: &str = "cache_aware";
    "cache_threshold" => CACHE_THRESHOLD: f64 = 0.3;
    "balance_abs_threshold" => BALANCE_ABS_THRESHOLD: u32 = 64;
    "balance_rel_threshold" => BALANCE_REL_THRESHOLD: f64 = 1.5;
    "eviction_interval_secs" => EVICTION_INTERVAL_SECS: u64 = 60;
    "max_tree_size" => MAX_TREE_SIZE: u64 = 1 << 26;
    "assignment_mode" => ASSIGNMENT_MODE: &str = "random";
    "max_idle_secs" => MAX_IDLE_SECS: u64 = 14400;
    "bucket_adjust_interval_secs" => BUCKET_ADJUST_INTERVAL_SECS: u64 = 5;
    "worker_load_check_interval" => WORKER_LOAD_CHECK_INTERVAL: u64 = 10;
    "max_payload_size" => MAX_PAYLOAD_SIZE: usize = 512 << 20;
    "request_timeout_secs" => REQUEST_TIMEOUT_SECS: u64 = 1800;
    "connect_timeout_secs" => CONNECT_TIMEOUT_SECS: u64 = 10;
    "stream_idle_timeout_secs" => STREAM_IDLE_TIMEOUT_SECS: u64 = 300;
    "retry_max_retries" => RETRY_MAX_RETRIES: u32 = 5;
    "retry_initial_backoff_ms" => RETRY_INITIAL_BACKOFF_MS: u64 = 50;
    "retry_max_backoff_ms" => RETRY_MAX_BACKOFF_MS: u64 = 30_000;
    "retry_backoff_multiplier" => RETRY_BACKOFF_MULTIPLIER: f64 = 1.5;
    "retry_jitter_factor" => RETRY_JITTER_FACTOR: f64 = 0.2;
    "cb_failure_threshold" => CB_FAILURE_THRESHOLD: u32 = 10;
    "cb_success_threshold" => CB_SUCCESS_THRESHOLD: u32 = 3;
    "cb_timeout_duration_secs" => CB_TIMEOUT_DURATION_SECS: u64 = 60;
    "cb_window_duration_secs" => CB_WINDOW_DURATION_SECS: u64 = 120;
    "health_failure_threshold" => HEALTH_FAILURE_THRESHOLD: u32 = 3;
    "health_success_threshold" => HEALTH_SUCCESS_THRESHOLD: u32 = 2;
    "health_check_timeout_secs" => HEALTH_CHECK_TIMEOUT_SECS: u64 = 5;
    "health_check_interval_secs" => HEALTH_CHECK_INTERVAL_SECS: u64 = 60;
    "health_check_endpoint" => HEALTH_CHECK_ENDPOINT: &str = "/health";
    "worker_startup_timeout_secs" => WORKER_STARTUP_TIMEOUT_SECS: u64 = 1800;
    "worker_startup_check_interval" => WORKER_STARTUP_CHECK_INTERVAL: u64 = 30;
    // sglang-router's default is -1, no limit; ours bounds memory
    // (README.md, flag table).
    "max_concurrent_requests" => MAX_CONCURRENT_REQUESTS: i64 = 256;
    "queue_size" => QUEUE_SIZE: usize = 100;
    "queue_timeout_secs" => QUEUE_TIMEOUT_SECS: u64 = 60;
    "prometheus_host" => PROMETHEUS_HOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    "prometheus_port" => PROMETHEUS_PORT: u16 = 29000;
    "prometheus_worker_series" => PROMETHEUS_WORKER_SERIES: usize = 256;
    "request_id_headers" => REQUEST_ID_HEADERS: [&str; 4] = ["x-request-id", "x-correlation-id", "x-trace-id", "request-id"], shown REQUEST_ID_HEADERS.join(" ");
    "shutdown_grace_period_secs" => SHUTDOWN_GRACE_PERIOD_SECS: u64 = 180;
    "policy_call_deadline_ms" => POLICY_CALL_DEADLINE_MS: u64 = 10;
    "policy_memory_limit_mb" => POLICY_MEMORY_LIMIT_MB: usize = 512;
    "decision_log_sample" => DECISION_LOG_SAMPLE: f64 = 1.0;
    "decision_log_max_mb" => DECISION_LOG_MAX_MB: u64 = 100;
    "decision_log_buffer" => DECISION_LOG_BUFFER: usize = 4096;
    // sglang-router's flags accepted at their defaults only (`sglang.rs`).
    "service_discovery_port" => SERVICE_DISCOVERY_PORT: u16 = 80;
    "tokenizer_cache_l0_max_entries" => TOKENIZER_CACHE_L0_MAX_ENTRIES: u64 = 10_000;
    "tokenizer_cache_l1_max_memory" => TOKENIZER_CACHE_L1_MAX_MEMORY: u64 = 50 << 20;
    "backend" => BACKEND: &str = "sglang";
    "history_backend" => HISTORY_BACKEND: &str = "memory";
    "oracle_pool_min" => ORACLE_POOL_MIN: u64 = 1;
    "oracle_pool_max" => ORACLE_POOL_MAX: u64 = 16;
    "oracle_pool_timeout_secs" => ORACLE_POOL_TIMEOUT_SECS: u64 = 30;
    "postgres_pool_max" => POSTGRES_POOL_MAX: u64 = 16;
    "redis_pool_max" => REDIS_POOL_MAX: u64 = 16;
    "redis_retention_days" => REDIS_RETENTION_DAYS: u64 = 30;
    "otlp_traces_endpoint" => OTLP_TRACES_ENDPOINT: &str = "localhost:4317";
}

/// `command` (one that flattens [`super::RouterArgs`]) with each setting's
/// default at the end of its help, from [`shown`].
pub fn show_defaults(mut command: clap::Command) -> clap::Command {
    for (flag, value) in shown() {
        command = command.mut_arg(flag, |arg| {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            let help = help.trim_end_matches('.');
            arg.help(format!("{help} [default: {value}]."))
        });
    }
    command
}
