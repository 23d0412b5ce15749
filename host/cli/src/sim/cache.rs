//! The simulated worker's KV cache: prompts cut into blocks of tokens, each
//! block keyed by the hash of everything up to its end (so a block only hits
//! if its whole prefix matches, as in SGLang's radix cache and vLLM's prefix
//! caching), evicted least recently used when over capacity.
//!
//! Without a tokenizer a token is [`CHARS_PER_TOKEN`] characters; with one
//! ([`PrefixCache::process_tokens`]) the blocks are pages of real token ids,
//! and what changes is reported as [`CacheEvent`]s, the shape of the
//! workers' KV cache events (`--kv-events-port`).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

/// Characters per simulated token: a common rule of thumb for English text.
pub const CHARS_PER_TOKEN: usize = 4;

/// See the module docs.
#[derive(Debug)]
pub struct PrefixCache {
    block_tokens: usize,
    capacity_blocks: usize,
    /// Block hash -> last use.
    blocks: HashMap<u64, u64>,
    /// Last use -> block hash, for eviction in LRU order.
    by_age: BTreeMap<u64, u64>,
    clock: u64,
}

/// A change of the cache, as a worker's KV cache events report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheEvent {
    /// A page was stored: its key, its parent's (none for a first page),
    /// its token ids.
    Stored {
        /// The page's key (the engine's block hash).
        hash: u64,
        /// The previous page's key.
        parent: Option<u64>,
        /// Its token ids.
        tokens: Vec<u32>,
    },
    /// Pages were evicted.
    Removed(Vec<u64>),
    /// Everything was dropped.
    Cleared,
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookup {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Of those, tokens served from the cache.
    pub cached_tokens: usize,
}

impl PrefixCache {
    /// A cache of `capacity_tokens`, in blocks of `block_tokens`.
    pub fn new(block_tokens: usize, capacity_tokens: usize) -> Self {
        let block_tokens = block_tokens.max(1);
        PrefixCache {
            block_tokens,
            capacity_blocks: (capacity_tokens / block_tokens).max(1),
            blocks: HashMap::new(),
            by_age: BTreeMap::new(),
            clock: 0,
        }
    }

    /// Tokens of a prompt, approximated from its characters (at least one).
    pub fn tokens(text: &str) -> usize {
        text.chars().count().div_ceil(CHARS_PER_TOKEN).max(1)
    }

    /// Look `text` up and then cache all its full blocks (as a worker does
    /// after prefill).
    pub fn process(&mut self, text: &str) -> Lookup {
        let chars: Vec<char> = text.chars().collect();
        let block_chars = self.block_tokens * CHARS_PER_TOKEN;
        let mut hasher = DefaultHasher::new();
        let keys: Vec<u64> = chars
            .chunks_exact(block_chars)
            .map(|block| {
                block.hash(&mut hasher);
                hasher.finish()
            })
            .collect();
        let (lookup, _, _) = self.process_keys(&keys, Self::tokens(text));
        lookup
    }

    /// The same for a prompt of real token ids, reporting the pages stored
    /// and evicted into `events`.
    pub fn process_tokens(&mut self, tokens: &[u32], events: &mut Vec<CacheEvent>) -> Lookup {
        let mut hasher = DefaultHasher::new();
        let pages: Vec<&[u32]> = tokens.chunks_exact(self.block_tokens).collect();
        let keys: Vec<u64> = pages
            .iter()
            .map(|page| {
                page.hash(&mut hasher);
                hasher.finish()
            })
            .collect();
        let (lookup, stored, evicted) = self.process_keys(&keys, tokens.len().max(1));
        for at in stored {
            events.push(CacheEvent::Stored {
                hash: keys[at],
                parent: at.checked_sub(1).map(|p| keys[p]),
                tokens: pages[at].to_vec(),
            });
        }
        if !evicted.is_empty() {
            events.push(CacheEvent::Removed(evicted));
        }
        lookup
    }

    /// Look a prompt of `prompt_tokens` up by its chained block `keys`
    /// (a replayed trace's), and cache them all: what was found, the
    /// positions of the keys that were not held, and the keys evicted.
    pub fn process_blocks(
        &mut self,
        keys: &[u64],
        prompt_tokens: usize,
    ) -> (Lookup, Vec<usize>, Vec<u64>) {
        self.process_keys(keys, prompt_tokens)
    }

    /// Look the chained block `keys` of a prompt of `prompt_tokens` up,
    /// cache them all, and evict: what was found, the positions of the
    /// keys that were not held, and the keys evicted.
    fn process_keys(
        &mut self,
        keys: &[u64],
        prompt_tokens: usize,
    ) -> (Lookup, Vec<usize>, Vec<u64>) {
        let mut hits = 0;
        let mut missed = false;
        let mut stored = Vec::new();
        for (at, &key) in keys.iter().enumerate() {
            let held = self.blocks.contains_key(&key);
            if !missed && held {
                hits += 1;
            } else {
                missed = true;
            }
            if !held {
                stored.push(at);
            }
            self.touch(key);
        }
        let evicted = self.evict();
        let lookup = Lookup {
            prompt_tokens,
            cached_tokens: (hits * self.block_tokens).min(prompt_tokens),
        };
        (lookup, stored, evicted)
    }

    fn touch(&mut self, key: u64) {
        self.clock += 1;
        if let Some(old) = self.blocks.insert(key, self.clock) {
            self.by_age.remove(&old);
        }
        self.by_age.insert(self.clock, key);
    }

    /// Evict least recently used blocks down to capacity; their keys.
    fn evict(&mut self) -> Vec<u64> {
        let mut evicted = Vec::new();
        while self.blocks.len() > self.capacity_blocks {
            let Some((_, key)) = self.by_age.pop_first() else {
                break;
            };
            self.blocks.remove(&key);
            evicted.push(key);
        }
        evicted
    }

    /// Drop everything (`/flush_cache`).
    pub fn flush(&mut self) {
        self.blocks.clear();
        self.by_age.clear();
    }

    /// Tokens held.
    pub fn used_tokens(&self) -> usize {
        self.blocks.len() * self.block_tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(seed: char, chars: usize) -> String {
        std::iter::repeat_n(seed, chars).collect()
    }

    #[test]
    fn a_repeated_prefix_is_reported_as_cached() {
        let mut c = PrefixCache::new(4, 10_000);
        let system = text('s', 160);
        let first = c.process(&format!("{system}question one"));
        assert_eq!(first.cached_tokens, 0);
        let second = c.process(&format!("{system}question two"));
        assert_eq!(
            second.cached_tokens, 40,
            "the 160-char system prompt is 40 tokens"
        );
        assert!(second.cached_tokens < second.prompt_tokens);
    }

    #[test]
    fn a_block_only_hits_when_its_whole_prefix_matches() {
        let mut c = PrefixCache::new(4, 10_000);
        c.process(&format!("{}{}", text('a', 16), text('b', 16)));
        assert_eq!(
            c.process(&format!("{}{}", text('x', 16), text('b', 16)))
                .cached_tokens,
            0
        );
    }

    #[test]
    fn eviction_forgets_the_least_recently_used() {
        // Room for two 4-token blocks.
        let mut c = PrefixCache::new(4, 8);
        let (a, b, d) = (text('a', 16), text('b', 16), text('d', 16));
        c.process(&a);
        c.process(&b);
        c.process(&a); // a is now the most recent
        c.process(&d); // evicts b
        assert_eq!(c.process(&a).cached_tokens, 4);
        assert_eq!(c.process(&b).cached_tokens, 0);
        assert!(c.used_tokens() <= 8);
    }

    #[test]
    fn token_pages_report_what_they_store_and_evict() {
        // Room for three pages of two tokens.
        let mut c = PrefixCache::new(2, 6);
        let mut events = Vec::new();
        let first = c.process_tokens(&[1, 2, 3, 4, 5], &mut events);
        assert_eq!((first.prompt_tokens, first.cached_tokens), (5, 0));
        let [
            CacheEvent::Stored {
                hash: a,
                parent: None,
                tokens: ta,
            },
            CacheEvent::Stored {
                hash: _,
                parent: Some(pa),
                tokens: tb,
            },
        ] = &events[..]
        else {
            panic!("{events:?}")
        };
        assert_eq!(
            (ta.as_slice(), tb.as_slice(), pa),
            (&[1, 2][..], &[3, 4][..], a)
        );
        events.clear();
        // The same first page, then two new ones: one evicted (the oldest,
        // [3, 4]'s page, since [1, 2]'s was just used).
        let second = c.process_tokens(&[1, 2, 7, 8, 9, 9], &mut events);
        assert_eq!(second.cached_tokens, 2);
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(matches!(&events[2], CacheEvent::Removed(keys) if keys.len() == 1));
    }

    #[test]
    fn flush_forgets_everything() {
        let mut c = PrefixCache::new(4, 100);
        c.process(&text('a', 64));
        c.flush();
        assert_eq!(c.process(&text('a', 64)).cached_tokens, 0);
    }
}
