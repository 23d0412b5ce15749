//! Round robin: every request goes to the next candidate in turn.
//!
//! The candidate list changes from call to call (health, breakers, models), so
//! the policy keeps one counter and indexes the list it is given: over any run
//! of calls with the same candidates, each gets its turn exactly once per cycle.
#![deny(missing_docs)]

use wasm_router_policy::{Candidates, Policy, PolicyInfo, Request, export_policy};

/// The round-robin policy: a counter over the candidates of each call.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: usize,
}

impl Policy for RoundRobin {
    fn init(_config: &str) -> Result<(Self, PolicyInfo), String> {
        Ok((RoundRobin::default(), PolicyInfo::new("round_robin")))
    }

    fn select(&mut self, _req: &Request<'_>, candidates: &Candidates<'_>) -> Result<u32, String> {
        if candidates.is_empty() {
            return Err("no candidates".to_string());
        }
        let pick = candidates[self.next % candidates.len()].id;
        self.next = self.next.wrapping_add(1);
        Ok(pick)
    }
}

export_policy!(RoundRobin);

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_router_policy::Candidate;

    fn request() -> Request<'static> {
        Request::new("", None)
    }

    fn candidates(ids: &[u32]) -> Candidates<'static> {
        ids.iter().map(|&id| Candidate::idle(id, 0)).collect()
    }

    #[test]
    fn cycles_over_exactly_the_given_candidates() {
        let (mut rr, _) = RoundRobin::init("{}").unwrap();
        let given = candidates(&[7, 3, 9]);
        let picks: Vec<u32> = (0..6)
            .map(|_| rr.select(&request(), &given).unwrap())
            .collect();
        assert_eq!(picks, vec![7, 3, 9, 7, 3, 9]);
    }

    #[test]
    fn empty_candidates_is_an_error() {
        let (mut rr, _) = RoundRobin::init("{}").unwrap();
        assert!(rr.select(&request(), &Candidates::from(vec![])).is_err());
    }
}
