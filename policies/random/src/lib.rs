//! Random: each request goes to a candidate drawn uniformly at random.
//!
//! Config: `seed` (an integer) makes the sequence repeatable; without it the
//! generator is seeded from WASI's random source.
#![deny(missing_docs)]

use serde::Deserialize;
use wasm_router_policy::{Candidates, Instances, Policy, PolicyInfo, Request, Rng, export_policy};

/// Settings from the router's config.
#[derive(Debug, Default, Deserialize)]
struct Config {
    seed: Option<u64>,
}

/// A generator from the config's optional `seed`.
fn rng_from_config(config: &str) -> Result<Rng, String> {
    let config: Config =
        serde_json::from_str(config).map_err(|e| format!("invalid config: {e}"))?;
    Ok(config.seed.map_or_else(Rng::from_entropy, Rng::new))
}

/// The random policy.
#[derive(Debug)]
pub struct Random {
    rng: Rng,
}

impl Policy for Random {
    fn init(config: &str) -> Result<(Self, PolicyInfo), String> {
        let rng = rng_from_config(config).map_err(|e| format!("random: {e}"))?;
        // Nothing but the generator carries over between calls: one instance
        // per router thread, each with its own stream of picks.
        let info = PolicyInfo {
            instances: Instances::PerThread,
            ..PolicyInfo::new("random")
        };
        Ok((Random { rng }, info))
    }

    fn select(&mut self, _req: &Request<'_>, candidates: &Candidates<'_>) -> Result<u32, String> {
        if candidates.is_empty() {
            return Err("no candidates".to_string());
        }
        Ok(candidates[self.rng.below(candidates.len())].id)
    }
}

export_policy!(Random);

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_router_policy::Candidate;

    fn request() -> Request<'static> {
        Request::new("", None)
    }

    #[test]
    fn picks_are_uniform_over_the_candidates() {
        let (mut p, _) = Random::init(r#"{"seed": 7}"#).unwrap();
        let candidates: Candidates<'static> =
            [10, 20, 30, 40].map(|id| Candidate::idle(id, 0)).into();
        let mut counts = [0usize; 4];
        for _ in 0..8000 {
            let id = p.select(&request(), &candidates).unwrap();
            counts[(id / 10 - 1) as usize] += 1;
        }
        // 2000 expected each; a policy favouring any candidate, or never
        // picking one, falls outside.
        for (i, n) in counts.iter().enumerate() {
            assert!((1800..=2200).contains(n), "candidate {i}: {n} of 8000");
        }
    }

    #[test]
    fn a_seed_repeats_and_entropy_differs() {
        let draw = |config: &str| {
            let (mut p, _) = Random::init(config).unwrap();
            let c: Candidates<'static> = (0..100).map(|id| Candidate::idle(id, 0)).collect();
            (0..16)
                .map(|_| p.select(&request(), &c).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(r#"{"seed": 1}"#), draw(r#"{"seed": 1}"#));
        assert_ne!(draw("{}"), draw("{}"));
        assert!(Random::init(r#"{"seed": "x"}"#).is_err());
    }
}
