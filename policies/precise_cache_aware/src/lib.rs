//! Precise cache-aware routing: what each worker holds in its KV cache, as
//! its own KV cache events say (the router's `prefix-index.match-kv`), not
//! what this router happened to send it. So several router replicas, each
//! following every worker's events, agree.
//!
//! For each request:
//!
//! 1. If the load is imbalanced (cache_aware's rule and thresholds:
//!    `max - min > balance_abs_threshold` and `max > min *
//!    balance_rel_threshold`), the least-loaded candidate wins.
//! 2. Otherwise each candidate gets a cost: the time to first token it
//!    predicts, in tokens of prefill (a GPU computes prompt tokens at one
//!    rate, so the time is the tokens to compute before and for this
//!    request). That is the prompt tokens it would have to compute (those
//!    not in its GPU cache; tokens it holds in host memory count
//!    `cpu_cost`, on disk `disk_cost`) plus `load_weight` times the
//!    prefill ahead of the request there: what this router sent it whose
//!    answer has not begun (`prefill-ahead`, its uncached tokens), and the
//!    requests the worker itself reports waiting beyond those (other
//!    replicas' requests: `queued`), each taken at the mean prefill of
//!    this router's own requests waiting anywhere (replicas behind one
//!    balancer see the same traffic). The cheapest wins.
//!
//! Ties (a new prompt over equally loaded workers, most often) go to the
//! worker with the smallest share of the approximate index below (as
//! cache_aware's "most room": new prompts spread over the workers as
//! prompts, not only as the requests in flight at that moment), then by
//! [`TieBreak`]: a hash of the prompt's start and each worker's URL, so
//! every replica sends the same new prompt to the same worker.
//!
//! What this router sent where (the approximate index, `match-request`;
//! every routed text goes in) counts too, as the larger of the two: a
//! worker's events arrive after its prefill, and a burst of one prompt
//! must not spread over the fleet meanwhile. For a worker whose events the
//! router does not follow it is all there is, so mixed fleets work.
//! Without a tokenizer the router gives no tokens, and the policy picks the
//! least loaded.
//!
//! The policy keeps nothing of its own between calls but the fleet's URLs,
//! which every instance is told: one instance per router thread.
#![deny(missing_docs)]

use serde::Deserialize;
use wasm_router_policy::affinity::{Affinity, Balance};
use wasm_router_policy::{
    Candidate, Candidates, Policy, PolicyInfo, Request, WorkerInfo, export_policy, prefix_index,
};

/// Settings. cache_aware's names where they mean the same; keys the policy
/// does not know are ignored (the router passes all its routing flags).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Absolute load gap above which load balancing overrides the cache.
    pub balance_abs_threshold: u32,
    /// Relative load ratio above which load balancing overrides the cache.
    pub balance_rel_threshold: f64,
    /// Weight of the prefill ahead of the request at a worker against its
    /// own uncached prefill. 1 would predict the request's own time to
    /// first token; below 1 (0.3) also counts what a miss costs the
    /// requests after it: moving off the worker that holds a prompt to
    /// save a little wait spreads the prompt's group, and each copy is a
    /// prefill more (BENCHMARKS.md, issue 31).
    pub load_weight: f64,
    /// Cost of a token held in host memory, against computing it (1).
    pub cpu_cost: f64,
    /// Cost of a token held on disk, against computing it (1).
    pub disk_cost: f64,
    /// Seconds between evictions of the approximate index.
    pub eviction_interval_secs: u64,
    /// Characters of the approximate index each worker may hold.
    pub max_tree_size: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            balance_abs_threshold: 64,
            balance_rel_threshold: 1.5,
            load_weight: 0.3,
            cpu_cost: 0.2,
            disk_cost: 0.5,
            eviction_interval_secs: 60,
            max_tree_size: 1 << 26,
        }
    }
}

impl Config {
    /// Parse and check the JSON config the router passes to `init`.
    pub fn from_json(json: &str) -> Result<Config, String> {
        let config: Config = serde_json::from_str(json)
            .map_err(|e| format!("precise_cache_aware: invalid config: {e}"))?;
        let weights = [
            ("load_weight", config.load_weight),
            ("cpu_cost", config.cpu_cost),
            ("disk_cost", config.disk_cost),
            ("balance_rel_threshold", config.balance_rel_threshold),
        ];
        for (name, value) in weights {
            if !(value >= 0.0 && value.is_finite()) {
                return Err(format!(
                    "precise_cache_aware: {name} must be a number of 0 or more, got {value}"
                ));
            }
        }
        if config.eviction_interval_secs == 0 || config.max_tree_size == 0 {
            return Err(
                "precise_cache_aware: eviction_interval_secs and max_tree_size must be above 0"
                    .into(),
            );
        }
        Ok(config)
    }
}

/// The policy: a [`Config`]; both indexes are the router's, and the
/// approximate one's upkeep and the ties are the SDK's [`Affinity`].
#[derive(Debug, Clone)]
pub struct PreciseCacheAware {
    config: Config,
    balance: Balance,
    affinity: Affinity,
}

impl PreciseCacheAware {
    /// The policy with `config`.
    pub fn new(config: Config) -> Self {
        PreciseCacheAware {
            balance: Balance {
                abs_threshold: config.balance_abs_threshold,
                rel_threshold: config.balance_rel_threshold,
            },
            affinity: Affinity::new(config.max_tree_size),
            config,
        }
    }

    /// Tokens of prefill `matched` leaves to compute, of `prompt` tokens.
    fn uncached(&self, prompt: u32, matched: prefix_index::KvMatch) -> f64 {
        let gpu = f64::from(matched.gpu.min(prompt));
        let cpu = f64::from(matched.cpu.min(prompt)) - gpu;
        let disk = f64::from(matched.disk.min(prompt)) - gpu - cpu;
        f64::from(prompt) - gpu - cpu - disk
            + cpu * self.config.cpu_cost
            + disk * self.config.disk_cost
    }

    /// The decision, without recording it in the approximate index.
    fn choose(&self, req: &Request<'_>, candidates: &Candidates<'_>) -> u32 {
        let rank = self.affinity.tie_rank(req);
        let ids: Vec<u32> = candidates.iter().map(|c| c.id).collect();
        // Ties: the smaller share of what this router sent (cache_aware's
        // "most room"), so new prompts spread over the workers as prompts,
        // not only as requests in flight at that moment; then the rank.
        let sizes = prefix_index::sizes(&ids);
        let tie = |i: usize| (sizes[i], rank(candidates[i].id));
        let least_loaded = || {
            let i = (0..candidates.len())
                .min_by_key(|&i| (candidates[i].load, tie(i)))
                .expect("candidates are not empty");
            candidates[i].id
        };
        if self.balance.is_imbalanced(candidates) {
            return least_loaded();
        }
        let kv = prefix_index::match_kv(req, &ids);
        let prompt = kv.prompt_tokens;
        if prompt == 0 {
            return least_loaded();
        }
        // What this router sent where, scaled to tokens (the approximate
        // index knows its best worker only): for workers without events,
        // and for requests routed so recently that their pages are not in
        // the events yet (a burst of one prompt must not spread).
        let approximate = prefix_index::match_request(req, &ids);
        let sent = |id: u32| -> u32 {
            match approximate.worker {
                Some(best) if best == id && approximate.text_chars > 0 => {
                    (f64::from(prompt) * approximate.matched_chars as f64
                        / approximate.text_chars as f64) as u32
                }
                _ => 0,
            }
        };
        // The prefill ahead of the request at each candidate, in tokens.
        let (ahead, queued) = (candidates.prefill_ahead(), candidates.queued());
        let (requests, tokens) = ahead.iter().fold((0u64, 0u64), |(r, t), a| {
            (r + u64::from(a.requests), t + u64::from(a.tokens))
        });
        let mean = if requests == 0 {
            0.0
        } else {
            tokens as f64 / requests as f64
        };
        let work_ahead = |i: usize| -> f64 {
            let own = ahead[i];
            let others = queued[i].unwrap_or(0).saturating_sub(own.requests);
            f64::from(own.tokens) + f64::from(others) * mean
        };
        let cost = |i: usize, c: &Candidate, matched: Option<prefix_index::KvMatch>| {
            let recent = sent(c.id);
            let matched = match matched {
                Some(m) => prefix_index::KvMatch {
                    gpu: m.gpu.max(recent),
                    cpu: m.cpu.max(recent),
                    disk: m.disk.max(recent),
                },
                None => prefix_index::KvMatch {
                    gpu: recent,
                    cpu: recent,
                    disk: recent,
                },
            };
            self.uncached(prompt, matched) + self.config.load_weight * work_ahead(i)
        };
        let i = candidates
            .iter()
            .zip(kv.matches)
            .enumerate()
            .map(|(i, (c, matched))| (cost(i, c, matched), tie(i), i))
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
            .expect("candidates are not empty")
            .2;
        candidates[i].id
    }
}

impl Policy for PreciseCacheAware {
    fn init(config: &str) -> Result<(Self, PolicyInfo), String> {
        let config = Config::from_json(config)?;
        let info = Affinity::info("precise_cache_aware", config.eviction_interval_secs);
        Ok((PreciseCacheAware::new(config), info))
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

export_policy!(PreciseCacheAware);

#[cfg(test)]
mod tests;
