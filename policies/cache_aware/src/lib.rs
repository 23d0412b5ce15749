//! Cache-aware routing, as the SGLang router does it.
//!
//! The router keeps, for the policy, an approximate picture of every
//! worker's KV cache: a character-level radix tree of the texts sent where
//! (the `prefix-index` import; the tree is the `prefix-tree` crate). The
//! request's text is matched and inserted there, natively; the policy sees
//! only the match. For each request:
//!
//! 1. If the load is imbalanced (`max - min > balance_abs_threshold` and
//!    `max > min * balance_rel_threshold`, over the candidates' in-flight
//!    counts), the least-loaded candidate wins.
//! 2. Otherwise the candidate holding the longest prefix of the text wins, if
//!    that prefix is more than `cache_threshold` of the text.
//! 3. Otherwise the least-loaded candidate wins; ties go to the one with the
//!    smallest tree (the most room), then by [`TieBreak`]: a hash of the
//!    text's start and each worker's URL. (SGLang leaves equal trees in a
//!    hash map's order; "the smallest id" would send every replica's new
//!    prompts to the same first workers.)
//!
//! The text is then inserted under the chosen worker. Every
//! `eviction_interval_secs` the router's `tick` trims each worker's share of
//! the tree to `max_tree_size` characters, least recently used leaves first.
//!
//! The policy keeps nothing of its own between calls but the fleet's URLs,
//! which every instance is told, so it runs one instance per router
//! thread; the tree is in the router, shared by them all, and survives hot
//! reloads and faults as it is.
#![deny(missing_docs)]

use serde::Deserialize;
use wasm_router_policy::affinity::{Affinity, Balance};
use wasm_router_policy::{
    Candidate, Candidates, Policy, PolicyInfo, Request, WorkerInfo, export_policy, prefix_index,
};

/// Settings, with the SGLang router's names and defaults. Keys the policy
/// does not know are ignored: the router passes all its routing flags.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Minimum share of the text that must match to follow the cache (0..=1).
    pub cache_threshold: f64,
    /// Absolute load gap above which load balancing overrides affinity.
    pub balance_abs_threshold: u32,
    /// Relative load ratio above which load balancing overrides affinity.
    pub balance_rel_threshold: f64,
    /// Seconds between evictions.
    pub eviction_interval_secs: u64,
    /// Characters of the tree each worker may hold after an eviction.
    pub max_tree_size: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cache_threshold: 0.3,
            balance_abs_threshold: 64,
            balance_rel_threshold: 1.5,
            eviction_interval_secs: 60,
            max_tree_size: 1 << 26,
        }
    }
}

impl Config {
    /// Parse and check the JSON config the router passes to `init`.
    pub fn from_json(json: &str) -> Result<Config, String> {
        let config: Config =
            serde_json::from_str(json).map_err(|e| format!("cache_aware: invalid config: {e}"))?;
        if !(0.0..=1.0).contains(&config.cache_threshold) {
            return Err(format!(
                "cache_aware: cache_threshold must be between 0 and 1, got {}",
                config.cache_threshold
            ));
        }
        if config.balance_rel_threshold.is_nan() || config.balance_rel_threshold < 0.0 {
            return Err("cache_aware: balance_rel_threshold must be 0 or more".into());
        }
        if config.eviction_interval_secs == 0 || config.max_tree_size == 0 {
            return Err(
                "cache_aware: eviction_interval_secs and max_tree_size must be above 0".into(),
            );
        }
        Ok(config)
    }
}

/// The cache-aware policy: a [`Config`]; the tree is the router's, and
/// its upkeep and the ties are the SDK's [`Affinity`].
#[derive(Debug, Clone)]
pub struct CacheAware {
    config: Config,
    balance: Balance,
    affinity: Affinity,
}

impl CacheAware {
    /// The policy with `config`.
    pub fn new(config: Config) -> Self {
        CacheAware {
            balance: Balance {
                abs_threshold: config.balance_abs_threshold,
                rel_threshold: config.balance_rel_threshold,
            },
            affinity: Affinity::new(config.max_tree_size),
            config,
        }
    }

    /// Least load, then smallest tree, then the tie-break rank.
    fn least_loaded(&self, req: &Request<'_>, candidates: &[Candidate]) -> u32 {
        let ids: Vec<u32> = candidates.iter().map(|c| c.id).collect();
        let sizes = prefix_index::sizes(&ids);
        let rank = self.affinity.tie_rank(req);
        candidates
            .iter()
            .zip(sizes)
            .min_by_key(|(c, size)| (c.load, *size, rank(c.id)))
            .map(|(c, _)| c.id)
            .expect("candidates are not empty")
    }

    /// The decision, without recording it in the tree.
    fn choose(&self, req: &Request<'_>, candidates: &[Candidate]) -> u32 {
        if self.balance.is_imbalanced(candidates) {
            return self.least_loaded(req, candidates);
        }
        let ids: Vec<u32> = candidates.iter().map(|c| c.id).collect();
        let found = prefix_index::match_request(req, &ids);
        let total = found.text_chars as f64;
        match found.worker {
            Some(worker)
                if total > 0.0
                    && found.matched_chars as f64 / total > self.config.cache_threshold =>
            {
                worker
            }
            _ => self.least_loaded(req, candidates),
        }
    }
}

impl Policy for CacheAware {
    fn init(config: &str) -> Result<(Self, PolicyInfo), String> {
        let config = Config::from_json(config)?;
        let info = Affinity::info("cache_aware", config.eviction_interval_secs);
        Ok((CacheAware::new(config), info))
    }

    fn select(&mut self, req: &Request<'_>, candidates: &Candidates<'_>) -> Result<u32, String> {
        if candidates.is_empty() {
            return Err("no candidates".into());
        }
        let worker = self.choose(req, candidates);
        self.affinity.record(req, worker);
        Ok(worker)
    }

    fn workers_changed(&mut self, workers: Vec<WorkerInfo>) {
        self.affinity.workers_changed(&workers);
    }

    fn tick(&mut self, _now_ms: u64) {
        self.affinity.evict();
    }
}

export_policy!(CacheAware);

#[cfg(test)]
mod tests;
