//! Host-held prefix indexes. The approximate one ([`Approximate`]) is what a
//! policy reaches through contract 0.2's `prefix-index` import: the text it
//! routed, under the worker it went to, matched natively and shared by all
//! the policy's instances. The precise one ([`Precise`]) holds the KV cache
//! pages the workers say they hold, from their events ([`crate::events`]).

mod precise;

pub use precise::{
    MAX_PAGES, MAX_PAGES_PER_WORKER, Matched, Medium, PageKey, Precise, StoreError, StoredPages,
    page_key, page_keys,
};

use std::sync::RwLock;

use prefix_tree::{PrefixMatch, Tree};

/// Characters one index holds at most (text held by two workers counts
/// twice). Past it, inserts are dropped until an eviction makes room: a
/// policy that never evicts cannot grow the router without bound.
pub const MAX_CHARS: u64 = 1 << 28;

/// An approximate prefix index. Matching takes a read lock, inserting and
/// evicting a write lock.
#[derive(Debug)]
pub struct Approximate {
    tree: RwLock<Tree>,
    limit: u64,
}

impl Default for Approximate {
    fn default() -> Self {
        Approximate::with_limit(MAX_CHARS)
    }
}

impl Approximate {
    /// An index holding at most `limit` characters.
    pub fn with_limit(limit: u64) -> Self {
        Approximate {
            tree: RwLock::default(),
            limit,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tree> {
        // The tree's methods leave it whole even when they panic midway
        // (bounds checks fail before any write), so a poisoned lock's
        // tree is still usable.
        self.tree.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Tree> {
        self.tree.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The longest prefix of `text` held for one of `workers` (sorted).
    pub fn prefix_match(&self, text: &str, workers: &[u32]) -> PrefixMatch {
        self.read().prefix_match(text, workers)
    }

    /// Record that `text` went to `worker`; `false` if the index is full.
    pub fn insert(&self, text: &str, worker: u32) -> bool {
        let mut tree = self.write();
        // A text has at most as many characters as bytes: counting them,
        // a pass over the whole text, is needed only near the bound.
        let held = tree.chars();
        if held + text.len() as u64 > self.limit && held + text.chars().count() as u64 > self.limit
        {
            return false;
        }
        tree.insert(text, worker);
        true
    }

    /// Characters held for each of `workers`.
    pub fn sizes(&self, workers: &[u32]) -> Vec<u64> {
        let tree = self.read();
        workers.iter().map(|&w| tree.size(w)).collect()
    }

    /// Characters held in all.
    pub fn chars(&self) -> u64 {
        self.read().chars()
    }

    /// Trim each worker to `max_chars`, least recently used first.
    pub fn evict(&self, max_chars: u64) {
        self.write().evict(max_chars);
    }

    /// Forget the workers not in `workers`.
    pub fn retain(&self, workers: &[u32]) {
        self.write().retain_tenants(workers);
    }

    /// Forget everything.
    pub fn clear(&self) {
        *self.write() = Tree::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_matches_what_was_inserted_and_forgets_removed_workers() {
        let index = Approximate::default();
        assert!(index.insert("You are a helpful assistant. Hi", 1));
        assert!(index.insert("Translate to French: cheese", 2));
        let m = index.prefix_match("You are a helpful assistant. Bye", &[1, 2]);
        assert_eq!((m.tenant, m.matched_chars), (Some(1), 29));
        assert_eq!(index.sizes(&[1, 2, 3]), [31, 27, 0]);
        index.retain(&[2]);
        assert_eq!(index.prefix_match("You are", &[1, 2]).tenant, None);
        assert_eq!(index.chars(), 27);
        index.clear();
        assert_eq!(index.chars(), 0);
    }

    /// Pass/fail pair at the bound: the insert that fits is kept, the one
    /// past it is dropped, and an eviction makes room again.
    #[test]
    fn a_full_index_drops_inserts_until_evicted() {
        let index = Approximate::with_limit(100);
        let half = "x".repeat(50);
        assert!(index.insert(&half, 1));
        assert!(index.insert(&half, 2));
        assert_eq!(index.chars(), 100);
        assert!(!index.insert("y", 3));
        assert_eq!(index.sizes(&[3]), [0]);
        index.evict(0);
        assert!(index.insert("y", 3));
    }

    /// The bound counts characters, not bytes: two-byte characters up to
    /// it fit, one more does not.
    #[test]
    fn the_bound_counts_characters_not_bytes() {
        let index = Approximate::with_limit(100);
        assert!(index.insert(&"é".repeat(50), 1));
        assert!(index.insert(&"é".repeat(50), 2));
        assert_eq!(index.chars(), 100);
        assert!(!index.insert("é", 3));
    }
}
