//! What a decision record holds, and how a request's text becomes block
//! keys: chained hashes of [`BLOCK_BYTES`]-byte blocks, so two records
//! share their first n keys exactly when their texts share their first n
//! blocks, and a replay sees prefix sharing without the text.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::policy::{Candidate, Outcome};
use crate::workers::Worker;

/// Bytes of routing text per block key: 16 tokens at four bytes a token.
pub const BLOCK_BYTES: usize = 64;

/// The chained block keys of `text`: key i is xxh3 of block i seeded with
/// key i-1 (the last block may be short).
pub fn block_keys(text: &str) -> Vec<u64> {
    let mut parent = 0;
    text.as_bytes()
        .chunks(BLOCK_BYTES)
        .map(|block| {
            parent = xxh3_64_with_seed(block, parent);
            parent
        })
        .collect()
}

/// One request's decision and how it ended: a JSON line of
/// `--decision-log`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DecisionRecord {
    /// When the policy was asked, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The request's id (`x-request-id`).
    pub request_id: String,
    /// The route's path.
    pub route: String,
    /// The body's `model`.
    pub model: String,
    /// Bytes of routing text.
    pub prompt_bytes: u32,
    /// Its tokens, when the router tokenized it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u32>,
    /// Bytes per block key ([`BLOCK_BYTES`]).
    pub block_bytes: u32,
    /// The routing text's block keys ([`block_keys`]).
    pub blocks: Vec<u64>,
    /// The routing text itself, with `--decision-log-text`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The most tokens the client asked to be generated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_new_tokens: Option<u32>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The policy's declared name.
    pub policy: String,
    /// The component's sha256.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The workers offered, with what the policy saw of each.
    pub candidates: Vec<CandidateRecord>,
    /// The URL of the worker picked (of the last attempt).
    pub pick: String,
    /// Characters of the text the pick held in the policy's prefix index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_chars: Option<u64>,
    /// Prompt tokens the pick held in its KV cache, as `match-kv` told the
    /// policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_tokens: Option<u32>,
    /// Time in `select`, in microseconds.
    pub decision_us: u64,
    /// Why the native fallback decided, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// Attempts made (1 without a retry).
    pub attempts: u32,
    /// What the shadow policies answered, those that had by the end.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shadows: Vec<ShadowAnswer>,
    /// How the request ended.
    pub outcome: OutcomeRecord,
}

/// A candidate as the policy saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CandidateRecord {
    /// Its URL.
    pub url: String,
    /// Its router id.
    pub id: u32,
    /// The load the policy saw.
    pub load: u32,
    /// Requests in flight from this router.
    pub in_flight: u32,
    /// The worker's own count at its last report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported_load: Option<u32>,
    /// Of those, waiting in its queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued: Option<u32>,
    /// Requests this router sent whose answer has not begun.
    pub prefill_ahead_requests: u32,
    /// Their prompt tokens to compute.
    pub prefill_ahead_tokens: u32,
    /// Moving average of its time to first byte, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_ewma_us: Option<u64>,
}

impl CandidateRecord {
    /// `candidate`, which is `worker`.
    pub fn new(worker: &Worker, candidate: &Candidate) -> Self {
        CandidateRecord {
            url: worker.url.clone(),
            id: candidate.id,
            load: candidate.load,
            in_flight: candidate.in_flight,
            reported_load: candidate.reported_load,
            queued: candidate.queued,
            prefill_ahead_requests: candidate.prefill_ahead.requests,
            prefill_ahead_tokens: candidate.prefill_ahead.tokens,
            ttft_ewma_us: candidate.ttft_ewma.map(|d| d.as_micros() as u64),
        }
    }
}

/// How a request ended, as its last attempt's [`Outcome`] says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OutcomeRecord {
    /// The worker's status; 0 if none came, 499 if the client left first.
    pub status: u16,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Time to the first body byte, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttfb_us: Option<u64>,
    /// Time to the last byte, in microseconds.
    pub latency_us: u64,
    /// Prompt tokens the worker reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u32>,
    /// Of those, served from its KV cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u32>,
    /// Tokens it generated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u32>,
}

impl From<&Outcome> for OutcomeRecord {
    fn from(o: &Outcome) -> Self {
        OutcomeRecord {
            status: o.status,
            error: o.error.map(|e| format!("{e:?}").to_lowercase()),
            ttfb_us: o.ttft_us,
            latency_us: o.latency_us,
            prompt_tokens: o.prompt_tokens,
            cached_tokens: o.cached_tokens,
            completion_tokens: o.completion_tokens,
        }
    }
}

/// What one shadow policy answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShadowAnswer {
    /// The shadow's name (as given to `--shadow-policy`).
    pub shadow: String,
    /// The URL it picked; `None` when it faulted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pick: Option<String>,
    /// Whether it picked what the live policy did.
    pub agreed: bool,
    /// Characters its pick holds of the text in the live policy's prefix
    /// index (tokens in the KV index when the request was tokenized).
    pub matched: u64,
    /// The same for the live pick.
    pub live_matched: u64,
    /// Its fault, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_share_block_keys_as_far_as_they_share_whole_blocks() {
        let a = "x".repeat(200);
        let b = format!("{}y{}", "x".repeat(130), "x".repeat(69));
        let (ka, kb) = (block_keys(&a), block_keys(&b));
        assert_eq!(ka.len(), 4, "three whole blocks and a short one");
        assert_eq!(ka[..2], kb[..2]);
        assert_ne!(ka[2], kb[2]);
        assert_ne!(ka[3], kb[3], "a key carries its whole prefix");
        assert!(block_keys("").is_empty());
    }
}
