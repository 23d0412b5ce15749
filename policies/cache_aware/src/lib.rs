//! Cache-aware routing, as the SGLang router does it.
//!
//! The policy keeps an approximate picture of every worker's KV cache: a
//! character-level radix tree ([`tree::Tree`]) of the texts it sent where.
//! For each request:
//!
//! 1. If the load is imbalanced (`max - min > balance_abs_threshold` and
//!    `max > min * balance_rel_threshold`, over the candidates' in-flight
//!    counts), the least-loaded candidate wins.
//! 2. Otherwise the candidate holding the longest prefix of the text wins, if
//!    that prefix is more than `cache_threshold` of the text.
//! 3. Otherwise the least-loaded candidate wins; ties go to the one with the
//!    smallest tree (the most room), then the smallest id.
//!
//! The text is then inserted under the chosen worker. Every
//! `eviction_interval_secs` the router's `tick` trims each worker's share of
//! the tree to `max_tree_size` characters, least recently used leaves first.
//! The tree survives hot reloads through `snapshot`/`restore`.
#![deny(missing_docs)]

pub mod tree;

use std::collections::HashSet;

use serde::Deserialize;
use wasm_router_policy::{Candidate, Policy, PolicyInfo, Request, WorkerInfo, export_policy};

use tree::Tree;

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

/// The cache-aware policy: a [`Config`] and the shared [`Tree`].
#[derive(Debug, Clone)]
pub struct CacheAware {
    config: Config,
    tree: Tree,
}

impl CacheAware {
    /// A policy with an empty tree.
    pub fn new(config: Config) -> Self {
        CacheAware {
            config,
            tree: Tree::default(),
        }
    }

    /// The tree, for inspection in tests and benchmarks.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    fn is_imbalanced(&self, candidates: &[Candidate]) -> bool {
        let max = candidates.iter().map(|c| c.load).max().unwrap_or(0);
        let min = candidates.iter().map(|c| c.load).min().unwrap_or(0);
        max - min > self.config.balance_abs_threshold
            && f64::from(max) > f64::from(min) * self.config.balance_rel_threshold
    }

    /// Least load, then smallest tree, then smallest id.
    fn least_loaded(&self, candidates: &[Candidate]) -> u32 {
        candidates
            .iter()
            .min_by_key(|c| (c.load, self.tree.size(c.id), c.id))
            .map(|c| c.id)
            .expect("candidates are not empty")
    }

    /// The decision, without recording it in the tree.
    fn choose(&self, text: &str, candidates: &[Candidate]) -> u32 {
        if self.is_imbalanced(candidates) {
            return self.least_loaded(candidates);
        }
        let mut allowed: Vec<u32> = candidates.iter().map(|c| c.id).collect();
        allowed.sort_unstable();
        let found = self.tree.prefix_match(text, &allowed);
        let total = text.chars().count() as f64;
        match found.tenant {
            Some(worker)
                if total > 0.0
                    && found.matched_chars as f64 / total > self.config.cache_threshold =>
            {
                worker
            }
            _ => self.least_loaded(candidates),
        }
    }
}

impl Policy for CacheAware {
    fn init(config: &str) -> Result<(Self, PolicyInfo), String> {
        let config = Config::from_json(config)?;
        let info = PolicyInfo {
            needs_text: true,
            tick_interval_ms: u32::try_from(config.eviction_interval_secs.saturating_mul(1000))
                .unwrap_or(u32::MAX),
            ..PolicyInfo::new("cache_aware")
        };
        Ok((CacheAware::new(config), info))
    }

    fn select(&mut self, req: &Request<'_>, candidates: &[Candidate]) -> Result<u32, String> {
        if candidates.is_empty() {
            return Err("no candidates".into());
        }
        let worker = self.choose(req.text(), candidates);
        if !req.text().is_empty() {
            self.tree.insert(req.text(), worker);
        }
        Ok(worker)
    }

    fn workers_changed(&mut self, workers: Vec<WorkerInfo>) {
        let live: HashSet<u32> = workers.iter().map(|w| w.id).collect();
        let gone: Vec<u32> = self.tree.tenants().filter(|t| !live.contains(t)).collect();
        for tenant in gone {
            self.tree.remove_tenant(tenant);
        }
    }

    fn tick(&mut self, _now_ms: u64) {
        self.tree.evict(self.config.max_tree_size);
    }

    fn snapshot(&self) -> Vec<u8> {
        self.tree.encode()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.tree = Tree::decode(state)?;
        Ok(())
    }
}

export_policy!(CacheAware);

#[cfg(test)]
mod tests;
