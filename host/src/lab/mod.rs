//! The policy lab: knowing what a policy will do before it serves.
//!
//! - [`record`]: one [`DecisionRecord`] per request (the request's shape as
//!   block keys, the candidates as the policy saw them, the pick, the
//!   outcome), written by [`DecisionLog`] off the request path
//!   (`--decision-log`), and served by `GET /decisions`.
//! - [`shadow`]: policies asked the live policy's question after it, on
//!   their own threads, whose answers are compared and never acted on
//!   (`--shadow-policy`); `POST /policies/promote` makes one live.
//!
//! `router replay` (the CLI) reads decision records back, or public traces,
//! and runs them through a simulated fleet.

pub mod log;
pub mod record;
pub mod shadow;

pub use log::DecisionLog;
pub use record::{BLOCK_BYTES, DecisionRecord, block_keys};
pub use shadow::Shadows;

use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::policy::{Candidate, Decision, Policy, RouteRequest};
use crate::workers::Worker;
use log::Draft;
use record::CandidateRecord;

/// How long the lab's threads let work gather before taking it.
const GATHER: Duration = Duration::from_millis(5);

/// Take everything sent on `from`, in batches, until every sender is
/// gone: `each` item of a batch into `to`, then `batch_done`, which says
/// whether `to` still waits on something (then the pauses go on even when
/// nothing came). A thread that waits for each item is woken by each
/// sender, a futex call on the request path per request; this one sleeps
/// [`GATHER`] between batches while work keeps coming, so senders find
/// nobody to wake, and parks only when a pause finds nothing new.
fn take_in_batches<T, S>(
    from: &Receiver<T>,
    to: &mut S,
    each: impl Fn(&mut S, T),
    batch_done: impl Fn(&mut S) -> bool,
) {
    while let Ok(first) = from.recv() {
        each(to, first);
        loop {
            let mut took = 0;
            loop {
                match from.try_recv() {
                    Ok(item) => {
                        each(to, item);
                        took += 1;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        batch_done(to);
                        return;
                    }
                }
            }
            let waiting = batch_done(to);
            if took == 0 && !waiting {
                break;
            }
            std::thread::sleep(GATHER);
        }
    }
}

/// What the lab asks of one request, set on its way in.
#[derive(Clone, Copy)]
pub struct Watch<'a> {
    /// Where its record goes, when it was sampled.
    pub log: Option<&'a DecisionLog>,
    /// The shadows to ask after the decision.
    pub shadows: Option<&'a Shadows>,
    /// The live policy deciding it.
    pub live: &'a Arc<Box<dyn Policy>>,
    /// The request's id.
    pub request_id: &'a str,
}

impl std::fmt::Debug for Watch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("log", &self.log.is_some())
            .field("shadows", &self.shadows.is_some())
            .finish()
    }
}

/// A live decision, as the lab hears of it.
#[derive(Debug)]
pub struct Decided<'a> {
    /// The question.
    pub req: &'a RouteRequest<'a>,
    /// The candidates offered.
    pub candidates: &'a [Candidate],
    /// Those candidates' workers, in the same order
    /// ([`crate::workers::Registry::as_candidates`] makes one from the
    /// other).
    pub workers: &'a [Arc<Worker>],
    /// The answer (the fallback's, if it answered).
    pub decision: &'a Decision,
    /// Time in `select`.
    pub took: Duration,
}

impl Watch<'_> {
    /// The live policy decided: ask the shadows, and start the request's
    /// record when it is sampled.
    pub fn decided(&self, d: &Decided<'_>) -> Option<Draft> {
        let mut draft = self
            .log
            .map(|log| Draft::new(log, self.record(d, log.with_text())));
        if let Some(shadows) = self.shadows {
            let answers = draft.as_ref().map(|_| Arc::new(Mutex::new(Vec::new())));
            let pick = d.decision.worker;
            let asked = shadows.ask(
                d.req,
                d.candidates,
                d.workers,
                pick,
                self.live,
                answers.clone(),
            );
            if let (Some(draft), Some(answers)) = (&mut draft, answers) {
                draft.shadows = Some(log::Awaited { answers, asked });
            }
        }
        draft
    }

    fn record(&self, d: &Decided<'_>, with_text: bool) -> DecisionRecord {
        let req = d.req;
        let policy = self.live.info();
        let pick = d.decision.worker;
        let matched_chars = (policy.needs_text && !req.text.is_empty())
            .then(|| self.live.prefix_index())
            .flatten()
            .map(|index| index.prefix_match(req.text, &[pick]).matched_chars);
        DecisionRecord {
            time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |t| t.as_millis() as u64),
            request_id: self.request_id.to_owned(),
            route: req.route.label().to_owned(),
            model: req.model.to_owned(),
            prompt_bytes: u32::try_from(req.text.len()).unwrap_or(u32::MAX),
            prompt_tokens: req.prompt_tokens.or_else(|| {
                req.tokens
                    .map(|t| u32::try_from(t.len()).unwrap_or(u32::MAX))
            }),
            block_bytes: BLOCK_BYTES as u32,
            blocks: block_keys(req.text),
            text: with_text.then(|| req.text.to_owned()),
            max_new_tokens: req.max_new_tokens,
            stream: req.stream,
            policy: policy.name.clone(),
            digest: self.live.component_sha256().map(str::to_owned),
            candidates: d
                .candidates
                .iter()
                .zip(d.workers)
                .map(|(c, w)| CandidateRecord::new(w, c))
                .collect(),
            pick: d
                .workers
                .iter()
                .find(|w| w.id == pick)
                .map(|w| w.url.clone())
                .unwrap_or_default(),
            matched_chars,
            matched_tokens: d.decision.cached_tokens,
            decision_us: d.took.as_micros() as u64,
            fallback: d.decision.fallback.as_ref().map(|f| f.kind().to_owned()),
            attempts: 1,
            shadows: Vec::new(),
            outcome: Default::default(),
        }
    }
}
