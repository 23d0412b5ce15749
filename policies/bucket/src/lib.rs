//! Bucket: pools of workers by prompt length, as the SGLang router's
//! `bucket` policy offers for prefill workers. Short prompts then do not
//! queue behind long prefills, and each worker sees prompts of similar size.
//!
//! The candidates, in id order, split the recent prompt lengths into equal
//! shares: with four candidates, the shortest quarter of recent prompts goes
//! to the first, the longest quarter to the last. The split is recomputed
//! from the last [`HISTORY`] prompt lengths every
//! `bucket_adjust_interval_secs` (default 5), so it follows the workload.
//! Until the first split, and whenever the bucket's worker has more requests
//! in flight than the least loaded candidate by more than
//! `balance_abs_threshold` (default 64) *and* `balance_rel_threshold` times
//! (default 1.5), the least loaded candidate takes the request.
//!
//! Length is the routing text's length in bytes. The split survives a hot
//! reload (snapshot/restore).
#![deny(missing_docs)]

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use wasm_router_policy::{Candidate, Candidates, Policy, PolicyInfo, Request, export_policy};

/// How many recent prompt lengths the split is computed from.
pub const HISTORY: usize = 4096;

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Config {
    bucket_adjust_interval_secs: u32,
    balance_abs_threshold: u32,
    balance_rel_threshold: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bucket_adjust_interval_secs: 5,
            balance_abs_threshold: 64,
            balance_rel_threshold: 1.5,
        }
    }
}

/// What a hot reload carries over.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    recent: VecDeque<u32>,
    sorted: Vec<u32>,
}

/// The bucket policy.
#[derive(Debug)]
pub struct Bucket {
    config: Config,
    state: State,
}

impl Bucket {
    /// Recompute the split from the recent lengths (what `tick` does).
    fn adjust(&mut self) {
        let mut sorted: Vec<u32> = self.state.recent.iter().copied().collect();
        sorted.sort_unstable();
        self.state.sorted = sorted;
    }

    /// The index, among `n` buckets, of a prompt of `len` bytes.
    fn bucket_of(&self, len: u32, n: usize) -> Option<usize> {
        let sorted = &self.state.sorted;
        if sorted.is_empty() {
            return None;
        }
        // The share of recent prompts shorter than this one, counting equal
        // lengths as half below and half above.
        let below = sorted.partition_point(|&l| l < len);
        let equal = sorted.partition_point(|&l| l <= len) - below;
        let share = (below as f64 + equal as f64 / 2.0) / sorted.len() as f64;
        Some(((share * n as f64) as usize).min(n - 1))
    }
}

impl Policy for Bucket {
    fn init(config: &str) -> Result<(Self, PolicyInfo), String> {
        let config: Config =
            serde_json::from_str(config).map_err(|e| format!("bucket: invalid config: {e}"))?;
        if config.bucket_adjust_interval_secs == 0 {
            return Err("bucket: bucket_adjust_interval_secs must be above 0".into());
        }
        let mut info = PolicyInfo::new("bucket");
        info.needs_text = true;
        info.tick_interval_ms = config.bucket_adjust_interval_secs.saturating_mul(1000);
        let state = State::default();
        Ok((Bucket { config, state }, info))
    }

    fn select(&mut self, req: &Request<'_>, candidates: &Candidates<'_>) -> Result<u32, String> {
        let least = candidates
            .iter()
            .min_by_key(|c| (c.load, c.id))
            .ok_or("no candidates")?;
        let len = u32::try_from(req.text().len()).unwrap_or(u32::MAX);
        if self.state.recent.len() == HISTORY {
            self.state.recent.pop_front();
        }
        self.state.recent.push_back(len);
        let Some(bucket) = self.bucket_of(len, candidates.len()) else {
            return Ok(least.id);
        };
        let mut by_id: Vec<&Candidate> = candidates.iter().collect();
        by_id.sort_unstable_by_key(|c| c.id);
        let chosen = by_id[bucket];
        let gap = chosen.load.saturating_sub(least.load);
        let overloaded = gap > self.config.balance_abs_threshold
            && f64::from(chosen.load) > self.config.balance_rel_threshold * f64::from(least.load);
        Ok(if overloaded { least.id } else { chosen.id })
    }

    fn tick(&mut self, _now_ms: u64) {
        self.adjust();
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&self.state).unwrap_or_default()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let state: State =
            serde_json::from_slice(state).map_err(|e| format!("bucket: unreadable state: {e}"))?;
        self.state = state;
        Ok(())
    }
}

export_policy!(Bucket);

#[cfg(test)]
mod tests {
    use super::*;

    fn request(len: usize) -> Request<'static> {
        Request::new(&"x".repeat(len), None)
    }

    fn idle(ids: &[u32]) -> Candidates<'static> {
        ids.iter().map(|&id| Candidate::idle(id, 0)).collect()
    }

    /// A policy that has seen lengths 1..=400 once each, split.
    fn warmed() -> Bucket {
        let (mut p, _) = Bucket::init("{}").unwrap();
        for len in 1..=400 {
            p.select(&request(len), &idle(&[0])).unwrap();
        }
        p.tick(0);
        p
    }

    #[test]
    fn each_worker_takes_one_range_of_lengths_in_id_order() {
        let mut p = warmed();
        // Candidates in any order: buckets follow ids.
        let candidates = idle(&[30, 10, 20, 40]);
        for (len, want) in [
            (1, 10),
            (90, 10),
            (110, 20),
            (190, 20),
            (210, 30),
            (310, 40),
            (399, 40),
            (5000, 40),
        ] {
            assert_eq!(
                p.select(&request(len), &candidates),
                Ok(want),
                "length {len}"
            );
        }
    }

    #[test]
    fn the_split_follows_the_workload_after_an_adjustment() {
        let mut p = warmed();
        let candidates = idle(&[0, 1]);
        assert_eq!(
            p.select(&request(300), &candidates),
            Ok(1),
            "above the median of 1..=400"
        );
        // Prompts grow: 4096 lengths between 1000 and 2000 replace the history.
        for i in 0..HISTORY {
            p.select(&request(1000 + i % 1000), &candidates).unwrap();
        }
        assert_eq!(
            p.select(&request(300), &candidates),
            Ok(1),
            "no adjustment yet"
        );
        p.tick(0);
        assert_eq!(
            p.select(&request(300), &candidates),
            Ok(0),
            "now among the shortest"
        );
        assert_eq!(p.select(&request(1900), &candidates), Ok(1));
    }

    #[test]
    fn least_loaded_before_the_first_split_and_when_the_bucket_is_overloaded() {
        let (mut p, info) = Bucket::init(r#"{"bucket_adjust_interval_secs": 2}"#).unwrap();
        assert_eq!((info.needs_text, info.tick_interval_ms), (true, 2000));
        let loaded = Candidates::from([Candidate::idle(0, 3), Candidate::idle(1, 1)]);
        assert_eq!(p.select(&request(1), &loaded), Ok(1), "no split yet");
        let mut p = warmed();
        let short_is_busy = Candidates::from([Candidate::idle(0, 100), Candidate::idle(1, 10)]);
        assert_eq!(
            p.select(&request(1), &short_is_busy),
            Ok(1),
            "gap 90 > 64 and 10x > 1.5x"
        );
        let short_is_busier = Candidates::from([Candidate::idle(0, 60), Candidate::idle(1, 10)]);
        assert_eq!(
            p.select(&request(1), &short_is_busier),
            Ok(0),
            "gap 50 is within 64"
        );
    }

    #[test]
    fn the_split_survives_a_reload_and_garbage_is_refused() {
        let p = warmed();
        let (mut fresh, _) = Bucket::init("{}").unwrap();
        fresh.restore(&p.snapshot()).unwrap();
        assert_eq!(fresh.select(&request(390), &idle(&[0, 1, 2, 3])), Ok(3));
        assert!(fresh.restore(b"garbage").is_err());
        assert!(Bucket::init(r#"{"bucket_adjust_interval_secs": 0}"#).is_err());
    }
}
