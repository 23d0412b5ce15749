//! Tokenizing a routing text once per prefix, not once per request.
//!
//! Every replica that routes by the workers' KV caches tokenizes every
//! prompt (about 0.3 ms per KB with a BPE tokenizer), and prompts share long
//! prefixes: a system prompt, a conversation so far. Two levels, as
//! sglang-router names them:
//!
//! - **L0**, whole texts: a text seen before gets its tokens back
//!   (`--tokenizer-cache-l0-max-entries`).
//! - **L1**, prefixes: a text is cut into chunks of about [`CHUNK_BYTES`]
//!   at *safe cuts*, and each chunk's tokens are kept under a chained hash
//!   of the whole text up to its end (`--tokenizer-cache-l1-max-memory`).
//!   A new prompt with a known prefix tokenizes only the chunks after it.
//!
//! A safe cut is a space between two non-space characters: BPE
//! pre-tokenizers (GPT-2's and Llama 3's byte-level regexes) start a new
//! pre-token there, and merges never cross pre-tokens, so the chunks'
//! tokens joined are the whole text's. Not every tokenizer splits so (a
//! normalizer that prepends `▁`, say): [`ChunkPlan::probe`] checks the
//! tokenizer on sample texts when it loads, and without a match only L0
//! is used. Chunks are cut where the text itself says (the first safe cut
//! past each [`CHUNK_BYTES`]), so two texts sharing a prefix are cut alike
//! within it.
//!
//! Both levels are sharded maps evicting their oldest entries first, each
//! shard behind its own short lock; tokenizing runs outside them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::config::TokenizerCache as CacheSizes;

/// Bytes a chunk reaches before it is cut at the next safe cut.
pub const CHUNK_BYTES: usize = 256;

/// Shards of each level: requests on different threads rarely meet.
const SHARDS: usize = 16;

/// What an entry costs beside its tokens (key, map slot, queue slot).
const ENTRY_OVERHEAD: usize = 64;

/// How this tokenizer's texts are cut: its special tokens around a text,
/// and whether chunks tokenize as the whole does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkPlan {
    /// Special tokens the tokenizer puts before a text (a BOS).
    pub before: Vec<u32>,
    /// And after it.
    pub after: Vec<u32>,
}

/// Where the safe cuts of `text` are: the chunks' ends, past each
/// [`CHUNK_BYTES`] from the last cut, the last chunk left out.
pub fn cuts(text: &str) -> impl Iterator<Item = usize> + '_ {
    let bytes = text.as_bytes();
    let mut start = 0;
    std::iter::from_fn(move || {
        let from = start + CHUNK_BYTES;
        let cut = (from.max(1)..bytes.len().saturating_sub(1)).find(|&i| {
            bytes[i] == b' '
                && !bytes[i - 1].is_ascii_whitespace()
                && !bytes[i + 1].is_ascii_whitespace()
        })?;
        start = cut;
        Some(cut)
    })
}

impl ChunkPlan {
    /// The plan for a tokenizer that encodes with `encode(text, special)`,
    /// if cutting at safe cuts gives the whole text's tokens on sample
    /// texts (its added tokens among them); `None` otherwise.
    pub fn probe<E>(encode: E, added: &[String]) -> Option<ChunkPlan>
    where
        E: Fn(&str, bool) -> Option<Vec<u32>>,
    {
        let bare = encode("a", false)?;
        let with = encode("a", true)?;
        let at = with.windows(bare.len()).position(|w| w == bare)?;
        let plan = ChunkPlan {
            before: with[..at].to_vec(),
            after: with[at + bare.len()..].to_vec(),
        };
        let samples = samples(added);
        let all_agree = samples.iter().all(|text| {
            let whole = encode(text, true);
            whole.is_some() && whole == plan.join(text, |chunk| encode(chunk, false))
        });
        all_agree.then_some(plan)
    }

    /// The tokens of `text`: its chunks' tokens, from `chunk`, between the
    /// special tokens.
    fn join<C>(&self, text: &str, mut chunk: C) -> Option<Vec<u32>>
    where
        C: FnMut(&str) -> Option<Vec<u32>>,
    {
        let mut ids = self.before.clone();
        let mut start = 0;
        for cut in cuts(text).chain(std::iter::once(text.len())) {
            ids.extend(chunk(&text[start..cut])?);
            start = cut;
        }
        ids.extend(&self.after);
        Some(ids)
    }
}

/// Texts that exercise the cuts: words, numbers, punctuation, runs of
/// spaces and new lines, other scripts, and the tokenizer's added tokens
/// beside spaces.
fn samples(added: &[String]) -> Vec<String> {
    let words = [
        "the",
        "router",
        "Worker",
        "caches",
        "1234567",
        "3.14",
        "(see",
        "below)",
        "don't",
        "it's",
        "e.g.,",
        "--flag",
        "naïve",
        "日本語の",
        "テキスト",
        "emoji🙂",
        "\"quoted\"",
        "tab\there",
        "line\nbreak",
        "two  spaces",
        "end.\n\nNew",
        "x",
        "α-β",
        "$100",
    ];
    let mut out = Vec::new();
    for seed in 0..12usize {
        let mut text = String::new();
        let mut i = seed;
        while text.len() < 3 * CHUNK_BYTES {
            i = i
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let pick = (i >> 33) % (words.len() + added.len());
            match words.get(pick) {
                Some(word) => text.push_str(word),
                None => text.push_str(&added[pick - words.len()]),
            }
            text.push(' ');
        }
        out.push(text);
    }
    out
}

/// One level: shards of key -> tokens, oldest evicted first past a budget.
#[derive(Debug)]
struct Level {
    shards: Vec<Mutex<Shard>>,
    /// A shard's budget, in entries (`count`) or bytes.
    budget: usize,
    count: bool,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<u64, Arc<[u32]>>,
    order: VecDeque<u64>,
    used: usize,
}

impl Level {
    fn new(budget: usize, count: bool) -> Self {
        Level {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            budget: budget.div_ceil(SHARDS),
            count,
        }
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, Shard> {
        // A shard is whole after every critical section.
        self.shards[(key % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: u64) -> Option<Arc<[u32]>> {
        self.shard(key).map.get(&key).cloned()
    }

    fn cost(&self, tokens: &[u32]) -> usize {
        if self.count {
            1
        } else {
            ENTRY_OVERHEAD + std::mem::size_of_val(tokens)
        }
    }

    fn insert(&self, key: u64, tokens: Arc<[u32]>) {
        let cost = self.cost(&tokens);
        if self.budget == 0 || cost > self.budget {
            return;
        }
        let mut shard = self.shard(key);
        if let Some(old) = shard.map.insert(key, tokens) {
            shard.used -= self.cost(&old);
        } else {
            shard.order.push_back(key);
        }
        shard.used += cost;
        while shard.used > self.budget {
            let Some(oldest) = shard.order.pop_front() else {
                break;
            };
            if let Some(gone) = shard.map.remove(&oldest) {
                shard.used -= self.cost(&gone);
            }
        }
    }
}

/// The two levels, and how this tokenizer's texts are cut (`None`: not
/// cut; L0 only).
#[derive(Debug)]
pub struct TokenCache {
    whole: Level,
    chunks: Level,
    plan: Option<ChunkPlan>,
}

/// Seed of the chunks' chained hashes, apart from the wholes' keys.
const CHUNK_SEED: u64 = 0x6b76_5f63_6875_6e6b;

impl TokenCache {
    /// Levels of `sizes`, cutting texts by `plan`.
    pub fn new(sizes: CacheSizes, plan: Option<ChunkPlan>) -> Self {
        TokenCache {
            whole: Level::new(sizes.l0_entries, true),
            chunks: Level::new(sizes.l1_bytes, false),
            plan,
        }
    }

    /// Whether texts are cut into prefix chunks (the probe agreed).
    pub fn cuts_prefixes(&self) -> bool {
        self.plan.is_some()
    }

    /// The tokens of `text` with special tokens: from L0, else joined from
    /// L1's chunks, tokenizing (`encode(text, special)`) only the chunks
    /// not kept, and only while `go_on(tokens so far)` says the rest may
    /// still matter (the workers hold every page so far); a text cut short
    /// there gets its count estimated. Whole texts are kept in both levels.
    pub fn tokens<E, Err>(
        &self,
        text: &str,
        encode: E,
        mut go_on: impl FnMut(&[u32]) -> bool,
    ) -> Result<Routed, Err>
    where
        E: Fn(&str, bool) -> Result<Vec<u32>, Err>,
    {
        let key = xxh3_64(text.as_bytes());
        if let Some(hit) = self.whole.get(key) {
            return Ok(Routed::whole(hit));
        }
        let Some(plan) = &self.plan else {
            let tokens: Arc<[u32]> = encode(text, true)?.into();
            self.whole.insert(key, tokens.clone());
            return Ok(Routed::whole(tokens));
        };
        let mut ids = plan.before.clone();
        let mut chain = CHUNK_SEED;
        let mut start = 0;
        for cut in cuts(text) {
            chain = xxh3_64_with_seed(&text.as_bytes()[start..cut], chain);
            match self.chunks.get(chain) {
                Some(kept) => ids.extend_from_slice(&kept),
                None if !go_on(&ids) => return Ok(plan.cut_short(ids, text, start)),
                None => {
                    let fresh: Arc<[u32]> = encode(&text[start..cut], false)?.into();
                    ids.extend_from_slice(&fresh);
                    self.chunks.insert(chain, fresh);
                }
            }
            start = cut;
        }
        if !go_on(&ids) {
            return Ok(plan.cut_short(ids, text, start));
        }
        ids.extend(encode(&text[start..], false)?);
        ids.extend_from_slice(&plan.after);
        let tokens: Arc<[u32]> = ids.into();
        self.whole.insert(key, tokens.clone());
        Ok(Routed::whole(tokens))
    }
}

/// A routing text's tokens: all of them, or its start when the rest could
/// match no worker's pages, with the whole count then estimated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The tokens of the text, or of its start.
    pub tokens: Arc<[u32]>,
    /// How many tokens the whole text has (estimated when `tokens` is its
    /// start only).
    pub total: usize,
}

impl Routed {
    fn whole(tokens: Arc<[u32]>) -> Routed {
        Routed {
            total: tokens.len(),
            tokens,
        }
    }
}

impl ChunkPlan {
    /// `ids`, the tokens of `text[..start]`, as a text cut short: the rest
    /// counted at the start's rate of tokens per byte.
    fn cut_short(&self, ids: Vec<u32>, text: &str, start: usize) -> Routed {
        let content = ids.len() - self.before.len();
        let rest = if start == 0 || content == 0 {
            // Nothing to take a rate from: a BPE token is about 4 bytes.
            (text.len() - start).div_ceil(4)
        } else {
            ((text.len() - start) as f64 * content as f64 / start as f64).round() as usize
        };
        Routed {
            total: ids.len() + rest + self.after.len(),
            tokens: ids.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy tokenizer: one token per byte, a BOS before; a "pre-token"
    /// never crosses a space, as the cuts assume.
    fn bytes(text: &str, special: bool) -> Result<Vec<u32>, ()> {
        let mut ids: Vec<u32> = if special { vec![1] } else { vec![] };
        ids.extend(text.bytes().map(u32::from));
        Ok(ids)
    }

    /// A cache cutting texts for [`bytes`], whose plan puts its BOS first.
    fn byte_cache() -> TokenCache {
        let plan = ChunkPlan::probe(|t, s| bytes(t, s).ok(), &[]).unwrap();
        assert_eq!(plan.before, vec![1]);
        TokenCache::new(
            CacheSizes {
                l0_entries: 100,
                l1_bytes: 1 << 20,
            },
            Some(plan),
        )
    }

    #[test]
    fn cuts_fall_on_spaces_between_words_past_each_chunk() {
        let text = "word ".repeat(200);
        let found: Vec<usize> = cuts(&text).collect();
        assert!(found.len() >= 3, "{found:?}");
        let mut last = 0;
        for &cut in &found {
            assert!(cut >= last + CHUNK_BYTES, "{found:?}");
            assert_eq!(&text[cut..cut + 1], " ");
            assert_ne!(&text[cut - 1..cut], " ");
            last = cut;
        }
        assert!(text.len() - last > 0, "the last chunk is left out");
        assert_eq!(cuts(&"x".repeat(2000)).count(), 0, "no space, no cut");
        assert_eq!(cuts("a b").count(), 0, "short texts are one chunk");
    }

    #[test]
    fn a_known_prefix_is_not_tokenized_again() {
        let cache = byte_cache();
        let system = "You are a router. ".repeat(60);
        let encoded = std::cell::RefCell::new(0usize);
        let counting = |t: &str, s: bool| {
            *encoded.borrow_mut() += t.len();
            bytes(t, s)
        };
        let first = format!("{system}first question");
        let tokens = cache.tokens(&first, counting, |_| true).unwrap();
        assert_eq!(&tokens.tokens[..], &bytes(&first, true).unwrap()[..]);
        assert_eq!(*encoded.borrow(), first.len());
        *encoded.borrow_mut() = 0;
        let second = format!("{system}another question, longer");
        let tokens = cache.tokens(&second, counting, |_| true).unwrap();
        assert_eq!(&tokens.tokens[..], &bytes(&second, true).unwrap()[..]);
        let fresh = *encoded.borrow();
        assert!(
            fresh < 2 * CHUNK_BYTES + 30,
            "{fresh} of {} bytes tokenized again",
            second.len()
        );
        *encoded.borrow_mut() = 0;
        cache.tokens(&second, counting, |_| true).unwrap();
        assert_eq!(*encoded.borrow(), 0, "a whole text seen before");
    }

    /// Issue 31: past the point where no worker holds the pages, the rest
    /// of a text is not tokenized; its count is estimated, and the partial
    /// tokens are not kept as the whole text's.
    #[test]
    fn a_text_is_tokenized_only_as_far_as_asked() {
        let cache = byte_cache();
        let text = "words of a prompt ".repeat(60);
        let encoded = std::cell::RefCell::new(0usize);
        let counting = |t: &str, s: bool| {
            *encoded.borrow_mut() += t.len();
            bytes(t, s)
        };
        // Only the first chunk: then "no worker holds these pages".
        let routed = cache.tokens(&text, counting, |ids| ids.len() <= 1).unwrap();
        assert!(*encoded.borrow() < 2 * CHUNK_BYTES, "{}", encoded.borrow());
        assert!(routed.tokens.len() < text.len() / 2);
        let whole = bytes(&text, true).unwrap().len();
        assert_eq!(routed.total, whole, "one token per byte, estimated exactly");
        assert_eq!(
            &routed.tokens[..],
            &bytes(&text, true).unwrap()[..routed.tokens.len()]
        );
        // Asked for all of it, it is tokenized whole (the first chunk kept).
        let routed = cache.tokens(&text, counting, |_| true).unwrap();
        assert_eq!(routed.tokens.len(), whole);
    }

    #[test]
    fn a_tokenizer_whose_chunks_differ_is_not_cut() {
        // Prepends a marker to every text it encodes, as a normalizer that
        // prepends `▁` does: chunks would each get one.
        let marking = |t: &str, s: bool| {
            let mut ids = vec![7];
            ids.extend(bytes(t, s).ok()?);
            Some(ids)
        };
        assert_eq!(ChunkPlan::probe(marking, &[]), None);
    }

    #[test]
    fn levels_keep_within_their_budgets() {
        let level = Level::new(SHARDS * 2, true);
        for key in 0..1000u64 {
            level.insert(key, Arc::from(vec![1u32]));
        }
        let kept: usize = level
            .shards
            .iter()
            .map(|s| s.lock().unwrap().map.len())
            .sum();
        assert_eq!(kept, SHARDS * 2);
        assert!(level.get(999).is_some() && level.get(0).is_none());
        let bytes = Level::new(SHARDS * 1000, false);
        for key in 0..1000u64 {
            bytes.insert(key, Arc::from(vec![0u32; 100]));
        }
        for shard in &bytes.shards {
            assert!(shard.lock().unwrap().used <= 1000);
        }
    }
}
