//! One worker's (one DP rank's) KV event subscription: a ZMQ SUB socket on
//! its publisher, every message checked for its sequence number and folded
//! into the precise index.
//!
//! - The first message sets where the sequence stands. If it is not the
//!   publisher's first and the worker has a replay endpoint, what the
//!   replay still holds from before it is applied first: a router replica
//!   that starts into a running fleet learns the recent pages instead of
//!   only those stored after it subscribed (a SUB socket gets nothing
//!   published before it connected).
//! - A gap (a sequence number past the next) is replayed when the worker
//!   has a replay endpoint (a ZMQ ROUTER: send the first missing number as
//!   8 big-endian bytes, get `[seq, payload]` frames up to seq -1); without
//!   one, or when the replay does not cover it, the worker's entries can no
//!   longer be trusted: they are cleared and rebuilt from the events that
//!   follow.
//! - A sequence number below the next means the publisher restarted (its
//!   cache with it): the worker's entries are cleared.
//! - A payload that does not decode is counted and logged (at most every
//!   10 s per subscription), never more.
//!
//! - A message past [`super::zmtp::MAX_MESSAGE_BYTES`] is read through,
//!   dropped and counted as malformed (its batch then shows as a gap).
//!
//! The task runs until aborted: [`crate::events::Subscriptions`] aborts it
//! when its worker leaves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::zmtp::{Connection, Received, ZmtpError};
use super::{Applied, apply, decode};
use crate::config::KvEndpoint;
use crate::index::Precise;
use bytes::Bytes;

/// How long a replay may take before the gap counts as not replayed.
pub const REPLAY_TIMEOUT: Duration = Duration::from_secs(2);

/// At most one log line per this long about a subscription's bad payloads.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Wait between attempts to reach a publisher.
const RECONNECT_EVERY: Duration = Duration::from_millis(500);

/// The state of one subscription's sequence and what it saw.
#[derive(Debug)]
struct Sequence {
    worker: u32,
    index: Arc<Precise>,
    /// The sequence number expected next; `None` before the first message.
    next: Option<u64>,
    last_log: Option<Instant>,
}

impl Sequence {
    /// Apply one message's payload, `seq` its sequence number.
    fn apply(&mut self, seq: u64, payload: &[u8]) {
        self.next = Some(seq.wrapping_add(1));
        match decode(payload) {
            Ok(batch) => {
                let applied = apply(&self.index, self.worker, &batch);
                record(&applied, batch.events.len());
            }
            Err(e) => {
                metrics::counter!(crate::metrics::KV_EVENTS_MALFORMED).increment(1);
                self.log_bad(&format!("the payload of batch {seq} was refused: {e}"));
            }
        }
    }

    /// Log what was wrong with a message, at most once per [`LOG_EVERY`].
    fn log_bad(&mut self, what: &str) {
        let now = Instant::now();
        if self.last_log.is_none_or(|at| now - at >= LOG_EVERY) {
            self.last_log = Some(now);
            tracing::warn!(worker = self.worker, "KV events: {what}");
        }
    }

    /// Forget the worker's entries: they no longer match its cache.
    fn distrust(&mut self, why: &str) {
        metrics::counter!(crate::metrics::KV_EVENTS_STALE).increment(1);
        tracing::warn!(
            worker = self.worker,
            "KV events: {why}; the worker's index entries are cleared and rebuilt from new events"
        );
        self.index.clear(self.worker);
    }
}

fn record(applied: &Applied, events: usize) {
    metrics::counter!(crate::metrics::KV_EVENTS).increment(events as u64);
    if applied.orphans > 0 {
        metrics::counter!(crate::metrics::KV_EVENTS_ORPHANS).increment(applied.orphans as u64);
    }
    if applied.refused.is_some() {
        metrics::counter!(crate::metrics::KV_EVENTS_REFUSED).increment(1);
    }
}

/// The sequence number of a message's second frame (8 bytes, big-endian).
fn sequence(frame: Option<&Bytes>) -> Option<u64> {
    let bytes: [u8; 8] = frame?.as_ref().try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Follow `endpoint` for `worker` into `index`, until aborted.
pub async fn run(worker: u32, endpoint: KvEndpoint, index: Arc<Precise>) {
    let mut seq = Sequence {
        worker,
        index,
        next: None,
        last_log: None,
    };
    loop {
        let connected = async {
            let mut socket = Connection::connect(&endpoint.publisher, "SUB").await?;
            socket.subscribe(endpoint.topic.as_bytes()).await?;
            Ok::<_, ZmtpError>(socket)
        };
        let mut socket = match connected.await {
            Ok(socket) => socket,
            Err(e) => {
                tracing::debug!(worker, publisher = %endpoint.publisher, "KV events: cannot subscribe yet: {e}");
                tokio::time::sleep(RECONNECT_EVERY).await;
                continue;
            }
        };
        tracing::info!(worker, publisher = %endpoint.publisher, "KV events: subscribed");
        loop {
            match socket.recv().await {
                Ok(Received::Message(message)) => follow(&mut seq, &endpoint, &message).await,
                Ok(Received::Oversized(bytes)) => {
                    metrics::counter!(crate::metrics::KV_EVENTS_MALFORMED).increment(1);
                    seq.log_bad(&format!(
                        "a message of {bytes} bytes, past the bound, was dropped"
                    ));
                }
                Err(e) => {
                    tracing::warn!(worker, "KV events: the subscription broke: {e}");
                    break;
                }
            }
        }
        tokio::time::sleep(RECONNECT_EVERY).await;
    }
}

/// Handle one `[topic, seq, payload]` message.
async fn follow(seq: &mut Sequence, endpoint: &KvEndpoint, message: &[Bytes]) {
    let (Some(number), Some(payload)) = (sequence(message.get(1)), message.get(2)) else {
        metrics::counter!(crate::metrics::KV_EVENTS_MALFORMED).increment(1);
        return;
    };
    match seq.next {
        None if number > 0 => {
            if let Some(replay) = &endpoint.replay {
                catch_up(seq, replay, number).await;
            }
        }
        Some(next) if number > next => {
            metrics::counter!(crate::metrics::KV_EVENTS_GAPS).increment(1);
            let replayed = match &endpoint.replay {
                Some(replay) => replay_into(seq, replay, next, number).await,
                None => false,
            };
            if !replayed {
                seq.distrust(&format!("batches {next}..{number} were missed"));
            }
        }
        Some(next) if number < next => {
            seq.distrust("the publisher restarted (its sequence went back)");
        }
        _ => {}
    }
    seq.apply(number, payload);
}

/// Apply what `replay` still holds from before batch `until`, the first
/// this subscription received. The publisher keeps its last batches only,
/// so part of the history is all there is: its stores are real, and
/// removals of pages from before it are no-ops.
async fn catch_up(seq: &mut Sequence, replay: &str, until: u64) {
    match tokio::time::timeout(REPLAY_TIMEOUT, fetch_replay(replay, 0, until)).await {
        Ok(Ok(mut batches)) => {
            batches.sort_by_key(|(n, _)| *n);
            batches.dedup_by_key(|(n, _)| *n);
            for (number, payload) in &batches {
                seq.apply(*number, payload);
            }
            metrics::counter!(crate::metrics::KV_EVENTS_REPLAYED).increment(batches.len() as u64);
            tracing::info!(
                worker = seq.worker,
                batches = batches.len(),
                "KV events: caught up from the replay endpoint"
            );
        }
        Ok(Err(e)) => tracing::warn!(
            worker = seq.worker,
            "KV events: catching up from {replay} failed, following new events only: {e}"
        ),
        Err(_) => tracing::warn!(
            worker = seq.worker,
            "KV events: catching up from {replay} timed out, following new events only"
        ),
    }
}

/// Replay batches `from..until` from `replay` into `seq`; whether all came.
async fn replay_into(seq: &mut Sequence, replay: &str, from: u64, until: u64) -> bool {
    let fetched = tokio::time::timeout(REPLAY_TIMEOUT, fetch_replay(replay, from, until)).await;
    let batches = match fetched {
        Ok(Ok(batches)) => batches,
        Ok(Err(e)) => {
            tracing::warn!(
                worker = seq.worker,
                "KV events: replay from {replay} failed: {e}"
            );
            return false;
        }
        Err(_) => {
            tracing::warn!(
                worker = seq.worker,
                "KV events: replay from {replay} timed out"
            );
            return false;
        }
    };
    let complete = batches.len() as u64 == until - from
        && batches.iter().zip(from..).all(|((n, _), want)| *n == want);
    if complete {
        for (number, payload) in &batches {
            seq.apply(*number, payload);
        }
        metrics::counter!(crate::metrics::KV_EVENTS_REPLAYED).increment(batches.len() as u64);
    }
    complete
}

/// Ask `replay` for the batches from `from` on, and keep those before
/// `until`.
async fn fetch_replay(replay: &str, from: u64, until: u64) -> Result<Vec<(u64, Bytes)>, ZmtpError> {
    let mut dealer = Connection::connect(replay, "DEALER").await?;
    // A DEALER speaks to the ROUTER as a REQ would: an empty delimiter
    // frame, then the request.
    dealer.send(&[b"", &from.to_be_bytes()]).await?;
    let mut batches = Vec::new();
    loop {
        let Received::Message(reply) = dealer.recv().await? else {
            // Past the bound: this batch is missing, which the caller sees.
            continue;
        };
        // [empty, seq, payload]; seq -1 ends the replay.
        let frames: Vec<&Bytes> = reply.iter().skip_while(|f| f.is_empty()).collect();
        let Some(number) = sequence(frames.first().copied()) else {
            return Ok(batches);
        };
        if number == u64::MAX {
            return Ok(batches);
        }
        if (from..until).contains(&number)
            && let Some(payload) = frames.get(1)
        {
            batches.push((number, (*payload).clone()));
        }
    }
}
