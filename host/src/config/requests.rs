//! Settings of the request's way through the router: admission (the
//! concurrency limit and its queue), body size, timeouts, retries, request
//! ids, CORS and the latency histograms' buckets.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};

use super::{ConfigError, RouterArgs, defaults as d, invalid};

/// Admission control; `None` for no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Requests forwarded at once.
    pub max_concurrent: usize,
    /// Requests that may wait.
    pub queue_size: usize,
    /// How long one may wait.
    pub timeout: Duration,
    /// Tokens added per second (`--rate-limit-tokens-per-second`); `None`:
    /// `max_concurrent` is a strict limit.
    pub refill_per_sec: Option<u32>,
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

/// The time limits of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Timeouts {
    /// Time allowed for a whole request, body upload and response stream
    /// included.
    pub(super) request: Duration,
    /// Time allowed for one attempt's response headers before retrying
    /// elsewhere; `None`: the rest of `request`, without retry.
    pub(super) attempt: Option<Duration>,
    /// Time allowed for a TCP connection to a worker.
    pub(super) connect: Duration,
    /// Longest pause between two chunks of a body, either way.
    pub(super) stream_idle: Duration,
}

/// The concurrency limit and its queue; `None` for no limit.
pub(super) fn queue(s: &RouterArgs) -> Result<Option<QueueConfig>, ConfigError> {
    let max_concurrent = s
        .max_concurrent_requests
        .unwrap_or(d::MAX_CONCURRENT_REQUESTS);
    if max_concurrent < -1 {
        return Err(invalid(
            "--max-concurrent-requests",
            "must be a number of requests, or 0 or -1 for no limit",
        ));
    }
    if s.rate_limit_tokens_per_second == Some(0) {
        return Err(invalid(
            "--rate-limit-tokens-per-second",
            "must be above 0 (leave it out for a strict --max-concurrent-requests)",
        ));
    }
    Ok((max_concurrent > 0).then(|| QueueConfig {
        max_concurrent: usize::try_from(max_concurrent).unwrap_or(usize::MAX),
        queue_size: s.queue_size.unwrap_or(d::QUEUE_SIZE),
        timeout: Duration::from_secs(s.queue_timeout_secs.unwrap_or(d::QUEUE_TIMEOUT_SECS)),
        refill_per_sec: s
            .rate_limit_tokens_per_second
            .map(|r| u32::try_from(r).unwrap_or(u32::MAX)),
    }))
}

/// Retries, none with `--disable-retries`.
pub(super) fn retry(s: &RouterArgs) -> Result<RetryConfig, ConfigError> {
    let retry = RetryConfig {
        max_retries: if s.disable_retries {
            0
        } else {
            s.retry_max_retries.unwrap_or(d::RETRY_MAX_RETRIES)
        },
        initial_backoff: Duration::from_millis(
            s.retry_initial_backoff_ms
                .unwrap_or(d::RETRY_INITIAL_BACKOFF_MS),
        ),
        max_backoff: Duration::from_millis(
            s.retry_max_backoff_ms.unwrap_or(d::RETRY_MAX_BACKOFF_MS),
        ),
        multiplier: s
            .retry_backoff_multiplier
            .unwrap_or(d::RETRY_BACKOFF_MULTIPLIER),
        jitter: s.retry_jitter_factor.unwrap_or(d::RETRY_JITTER_FACTOR),
    };
    if retry.multiplier.is_nan() || retry.multiplier < 1.0 {
        return Err(invalid("--retry-backoff-multiplier", "must be 1 or more"));
    }
    if !(0.0..=1.0).contains(&retry.jitter) {
        return Err(invalid("--retry-jitter-factor", "must be between 0 and 1"));
    }
    Ok(retry)
}

/// The request, attempt, connect and idle timeouts.
pub(super) fn timeouts(s: &RouterArgs) -> Result<Timeouts, ConfigError> {
    let above_zero = |setting, secs: u64| {
        if secs == 0 {
            Err(invalid(setting, "must be above 0"))
        } else {
            Ok(Duration::from_secs(secs))
        }
    };
    let request = s.request_timeout_secs.unwrap_or(d::REQUEST_TIMEOUT_SECS);
    if s.attempt_timeout_secs
        .is_some_and(|secs| secs == 0 || secs > request)
    {
        return Err(invalid(
            "--attempt-timeout-secs",
            "must be above 0 and at most --request-timeout-secs",
        ));
    }
    Ok(Timeouts {
        request: above_zero("--request-timeout-secs", request)?,
        attempt: s.attempt_timeout_secs.map(Duration::from_secs),
        connect: above_zero(
            "--connect-timeout-secs",
            s.connect_timeout_secs.unwrap_or(d::CONNECT_TIMEOUT_SECS),
        )?,
        stream_idle: above_zero(
            "--stream-idle-timeout-secs",
            s.stream_idle_timeout_secs
                .unwrap_or(d::STREAM_IDLE_TIMEOUT_SECS),
        )?,
    })
}

/// `--max-payload-size`.
pub(super) fn max_payload_size(s: &RouterArgs) -> Result<usize, ConfigError> {
    match s.max_payload_size.unwrap_or(d::MAX_PAYLOAD_SIZE) {
        0 => Err(invalid("--max-payload-size", "must be above 0")),
        size => Ok(size),
    }
}

/// `--request-id-headers`, lowercase, each a header name.
pub(super) fn request_id_headers(s: &RouterArgs) -> Result<Vec<String>, ConfigError> {
    let headers: Vec<String> = if s.request_id_headers.is_empty() {
        d::REQUEST_ID_HEADERS.map(String::from).to_vec()
    } else {
        s.request_id_headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect()
    };
    for h in &headers {
        if HeaderName::from_bytes(h.as_bytes()).is_err() {
            return Err(invalid(
                "--request-id-headers",
                format!("{h:?} is not a header name"),
            ));
        }
    }
    Ok(headers)
}

/// `--cors-allowed-origins`, each an origin.
pub(super) fn cors_allowed_origins(s: &RouterArgs) -> Result<Vec<HeaderValue>, ConfigError> {
    s.cors_allowed_origins
        .iter()
        .map(|o| {
            HeaderValue::from_str(o).map_err(|_| {
                invalid(
                    "--cors-allowed-origins",
                    format!("{o:?} is not an origin (scheme://host[:port])"),
                )
            })
        })
        .collect()
}

/// `--prometheus-duration-buckets`: `None` for the built-in ones.
pub(super) fn duration_buckets(s: &RouterArgs) -> Result<Option<Vec<f64>>, ConfigError> {
    let buckets = &s.prometheus_duration_buckets;
    if buckets.iter().any(|b| !b.is_finite()) || buckets.windows(2).any(|w| w[0] >= w[1]) {
        return Err(invalid(
            "--prometheus-duration-buckets",
            "must be finite seconds in increasing order",
        ));
    }
    Ok((!buckets.is_empty()).then(|| buckets.clone()))
}

/// The OTLP/gRPC collector traces go to, with `--enable-trace`
/// (`HOST:PORT`, or an `http://` URL); an endpoint other than the default
/// without `--enable-trace` is a mistake, named.
pub(super) fn otlp_traces(s: &RouterArgs) -> Result<Option<String>, ConfigError> {
    let endpoint = s.otlp_traces_endpoint.as_deref();
    if !s.enable_trace {
        if endpoint.is_some_and(|e| e != d::OTLP_TRACES_ENDPOINT) {
            return Err(invalid("--otlp-traces-endpoint", "needs --enable-trace"));
        }
        return Ok(None);
    }
    let endpoint = endpoint.unwrap_or(d::OTLP_TRACES_ENDPOINT);
    let address = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .unwrap_or(endpoint);
    let port = address
        .rsplit_once(':')
        .map(|(_, p)| p.trim_end_matches('/'));
    if port.is_none_or(|p| p.parse::<u16>().is_err()) {
        return Err(invalid(
            "--otlp-traces-endpoint",
            format!("{endpoint:?} is not HOST:PORT (e.g. localhost:4317)"),
        ));
    }
    Ok(Some(endpoint.to_string()))
}
