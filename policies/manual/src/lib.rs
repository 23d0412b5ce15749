//! Manual: sticky routing by key, as the SGLang router's `manual` policy.
//!
//! A request's routing key (`x-routing-key` or `x-smg-routing-key`) stays on
//! the worker it was assigned to. A new key, or one whose worker cannot take
//! requests now, is (re)assigned by `assignment_mode`:
//! - `random`: any candidate;
//! - `min_load`: the candidate with the fewest requests in flight;
//! - `min_group`: the candidate holding the fewest keys.
//!
//! Keys unused for `max_idle_secs` are forgotten (checked every second on
//! `tick`). Requests without a key go to a candidate picked at random, as
//! in the SGLang router.
//! Assignments survive a hot reload (snapshot/restore).
#![deny(missing_docs)]

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use wasm_router_policy::{
    Candidate, Candidates, Policy, PolicyInfo, Request, Rng, WorkerInfo, export_policy,
};

/// How a new key picks its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssignmentMode {
    /// Any candidate, uniformly.
    Random,
    /// Fewest requests in flight.
    MinLoad,
    /// Fewest keys assigned.
    MinGroup,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Config {
    assignment_mode: AssignmentMode,
    max_idle_secs: u64,
    seed: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            assignment_mode: AssignmentMode::Random,
            max_idle_secs: 14400,
            seed: None,
        }
    }
}

/// A key's worker and when it was last used (ms since the Unix epoch, as of
/// the latest tick).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Assignment {
    worker: u32,
    last_used_ms: u64,
}

/// The manual policy.
#[derive(Debug)]
pub struct Manual {
    mode: AssignmentMode,
    max_idle_ms: u64,
    rng: Rng,
    /// The latest `tick`'s time; 0 before the first.
    now_ms: u64,
    keys: HashMap<String, Assignment>,
}

fn least_loaded(candidates: &[Candidate]) -> Option<u32> {
    candidates
        .iter()
        .min_by_key(|c| (c.load, c.id))
        .map(|c| c.id)
}

impl Manual {
    /// The worker `key` is assigned to, if any.
    pub fn assignment(&self, key: &str) -> Option<u32> {
        self.keys.get(key).map(|a| a.worker)
    }

    fn assign(&mut self, candidates: &[Candidate]) -> u32 {
        match self.mode {
            AssignmentMode::Random => candidates[self.rng.below(candidates.len())].id,
            AssignmentMode::MinLoad => least_loaded(candidates).expect("candidates are not empty"),
            AssignmentMode::MinGroup => {
                let mut groups: HashMap<u32, usize> = HashMap::new();
                for a in self.keys.values() {
                    *groups.entry(a.worker).or_default() += 1;
                }
                candidates
                    .iter()
                    .min_by_key(|c| (groups.get(&c.id).copied().unwrap_or(0), c.load, c.id))
                    .expect("candidates are not empty")
                    .id
            }
        }
    }
}

impl Policy for Manual {
    fn init(config: &str) -> Result<(Self, PolicyInfo), String> {
        let config: Config =
            serde_json::from_str(config).map_err(|e| format!("manual: invalid config: {e}"))?;
        if config.max_idle_secs == 0 {
            return Err("manual: max_idle_secs must be above 0".into());
        }
        let policy = Manual {
            mode: config.assignment_mode,
            max_idle_ms: config.max_idle_secs.saturating_mul(1000),
            rng: config.seed.map_or_else(Rng::from_entropy, Rng::new),
            now_ms: 0,
            keys: HashMap::new(),
        };
        let mut info = PolicyInfo::new("manual");
        info.tick_interval_ms = 1000;
        Ok((policy, info))
    }

    fn select(&mut self, req: &Request<'_>, candidates: &Candidates<'_>) -> Result<u32, String> {
        if candidates.is_empty() {
            return Err("no candidates".to_string());
        }
        let Some(key) = req.routing_key() else {
            return Ok(candidates[self.rng.below(candidates.len())].id);
        };
        let now = self.now_ms;
        if let Some(a) = self.keys.get_mut(key)
            && candidates.iter().any(|c| c.id == a.worker)
        {
            a.last_used_ms = now;
            return Ok(a.worker);
        }
        let worker = self.assign(candidates);
        self.keys.insert(
            key.to_string(),
            Assignment {
                worker,
                last_used_ms: now,
            },
        );
        Ok(worker)
    }

    fn workers_changed(&mut self, workers: Vec<WorkerInfo>) {
        let live: HashSet<u32> = workers.iter().map(|w| w.id).collect();
        self.keys.retain(|_, a| live.contains(&a.worker));
    }

    fn tick(&mut self, now_ms: u64) {
        if self.now_ms == 0 {
            // Keys assigned before the first tick were stamped 0.
            for a in self.keys.values_mut() {
                a.last_used_ms = now_ms;
            }
        }
        self.now_ms = now_ms;
        let idle = self.max_idle_ms;
        self.keys
            .retain(|_, a| now_ms.saturating_sub(a.last_used_ms) <= idle);
    }

    /// One line per key: worker, tab, last use, tab, key.
    fn snapshot(&self) -> Vec<u8> {
        let mut out = String::new();
        for (key, a) in &self.keys {
            out.push_str(&format!("{}\t{}\t{key}\n", a.worker, a.last_used_ms));
        }
        out.into_bytes()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(state).map_err(|_| "manual: snapshot is not UTF-8")?;
        for line in text.lines() {
            let mut parts = line.splitn(3, '\t');
            let (Some(w), Some(last), Some(key)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("manual: bad snapshot line {line:?}"));
            };
            let assignment = Assignment {
                worker: w
                    .parse()
                    .map_err(|_| format!("manual: bad worker in {line:?}"))?,
                last_used_ms: last
                    .parse()
                    .map_err(|_| format!("manual: bad time in {line:?}"))?,
            };
            self.keys.insert(key.to_string(), assignment);
        }
        Ok(())
    }
}

export_policy!(Manual);

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_router_policy::Role;

    fn keyed(key: &str) -> Request<'static> {
        Request::new("", Some(key))
    }

    fn loads(l: &[(u32, u32)]) -> Candidates<'static> {
        l.iter()
            .map(|&(id, load)| Candidate::idle(id, load))
            .collect()
    }

    fn manual(config: &str) -> Manual {
        Manual::init(config).unwrap().0
    }

    #[test]
    fn a_key_sticks_until_its_worker_cannot_take_it_then_moves_for_good() {
        let mut p = manual(r#"{"assignment_mode": "min_load"}"#);
        let all = loads(&[(1, 0), (2, 3)]);
        assert_eq!(p.select(&keyed("k"), &all), Ok(1));
        // Busier now, but still a candidate: the key stays.
        assert_eq!(p.select(&keyed("k"), &loads(&[(1, 9), (2, 0)])), Ok(1));
        // Worker 1 is out (unhealthy, breaker open): reassigned...
        assert_eq!(p.select(&keyed("k"), &loads(&[(2, 0)])), Ok(2));
        // ...and it stays on 2 when 1 is back.
        assert_eq!(p.select(&keyed("k"), &all), Ok(2));
    }

    #[test]
    fn min_group_spreads_keys_evenly() {
        let mut p = manual(r#"{"assignment_mode": "min_group"}"#);
        let idle = loads(&[(1, 0), (2, 0), (3, 0)]);
        let mut groups = [0; 4];
        for i in 0..30 {
            groups[p.select(&keyed(&format!("k{i}")), &idle).unwrap() as usize] += 1;
        }
        assert_eq!(groups[1..], [10, 10, 10]);
    }

    /// Issue 16: without a key every request went to one worker (the least
    /// loaded, the same one while all are idle); sglang-router picks at
    /// random.
    #[test]
    fn requests_without_a_key_are_spread_at_random() {
        let mut p = manual(r#"{"seed": 5}"#);
        let idle = loads(&[(1, 0), (2, 0), (3, 0)]);
        let keyless = Request::new("", None);
        let used: HashSet<u32> = (0..60)
            .map(|_| p.select(&keyless, &idle).unwrap())
            .collect();
        assert_eq!(used.len(), 3);
        assert!(p.keys.is_empty(), "no key, no assignment");
    }

    #[test]
    fn random_mode_uses_every_candidate() {
        let mut p = manual(r#"{"assignment_mode": "random", "seed": 5}"#);
        let idle = loads(&[(1, 0), (2, 0), (3, 0)]);
        let used: HashSet<u32> = (0..60)
            .map(|i| p.select(&keyed(&format!("k{i}")), &idle).unwrap())
            .collect();
        assert_eq!(used.len(), 3);
        assert!(Manual::init(r#"{"assignment_mode": "fastest"}"#).is_err());
    }

    #[test]
    fn idle_keys_are_forgotten_and_removed_workers_drop_their_keys() {
        let mut p = manual(r#"{"max_idle_secs": 10, "assignment_mode": "min_load"}"#);
        let idle = loads(&[(1, 0), (2, 0)]);
        p.select(&keyed("old"), &idle).unwrap();
        p.tick(1_000_000);
        assert_eq!(p.assignment("old"), Some(1), "stamped at the first tick");
        p.tick(1_005_000);
        p.select(&keyed("fresh"), &loads(&[(1, 1), (2, 0)]))
            .unwrap();
        p.tick(1_012_000);
        assert_eq!(p.assignment("old"), None, "idle 12 s > 10 s");
        assert_eq!(p.assignment("fresh"), Some(2), "idle 7 s");
        let only_one = WorkerInfo {
            id: 1,
            url: String::new(),
            model: String::new(),
            role: Role::Regular,
            dp_rank: None,
        };
        p.workers_changed(vec![only_one]);
        assert_eq!(p.assignment("fresh"), None);
    }

    #[test]
    fn assignments_survive_a_snapshot_and_garbage_is_refused() {
        let mut p = manual(r#"{"assignment_mode": "min_group"}"#);
        let idle = loads(&[(1, 0), (2, 0)]);
        for key in ["a", "b\twith tab", "c"] {
            p.select(&keyed(key), &idle).unwrap();
        }
        let mut q = manual("{}");
        q.restore(&p.snapshot()).unwrap();
        for key in ["a", "b\twith tab", "c"] {
            assert_eq!(q.assignment(key), p.assignment(key));
        }
        assert!(q.restore(b"nonsense").is_err());
    }
}
