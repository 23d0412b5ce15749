//! The one declaration of every router setting, raw, before validation.
//!
//! Each field is at once a flag (clap: its name, help and number of values),
//! a key of the `--config` TOML file (serde: the same name, except
//! `policy_name` for `--policy`) and, through the flag table the native
//! extension exposes, a keyword of the Python `Router(...)` and a flag of
//! `python -m wasm_router.launch_router`. Every field is optional (`None`,
//! `false`, empty: not given), so that one generic rule can put the flags
//! over the file; the defaults are the constants of [`super::defaults`],
//! which validation applies and the help shows. One clap + serde struct
//! rather than `figment`: the file and the flags are the only two layers,
//! and a struct that both derive keeps each setting's name, type, help and
//! TOML key on the lines of its field.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Settings of a router run, from flags or the `--config` file (all
/// optional: unset flags fall back to the file, then to the defaults shown).
#[derive(Debug, Default, Clone, Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterArgs {
    /// TOML file with the same settings (flags override it) and a `[policy]` table.
    // A file cannot name a file: this one is a flag only.
    #[arg(long, help_heading = "Worker Configuration")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, help_heading = "Worker Configuration")]
    pub host: Option<IpAddr>,
    /// Port to listen on.
    #[arg(long, value_parser = port_number, help_heading = "Worker Configuration")]
    pub port: Option<u16>,
    /// Worker base URLs.
    #[arg(long, num_args = 0.., value_name = "URL", help_heading = "Worker Configuration")]
    pub worker_urls: Vec<String>,
    /// The file's `[[workers]]` entries: regular workers with what a URL
    /// alone cannot say (weight, labels, where it publishes KV events).
    // Structured entries have no flag form: --worker-urls is the flag's.
    #[arg(skip)]
    pub workers: Vec<WorkerEntry>,
    /// Built-in policy name (cache_aware, round_robin, random, power_of_two,
    /// consistent_hash, manual, bucket, precise_cache_aware) or a .wasm file.
    // `policy` in the file is the policy's own table (below).
    #[arg(long, help_heading = "Routing Policy")]
    #[serde(rename = "policy_name")]
    pub policy: Option<String>,
    /// The file's `[policy]` table, passed to the policy's `init` as JSON
    /// over the cache-aware and manual settings.
    // The policy's own settings have no flags: they are the policy's, not
    // the router's.
    #[arg(skip)]
    #[serde(rename = "policy")]
    pub policy_table: Map<String, Value>,
    /// cache_aware: minimum prefix match ratio to follow the cache.
    #[arg(long, help_heading = "Routing Policy")]
    pub cache_threshold: Option<f64>,
    /// cache_aware: absolute load gap that overrides affinity.
    #[arg(long, help_heading = "Routing Policy")]
    pub balance_abs_threshold: Option<u32>,
    /// cache_aware: relative load ratio that overrides affinity.
    #[arg(long, help_heading = "Routing Policy")]
    pub balance_rel_threshold: Option<f64>,
    /// cache_aware: seconds between tree evictions.
    #[arg(long, help_heading = "Routing Policy")]
    pub eviction_interval_secs: Option<u64>,
    /// cache_aware: characters per worker kept after eviction.
    #[arg(long, help_heading = "Routing Policy")]
    pub max_tree_size: Option<u64>,
    /// manual: how a new routing key picks its worker: random, min_load or
    /// min_group.
    #[arg(long, help_heading = "Routing Policy")]
    pub assignment_mode: Option<String>,
    /// manual: seconds after which an unused routing key is forgotten.
    #[arg(long, help_heading = "Routing Policy")]
    pub max_idle_secs: Option<u64>,
    /// Prefill/decode disaggregation: each request goes to a prefill and a
    /// decode worker at once (give them with --prefill and --decode).
    #[arg(long, help_heading = "PD Disaggregation")]
    pub pd_disaggregation: bool,
    /// PD mode: a prefill worker's URL and, optionally, the port of its KV
    /// bootstrap server (or `none`); repeat the flag per worker.
    /// In the file: `prefill = [{ url = "...", bootstrap_port = 8998 }]`.
    #[arg(long, num_args = 1..=2, value_names = ["URL", "BOOTSTRAP_PORT"], help_heading = "PD Disaggregation")]
    #[serde(deserialize_with = "prefill_entries")]
    pub prefill: Vec<String>,
    /// PD mode: decode worker URLs (several per flag, or the flag repeated).
    #[arg(long, num_args = 1.., value_name = "URL", help_heading = "PD Disaggregation")]
    pub decode: Vec<String>,
    /// PD mode: the prefill workers' policy [default: --policy].
    #[arg(long, help_heading = "Routing Policy")]
    pub prefill_policy: Option<String>,
    /// PD mode: the decode workers' policy [default: --policy].
    #[arg(long, help_heading = "Routing Policy")]
    pub decode_policy: Option<String>,
    /// Ask each worker for its `dp_size` (/get_server_info) and route to
    /// each data-parallel rank as its own candidate, adding
    /// `data_parallel_rank` to the request.
    #[arg(long, help_heading = "Routing Policy")]
    pub dp_aware: bool,
    /// Follow the workers' KV cache events (each worker's
    /// `kv_events_config` in /get_server_info, ZMQ) into the router's
    /// precise prefix index.
    #[arg(long, help_heading = "Routing Policy")]
    pub kv_events: bool,
    /// Seconds between reads of each worker's own load (/get_load), which
    /// policies see when it is above the router's in-flight count; 0 to
    /// never read it.
    #[arg(long, help_heading = "Health Checks")]
    pub worker_load_check_interval: Option<u64>,
    /// Largest request body in bytes; larger is a 413.
    #[arg(long, help_heading = "Routing Policy")]
    pub max_payload_size: Option<usize>,
    /// Seconds a whole request may take, from its first byte to its
    /// response's last, streaming included: 504 before the response
    /// headers, an SSE error event after them.
    #[arg(long, help_heading = "Request Handling")]
    pub request_timeout_secs: Option<u64>,
    /// Seconds to wait for one worker's response headers before counting the
    /// attempt as failed and retrying on another worker; at most
    /// --request-timeout-secs [default: off, one attempt may use it all].
    #[arg(long, help_heading = "Request Handling")]
    pub attempt_timeout_secs: Option<u64>,
    /// Seconds to wait for a TCP connection to a worker; then the attempt
    /// fails and is retried on another worker.
    #[arg(long, help_heading = "Request Handling")]
    pub connect_timeout_secs: Option<u64>,
    /// Seconds a worker's response body, or a client's request body, may
    /// pause between two chunks; then it ends (a stream with an SSE error
    /// event).
    #[arg(long, help_heading = "Request Handling")]
    pub stream_idle_timeout_secs: Option<u64>,
    /// Retries after the first attempt.
    #[arg(long, help_heading = "Retry Configuration")]
    pub retry_max_retries: Option<u32>,
    /// First retry back-off in ms.
    #[arg(long, help_heading = "Retry Configuration")]
    pub retry_initial_backoff_ms: Option<u64>,
    /// Longest retry back-off in ms.
    #[arg(long, help_heading = "Retry Configuration")]
    pub retry_max_backoff_ms: Option<u64>,
    /// Back-off growth per retry.
    #[arg(long, help_heading = "Retry Configuration")]
    pub retry_backoff_multiplier: Option<f64>,
    /// Random share of each back-off, 0 to 1.
    #[arg(long, help_heading = "Retry Configuration")]
    pub retry_jitter_factor: Option<f64>,
    /// Never retry.
    #[arg(long, help_heading = "Retry Configuration")]
    pub disable_retries: bool,
    /// Consecutive failures that open a worker's breaker.
    #[arg(long, help_heading = "Circuit Breaker")]
    pub cb_failure_threshold: Option<u32>,
    /// Successes in half-open that close it again; also the trial requests
    /// a half-open breaker lets through per second.
    #[arg(long, help_heading = "Circuit Breaker")]
    pub cb_success_threshold: Option<u32>,
    /// Seconds an open breaker waits before letting a trial through.
    #[arg(long, help_heading = "Circuit Breaker")]
    pub cb_timeout_duration_secs: Option<u64>,
    /// Seconds after the first of a row of failures that the row starts
    /// again.
    #[arg(long, help_heading = "Circuit Breaker")]
    pub cb_window_duration_secs: Option<u64>,
    /// No circuit breakers.
    #[arg(long, help_heading = "Circuit Breaker")]
    pub disable_circuit_breaker: bool,
    /// Failed checks in a row that mark a worker unhealthy.
    #[arg(long, help_heading = "Health Checks")]
    pub health_failure_threshold: Option<u32>,
    /// Passed checks in a row that mark it healthy again.
    #[arg(long, help_heading = "Health Checks")]
    pub health_success_threshold: Option<u32>,
    /// Seconds before a health check counts as failed.
    #[arg(long, help_heading = "Health Checks")]
    pub health_check_timeout_secs: Option<u64>,
    /// Seconds between health checks.
    #[arg(long, help_heading = "Health Checks")]
    pub health_check_interval_secs: Option<u64>,
    /// Path probed by health checks.
    #[arg(long, help_heading = "Health Checks")]
    pub health_check_endpoint: Option<String>,
    /// No health checks: every registered worker counts as healthy.
    #[arg(long, help_heading = "Health Checks")]
    pub disable_health_check: bool,
    /// Requests forwarded at once; 0 or -1 for no limit.
    #[arg(long, allow_negative_numbers = true, help_heading = "Rate Limiting")]
    pub max_concurrent_requests: Option<i64>,
    /// Requests that may wait for a slot; more get 429.
    #[arg(long, help_heading = "Rate Limiting")]
    pub queue_size: Option<usize>,
    /// Seconds a request may wait for a slot; then 408.
    #[arg(long, help_heading = "Rate Limiting")]
    pub queue_timeout_secs: Option<u64>,
    /// Require `Authorization: Bearer KEY` on the inference routes.
    #[arg(long, help_heading = "Control Plane Authentication")]
    pub api_key: Option<String>,
    /// Key(s) for the admin routes (/workers, /policies, /flush_cache and the
    /// legacy worker routes); repeat for several. Without one, admin routes
    /// answer loopback clients only.
    #[arg(long = "admin-api-key", help_heading = "Control Plane Authentication")]
    pub admin_api_keys: Vec<String>,
    /// Serve admin routes without a key to non-loopback clients too.
    #[arg(long, help_heading = "Control Plane Authentication")]
    pub allow_remote_admin: bool,
    /// Address of the Prometheus endpoint.
    #[arg(long, help_heading = "Prometheus Metrics")]
    pub prometheus_host: Option<IpAddr>,
    /// Port of the Prometheus endpoint.
    #[arg(long, value_parser = port_number, help_heading = "Prometheus Metrics")]
    pub prometheus_port: Option<u16>,
    /// Headers that carry a client's request id, first found wins.
    #[arg(long, num_args = 0.., help_heading = "Request Handling")]
    pub request_id_headers: Vec<String>,
    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT.
    #[arg(long, help_heading = "Request Handling")]
    pub shutdown_grace_period_secs: Option<u64>,
    /// Deadline of one policy call on the request path, in ms.
    #[arg(long, help_heading = "Routing Policy")]
    pub policy_call_deadline_ms: Option<u64>,
    /// Linear memory a policy may use, in MiB.
    #[arg(long, help_heading = "Routing Policy")]
    pub policy_memory_limit_mb: Option<usize>,
    /// Instances of a per-thread policy: one per core (at least 2) unless
    /// set; a heavy runtime (Python, JavaScript) on many cores may want
    /// fewer. Shared policies run one.
    #[arg(long, help_heading = "Routing Policy")]
    pub policy_instances: Option<usize>,
    /// Write a decision record per request as JSON lines to this file
    /// (`-`: stdout): the request's shape, the candidates as the policy saw
    /// them, its pick and the outcome. Off the request path: a record that
    /// finds the writer behind is dropped and counted.
    #[arg(long, value_name = "PATH", help_heading = "Policy Lab")]
    pub decision_log: Option<String>,
    /// Share of requests recorded, between 0 and 1.
    #[arg(long, help_heading = "Policy Lab")]
    pub decision_log_sample: Option<f64>,
    /// The decision log's file is rotated (to PATH.1) past this size, in MiB.
    #[arg(long, help_heading = "Policy Lab")]
    pub decision_log_max_mb: Option<u64>,
    /// Records waiting for the writer at most; more are dropped and counted.
    #[arg(long, help_heading = "Policy Lab")]
    pub decision_log_buffer: Option<usize>,
    /// Put the routing text itself in decision records (else only its
    /// block keys).
    #[arg(long, help_heading = "Policy Lab")]
    pub decision_log_text: bool,
    /// A policy asked every request's question after the live one, off the
    /// request path, whose answers are compared and never acted on
    /// (repeatable; hot-reloaded; `POST /policies/promote` makes one live).
    #[arg(
        long,
        value_name = "FILE.wasm",
        num_args = 1,
        help_heading = "Policy Lab"
    )]
    pub shadow_policy: Vec<String>,
    /// Do not cache compiled policies on disk.
    #[arg(long, help_heading = "Routing Policy")]
    pub no_policy_cache: bool,
    /// Do not watch the policy file (and config file) for changes.
    #[arg(long, help_heading = "Routing Policy")]
    pub no_watch: bool,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key-path).
    #[arg(long, help_heading = "TLS/mTLS Security")]
    pub tls_cert_path: Option<PathBuf>,
    /// PEM private key for --tls-cert-path.
    #[arg(long, help_heading = "TLS/mTLS Security")]
    pub tls_key_path: Option<PathBuf>,
    /// Extra PEM root certificates to trust for HTTPS workers.
    #[arg(long, num_args = 0.., help_heading = "TLS/mTLS Security")]
    pub ca_cert_paths: Vec<PathBuf>,
    /// PEM client certificate for mutual TLS with workers (with --client-key-path).
    #[arg(long, help_heading = "TLS/mTLS Security")]
    pub client_cert_path: Option<PathBuf>,
    /// PEM private key for --client-cert-path.
    #[arg(long, help_heading = "TLS/mTLS Security")]
    pub client_key_path: Option<PathBuf>,

    // The rest of sglang-router 0.3.2's launcher flags, with its spelling
    // and number of values: some work as there; those of gateway features
    // this router does not offer, and those not built yet, are accepted at
    // their default and refused otherwise (`validate.rs`, README.md's
    // flag table).
    /// bucket: seconds between bucket boundary adjustments.
    #[arg(long, help_heading = "Routing Policy")]
    pub bucket_adjust_interval_secs: Option<u64>,
    /// Multi-model routing (sglang-router's IGW mode): always on here, the
    /// request's `model` picks the worker pool.
    #[arg(long, help_heading = "Routing Policy")]
    pub enable_igw: bool,
    /// sglang-router's MiniLB: not supported.
    #[arg(long, help_heading = "PD Disaggregation")]
    pub mini_lb: bool,
    /// Seconds a new worker may take to pass its first health check; then
    /// it is removed, named in an error.
    #[arg(long, help_heading = "PD Disaggregation")]
    pub worker_startup_timeout_secs: Option<u64>,
    /// Seconds between health checks of a new worker that has not passed
    /// one yet.
    #[arg(long, help_heading = "PD Disaggregation")]
    pub worker_startup_check_interval: Option<u64>,
    /// Also write the logs to a file in this directory, a new one each day
    /// (wasm-router.YYYY-MM-DD).
    #[arg(long, help_heading = "Logging")]
    pub log_dir: Option<PathBuf>,
    /// Find workers as Kubernetes pods (list, then watch, of the API
    /// server): a pod that matches the selector and is Running and Ready
    /// is a worker at http://POD_IP:PORT until it is not. The client is
    /// configured in the cluster from the service account, else from
    /// KUBECONFIG or ~/.kube/config.
    #[arg(long, help_heading = "Service Discovery (Kubernetes)")]
    pub service_discovery: bool,
    /// The worker pods' labels, key=value ... (a pod must have them all).
    #[arg(long, num_args = 1.., help_heading = "Service Discovery (Kubernetes)")]
    pub selector: Vec<String>,
    /// The port discovered pods serve on.
    #[arg(long, value_parser = port_number, help_heading = "Service Discovery (Kubernetes)")]
    pub service_discovery_port: Option<u16>,
    /// The namespace whose pods are watched; every namespace when not
    /// given (the router then needs a ClusterRole).
    #[arg(long, help_heading = "Service Discovery (Kubernetes)")]
    pub service_discovery_namespace: Option<String>,
    /// PD mode: the prefill pods' labels, key=value ...; a prefill pod's
    /// bootstrap port is its annotation sglang.ai/bootstrap-port.
    #[arg(long, num_args = 1.., help_heading = "Service Discovery (Kubernetes)")]
    pub prefill_selector: Vec<String>,
    /// PD mode: the decode pods' labels, key=value ....
    #[arg(long, num_args = 1.., help_heading = "Service Discovery (Kubernetes)")]
    pub decode_selector: Vec<String>,
    /// Bucket bounds, in seconds, of the request-duration and
    /// time-to-first-byte histograms [default: 0.0005 0.001 ... 60].
    #[arg(long, num_args = 1.., help_heading = "Prometheus Metrics")]
    pub prometheus_duration_buckets: Vec<f64>,
    /// Workers, in registration order, whose own series (in flight,
    /// healthy, breaker state) `/metrics` shows; 0 for none. The counts over
    /// all workers are always there.
    #[arg(long, help_heading = "Prometheus Metrics")]
    pub prometheus_worker_series: Option<usize>,
    /// Origins allowed to call the router from a browser (CORS)
    /// [default: any origin].
    #[arg(long, num_args = 0.., help_heading = "Request Handling")]
    pub cors_allowed_origins: Vec<String>,
    /// Make --max-concurrent-requests sglang-router's token bucket: a
    /// request takes a token and gives it back when it ends, and this many
    /// tokens are added per second on top, up to the bucket's size
    /// [default: off, the limit is strict].
    #[arg(long, help_heading = "Rate Limiting")]
    pub rate_limit_tokens_per_second: Option<u64>,
    /// Model whose tokenizer to load: a local directory holding
    /// tokenizer.json (the router downloads nothing).
    #[arg(long, help_heading = "Tokenizer")]
    pub model_path: Option<String>,
    /// Local tokenizer.json to load (wins over --model-path); serves
    /// /v1/tokenize and /v1/detokenize.
    #[arg(long, help_heading = "Tokenizer")]
    pub tokenizer_path: Option<String>,
    /// Chat template: not supported (the workers apply their own).
    #[arg(long, help_heading = "Tokenizer")]
    pub chat_template: Option<String>,
    /// Tokenizer cache of whole texts: always on here (accepted for
    /// sglang-router's command lines).
    #[arg(long, help_heading = "Tokenizer")]
    pub tokenizer_cache_enable_l0: bool,
    /// Whole texts the tokenizer cache keeps (0: none).
    #[arg(long, help_heading = "Tokenizer")]
    pub tokenizer_cache_l0_max_entries: Option<u64>,
    /// Tokenizer cache of prompt prefixes: always on here (accepted for
    /// sglang-router's command lines).
    #[arg(long, help_heading = "Tokenizer")]
    pub tokenizer_cache_enable_l1: bool,
    /// Bytes of prompt-prefix tokens the tokenizer cache keeps (0: none).
    #[arg(long, help_heading = "Tokenizer")]
    pub tokenizer_cache_l1_max_memory: Option<u64>,
    /// Reasoning parser: not supported (a gateway feature).
    #[arg(long, help_heading = "Parsers")]
    pub reasoning_parser: Option<String>,
    /// Tool-call parser: not supported (a gateway feature).
    #[arg(long, help_heading = "Parsers")]
    pub tool_call_parser: Option<String>,
    /// MCP configuration: not supported (a gateway feature).
    #[arg(long, help_heading = "Parsers")]
    pub mcp_config_path: Option<String>,
    /// What the workers are: sglang or openai (any OpenAI-compatible
    /// server); both are proxied alike.
    #[arg(long, help_heading = "Backend")]
    pub backend: Option<String>,
    /// Conversation history storage: `memory` or `none` only, as this
    /// router keeps no history.
    #[arg(long, help_heading = "Backend")]
    pub history_backend: Option<String>,
    /// History in Oracle: not supported.
    #[arg(long, help_heading = "Oracle Database")]
    pub oracle_wallet_path: Option<String>,
    /// History in Oracle: not supported.
    #[arg(long, help_heading = "Oracle Database")]
    pub oracle_tns_alias: Option<String>,
    /// History in Oracle: not supported.
    #[arg(long, help_heading = "Oracle Database")]
    pub oracle_connect_descriptor: Option<String>,
    /// History in Oracle: not supported.
    #[arg(long, help_heading = "Oracle Database")]
    pub oracle_username: Option<String>,
    /// History in Oracle: not supported.
    #[arg(long, help_heading = "Oracle Database")]
    pub oracle_password: Option<String>,
    /// History in Oracle: not supported.
    #[arg(long, help_heading = "Oracle Database")]
    pub oracle_pool_min: Option<u64>,
    /// History in Oracle: not supported.
    #[arg(long, help_heading = "Oracle Database")]
    pub oracle_pool_max: Option<u64>,
    /// History in Oracle: not supported.
    #[arg(long, help_heading = "Oracle Database")]
    pub oracle_pool_timeout_secs: Option<u64>,
    /// History in PostgreSQL: not supported.
    #[arg(long, help_heading = "PostgreSQL Database")]
    pub postgres_db_url: Option<String>,
    /// History in PostgreSQL: not supported.
    #[arg(long, help_heading = "PostgreSQL Database")]
    pub postgres_pool_max: Option<u64>,
    /// History in Redis: not supported.
    #[arg(long, help_heading = "Redis Database")]
    pub redis_url: Option<String>,
    /// History in Redis: not supported.
    #[arg(long, help_heading = "Redis Database")]
    pub redis_pool_max: Option<u64>,
    /// History in Redis: not supported.
    #[arg(long, help_heading = "Redis Database")]
    pub redis_retention_days: Option<u64>,
    /// Export OpenTelemetry traces (OTLP over gRPC): a span per request,
    /// its policy decision and each attempt at a worker; a client's
    /// traceparent is continued and the worker gets the attempt's.
    #[arg(long, help_heading = "Tracing (OpenTelemetry)")]
    pub enable_trace: bool,
    /// The OpenTelemetry collector traces go to (HOST:PORT) with
    /// --enable-trace.
    #[arg(long, help_heading = "Tracing (OpenTelemetry)")]
    pub otlp_traces_endpoint: Option<String>,
    /// Keys of the admin routes as id:name:role:key, role admin (may
    /// administer) or user (is refused with 403), beside --admin-api-key.
    #[arg(long, num_args = 0.., help_heading = "Control Plane Authentication")]
    pub control_plane_api_keys: Vec<String>,
    /// Log one line per admin request: who (key id), what (method, path),
    /// outcome.
    #[arg(long, help_heading = "Control Plane Authentication")]
    pub control_plane_audit_enabled: bool,
    /// OIDC issuer of control-plane bearer tokens (their `iss`); its
    /// discovery document names the keys unless --jwt-jwks-uri does.
    #[arg(long, help_heading = "Control Plane Authentication")]
    pub jwt_issuer: Option<String>,
    /// Audience control-plane tokens must be for (their `aud`).
    #[arg(long, help_heading = "Control Plane Authentication")]
    pub jwt_audience: Option<String>,
    /// Where the issuer's signing keys are (a JWKS URL), fetched at start,
    /// every 10 minutes, and when a token names a key not yet known.
    #[arg(long, help_heading = "Control Plane Authentication")]
    pub jwt_jwks_uri: Option<String>,
    /// Token role to router role, as TOKEN_ROLE=admin or TOKEN_ROLE=user;
    /// roles are read from the roles, role, groups and group claims, and
    /// one not mapped stands for itself.
    #[arg(long, num_args = 0.., help_heading = "Control Plane Authentication")]
    pub jwt_role_mapping: Vec<String>,
}

/// One `[[workers]]` entry of the `--config` file.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerEntry {
    /// Base URL.
    pub url: String,
    /// Its share of traffic relative to the others (1-1000) [default: 1],
    /// for policies that weigh workers.
    #[serde(default)]
    pub weight: Option<u32>,
    /// Labels policies can read (`labels = { zone = "a", gpu = "h100" }`).
    #[serde(default)]
    pub labels: super::Labels,
    /// Where it publishes its KV events, as its own `--kv-events-config` (a
    /// table or a JSON string), for a worker whose `/get_server_info` does
    /// not say (vLLM); needs --kv-events.
    #[serde(default)]
    pub kv_events_config: Option<Value>,
}

/// A port flag's value, with the message the Python launcher always gave.
fn port_number(text: &str) -> Result<u16, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a port number (0-65535)"))
}

/// The file's `prefill` entries (`{ url, bootstrap_port }` tables, or the
/// flag's flat list of strings) as the flag's values: each URL followed by
/// its bootstrap port when it has one.
fn prefill_entries<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Entry {
        Value(String),
        Worker(Worker),
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Worker {
        url: String,
        bootstrap_port: Option<u16>,
    }
    let mut values = Vec::new();
    for entry in Vec::<Entry>::deserialize(d)? {
        match entry {
            Entry::Value(value) => values.push(value),
            Entry::Worker(Worker {
                url,
                bootstrap_port,
            }) => {
                values.push(url);
                values.extend(bootstrap_port.map(|port| port.to_string()));
            }
        }
    }
    Ok(values)
}
