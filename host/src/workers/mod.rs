//! The worker registry: who the workers are, what model each serves, whether
//! each is healthy, what its breaker says, and how many requests it has in
//! flight. The list lives behind an `ArcSwap`: the request path reads it
//! without a lock; additions and removals build a new list and swap it.

pub mod breaker;
pub mod health;
pub mod load;

pub use breaker::{Breaker, BreakerState};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::errors::ApiError;
use crate::policy::{Candidate, Role, WorkerId, WorkerInfo};
use breaker::BreakerConfig;

/// What a worker is registered as: where it is and what part it plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    /// Base URL, validated, without a trailing slash.
    pub url: String,
    /// Regular, or one half of a prefill/decode pair.
    pub role: Role,
    /// Prefill workers: the port of their KV bootstrap server, sent to the
    /// decode worker as `bootstrap_port` (`None`: the worker's default).
    pub bootstrap_port: Option<u16>,
    /// `--dp-aware`: the data-parallel rank this entry stands for; requests
    /// routed to it carry `data_parallel_rank`.
    pub dp_rank: Option<u32>,
}

impl WorkerSpec {
    /// A regular worker, one entry for the whole server.
    pub fn regular(url: &str) -> Self {
        WorkerSpec {
            url: url.to_string(),
            role: Role::Regular,
            bootstrap_port: None,
            dp_rank: None,
        }
    }

    /// The same worker at data-parallel rank `rank`.
    pub fn at_rank(&self, rank: u32) -> Self {
        WorkerSpec {
            dp_rank: Some(rank),
            ..self.clone()
        }
    }

    /// How logs and metrics name it: its URL, with `@RANK` for a
    /// data-parallel rank.
    pub fn name(&self) -> String {
        name(&self.url, self.dp_rank)
    }
}

/// How logs and metrics name a worker: its URL, with `@RANK` for a
/// data-parallel rank.
fn name(url: &str, dp_rank: Option<u32>) -> String {
    match dp_rank {
        Some(rank) => format!("{url}@{rank}"),
        None => url.to_string(),
    }
}

/// One worker.
#[derive(Debug)]
pub struct Worker {
    /// Router-assigned id, never reused.
    pub id: WorkerId,
    /// Base URL, without a trailing slash.
    pub url: String,
    /// Regular, prefill or decode.
    pub role: Role,
    /// See [`WorkerSpec::bootstrap_port`].
    pub bootstrap_port: Option<u16>,
    /// See [`WorkerSpec::dp_rank`].
    pub dp_rank: Option<u32>,
    /// Model it serves ("" until discovered, or if it will not say).
    model: ArcSwap<String>,
    /// Requests in flight from this router.
    in_flight: AtomicU32,
    /// The worker's own load from `/get_load` ([`load`]); [`NO_REPORT`]
    /// when it gave none.
    reported_load: AtomicU64,
    /// Requests it has been sent.
    processed: AtomicU64,
    healthy: AtomicBool,
    /// Its circuit breaker.
    pub breaker: Breaker,
    /// Consecutive health check results: (failures, successes).
    streak: std::sync::Mutex<(u32, u32)>,
    /// Metric handles, made once: the request path does no label lookups.
    in_flight_gauge: metrics::Gauge,
    healthy_gauge: metrics::Gauge,
}

/// [`Worker::reported_load`] when the worker reported nothing.
const NO_REPORT: u64 = u64::MAX;

/// What `GET /workers` shows of a worker.
#[derive(Debug, Serialize)]
pub struct WorkerView {
    id: WorkerId,
    url: String,
    model: String,
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    bootstrap_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dp_rank: Option<u32>,
    healthy: bool,
    circuit_breaker: &'static str,
    load: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    reported_load: Option<u32>,
    processed: u64,
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

    /// The load it reported at the last `/get_load` check, if any.
    pub fn reported_load(&self) -> Option<u32> {
        match self.reported_load.load(Ordering::Relaxed) {
            NO_REPORT => None,
            n => Some(n as u32),
        }
    }

    /// Record what the last `/get_load` check said.
    pub fn set_reported_load(&self, load: Option<u32>) {
        self.reported_load
            .store(load.map_or(NO_REPORT, u64::from), Ordering::Relaxed);
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

    /// Count a request as in flight until the guard drops.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.processed.fetch_add(1, Ordering::Relaxed);
        self.in_flight_gauge.increment(1.0);
        InFlight(self.clone())
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
        self.healthy_gauge.set(f64::from(u8::from(now)));
        (now != was).then_some(now)
    }

    /// How logs and metrics name it: its URL, with `@RANK` for a
    /// data-parallel rank.
    pub fn name(&self) -> String {
        name(&self.url, self.dp_rank)
    }

    fn view(&self) -> WorkerView {
        WorkerView {
            id: self.id,
            url: self.url.clone(),
            model: self.model().to_string(),
            role: match self.role {
                Role::Regular => "regular",
                Role::Prefill => "prefill",
                Role::Decode => "decode",
            },
            bootstrap_port: self.bootstrap_port,
            dp_rank: self.dp_rank,
            healthy: self.is_healthy(),
            circuit_breaker: match self.breaker.state() {
                BreakerState::Closed => "closed",
                BreakerState::Open => "open",
                BreakerState::HalfOpen => "half_open",
            },
            load: self.load(),
            reported_load: self.reported_load(),
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
        }
    }
}

/// Holds a worker's in-flight count up while alive.
#[derive(Debug)]
pub struct InFlight(Arc<Worker>);

impl InFlight {
    /// The worker.
    pub fn worker(&self) -> &Arc<Worker> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.in_flight_gauge.decrement(1.0);
    }
}

/// The model whose pool serves a request for `model`: `None` (every worker)
/// when the request names none or the workers serve at most one model,
/// `model` itself when some worker serves it, else a 404. One pass, no
/// allocation: it runs on every request.
fn pool_model<'m>(all: &[Arc<Worker>], model: &'m str) -> Result<Option<&'m str>, ApiError> {
    if model.is_empty() {
        return Ok(None);
    }
    let (mut first, mut several, mut served) = (None::<Arc<String>>, false, false);
    for w in all {
        let m = w.model();
        if m.is_empty() {
            continue;
        }
        served |= m.as_str() == model;
        match &first {
            None => first = Some(m),
            Some(f) => several |= f != &m,
        }
    }
    match (several, served) {
        (false, _) => Ok(None),
        (true, true) => Ok(Some(model)),
        (true, false) => Err(ApiError::ModelNotFound(model.to_string())),
    }
}

type Listener = Box<dyn Fn(&[WorkerInfo]) + Send + Sync>;

/// The set of workers. See the module docs.
pub struct Registry {
    workers: ArcSwap<Vec<Arc<Worker>>>,
    next_id: AtomicU32,
    breaker: Option<BreakerConfig>,
    /// Whether new workers count as healthy before any health check.
    trust_new_workers: bool,
    listener: std::sync::Mutex<Option<Listener>>,
    /// Serialises writers; readers never take it.
    write: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("workers", &self.workers.load().len())
            .finish()
    }
}

impl Registry {
    /// An empty registry. With health checks disabled, workers are healthy
    /// from the start; otherwise from their first passing check.
    pub fn new(breaker: Option<BreakerConfig>, trust_new_workers: bool) -> Self {
        Registry {
            workers: ArcSwap::from_pointee(Vec::new()),
            next_id: AtomicU32::new(0),
            breaker,
            trust_new_workers,
            listener: std::sync::Mutex::new(None),
            write: std::sync::Mutex::new(()),
        }
    }

    /// Call `f` with the full worker list now and after every change.
    pub fn on_change(&self, f: impl Fn(&[WorkerInfo]) + Send + Sync + 'static) {
        f(&self.infos());
        *self.listener.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(f));
    }

    /// The workers as policies see them.
    pub fn infos(&self) -> Vec<WorkerInfo> {
        self.workers.load().iter().map(|w| w.info()).collect()
    }

    fn changed(&self) {
        if let Some(f) = &*self.listener.lock().unwrap_or_else(|e| e.into_inner()) {
            f(&self.infos());
        }
    }

    /// All workers.
    pub fn all(&self) -> Arc<Vec<Arc<Worker>>> {
        self.workers.load_full()
    }

    /// Register a regular worker by URL (already validated).
    pub fn add(&self, url: &str) -> Result<Arc<Worker>, ApiError> {
        self.register(WorkerSpec::regular(url))
    }

    /// Register a worker; a URL (at a rank) is registered once.
    pub fn register(&self, spec: WorkerSpec) -> Result<Arc<Worker>, ApiError> {
        let guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.workers.load();
        if current
            .iter()
            .any(|w| w.url == spec.url && w.dp_rank == spec.dp_rank)
        {
            return Err(ApiError::WorkerExists(spec.name()));
        }
        let name = spec.name();
        let label = || name.clone();
        let healthy_gauge = metrics::gauge!(crate::metrics::WORKER_HEALTHY, "worker" => label());
        healthy_gauge.set(f64::from(u8::from(self.trust_new_workers)));
        let worker = Arc::new(Worker {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            url: spec.url,
            role: spec.role,
            bootstrap_port: spec.bootstrap_port,
            dp_rank: spec.dp_rank,
            model: ArcSwap::from_pointee(String::new()),
            in_flight: AtomicU32::new(0),
            reported_load: AtomicU64::new(NO_REPORT),
            processed: AtomicU64::new(0),
            healthy: AtomicBool::new(self.trust_new_workers),
            breaker: Breaker::new(
                self.breaker,
                metrics::gauge!(crate::metrics::WORKER_BREAKER, "worker" => label()),
            ),
            streak: std::sync::Mutex::new((0, 0)),
            in_flight_gauge: metrics::gauge!(crate::metrics::WORKER_IN_FLIGHT, "worker" => label()),
            healthy_gauge,
        });
        let mut next = current.as_ref().clone();
        next.push(worker.clone());
        self.workers.store(Arc::new(next));
        drop(guard);
        tracing::info!(worker = %name, id = worker.id, role = ?worker.role, "worker added");
        self.changed();
        Ok(worker)
    }

    /// Remove a worker; requests in flight to it finish.
    pub fn remove(&self, id: WorkerId) -> Option<Arc<Worker>> {
        let guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.workers.load();
        let removed = current.iter().find(|w| w.id == id).cloned()?;
        let next: Vec<_> = current.iter().filter(|w| w.id != id).cloned().collect();
        self.workers.store(Arc::new(next));
        drop(guard);
        tracing::info!(worker = %removed.name(), id, "worker removed");
        self.changed();
        Some(removed)
    }

    /// Tell listeners the workers changed in place (a model was discovered).
    pub fn touched(&self) {
        self.changed();
    }

    /// A worker by id.
    pub fn get(&self, id: WorkerId) -> Option<Arc<Worker>> {
        self.workers.load().iter().find(|w| w.id == id).cloned()
    }

    /// A worker by URL (its first rank, with `--dp-aware`).
    pub fn by_url(&self, url: &str) -> Option<Arc<Worker>> {
        self.workers.load().iter().find(|w| w.url == url).cloned()
    }

    /// The workers' URLs, each once (a worker has one entry per
    /// data-parallel rank with `--dp-aware`).
    pub fn urls(&self) -> Vec<String> {
        let mut urls: Vec<String> = Vec::new();
        for w in self.workers.load().iter() {
            if !urls.contains(&w.url) {
                urls.push(w.url.clone());
            }
        }
        urls
    }

    /// Every entry of a URL: one, or one per data-parallel rank.
    pub fn all_at(&self, url: &str) -> Vec<Arc<Worker>> {
        self.workers
            .load()
            .iter()
            .filter(|w| w.url == url)
            .cloned()
            .collect()
    }

    /// Views of all workers, for the admin routes.
    pub fn views(&self) -> Vec<WorkerView> {
        self.workers.load().iter().map(|w| w.view()).collect()
    }

    /// The workers of `role` that may take a request for `model`, except
    /// `excluded`: healthy, admitted by their breaker, serving the model.
    /// When workers serve different models, the request's model picks the
    /// pool (an unknown one is a 404); with a single model, any name is
    /// accepted.
    pub fn candidates(
        &self,
        model: &str,
        role: Role,
        excluded: &[WorkerId],
    ) -> Result<Vec<Arc<Worker>>, ApiError> {
        let all = self.workers.load();
        let pool = pool_model(&all, model)?;
        let now = Instant::now();
        Ok(all
            .iter()
            .filter(|w| w.role == role)
            .filter(|w| pool.is_none_or(|m| w.model().as_str() == m))
            .filter(|w| !excluded.contains(&w.id) && w.is_healthy() && w.breaker.admits(now))
            .cloned()
            .collect())
    }

    /// The candidates as the policy sees them.
    pub fn as_candidates(workers: &[Arc<Worker>]) -> Vec<Candidate> {
        workers
            .iter()
            .map(|w| Candidate {
                id: w.id,
                load: w.routing_load(),
            })
            .collect()
    }

    /// The healthy worker with the lowest load.
    pub fn least_loaded(&self) -> Option<Arc<Worker>> {
        self.workers
            .load()
            .iter()
            .filter(|w| w.is_healthy())
            .min_by_key(|w| w.routing_load())
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(models: &[&str]) -> Registry {
        let r = Registry::new(None, true);
        for (i, m) in models.iter().enumerate() {
            r.add(&format!("http://127.0.0.1:{}", 9000 + i))
                .unwrap()
                .set_model(m.to_string());
        }
        r
    }

    fn ids(ws: Vec<Arc<Worker>>) -> Vec<u32> {
        ws.iter().map(|w| w.id).collect()
    }

    #[test]
    fn a_single_model_fleet_accepts_any_model_name() {
        let r = registry(&["llama", "llama"]);
        assert_eq!(
            ids(r.candidates("gpt-4", Role::Regular, &[]).unwrap()),
            vec![0, 1]
        );
        assert_eq!(ids(r.candidates("", Role::Regular, &[1]).unwrap()), vec![0]);
    }

    #[test]
    fn several_models_pick_the_pool_and_unknown_is_404() {
        let r = registry(&["llama", "qwen", "llama"]);
        assert_eq!(
            ids(r.candidates("llama", Role::Regular, &[]).unwrap()),
            vec![0, 2]
        );
        assert_eq!(
            ids(r.candidates("qwen", Role::Regular, &[]).unwrap()),
            vec![1]
        );
        assert_eq!(
            r.candidates("mistral", Role::Regular, &[]).unwrap_err(),
            ApiError::ModelNotFound("mistral".into())
        );
    }

    #[test]
    fn duplicates_are_refused_and_ids_are_not_reused() {
        let r = registry(&["m"]);
        assert!(matches!(
            r.add("http://127.0.0.1:9000"),
            Err(ApiError::WorkerExists(_))
        ));
        r.remove(0).unwrap();
        assert_eq!(r.add("http://127.0.0.1:9000").unwrap().id, 1);
    }

    #[test]
    fn health_flips_after_the_thresholds() {
        let r = registry(&["m"]);
        let w = r.get(0).unwrap();
        assert_eq!(w.record_health(false, 2, 2), None);
        assert_eq!(w.record_health(false, 2, 2), Some(false));
        assert!(r.candidates("", Role::Regular, &[]).unwrap().is_empty());
        assert_eq!(w.record_health(true, 2, 2), None);
        assert_eq!(w.record_health(true, 2, 2), Some(true));
    }
}
