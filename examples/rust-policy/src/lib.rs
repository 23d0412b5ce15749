//! An example custom policy: session affinity by routing key, with bounded
//! load.
//!
//! Requests carrying a routing key (`x-routing-key` or `x-smg-routing-key`)
//! stick to the worker their key was first given, so a user's conversation
//! keeps hitting the same KV cache. Stickiness is bounded: if that worker is
//! loaded past `max_load_factor` times the mean (consistent hashing with
//! bounded loads, in spirit), the key moves to the least-loaded candidate and
//! stays there. Requests without a key go to the least-loaded candidate.
//!
//! Build it into a component with
//! `cargo build -p session-affinity --target wasm32-wasip2 --profile policy`
//! and run `router --policy target/wasm32-wasip2/policy/session_affinity.wasm`.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use wasm_router_policy::{
    Candidate, Candidates, Policy, PolicyInfo, Request, WorkerInfo, export_policy,
};

/// Settings (the `[policy]` table of the router's config).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// A key's worker may carry up to this many times the mean load.
    pub max_load_factor: f64,
    /// Keys remembered; past it, the oldest assignments are forgotten.
    pub max_keys: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_load_factor: 1.25,
            max_keys: 100_000,
        }
    }
}

/// The policy: key -> (worker, order of assignment).
#[derive(Debug, Default)]
pub struct SessionAffinity {
    config: Config,
    sticky: HashMap<String, (u32, u64)>,
    assigned: u64,
}

fn least_loaded(candidates: &[Candidate]) -> Option<u32> {
    candidates
        .iter()
        .min_by_key(|c| (c.load, c.id))
        .map(|c| c.id)
}

impl SessionAffinity {
    /// The most load a sticky worker may have: the factor times the mean,
    /// counting this request, and never below one.
    fn load_bound(&self, candidates: &[Candidate]) -> u32 {
        let total: u64 = candidates.iter().map(|c| u64::from(c.load)).sum::<u64>() + 1;
        let mean = total as f64 / candidates.len() as f64;
        (mean * self.config.max_load_factor).ceil().max(1.0) as u32
    }

    fn remember(&mut self, key: &str, worker: u32) {
        if self.sticky.len() >= self.config.max_keys && !self.sticky.contains_key(key) {
            // Forget the oldest assignment to stay within the bound.
            if let Some(oldest) = self
                .sticky
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
            {
                self.sticky.remove(&oldest);
            }
        }
        self.assigned += 1;
        self.sticky.insert(key.to_string(), (worker, self.assigned));
    }

    /// The worker a key is assigned to, if any.
    pub fn assignment(&self, key: &str) -> Option<u32> {
        self.sticky.get(key).map(|&(w, _)| w)
    }
}

impl Policy for SessionAffinity {
    fn init(config: &str) -> Result<(Self, PolicyInfo), String> {
        let config: Config = serde_json::from_str(config)
            .map_err(|e| format!("session_affinity: invalid config: {e}"))?;
        if config.max_load_factor.is_nan() || config.max_load_factor < 1.0 || config.max_keys == 0 {
            return Err(
                "session_affinity: max_load_factor must be at least 1 and max_keys above 0".into(),
            );
        }
        let policy = SessionAffinity {
            config,
            ..SessionAffinity::default()
        };
        Ok((policy, PolicyInfo::new("session_affinity")))
    }

    fn select(&mut self, req: &Request<'_>, candidates: &Candidates<'_>) -> Result<u32, String> {
        let fallback = least_loaded(candidates).ok_or("no candidates")?;
        let Some(key) = req.routing_key() else {
            return Ok(fallback);
        };
        let bound = self.load_bound(candidates);
        let sticky = self
            .assignment(key)
            .and_then(|w| candidates.iter().find(|c| c.id == w))
            .filter(|c| c.load <= bound);
        match sticky {
            Some(c) => Ok(c.id),
            None => {
                self.remember(key, fallback);
                Ok(fallback)
            }
        }
    }

    fn workers_changed(&mut self, workers: Vec<WorkerInfo>) {
        let live: HashSet<u32> = workers.iter().map(|w| w.id).collect();
        self.sticky.retain(|_, (w, _)| live.contains(w));
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut out = String::new();
        for (key, (worker, at)) in &self.sticky {
            out.push_str(&format!("{worker}\t{at}\t{key}\n"));
        }
        out.into_bytes()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(state).map_err(|_| "snapshot is not UTF-8")?;
        for line in text.lines() {
            let mut parts = line.splitn(3, '\t');
            let (Some(w), Some(at), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("bad snapshot line {line:?}"));
            };
            let worker = w.parse().map_err(|_| format!("bad worker in {line:?}"))?;
            let at: u64 = at.parse().map_err(|_| format!("bad order in {line:?}"))?;
            self.assigned = self.assigned.max(at);
            self.sticky.insert(key.to_string(), (worker, at));
        }
        Ok(())
    }
}

export_policy!(SessionAffinity);

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_router_policy::Role;

    fn req(key: Option<&str>) -> Request<'static> {
        Request::new("", key)
    }

    fn loads(l: &[(u32, u32)]) -> Candidates<'static> {
        l.iter()
            .map(|&(id, load)| Candidate::idle(id, load))
            .collect()
    }

    fn policy() -> SessionAffinity {
        SessionAffinity::init("{}").unwrap().0
    }

    #[test]
    fn a_key_sticks_to_its_first_worker() {
        let mut p = policy();
        let first = p
            .select(&req(Some("alice")), &loads(&[(1, 0), (2, 0)]))
            .unwrap();
        assert_eq!(first, 1);
        // Worker 1 is a bit busier now, within the bound: alice stays.
        assert_eq!(
            p.select(&req(Some("alice")), &loads(&[(1, 2), (2, 1)]))
                .unwrap(),
            1
        );
        // A new key goes to the least loaded.
        assert_eq!(
            p.select(&req(Some("bob")), &loads(&[(1, 2), (2, 1)]))
                .unwrap(),
            2
        );
    }

    #[test]
    fn an_overloaded_worker_loses_the_key_for_good() {
        let mut p = policy();
        p.select(&req(Some("alice")), &loads(&[(1, 0), (2, 0)]))
            .unwrap();
        // Mean with this request is (10 + 0 + 1) / 2 = 5.5; bound 7 < 10.
        assert_eq!(
            p.select(&req(Some("alice")), &loads(&[(1, 10), (2, 0)]))
                .unwrap(),
            2
        );
        assert_eq!(
            p.select(&req(Some("alice")), &loads(&[(1, 0), (2, 0)]))
                .unwrap(),
            2
        );
    }

    #[test]
    fn no_key_means_least_loaded_and_a_removed_worker_is_forgotten() {
        let mut p = policy();
        assert_eq!(p.select(&req(None), &loads(&[(1, 3), (2, 1)])).unwrap(), 2);
        p.select(&req(Some("carol")), &loads(&[(1, 0), (2, 1)]))
            .unwrap();
        assert_eq!(p.assignment("carol"), Some(1));
        let only_two = WorkerInfo {
            id: 2,
            url: String::new(),
            model: String::new(),
            role: Role::Regular,
            dp_rank: None,
        };
        p.workers_changed(vec![only_two]);
        assert_eq!(p.assignment("carol"), None);
    }

    #[test]
    fn snapshot_then_restore_keeps_assignments() {
        let mut p = policy();
        for (i, key) in ["a", "b", "c"].iter().enumerate() {
            let cands = loads(&[(1, i as u32), (2, 1), (3, 2)]);
            p.select(&req(Some(key)), &cands).unwrap();
        }
        let mut q = policy();
        q.restore(&p.snapshot()).unwrap();
        for key in ["a", "b", "c"] {
            assert_eq!(q.assignment(key), p.assignment(key));
        }
        assert!(q.restore(b"garbage").is_err());
    }

    #[test]
    fn the_key_table_is_bounded() {
        let (mut p, _) = SessionAffinity::init(r#"{"max_keys": 2}"#).unwrap();
        for key in ["a", "b", "c"] {
            p.select(&req(Some(key)), &loads(&[(1, 0)])).unwrap();
        }
        assert_eq!(p.assignment("a"), None, "the oldest was forgotten");
        assert_eq!(p.assignment("c"), Some(1));
    }
}
