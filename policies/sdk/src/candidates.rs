//! [`Candidates`]: the workers a policy may pick from.

use std::cell::OnceCell;
use std::ops::Deref;

use crate::bindings::wasm_router::policy::types::{Candidates as HostCandidates, PrefillWork};

/// A worker that may take the request, with its load: what most policies
/// decide on. More about each is on [`Candidates`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The worker's id.
    pub id: u32,
    /// Requests in flight from this router, or the worker's own count
    /// (its `/get_load`) when that is higher.
    pub load: u32,
}

impl Candidate {
    /// A candidate with `load` requests in flight: what unit tests need.
    pub fn idle(id: u32, load: u32) -> Self {
        Candidate { id, load }
    }
}

/// The candidates of one `select` (healthy, admitted by their circuit
/// breaker, serving the model): a slice of [`Candidate`]s, and per
/// candidate, in the same order, what else the router knows, each column
/// asked of the router once, when first read.
///
/// In native unit tests, build one from a `Vec<Candidate>` (or collect it):
/// `in_flight` is then each `load`, the worker reports nothing, weights are
/// 1 and labels absent; give the moving averages with
/// [`Candidates::with_ewma_us`], weights and labels with
/// [`Candidates::with_weights`] and [`Candidates::with_label`].
pub struct Candidates<'a> {
    list: Vec<Candidate>,
    host: Option<&'a HostCandidates>,
    in_flight: OnceCell<Vec<u32>>,
    reported_loads: OnceCell<Vec<Option<u32>>>,
    queued: OnceCell<Vec<Option<u32>>>,
    half_open: OnceCell<Vec<bool>>,
    ttft_ewma_us: OnceCell<Vec<Option<u32>>>,
    latency_ewma_us: OnceCell<Vec<Option<u32>>>,
    weights: OnceCell<Vec<u32>>,
    kv_usage: OnceCell<Vec<Option<f32>>>,
    prefill_ahead: OnceCell<Vec<PrefillWork>>,
    /// Native unit tests' labels: (key, a value per candidate).
    labels: Vec<(String, Vec<Option<String>>)>,
}

impl<'a> Candidates<'a> {
    fn of(list: Vec<Candidate>, host: Option<&'a HostCandidates>) -> Self {
        Candidates {
            list,
            host,
            in_flight: OnceCell::new(),
            reported_loads: OnceCell::new(),
            queued: OnceCell::new(),
            half_open: OnceCell::new(),
            ttft_ewma_us: OnceCell::new(),
            latency_ewma_us: OnceCell::new(),
            weights: OnceCell::new(),
            kv_usage: OnceCell::new(),
            prefill_ahead: OnceCell::new(),
            labels: Vec::new(),
        }
    }

    /// The candidates the router lent to this `select`. Used by the code
    /// that [`export_policy!`](crate::export_policy) expands to.
    #[doc(hidden)]
    pub fn lent(host: &'a HostCandidates) -> Self {
        let list = host
            .ids()
            .into_iter()
            .zip(host.loads())
            .map(|(id, load)| Candidate { id, load })
            .collect();
        Candidates::of(list, Some(host))
    }

    /// Requests in flight from this router to each.
    pub fn in_flight(&self) -> &[u32] {
        self.in_flight.get_or_init(|| match self.host {
            Some(h) => h.in_flight(),
            None => self.list.iter().map(|c| c.load).collect(),
        })
    }

    /// Each worker's own count of requests at its last `/get_load`.
    pub fn reported_loads(&self) -> &[Option<u32>] {
        self.reported_loads.get_or_init(|| match self.host {
            Some(h) => h.reported_loads(),
            None => vec![None; self.list.len()],
        })
    }

    /// Of those, the requests waiting in each worker's queue, when it says.
    pub fn queued(&self) -> &[Option<u32>] {
        self.queued.get_or_init(|| match self.host {
            Some(h) => h.queued(),
            None => vec![None; self.list.len()],
        })
    }

    /// Whether each one's circuit breaker is half-open (trial requests only).
    pub fn half_open(&self) -> &[bool] {
        self.half_open.get_or_init(|| match self.host {
            Some(h) => h.half_open(),
            None => vec![false; self.list.len()],
        })
    }

    /// This router's moving average of each one's time to first byte over
    /// its successful responses, in microseconds; `None` before the first.
    pub fn ttft_ewma_us(&self) -> &[Option<u32>] {
        self.ttft_ewma_us.get_or_init(|| match self.host {
            Some(h) => h.ttft_ewma_us(),
            None => vec![None; self.list.len()],
        })
    }

    /// Native unit tests: the moving averages the router would give, one
    /// `(ttft, latency)` pair in microseconds per candidate, in order.
    ///
    /// # Panics
    ///
    /// If the columns were read already, or do not have one entry per
    /// candidate.
    pub fn with_ewma_us(self, columns: &[(Option<u32>, Option<u32>)]) -> Self {
        assert_eq!(columns.len(), self.list.len(), "one pair per candidate");
        let (ttft, latency): (Vec<_>, Vec<_>) = columns.iter().copied().unzip();
        assert!(
            self.ttft_ewma_us.set(ttft).is_ok() && self.latency_ewma_us.set(latency).is_ok(),
            "the moving averages were read already"
        );
        self
    }

    /// The same for the time to a response's end.
    pub fn latency_ewma_us(&self) -> &[Option<u32>] {
        self.latency_ewma_us.get_or_init(|| match self.host {
            Some(h) => h.latency_ewma_us(),
            None => vec![None; self.list.len()],
        })
    }

    /// The share of each one's KV cache its requests hold at its last
    /// `/get_load` (SGLang's `num_tokens` over its `max_total_num_tokens`;
    /// queued prompts count, so it can pass 1); `None` when it does not say.
    pub fn kv_usage(&self) -> &[Option<f32>] {
        self.kv_usage.get_or_init(|| match self.host {
            Some(h) => h.kv_usage(),
            None => vec![None; self.list.len()],
        })
    }

    /// Native unit tests: the KV usage the router would give, one per
    /// candidate, in order.
    ///
    /// # Panics
    ///
    /// If it was read already, or there is not one per candidate.
    pub fn with_kv_usage(self, usage: &[Option<f32>]) -> Self {
        assert_eq!(usage.len(), self.list.len(), "one usage per candidate");
        assert!(
            self.kv_usage.set(usage.to_vec()).is_ok(),
            "the KV usage was read already"
        );
        self
    }

    /// The requests this router sent each one whose answer has not begun,
    /// with the prompt tokens they must compute: the prefill ahead of a new
    /// request there, as far as this router knows (other replicas' requests
    /// are in [`Candidates::queued`], the worker's own count).
    pub fn prefill_ahead(&self) -> &[PrefillWork] {
        self.prefill_ahead.get_or_init(|| match self.host {
            Some(h) => h.prefill_ahead(),
            None => vec![
                PrefillWork {
                    requests: 0,
                    tokens: 0
                };
                self.list.len()
            ],
        })
    }

    /// Native unit tests: the prefill ahead the router would give, one
    /// `(requests, tokens)` pair per candidate, in order; the workers'
    /// `queued` counts with it.
    ///
    /// # Panics
    ///
    /// If either was read already, or there is not one per candidate.
    pub fn with_prefill_ahead(self, ahead: &[(u32, u32)], queued: &[Option<u32>]) -> Self {
        assert_eq!(ahead.len(), self.list.len(), "one pair per candidate");
        assert_eq!(queued.len(), self.list.len(), "one count per candidate");
        let ahead = ahead
            .iter()
            .map(|&(requests, tokens)| PrefillWork { requests, tokens })
            .collect();
        assert!(
            self.prefill_ahead.set(ahead).is_ok() && self.queued.set(queued.to_vec()).is_ok(),
            "the prefill ahead or the queues were read already"
        );
        self
    }

    /// Each one's share of traffic relative to the others, as its worker
    /// entry gave it (1 unless given).
    pub fn weights(&self) -> &[u32] {
        self.weights.get_or_init(|| match self.host {
            Some(h) => h.weights(),
            None => vec![1; self.list.len()],
        })
    }

    /// Each one's value of label `key`; `None` where it has none. Each call
    /// asks the router (one copy of the column): keep what you read.
    pub fn label(&self, key: &str) -> Vec<Option<String>> {
        match self.host {
            Some(h) => h.label(key),
            None => self
                .labels
                .iter()
                .find(|(k, _)| k == key)
                .map_or_else(|| vec![None; self.list.len()], |(_, v)| v.clone()),
        }
    }

    /// Native unit tests: the weights the router would give, one per
    /// candidate, in order.
    ///
    /// # Panics
    ///
    /// If they were read already, or there is not one per candidate.
    pub fn with_weights(self, weights: &[u32]) -> Self {
        assert_eq!(weights.len(), self.list.len(), "one weight per candidate");
        assert!(
            self.weights.set(weights.to_vec()).is_ok(),
            "the weights were read already"
        );
        self
    }

    /// Native unit tests: each candidate's value of label `key`, in order.
    ///
    /// # Panics
    ///
    /// If there is not one value (or `None`) per candidate.
    pub fn with_label(mut self, key: &str, values: &[Option<&str>]) -> Self {
        assert_eq!(values.len(), self.list.len(), "one value per candidate");
        let values = values.iter().map(|v| v.map(str::to_string)).collect();
        self.labels.retain(|(k, _)| k != key);
        self.labels.push((key.to_string(), values));
        self
    }
}

impl Deref for Candidates<'_> {
    type Target = [Candidate];

    fn deref(&self) -> &[Candidate] {
        &self.list
    }
}

impl From<Vec<Candidate>> for Candidates<'static> {
    fn from(list: Vec<Candidate>) -> Self {
        Candidates::of(list, None)
    }
}

impl<const N: usize> From<[Candidate; N]> for Candidates<'static> {
    fn from(list: [Candidate; N]) -> Self {
        Candidates::of(list.to_vec(), None)
    }
}

impl FromIterator<Candidate> for Candidates<'static> {
    fn from_iter<I: IntoIterator<Item = Candidate>>(iter: I) -> Self {
        Candidates::of(iter.into_iter().collect(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_candidates_report_nothing_unless_given_their_moving_averages() {
        let plain: Candidates<'_> = [Candidate::idle(1, 0), Candidate::idle(2, 3)].into();
        assert_eq!(plain.ttft_ewma_us(), [None, None]);
        assert_eq!(plain.in_flight(), [0, 3]);
        let timed = Candidates::from([Candidate::idle(1, 0), Candidate::idle(2, 3)])
            .with_ewma_us(&[(Some(900), Some(40_000)), (None, None)]);
        assert_eq!(timed.ttft_ewma_us(), [Some(900), None]);
        assert_eq!(timed.latency_ewma_us(), [Some(40_000), None]);
    }

    #[test]
    fn native_candidates_weigh_one_and_have_no_labels_unless_given() {
        let plain: Candidates<'_> = [Candidate::idle(1, 0), Candidate::idle(2, 3)].into();
        assert_eq!(plain.weights(), [1, 1]);
        assert_eq!(plain.label("zone"), [None, None]);
        let given = Candidates::from([Candidate::idle(1, 0), Candidate::idle(2, 3)])
            .with_weights(&[4, 1])
            .with_label("zone", &[None, Some("b")]);
        assert_eq!(given.weights(), [4, 1]);
        assert_eq!(given.label("zone"), [None, Some("b".to_string())]);
        assert_eq!(given.label("gpu"), [None, None]);
        assert_eq!(given.kv_usage(), [None, None]);
        let used = Candidates::from([Candidate::idle(1, 0)]).with_kv_usage(&[Some(0.5)]);
        assert_eq!(used.kv_usage(), [Some(0.5)]);
        assert_eq!(used.prefill_ahead()[0].tokens, 0);
        let ahead =
            Candidates::from([Candidate::idle(1, 0)]).with_prefill_ahead(&[(2, 300)], &[Some(3)]);
        assert_eq!(
            (
                ahead.prefill_ahead()[0].requests,
                ahead.prefill_ahead()[0].tokens
            ),
            (2, 300)
        );
        assert_eq!(ahead.queued(), [Some(3)]);
    }
}
