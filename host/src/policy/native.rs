//! The native least-in-flight policy: the fallback when a component cannot
//! answer, and a simple policy for data-plane tests.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{
    Candidate, Decision, Outcome, Policy, PolicyInfo, RouteRequest, SelectError, WorkerInfo,
};

/// Picks the candidate with the fewest requests in flight. Ties rotate, so an
/// idle fleet is not all sent to its first worker.
#[derive(Debug)]
pub struct LeastLoad {
    info: PolicyInfo,
    turn: AtomicUsize,
}

impl Default for LeastLoad {
    fn default() -> Self {
        LeastLoad {
            info: PolicyInfo {
                name: "least_load".to_string(),
                needs_text: false,
                wants_feedback: false,
                tick_interval: None,
                instances: super::Instances::PerThread,
                reads: super::Reads::default(),
            },
            turn: AtomicUsize::new(0),
        }
    }
}

impl LeastLoad {
    /// The least-loaded candidate's id; `None` when there are no candidates.
    pub fn pick(&self, candidates: &[Candidate]) -> Option<u32> {
        let min = candidates.iter().map(|c| c.load).min()?;
        let tied = candidates.iter().filter(|c| c.load == min).count();
        let nth = self.turn.fetch_add(1, Ordering::Relaxed) % tied;
        candidates
            .iter()
            .filter(|c| c.load == min)
            .nth(nth)
            .map(|c| c.id)
    }
}

impl Policy for LeastLoad {
    fn info(&self) -> &PolicyInfo {
        &self.info
    }

    fn workers_changed(&self, _workers: &[WorkerInfo]) {}

    fn select(
        &self,
        _req: &RouteRequest<'_>,
        candidates: &[Candidate],
    ) -> Result<Decision, SelectError> {
        let worker = self.pick(candidates).ok_or(SelectError::NoCandidates)?;
        Ok(Decision {
            worker,
            fallback: None,
            cached_tokens: None,
        })
    }

    fn on_complete(&self, _outcome: &Outcome) {}

    fn tick(&self, _now_ms: u64) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: u32, load: u32) -> Candidate {
        Candidate::idle(id, load)
    }

    #[test]
    fn picks_the_least_loaded() {
        let p = LeastLoad::default();
        assert_eq!(p.pick(&[c(1, 5), c(2, 1), c(3, 9)]), Some(2));
    }

    #[test]
    fn ties_rotate() {
        let p = LeastLoad::default();
        let picks: Vec<_> = (0..4)
            .map(|_| p.pick(&[c(1, 0), c(2, 0), c(3, 7)]).unwrap())
            .collect();
        assert_eq!(picks, vec![1, 2, 1, 2]);
    }

    #[test]
    fn no_candidates_is_an_error() {
        let p = LeastLoad::default();
        assert_eq!(p.pick(&[]), None);
    }
}
