//! The KV event plane: what the workers say they hold in their KV caches,
//! fed into the precise prefix index ([`crate::index::Precise`]).
//!
//! SGLang and vLLM workers publish their KV cache events over ZMQ: PUB,
//! multipart `[topic, sequence number (8-byte big-endian), msgpack batch]`,
//! one publisher per data-parallel rank. [`decode`] reads a batch in every
//! encoding they use; [`apply`] folds it into the index under the worker
//! it came from; [`Subscriptions`] keeps one subscriber task per worker
//! (`subscriber`: sequence gaps, replay, restarts; `zmtp`: the ZMQ wire
//! protocol, with a bound on what a peer can make it hold), and
//! [`follow_workers`] keeps the subscriptions to the registry's workers
//! (`--kv-events`).

mod decode;
mod discover;
mod subscriber;
mod zmtp;

pub use decode::{Batch, DecodeError, Event, Stored, decode};
pub use discover::{FOLLOW_EVERY, follow_workers};
pub use subscriber::REPLAY_TIMEOUT;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::KvEndpoint;
use crate::index::{Precise, StoreError, StoredPages};

/// The subscriber tasks of a router, one per worker that publishes events,
/// all feeding one index.
#[derive(Debug)]
pub struct Subscriptions {
    index: Arc<Precise>,
    tasks: Mutex<HashMap<u32, (KvEndpoint, tokio::task::JoinHandle<()>)>>,
}

impl Subscriptions {
    /// No subscriptions yet, feeding `index`.
    pub fn new(index: Arc<Precise>) -> Self {
        Subscriptions {
            index,
            tasks: Mutex::default(),
        }
    }

    /// The index they feed.
    pub fn index(&self) -> &Arc<Precise> {
        &self.index
    }

    /// Follow `worker`'s events at `endpoint` (on the current tokio
    /// runtime), replacing a subscription to another endpoint.
    pub fn follow(&self, worker: u32, endpoint: KvEndpoint) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if tasks.get(&worker).is_some_and(|(at, _)| *at == endpoint) {
            return;
        }
        // The old subscription's pages go before the new one can add any.
        if let Some((_, old)) = tasks.remove(&worker) {
            old.abort();
            self.index.clear(worker);
        }
        self.index.follow(worker);
        let task = tokio::spawn(subscriber::run(
            worker,
            endpoint.clone(),
            self.index.clone(),
        ));
        tasks.insert(worker, (endpoint, task));
    }

    /// Stop following `worker` and forget its pages (it left the fleet).
    pub fn forget(&self, worker: u32) {
        let removed = self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&worker);
        if let Some((_, task)) = removed {
            task.abort();
        }
        self.index.drop_worker(worker);
    }

    /// Workers followed now.
    pub fn len(&self) -> usize {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no worker is followed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, task) in tasks.values() {
            task.abort();
        }
    }
}

/// What applying one batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// `BlockStored` events whose pages are in the index.
    pub stored: usize,
    /// `BlockRemoved` events.
    pub removed: usize,
    /// `AllBlocksCleared` events.
    pub cleared: usize,
    /// `BlockStored` events of pages that are not prefix cache, left out.
    pub not_prefix_cache: usize,
    /// `BlockStored` events whose parent page the index does not know: an
    /// event was missed, and the worker's entries are incomplete.
    pub orphans: usize,
    /// `BlockStored` events refused for another reason (shape, page size,
    /// the index full), the last of them.
    pub refused: Option<StoreError>,
}

/// Fold `batch`'s events, published by `worker`, into `index`.
pub fn apply(index: &Precise, worker: u32, batch: &Batch) -> Applied {
    let mut applied = Applied::default();
    for event in &batch.events {
        match event {
            Event::Stored(s) if !s.prefix_cache => applied.not_prefix_cache += 1,
            Event::Stored(s) => match index.store(
                worker,
                StoredPages {
                    medium: s.medium,
                    parent: s.parent,
                    hashes: &s.hashes,
                    tokens: &s.token_ids,
                    block_size: s.block_size,
                    seed: s.lora_seed,
                },
            ) {
                Ok(()) => applied.stored += 1,
                Err(StoreError::Orphan(_)) => applied.orphans += 1,
                Err(e) => applied.refused = Some(e),
            },
            Event::Removed { hashes, medium } => {
                index.remove(worker, *medium, hashes);
                applied.removed += 1;
            }
            Event::Cleared => {
                index.clear(worker);
                applied.cleared += 1;
            }
        }
    }
    applied
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Medium;

    fn stored(hash: u64, parent: Option<u64>, tokens: [u32; 2]) -> Event {
        Event::Stored(Stored {
            hashes: vec![hash],
            parent,
            token_ids: tokens.to_vec(),
            block_size: 2,
            medium: Medium::Gpu,
            lora_seed: 0,
            prefix_cache: true,
        })
    }

    fn batch(events: Vec<Event>) -> Batch {
        Batch {
            ts: 0.0,
            dp_rank: None,
            events,
            skipped: 0,
        }
    }

    #[test]
    fn a_batch_folds_into_the_index_and_says_what_it_could_not() {
        let index = Precise::default();
        let mut sliding = stored(9, None, [5, 6]);
        if let Event::Stored(s) = &mut sliding {
            s.prefix_cache = false;
        }
        let applied = apply(
            &index,
            3,
            &batch(vec![
                stored(1, None, [1, 2]),
                stored(2, Some(1), [3, 4]),
                stored(4, Some(3), [7, 8]),
                sliding,
                Event::Removed {
                    hashes: vec![2],
                    medium: Medium::Gpu,
                },
            ]),
        );
        assert_eq!(
            applied,
            Applied {
                stored: 2,
                removed: 1,
                not_prefix_cache: 1,
                orphans: 1,
                ..Applied::default()
            }
        );
        assert_eq!(index.matched(&[1, 2, 3, 4], &[3])[0].gpu, 2);
        let applied = apply(&index, 3, &batch(vec![Event::Cleared]));
        assert_eq!(applied.cleared, 1);
        assert!(index.is_empty());
    }
}
