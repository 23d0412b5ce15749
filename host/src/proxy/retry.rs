//! The one retry loop of forwarding, for regular and PD requests alike.
//!
//! An attempt picks its worker(s) and sends; it answers the client itself
//! (a success, a status not worth a retry, or any status on the last try),
//! or names the worker that failed and how. [`Retries`] records that
//! failure in the worker's breaker, logs it, waits its back-off, and the
//! next attempt goes without that worker. Retries happen only before any byte went to the
//! client: an attempt that answered is never retried. When no candidate is
//! left, the client gets the last failure, a worker's own error answer
//! included.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::Response;

use crate::config::{Config, RetryConfig};
use crate::errors::ApiError;
use crate::metrics as m;
use crate::policy::{Role, Route, WorkerId};
use crate::upstream::{self, UpstreamError};
use crate::workers::Worker;

/// Worker statuses worth another worker's try.
pub(crate) const RETRYABLE: [u16; 6] = [408, 429, 500, 502, 503, 504];

/// Back-off before retry number `attempt` (1-based), with jitter.
pub fn backoff(retry: &RetryConfig, attempt: u32) -> Duration {
    let base = retry.initial_backoff.as_secs_f64() * retry.multiplier.powi(attempt as i32 - 1);
    let capped = base.min(retry.max_backoff.as_secs_f64());
    let jitter = 1.0 + retry.jitter * (fastrand::f64() * 2.0 - 1.0);
    Duration::from_secs_f64((capped * jitter).max(0.0))
}

/// How an attempt failed on a worker.
pub(crate) enum Failure {
    /// No response headers within the attempt's time.
    Timeout,
    /// Could not connect, or the connection broke before the headers.
    Unreachable(UpstreamError),
    /// A status in [`RETRYABLE`], with retries left.
    Status(upstream::Response),
}

impl From<UpstreamError> for Failure {
    fn from(e: UpstreamError) -> Self {
        Failure::Unreachable(e)
    }
}

/// The retry loop's state, driven by a forwarder:
///
/// ```text
/// let mut retries = Retries::new(config, route, request_id);
/// while retries.next().await {
///     // pick without retries.excluded(), send; answer and return, or:
///     if let Some(end) = retries.failed(worker, failure).await { return end; }
/// }
/// retries.exhausted()
/// ```
///
/// A loop the forwarders drive rather than a function taking the attempt
/// as an async closure: an attempt borrows the request, and such closures
/// cannot yet prove their futures `Send` for every borrow.
pub(crate) struct Retries<'a> {
    config: &'a Config,
    route: Route,
    request_id: &'a str,
    /// Attempts started.
    started: u32,
    excluded: Vec<WorkerId>,
    /// What the client gets when no attempt is left.
    last: Result<Response, ApiError>,
}

impl<'a> Retries<'a> {
    /// Before the first attempt of a request.
    pub fn new(config: &'a Config, route: Route, request_id: &'a str) -> Self {
        Retries {
            config,
            route,
            request_id,
            started: 0,
            excluded: Vec::new(),
            last: Err(ApiError::NoHealthyWorker),
        }
    }

    /// Start the next attempt, after its back-off; `false` when none is
    /// left.
    pub async fn next(&mut self) -> bool {
        if self.started > self.config.retry.max_retries {
            return false;
        }
        if self.started > 0 {
            metrics::counter!(m::RETRIES, "route" => self.route.label()).increment(1);
            tokio::time::sleep(backoff(&self.config.retry, self.started)).await;
        }
        self.started += 1;
        true
    }

    /// Workers that failed this request: not candidates any more.
    pub fn excluded(&self) -> &[WorkerId] {
        &self.excluded
    }

    /// Whether `status` fails this attempt (worth another worker's try,
    /// and one is left) rather than being the client's answer.
    pub fn retries(&self, status: u16) -> bool {
        self.started <= self.config.retry.max_retries && RETRYABLE.contains(&status)
    }

    /// This attempt failed on `worker`: its breaker learns, and either the
    /// request ends now (`Some`: the request's time is up) or the next
    /// attempt goes without that worker.
    pub async fn failed(
        &mut self,
        worker: Arc<Worker>,
        failure: Failure,
    ) -> Option<Result<Response, ApiError>> {
        let attempt = self.started;
        let request_id = self.request_id;
        let role = match worker.role {
            Role::Regular => "regular",
            Role::Prefill => "prefill",
            Role::Decode => "decode",
        };
        let name = worker.name();
        self.excluded.push(worker.id);
        match failure {
            Failure::Timeout => {
                worker.breaker.record(false, Instant::now());
                tracing::warn!(worker = %name, request_id, role, attempt, "no response headers in time");
                // Without --attempt-timeout-secs the worker may still be
                // working on it and the request's time is up: no retry.
                if self.config.attempt_timeout.is_none() || attempt > self.config.retry.max_retries
                {
                    return Some(Err(ApiError::UpstreamTimeout));
                }
                self.last = Err(ApiError::UpstreamTimeout);
            }
            Failure::Unreachable(cause) => {
                worker.breaker.record(false, Instant::now());
                tracing::warn!(worker = %name, request_id, role, attempt, "worker unreachable: {cause}");
                // Clients learn what failed, not the fleet's addresses.
                self.last = Err(ApiError::UpstreamConnect(format!(
                    "{role} worker, attempt {attempt}: {cause}"
                )));
            }
            Failure::Status(response) => {
                let status = response.status();
                worker
                    .breaker
                    .record(!status.is_server_error(), Instant::now());
                tracing::warn!(worker = %name, request_id, role, attempt, %status, "retrying on another worker");
                self.last = Ok(response.relay().await);
            }
        }
        None
    }

    /// No attempt is left, or no candidate: the last failure.
    pub fn exhausted(self) -> Result<Response, ApiError> {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let retry = RetryConfig {
            max_retries: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(250),
            multiplier: 2.0,
            jitter: 0.0,
        };
        let waits: Vec<_> = (1..=3).map(|a| backoff(&retry, a).as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 250]);
    }
}
