//! Power of two choices: draw two distinct candidates at random and send the
//! request to the one with fewer requests in flight (ties to the first
//! drawn). Nearly as balanced as least-loaded, without every router herding
//! onto the same least-loaded worker.
//!
//! Load is the candidate's load: the router's in-flight count, or the
//! worker's own `/get_load` count when that is higher (the router reads it
//! every `--worker-load-check-interval` seconds). Config: `seed` (an
//! integer) makes the draws repeatable.
#![deny(missing_docs)]

use serde::Deserialize;
use wasm_router_policy::{Candidates, Instances, Policy, PolicyInfo, Request, Rng, export_policy};

#[derive(Debug, Default, Deserialize)]
struct Config {
    seed: Option<u64>,
}

/// The power-of-two-choices policy.
#[derive(Debug)]
pub struct PowerOfTwo {
    rng: Rng,
}

impl Policy for PowerOfTwo {
    fn init(config: &str) -> Result<(Self, PolicyInfo), String> {
        let config: Config = serde_json::from_str(config)
            .map_err(|e| format!("power_of_two: invalid config: {e}"))?;
        let rng = config.seed.map_or_else(Rng::from_entropy, Rng::new);
        // As random: only the generator carries over, so one instance per
        // router thread.
        let info = PolicyInfo {
            instances: Instances::PerThread,
            ..PolicyInfo::new("power_of_two")
        };
        Ok((PowerOfTwo { rng }, info))
    }

    fn select(&mut self, _req: &Request<'_>, candidates: &Candidates<'_>) -> Result<u32, String> {
        let n = candidates.len();
        if n == 0 {
            return Err("no candidates".to_string());
        }
        if n == 1 {
            return Ok(candidates[0].id);
        }
        let first = self.rng.below(n);
        // A second index among the other n - 1.
        let second = (first + 1 + self.rng.below(n - 1)) % n;
        let (a, b) = (&candidates[first], &candidates[second]);
        Ok(if b.load < a.load { b.id } else { a.id })
    }
}

export_policy!(PowerOfTwo);

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_router_policy::Candidate;

    fn request() -> Request<'static> {
        Request::new("", None)
    }

    #[test]
    fn the_pick_follows_the_two_choice_distribution() {
        // Loads 0 < 1 < 2 < 3. Each of the 6 pairs is equally likely and the
        // less loaded of a pair wins: worker 0 wins 3/6, 1 wins 2/6, 2 wins
        // 1/6, 3 never. Uniform or least-loaded picking fails this.
        let (mut p, _) = PowerOfTwo::init(r#"{"seed": 11}"#).unwrap();
        let candidates: Candidates<'static> = (0..4).map(|id| Candidate::idle(id, id)).collect();
        let draws = 12_000;
        let mut counts = [0usize; 4];
        for _ in 0..draws {
            counts[p.select(&request(), &candidates).unwrap() as usize] += 1;
        }
        let expected = [0.5, 1.0 / 3.0, 1.0 / 6.0, 0.0];
        for (id, (&n, want)) in counts.iter().zip(expected).enumerate() {
            let share = n as f64 / draws as f64;
            assert!(
                (share - want).abs() < 0.02,
                "worker {id}: {share:.3}, want {want:.3}"
            );
        }
    }

    #[test]
    fn one_candidate_is_picked_and_bad_config_is_refused() {
        let (mut p, _) = PowerOfTwo::init("{}").unwrap();
        assert_eq!(
            p.select(&request(), &Candidates::from([Candidate::idle(9, 5)])),
            Ok(9)
        );
        assert!(PowerOfTwo::init(r#"{"seed": -1}"#).is_err());
    }
}
