//! The simulated worker's KV cache: prompts cut into blocks of tokens, each
//! block keyed by the hash of everything up to its end (so a block only hits
//! if its whole prefix matches, as in SGLang's radix cache and vLLM's prefix
//! caching), evicted least recently used when over capacity.

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
        let prompt_tokens = Self::tokens(text);
        let chars: Vec<char> = text.chars().collect();
        let block_chars = self.block_tokens * CHARS_PER_TOKEN;
        let mut hasher = DefaultHasher::new();
        let mut hits = 0;
        let mut missed = false;
        for block in chars.chunks_exact(block_chars) {
            block.hash(&mut hasher);
            let key = hasher.finish();
            if !missed && self.blocks.contains_key(&key) {
                hits += 1;
            } else {
                missed = true;
            }
            self.touch(key);
        }
        self.evict();
        Lookup {
            prompt_tokens,
            cached_tokens: (hits * self.block_tokens).min(prompt_tokens),
        }
    }

    fn touch(&mut self, key: u64) {
        self.clock += 1;
        if let Some(old) = self.blocks.insert(key, self.clock) {
            self.by_age.remove(&old);
        }
        self.by_age.insert(self.clock, key);
    }

    fn evict(&mut self) {
        while self.blocks.len() > self.capacity_blocks {
            let Some((_, key)) = self.by_age.pop_first() else {
                break;
            };
            self.blocks.remove(&key);
        }
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
    fn flush_forgets_everything() {
        let mut c = PrefixCache::new(4, 100);
        c.process(&text('a', 64));
        c.flush();
        assert_eq!(c.process(&text('a', 64)).cached_tokens, 0);
    }
}
