//! Consistent hashing: a request's routing key (`x-routing-key` or
//! `x-smg-routing-key`) is placed on a hash ring of the workers, and the
//! request goes to the first worker clockwise that can take it now. Adding or
//! removing a worker moves only the keys of its share of the ring; a worker
//! that comes back gets the same points (they hash its URL, not its id).
//! Requests without a key go to the least-loaded candidate.
//!
//! Config: `virtual_nodes` per worker (default 160).
#![deny(missing_docs)]

use serde::Deserialize;
use wasm_router_policy::{
    Candidate, Candidates, Instances, Policy, PolicyInfo, Request, WorkerInfo, export_policy,
};

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Config {
    virtual_nodes: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config { virtual_nodes: 160 }
    }
}

/// FNV-1a, 64 bits: stable across builds and platforms (the ring must not
/// move when the router or the policy is rebuilt).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Spread FNV's output over the ring (its low bits mix poorly).
fn point(bytes: &[u8]) -> u64 {
    let mut h = fnv1a(bytes);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// The consistent-hash policy: the ring, sorted by point.
#[derive(Debug, Default)]
pub struct ConsistentHash {
    virtual_nodes: u32,
    ring: Vec<(u64, u32)>,
}

impl ConsistentHash {
    /// The worker a key maps to among `candidates`, if any is on the ring.
    pub fn owner(&self, key: &str, candidates: &[Candidate]) -> Option<u32> {
        let start = self
            .ring
            .partition_point(|&(p, _)| p < point(key.as_bytes()));
        let (after, before) = self.ring.split_at(start);
        before
            .iter()
            .chain(after)
            .map(|&(_, worker)| worker)
            .find(|w| candidates.iter().any(|c| c.id == *w))
    }
}

impl Policy for ConsistentHash {
    fn init(config: &str) -> Result<(Self, PolicyInfo), String> {
        let config: Config = serde_json::from_str(config)
            .map_err(|e| format!("consistent_hash: invalid config: {e}"))?;
        if config.virtual_nodes == 0 || config.virtual_nodes > 4096 {
            return Err("consistent_hash: virtual_nodes must be between 1 and 4096".into());
        }
        let policy = ConsistentHash {
            virtual_nodes: config.virtual_nodes,
            ring: Vec::new(),
        };
        // The ring depends on the worker list only, which every instance is
        // told: one instance per router thread picks as one would.
        let info = PolicyInfo {
            instances: Instances::PerThread,
            ..PolicyInfo::new("consistent_hash")
        };
        Ok((policy, info))
    }

    fn workers_changed(&mut self, workers: Vec<WorkerInfo>) {
        self.ring.clear();
        for w in &workers {
            for v in 0..self.virtual_nodes {
                self.ring
                    .push((point(format!("{}#{v}", w.url).as_bytes()), w.id));
            }
        }
        self.ring.sort_unstable();
    }

    fn select(&mut self, req: &Request<'_>, candidates: &Candidates<'_>) -> Result<u32, String> {
        let least_loaded = || {
            candidates
                .iter()
                .min_by_key(|c| (c.load, c.id))
                .map(|c| c.id)
                .ok_or_else(|| "no candidates".to_string())
        };
        match req.routing_key() {
            Some(key) => self.owner(key, candidates).map_or_else(least_loaded, Ok),
            None => least_loaded(),
        }
    }
}

export_policy!(ConsistentHash);

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_router_policy::Role;

    fn worker(id: u32) -> WorkerInfo {
        WorkerInfo {
            id,
            url: format!("http://10.0.0.{id}:30000"),
            model: String::new(),
            role: Role::Regular,
            dp_rank: None,
        }
    }

    fn policy(ids: &[u32]) -> ConsistentHash {
        let (mut p, _) = ConsistentHash::init("{}").unwrap();
        p.workers_changed(ids.iter().map(|&id| worker(id)).collect());
        p
    }

    fn idle(ids: &[u32]) -> Candidates<'static> {
        ids.iter().map(|&id| Candidate::idle(id, 0)).collect()
    }

    fn keyed(key: &str) -> Request<'static> {
        Request::new("", Some(key))
    }

    #[test]
    fn adding_a_worker_moves_only_its_share_of_keys_and_only_to_it() {
        let keys: Vec<String> = (0..2000).map(|i| format!("user-{i}")).collect();
        let before = policy(&[1, 2, 3, 4]);
        let after = policy(&[1, 2, 3, 4, 5]);
        let (four, five) = (idle(&[1, 2, 3, 4]), idle(&[1, 2, 3, 4, 5]));
        let mut moved = 0;
        let mut per_worker = [0usize; 6];
        for key in &keys {
            let (a, b) = (before.owner(key, &four), after.owner(key, &five));
            per_worker[b.unwrap() as usize] += 1;
            if a != b {
                moved += 1;
                assert_eq!(b, Some(5), "{key} moved between old workers");
            }
        }
        // The new worker's fair share is 1/5 (400 keys); a ring that
        // reshuffled everything, or gave the new worker nothing, fails.
        assert!((250..=550).contains(&moved), "{moved} of 2000 keys moved");
        for (id, n) in per_worker.iter().enumerate().skip(1) {
            assert!((250..=550).contains(n), "worker {id} owns {n} keys");
        }
    }

    #[test]
    fn an_unavailable_owner_passes_to_the_next_on_the_ring_and_back() {
        let mut p = policy(&[1, 2, 3]);
        let owner = p.select(&keyed("alice"), &idle(&[1, 2, 3])).unwrap();
        let others: Vec<u32> = [1, 2, 3].into_iter().filter(|&w| w != owner).collect();
        let next = p.select(&keyed("alice"), &idle(&others)).unwrap();
        assert_ne!(next, owner);
        assert_eq!(
            p.select(&keyed("alice"), &idle(&others)).unwrap(),
            next,
            "stable"
        );
        assert_eq!(p.select(&keyed("alice"), &idle(&[1, 2, 3])).unwrap(), owner);
    }

    #[test]
    fn no_key_means_least_loaded() {
        let mut p = policy(&[1, 2]);
        let req = Request::new("", None);
        let loads = Candidates::from([Candidate::idle(1, 4), Candidate::idle(2, 1)]);
        assert_eq!(p.select(&req, &loads).unwrap(), 2);
        assert!(ConsistentHash::init(r#"{"virtual_nodes": 0}"#).is_err());
    }
}
