//! The router's own tokenizer (`--tokenizer-path`, `--model-path`): a local
//! Hugging Face `tokenizer.json`, loaded with the `tokenizers` crate. The
//! router downloads nothing: a model id that is not a local path is refused
//! when the flags are read ([`crate::config`]). It serves `/v1/tokenize` and
//! `/v1/detokenize` as sglang-router's gateway does, and tokenizes requests
//! for policies that match them against the workers' KV caches
//! (`prefix-index.match-kv`), through a cache of whole texts and of their
//! prefixes ([`cache`]).

use std::path::Path;

pub mod cache;

use crate::config::TokenizerCache;
pub use cache::Routed;
use cache::{ChunkPlan, TokenCache};

/// A loaded tokenizer, and the cache of its routing tokenizations.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    cache: TokenCache,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.inner.get_vocab_size(true))
            .finish()
    }
}

/// Why a tokenizer file could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("cannot load the tokenizer {path}: {why} (give a Hugging Face tokenizer.json)")]
pub struct LoadError {
    path: String,
    why: String,
}

/// Why a text could not be tokenized, or ids turned back into text.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(String);

impl Tokenizer {
    /// Load `path`, a `tokenizer.json`, with routing caches of `sizes`.
    pub fn load(path: &Path, sizes: TokenizerCache) -> Result<Self, LoadError> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| LoadError {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        // The first encode builds what the tokenizer builds lazily (about
        // 3 ms here, against 1.5 ms for 2.6 KB warm): pay it now, not in
        // the first request's time to first token. Its answer is not
        // needed.
        let _warm = inner.encode_fast("Warm up, the tokenizer: 0123456789.", true);
        let added: Vec<String> = inner
            .get_added_tokens_decoder()
            .into_values()
            .map(|t| t.content)
            .collect();
        let encode = |text: &str, special| {
            inner
                .encode_fast(text, special)
                .ok()
                .map(|e| e.get_ids().to_vec())
        };
        let plan = ChunkPlan::probe(encode, &added);
        if plan.is_none() {
            tracing::warn!(
                tokenizer = %path.display(),
                "this tokenizer does not tokenize a text's chunks as the whole: routing caches whole texts only"
            );
        }
        Ok(Tokenizer {
            inner,
            cache: TokenCache::new(sizes, plan),
        })
    }

    /// The token ids of a routing text, with special tokens as a worker
    /// tokenizes a `/generate` prompt, from the cache where it can, and
    /// only as long as `go_on(ids so far)` (see [`cache::TokenCache::tokens`]).
    pub fn encode_for_routing(
        &self,
        text: &str,
        go_on: impl FnMut(&[u32]) -> bool,
    ) -> Result<Routed, CodecError> {
        self.cache
            .tokens(text, |text, special| self.encode(text, special), go_on)
    }

    /// [`Tokenizer::encode_for_routing`] from the caches alone, without
    /// tokenizing anything: `None` when a chunk it needs is not kept.
    pub fn cached_for_routing(
        &self,
        text: &str,
        go_on: impl FnMut(&[u32]) -> bool,
    ) -> Option<Routed> {
        self.cache.tokens(text, |_, _| Err(()), go_on).ok()
    }

    /// Whether routing tokenizations reuse a text's known prefix (the
    /// tokenizer passed the cuts' probe at load).
    pub fn caches_prefixes(&self) -> bool {
        self.cache.cuts_prefixes()
    }

    /// The token ids of `text`, with the tokenizer's special tokens if
    /// `special`.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, CodecError> {
        self.inner
            .encode_fast(text, special)
            .map(|encoding| encoding.get_ids().to_vec())
            .map_err(|e| CodecError(e.to_string()))
    }

    /// The text of `ids`, without special tokens if `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, CodecError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| CodecError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repository_tokenizer() -> Tokenizer {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("cli/assets/tokenizer/tokenizer.json");
        Tokenizer::load(&path, TokenizerCache::default()).unwrap()
    }

    /// Issue 31: routing tokens come from the cache, chunk by chunk, and
    /// are the whole text's tokens: a prompt sharing a cached prefix, and
    /// the same prompt again.
    #[test]
    fn routing_tokens_from_the_cache_are_the_whole_texts() {
        let tokenizer = repository_tokenizer();
        assert!(tokenizer.caches_prefixes(), "the probe passes for BPE");
        let system = "You are a careful assistant. Answer in two sentences, cite \
                      the 3 sources you used (with their URLs), and don't guess.\n\n"
            .repeat(12);
        for question in [
            "What is a KV cache?",
            " Why do routers hash pages?  Twice,\tplease.",
            "日本語で説明してください。",
        ] {
            let text = format!("{system}{question}");
            let whole = tokenizer.encode(&text, true).unwrap();
            for _ in 0..2 {
                let routed = tokenizer.encode_for_routing(&text, |_| true).unwrap();
                assert_eq!(&routed.tokens[..], &whole[..], "{question}");
            }
            let cached = tokenizer.cached_for_routing(&text, |_| true).unwrap();
            assert_eq!(&cached.tokens[..], &whole[..], "kept whole: {question}");
        }
    }
}
