//! The worker registry. The list lives behind an `ArcSwap`: the request
//! path reads it without a lock; additions and removals build a new list
//! and swap it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;

use super::{Breaker, NO_REPORT, Worker, WorkerView};
use crate::config::{BreakerConfig, Role, WorkerSpec};
use crate::errors::ApiError;
use crate::policy::{Candidate, WorkerId, WorkerInfo};

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

    /// Call `f` with the worker list, holding change notifications back
    /// until it returns: no notification of an older list can reach a
    /// policy after what `f` handed on (the reload manager gives a new
    /// instance its workers, and swaps it in, this way).
    pub fn with_infos(&self, f: &mut dyn FnMut(&[WorkerInfo])) {
        let _notifications = self.listener.lock().unwrap_or_else(|e| e.into_inner());
        f(&self.infos());
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
        let worker = Arc::new(Worker {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            spec,
            model: ArcSwap::from_pointee(String::new()),
            discovering: AtomicBool::new(false),
            in_flight: AtomicU32::new(0),
            reported_load: AtomicU64::new(NO_REPORT),
            reported_queued: AtomicU64::new(NO_REPORT),
            reported_kv_tokens: AtomicU64::new(NO_REPORT),
            kv_capacity: AtomicU64::new(NO_REPORT),
            prefill_requests: AtomicU32::new(0),
            prefill_tokens: AtomicU64::new(0),
            ttft_ewma_us: AtomicU64::new(NO_REPORT),
            latency_ewma_us: AtomicU64::new(NO_REPORT),
            processed: AtomicU64::new(0),
            healthy: AtomicBool::new(self.trust_new_workers),
            breaker: Breaker::new(self.breaker, name.clone()),
            streak: std::sync::Mutex::new((0, 0)),
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

    /// Requests forwarded so far to the workers registered now: changes
    /// while requests flow (the load monitor reads it).
    pub fn forwarded(&self) -> u64 {
        self.workers
            .load()
            .iter()
            .map(|w| w.processed())
            .fold(0, u64::wrapping_add)
    }

    /// The workers' URLs, each once (a worker has one entry per
    /// data-parallel rank with `--dp-aware`).
    pub fn urls(&self) -> Vec<String> {
        let workers = self.workers.load();
        let mut seen = std::collections::HashSet::with_capacity(workers.len());
        workers
            .iter()
            .filter(|w| seen.insert(w.url.as_str()))
            .map(|w| w.url.clone())
            .collect()
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
                in_flight: w.load(),
                reported_load: w.reported_load(),
                queued: w.reported_queued(),
                half_open: w.breaker.is_half_open(),
                ttft_ewma: w.ttft_ewma(),
                latency_ewma: w.latency_ewma(),
                kv_tokens: w.reported_kv_tokens(),
                kv_capacity: w.kv_capacity(),
                prefill_ahead: w.prefill_ahead(),
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
    fn urls_are_each_once_in_the_order_registered() {
        let r = registry(&["m", "m"]);
        let ranked = WorkerSpec::regular("http://127.0.0.1:9100");
        for rank in 0..3 {
            r.register(ranked.at_rank(rank)).unwrap();
        }
        r.add("http://127.0.0.1:9200").unwrap();
        assert_eq!(
            r.urls(),
            [
                "http://127.0.0.1:9000",
                "http://127.0.0.1:9001",
                "http://127.0.0.1:9100",
                "http://127.0.0.1:9200"
            ]
        );
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
