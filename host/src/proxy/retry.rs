//! The one retry loop of forwarding, for regular and PD requests alike.
//!
//! An attempt picks its worker(s) and sends; it answers the client itself
//! (a success, a status not worth a retry, or any status on the last try),
//! or names the worker that failed and how. [`Retries`] records that
//! failure in the worker's breaker, logs it, waits its back-off, and the
//! next attempt goes without that worker. Retries happen only before any
//! byte went to the client: an attempt that answered is never retried.
//! When no candidate is left, the client gets the last failure, a worker's
//! own error answer included.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::Response;

use crate::config::Role;
use crate::config::{Config, RetryConfig};
use crate::errors::ApiError;
use crate::metrics as m;
use crate::policy::{Route, WorkerId};
use crate::upstream::{self, UpstreamError};
use crate::workers::Worker;

/// Worker statuses worth another worker's try.
pub(crate) const RETRYABLE: [u16; 6] = [408, 429, 500, 502, 503, 504];

/// How long a worker's error answer may take to arrive whole once its
/// headers did; an error body is small.
pub(crate) const FAILED_ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// A worker's error answer, read whole to pass on: bounded in time
/// ([`FAILED_ANSWER_WITHIN`]) and size (`upstream::MAX_RELAYED_BODY`), so a
/// worker that stalls in its error body does not hold the request.
pub(crate) async fn failed_answer(
    response: upstream::Response,
    role: Role,
) -> Result<Response, ApiError> {
    let (status, role) = (response.status(), role.label());
    let deadline = tokio::time::Instant::now() + FAILED_ANSWER_WITHIN;
    response.relay(deadline).await.map_err(|e| {
        ApiError::UpstreamConnect(format!("the {role} worker answered {status}, but {e}"))
    })
}

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

/// The retry loop's state, driven by a forwarder:
///
/// ```text
/// let mut retries = Retries::new(config, route, request_id, deadline);
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
    /// When the request's time is up: no attempt starts after it.
    deadline: tokio::time::Instant,
    /// Attempts started.
    started: u32,
    excluded: Vec<WorkerId>,
    /// What the client gets when no attempt is left.
    last: Result<Response, ApiError>,
}

impl<'a> Retries<'a> {
    /// Before the first attempt of a request.
    pub fn new(
        config: &'a Config,
        route: Route,
        request_id: &'a str,
        deadline: tokio::time::Instant,
    ) -> Self {
        Retries {
            config,
            route,
            request_id,
            deadline,
            started: 0,
            excluded: Vec::new(),
            last: Err(ApiError::NoHealthyWorker),
        }
    }

    /// Start the next attempt, after its back-off; `false` when none is
    /// left, or the request's time is up before the back-off ends.
    pub async fn next(&mut self) -> bool {
        if self.started > self.config.retry.max_retries {
            return false;
        }
        if self.started > 0 {
            metrics::counter!(m::RETRIES, "route" => self.route.label()).increment(1);
            let wait = backoff(&self.config.retry, self.started);
            if tokio::time::Instant::now() + wait >= self.deadline {
                self.last = Err(ApiError::UpstreamTimeout);
                return false;
            }
            tokio::time::sleep(wait).await;
        }
        self.started += 1;
        true
    }

    /// The attempt under way, 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.started
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
        let role = worker.role.label();
        let name = worker.name();
        self.excluded.push(worker.id);
        match failure {
            Failure::Timeout => {
                worker.breaker.record(false, Instant::now());
                tracing::warn!(worker = %name, request_id, role, attempt, "no response headers in time");
                // Without --attempt-timeout-secs the attempt had the
                // request's whole time: it is up, no retry.
                if tokio::time::Instant::now() >= self.deadline
                    || attempt > self.config.retry.max_retries
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
                self.last = failed_answer(response, worker.role).await;
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
    use crate::config::ClientTls;
    use crate::upstream::Upstream;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A worker that answers 503 with a body it does not send while the
    /// returned sender lives.
    async fn stalling_worker() -> (String, tokio::sync::oneshot::Sender<()>) {
        let (hold, release) = tokio::sync::oneshot::channel::<()>();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            // The request first (its body is empty: it ends with its head).
            let mut seen = Vec::new();
            let mut buf = [0; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            let head = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 100\r\n\r\n";
            socket.write_all(head).await.unwrap();
            // Hold the connection open, body unsent: no timer, so paused
            // time moves only for the code under test.
            let _released = release.await;
            drop(socket);
        });
        (url, hold)
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_answer_whose_body_stalls_does_not_hold_the_request() {
        let (url, _hold) = stalling_worker().await;
        let upstream = Upstream::new(&ClientTls::default(), Duration::from_secs(10)).unwrap();
        let response = upstream
            .send(
                axum::http::Method::GET,
                &format!("{url}/generate"),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        let bounded = tokio::time::timeout(
            Duration::from_secs(600),
            failed_answer(response, Role::Regular),
        );
        let answer = bounded.await.expect("the error body's wait is bounded");
        let Err(ApiError::UpstreamConnect(message)) = answer else {
            panic!("a 502 naming the stalled body, got {answer:?}");
        };
        assert!(message.contains("503"), "{message}");
    }

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
