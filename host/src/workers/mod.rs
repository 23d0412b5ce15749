//! The workers: who each is, what model it serves, whether it is healthy,
//! what its breaker says, and how many requests it has in flight
//! ([`Worker`]); the [`Registry`] of them all; health checks ([`health`])
//! and the load monitor ([`load`]).

pub mod breaker;
pub mod health;
pub mod load;
mod registry;

pub use breaker::{Breaker, BreakerState};
pub use registry::Registry;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::config::{Labels, Source, WorkerSpec};
use crate::policy::{PrefillWork, WorkerId, WorkerInfo};

/// The `/get_server_info` of the worker at `url`, read as `T`; `None` as
/// for [`get_json`].
pub async fn server_info<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Option<T> {
    get_json(client, url, "/get_server_info", timeout).await
}

/// `GET {url}{path}` of a worker, read as `T`; `None` when it does not
/// answer within `timeout`, answers with an error status, or with
/// something else.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    path: &str,
    timeout: Duration,
) -> Option<T> {
    client
        .get(format!("{url}{path}"))
        .timeout(timeout)
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .json()
        .await
        .ok()
}

/// One worker.
#[derive(Debug)]
pub struct Worker {
    /// Router-assigned id, never reused.
    pub id: WorkerId,
    /// What it is registered as: URL, role, rank, weight, labels. The
    /// worker derefs to it (`worker.url`).
    pub spec: WorkerSpec,
    /// Model it serves ("" until discovered, or if it will not say).
    model: ArcSwap<String>,
    /// A task is asking it for its model ([`health::learn_model`]).
    discovering: AtomicBool,
    /// Requests in flight from this router.
    in_flight: AtomicU32,
    /// Of those, the ones whose answer has not begun (no body byte yet),
    /// and their prompt tokens that it must compute, as estimated at
    /// routing ([`InFlight::expect_prefill`]).
    prefill_requests: AtomicU32,
    prefill_tokens: AtomicU64,
    /// The worker's own load from `/get_load` ([`load`]); [`NO_REPORT`]
    /// when it gave none.
    reported_load: AtomicU64,
    /// Of that load, the requests waiting in its queue; [`NO_REPORT`] when
    /// it does not say.
    reported_queued: AtomicU64,
    /// The tokens its requests hold in its KV cache (SGLang `num_tokens`);
    /// [`NO_REPORT`] when it does not say.
    reported_kv_tokens: AtomicU64,
    /// How many tokens its KV cache holds (`max_total_num_tokens` of its
    /// `/get_server_info`, times its `dp_size` for an entry that stands for
    /// all its ranks); [`NO_REPORT`] until learned ([`load`]).
    kv_capacity: AtomicU64,
    /// Moving averages of its successful responses' time to first byte and
    /// to the end, in µs, as this router saw them ([`InFlight::served`]);
    /// [`NO_REPORT`] before the first.
    ttft_ewma_us: AtomicU64,
    latency_ewma_us: AtomicU64,
    /// Requests it has been sent.
    processed: AtomicU64,
    healthy: AtomicBool,
    /// Its circuit breaker.
    pub breaker: Breaker,
    /// Consecutive health check results: (failures, successes).
    streak: std::sync::Mutex<(u32, u32)>,
}

impl std::ops::Deref for Worker {
    type Target = WorkerSpec;

    fn deref(&self) -> &WorkerSpec {
        &self.spec
    }
}

/// [`Worker::reported_load`] when the worker reported nothing.
const NO_REPORT: u64 = u64::MAX;

fn read_report(cell: &AtomicU64) -> Option<u32> {
    match cell.load(Ordering::Relaxed) {
        NO_REPORT => None,
        n => Some(n as u32),
    }
}

/// What `GET /workers` shows of a worker: our fields, and beside them
/// sglang-router 0.3.2's names for the same things (`model_id`,
/// `worker_type`, `is_healthy`), which its clients read.
#[derive(Debug, Serialize)]
pub struct WorkerView {
    /// A string, as sglang-router gives it: clients test `if worker_id:`,
    /// which a numeric 0 fails.
    #[serde(serialize_with = "as_string")]
    id: WorkerId,
    url: String,
    model: String,
    model_id: String,
    role: &'static str,
    worker_type: &'static str,
    is_healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    bootstrap_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dp_rank: Option<u32>,
    weight: u32,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    labels: Labels,
    /// Where it came from ([`crate::config::Source::label`]).
    source: &'static str,
    /// Its pod (`namespace/name`), when discovered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<String>,
    healthy: bool,
    circuit_breaker: &'static str,
    load: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    reported_load: Option<u32>,
    /// [`Worker::prefill_ahead`].
    prefill_ahead: PrefillWork,
    processed: u64,
}

/// A worker id as the admin API shows it: a string.
fn as_string<S: serde::Serializer>(id: &WorkerId, out: S) -> Result<S::Ok, S::Error> {
    out.collect_str(id)
}

impl WorkerView {
    /// The worker's id.
    pub fn id(&self) -> WorkerId {
        self.id
    }
}

impl Worker {
    /// Requests in flight.
    pub fn load(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The prefill this router sent it whose answer has not begun: what is
    /// ahead of a new request there, as far as this router knows.
    pub fn prefill_ahead(&self) -> PrefillWork {
        PrefillWork {
            requests: self.prefill_requests.load(Ordering::Relaxed),
            tokens: u32::try_from(self.prefill_tokens.load(Ordering::Relaxed)).unwrap_or(u32::MAX),
        }
    }

    /// The load it reported at the last `/get_load` check, if any.
    pub fn reported_load(&self) -> Option<u32> {
        read_report(&self.reported_load)
    }

    /// Of [`Worker::reported_load`], the requests waiting in its queue,
    /// when it said.
    pub fn reported_queued(&self) -> Option<u32> {
        read_report(&self.reported_queued)
    }

    /// This router's moving average of the worker's time to first byte,
    /// over its successful responses; `None` before the first.
    pub fn ttft_ewma(&self) -> Option<Duration> {
        micros(&self.ttft_ewma_us)
    }

    /// The same for the time to a response's end.
    pub fn latency_ewma(&self) -> Option<Duration> {
        micros(&self.latency_ewma_us)
    }

    /// Record what the last `/get_load` check said (`None`: nothing).
    pub fn set_reported(&self, report: Option<load::Report>) {
        let store = |cell: &AtomicU64, n: Option<u32>| {
            cell.store(n.map_or(NO_REPORT, u64::from), Ordering::Relaxed)
        };
        store(&self.reported_load, report.map(|r| r.load));
        store(&self.reported_queued, report.and_then(|r| r.queued));
        store(&self.reported_kv_tokens, report.and_then(|r| r.kv_tokens));
    }

    /// The tokens its requests hold in its KV cache at its last
    /// `/get_load`, when it says (SGLang's `num_tokens`).
    pub fn reported_kv_tokens(&self) -> Option<u32> {
        read_report(&self.reported_kv_tokens)
    }

    /// How many tokens its KV cache holds, once learned.
    pub fn kv_capacity(&self) -> Option<u32> {
        read_report(&self.kv_capacity)
    }

    /// Record its KV cache's size in tokens ([`load`] learns it once).
    pub fn set_kv_capacity(&self, tokens: u32) {
        self.kv_capacity.store(u64::from(tokens), Ordering::Relaxed);
    }

    /// The load policies see: requests in flight from this router, or the
    /// worker's own report when that is higher.
    pub fn routing_load(&self) -> u32 {
        self.load().max(self.reported_load().unwrap_or(0))
    }

    /// Whether health checks pass (always, with them disabled).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// The model served, "" if unknown.
    pub fn model(&self) -> Arc<String> {
        self.model.load_full()
    }

    /// Set the model (after discovery).
    pub fn set_model(&self, model: String) {
        self.model.store(Arc::new(model));
    }

    /// Requests ever forwarded to it by this router.
    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }

    /// Count a request as in flight until the guard drops.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.processed.fetch_add(1, Ordering::Relaxed);
        InFlight {
            worker: self.clone(),
            sent: Instant::now(),
            prefill: None,
        }
    }

    /// Record one health check result; returns the new health if it flipped.
    pub fn record_health(
        &self,
        ok: bool,
        failure_threshold: u32,
        success_threshold: u32,
    ) -> Option<bool> {
        let mut streak = self.streak.lock().unwrap_or_else(|e| e.into_inner());
        *streak = if ok {
            (0, streak.1 + 1)
        } else {
            (streak.0 + 1, 0)
        };
        let was = self.is_healthy();
        let now = if ok && streak.1 >= success_threshold {
            true
        } else if !ok && streak.0 >= failure_threshold {
            false
        } else {
            was
        };
        self.healthy.store(now, Ordering::Relaxed);
        (now != was).then_some(now)
    }

    fn view(&self) -> WorkerView {
        let model = self.model().to_string();
        WorkerView {
            id: self.id,
            url: self.url.clone(),
            model_id: model.clone(),
            model,
            role: self.role.label(),
            worker_type: self.role.label(),
            is_healthy: self.is_healthy(),
            bootstrap_port: self.bootstrap_port,
            dp_rank: self.dp_rank,
            weight: self.weight,
            labels: Labels::clone(&self.labels),
            source: self.source.label(),
            pod: match &self.source {
                Source::Pod(pod) => Some(pod.clone()),
                _ => None,
            },
            healthy: self.is_healthy(),
            circuit_breaker: match self.breaker.state() {
                BreakerState::Closed => "closed",
                BreakerState::Open => "open",
                BreakerState::HalfOpen => "half_open",
            },
            load: self.load(),
            reported_load: self.reported_load(),
            prefill_ahead: self.prefill_ahead(),
            processed: self.processed.load(Ordering::Relaxed),
        }
    }

    fn info(&self) -> WorkerInfo {
        WorkerInfo {
            id: self.id,
            url: self.url.clone(),
            model: self.model().to_string(),
            role: self.role,
            dp_rank: self.dp_rank,
            weight: self.weight,
            labels: self.labels.clone(),
        }
    }
}

/// Weight of a new sample in the moving averages: 1/8, as TCP's smoothed
/// round-trip time, so one slow response moves them an eighth of the way.
const EWMA_SHIFT: u32 = 3;

/// Fold `sample` into the moving average in `cell` (lock-free: a response
/// ends on whichever thread served it).
fn fold(cell: &AtomicU64, sample: Duration) {
    let sample = u64::try_from(sample.as_micros()).unwrap_or(NO_REPORT - 1);
    let mut old = cell.load(Ordering::Relaxed);
    loop {
        let new = match old {
            NO_REPORT => sample,
            old => old - (old >> EWMA_SHIFT) + (sample >> EWMA_SHIFT),
        };
        match cell.compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(now) => old = now,
        }
    }
}

fn micros(cell: &AtomicU64) -> Option<Duration> {
    match cell.load(Ordering::Relaxed) {
        NO_REPORT => None,
        us => Some(Duration::from_micros(us)),
    }
}

/// Holds a worker's in-flight count up while alive, and knows when the
/// request was sent.
#[derive(Debug)]
pub struct InFlight {
    worker: Arc<Worker>,
    sent: Instant,
    /// The prompt tokens counted in the worker's prefill ahead until the
    /// answer begins; `None` when not counted (or no more).
    prefill: Option<u32>,
}

impl InFlight {
    /// The worker.
    pub fn worker(&self) -> &Arc<Worker> {
        &self.worker
    }

    /// Count the request in the worker's [`Worker::prefill_ahead`], with
    /// `tokens` of its prompt to compute, until its answer begins
    /// ([`InFlight::answer_began`]) or it ends. A response that is not
    /// streamed begins at its end: its prefill counts until then.
    pub fn expect_prefill(&mut self, tokens: u32) {
        if self.prefill.is_none() {
            self.worker.prefill_requests.fetch_add(1, Ordering::Relaxed);
            self.worker
                .prefill_tokens
                .fetch_add(u64::from(tokens), Ordering::Relaxed);
            self.prefill = Some(tokens);
        }
    }

    /// The answer's first body byte arrived: the request is past its
    /// prefill.
    pub fn answer_began(&mut self) {
        if let Some(tokens) = self.prefill.take() {
            self.worker.prefill_requests.fetch_sub(1, Ordering::Relaxed);
            self.worker
                .prefill_tokens
                .fetch_sub(u64::from(tokens), Ordering::Relaxed);
        }
    }

    /// The worker served the request successfully, its first byte at
    /// `first_byte` (none: an empty body): fold the times into its moving
    /// averages.
    pub fn served(&self, first_byte: Option<Instant>) {
        let now = Instant::now();
        fold(
            &self.worker.ttft_ewma_us,
            first_byte
                .unwrap_or(now)
                .saturating_duration_since(self.sent),
        );
        fold(
            &self.worker.latency_ewma_us,
            now.saturating_duration_since(self.sent),
        );
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.answer_began();
        self.worker.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefill_counts_ahead_until_the_answer_begins_or_the_request_ends() {
        let registry = Registry::new(None, true);
        let worker = registry.add("http://127.0.0.1:9000").unwrap();
        let work = |w: &Worker| (w.prefill_ahead().requests, w.prefill_ahead().tokens);
        let mut first = worker.start_request();
        first.expect_prefill(300);
        let mut second = worker.start_request();
        second.expect_prefill(50);
        // Counted once, however often it is said.
        second.expect_prefill(50);
        assert_eq!(work(&worker), (2, 350));
        first.answer_began();
        first.answer_began();
        assert_eq!(work(&worker), (1, 50));
        assert_eq!(worker.load(), 2);
        // A request that ends (or fails) before its answer begins.
        drop(second);
        assert_eq!(work(&worker), (0, 0));
        drop(first);
        assert_eq!((work(&worker), worker.load()), ((0, 0), 0));
    }

    #[test]
    fn a_moving_average_starts_at_its_first_sample_and_moves_an_eighth() {
        let cell = AtomicU64::new(NO_REPORT);
        assert_eq!(micros(&cell), None);
        fold(&cell, Duration::from_micros(800));
        assert_eq!(micros(&cell), Some(Duration::from_micros(800)));
        fold(&cell, Duration::from_micros(1600));
        assert_eq!(micros(&cell), Some(Duration::from_micros(900)));
        // A sample too long for the cell does not become "none".
        fold(&cell, Duration::MAX);
        assert!(micros(&cell).is_some());
    }
}
