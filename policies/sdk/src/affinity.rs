//! What cache-affine policies share (cache_aware and precise_cache_aware,
//! and a user's own): the load guard that overrides affinity when the
//! fleet is imbalanced ([`Balance`]), and the life of a policy that routes
//! on the router's approximate prefix index ([`Affinity`]): every routed
//! text recorded under its worker, the index kept to the live workers and
//! evicted on `tick`, ties broken the same way by every replica.

use crate::tie_break::PREFIX_BYTES;
use crate::{Candidate, Instances, PolicyInfo, Request, TieBreak, WorkerInfo, prefix_index};

/// SGLang's load guard: the fleet is imbalanced when the busiest candidate
/// has more than `abs_threshold` requests over the idlest, and more than
/// `rel_threshold` times its load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Balance {
    /// Absolute load gap above which load balancing overrides affinity.
    pub abs_threshold: u32,
    /// Relative load ratio above which load balancing overrides affinity.
    pub rel_threshold: f64,
}

impl Balance {
    /// Whether the candidates' loads are too far apart to follow the cache.
    pub fn is_imbalanced(&self, candidates: &[Candidate]) -> bool {
        let max = candidates.iter().map(|c| c.load).max().unwrap_or(0);
        let min = candidates.iter().map(|c| c.load).min().unwrap_or(0);
        max - min > self.abs_threshold && f64::from(max) > f64::from(min) * self.rel_threshold
    }
}

/// The approximate index's side of a cache-affine policy, and its ties.
#[derive(Debug, Clone, Default)]
pub struct Affinity {
    ties: TieBreak,
    max_tree_size: u64,
}

impl Affinity {
    /// Evictions trim each worker's share of the index to `max_tree_size`
    /// characters.
    pub fn new(max_tree_size: u64) -> Self {
        Affinity {
            ties: TieBreak::default(),
            max_tree_size,
        }
    }

    /// What such a policy declares: it reads the text, keeps nothing of its
    /// own (one instance per router thread) and evicts every
    /// `eviction_interval_secs`.
    pub fn info(name: &str, eviction_interval_secs: u64) -> PolicyInfo {
        PolicyInfo {
            needs_text: true,
            tick_interval_ms: u32::try_from(eviction_interval_secs.saturating_mul(1000))
                .unwrap_or(u32::MAX),
            instances: Instances::PerThread,
            ..PolicyInfo::new(name)
        }
    }

    /// The rank of candidate `id` among equals for this request: a hash of
    /// the text's start and the worker's URL ([`TieBreak`]), smaller first.
    pub fn tie_rank(&self, req: &Request<'_>) -> impl Fn(u32) -> u64 + '_ {
        let key = TieBreak::key(&req.text_prefix(PREFIX_BYTES));
        move |id| self.ties.rank(key, id)
    }

    /// Record that `req`'s text went to `worker`.
    pub fn record(&self, req: &Request<'_>, worker: u32) {
        if req.text_len() > 0 {
            prefix_index::insert_request(req, worker);
        }
    }

    /// The fleet changed: forget departed workers' texts, learn the URLs
    /// ties are broken by.
    pub fn workers_changed(&mut self, workers: &[WorkerInfo]) {
        let live: Vec<u32> = workers.iter().map(|w| w.id).collect();
        prefix_index::retain_workers(&live);
        self.ties.workers_changed(workers);
    }

    /// Trim each worker's share of the index, least recently used first.
    pub fn evict(&self) {
        prefix_index::evict(self.max_tree_size);
    }
}
