//! Ties between equally good workers, broken the same way in every router
//! replica.
//!
//! Several router replicas behind one balancer each see part of the
//! traffic. When a policy has nothing to tell workers apart (a new prompt,
//! empty caches, equal loads), "the smallest id" sends every replica's new
//! prompts to the same first workers, and the rest of the fleet idles. A
//! rendezvous hash of the prompt's start and the worker's URL instead
//! spreads new prompts over the fleet, and every replica picks the same
//! worker for the same prompt, so their caches agree. (URLs, not ids: each
//! router numbers its workers itself.)

use std::collections::HashMap;

use crate::WorkerInfo;

/// Bytes of the routing text that choose a worker: a system prompt or a
/// conversation's start, not the question that ends it.
pub const PREFIX_BYTES: usize = 256;

/// Each worker's hashed URL, from `workers-changed`: call
/// [`TieBreak::workers_changed`] from the policy's own.
#[derive(Debug, Clone, Default)]
pub struct TieBreak {
    workers: HashMap<u32, u64>,
}

/// FNV-1a, 64 bits, then a final mix: stable across builds and platforms,
/// as replicas may run different builds.
fn hash(bytes: &[u8]) -> u64 {
    let mut h = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

impl TieBreak {
    /// Remember the fleet's URLs.
    pub fn workers_changed(&mut self, workers: &[WorkerInfo]) {
        self.workers = workers
            .iter()
            .map(|w| (w.id, hash(w.url.as_bytes())))
            .collect();
    }

    /// The key of a routing text: its first [`PREFIX_BYTES`]. Give it
    /// `req.text_prefix(PREFIX_BYTES)` to copy no more of the text than
    /// that (the key is the same as of the whole text).
    pub fn key(text: &str) -> u64 {
        hash(&text.as_bytes()[..text.len().min(PREFIX_BYTES)])
    }

    /// Worker `id`'s rank for `key`: among tied workers the lowest rank
    /// wins. A worker the policy was not told about ranks by its id.
    pub fn rank(&self, key: u64, id: u32) -> u64 {
        let worker = self
            .workers
            .get(&id)
            .copied()
            .unwrap_or_else(|| hash(&id.to_le_bytes()));
        let mut h = (key ^ worker).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 29;
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;

    fn fleet(urls: &[&str], first_id: u32) -> TieBreak {
        let workers: Vec<WorkerInfo> = urls
            .iter()
            .zip(first_id..)
            .map(|(url, id)| WorkerInfo {
                id,
                url: url.to_string(),
                model: String::new(),
                role: Role::Regular,
                dp_rank: None,
            })
            .collect();
        let mut t = TieBreak::default();
        t.workers_changed(&workers);
        t
    }

    fn winner(t: &TieBreak, text: &str, ids: &[u32]) -> u32 {
        let key = TieBreak::key(text);
        *ids.iter().min_by_key(|&&id| t.rank(key, id)).unwrap()
    }

    #[test]
    fn replicas_numbering_workers_differently_pick_the_same_url() {
        let urls = ["http://a:1", "http://b:1", "http://c:1", "http://d:1"];
        let one = fleet(&urls, 0);
        let reversed: Vec<&str> = urls.iter().rev().copied().collect();
        let other = fleet(&reversed, 10);
        for i in 0..50 {
            let text = format!("system prompt {i}: you are a helpful assistant");
            let a = winner(&one, &text, &[0, 1, 2, 3]) as usize;
            let b = winner(&other, &text, &[10, 11, 12, 13]) as usize - 10;
            assert_eq!(urls[a], reversed[b], "{text}");
        }
    }

    #[test]
    fn new_prompts_spread_over_the_fleet_and_only_the_start_counts() {
        let t = fleet(&["http://a:1", "http://b:1", "http://c:1", "http://d:1"], 0);
        let mut seen = [0; 4];
        for i in 0..64 {
            seen[winner(&t, &format!("prompt {i}"), &[0, 1, 2, 3]) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n >= 6), "spread: {seen:?}");
        let start = "s".repeat(PREFIX_BYTES);
        assert_eq!(
            winner(&t, &format!("{start} one question"), &[0, 1, 2, 3]),
            winner(&t, &format!("{start} another"), &[0, 1, 2, 3])
        );
    }
}
