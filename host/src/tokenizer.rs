//! The router's own tokenizer (`--tokenizer-path`, `--model-path`): a local
//! Hugging Face `tokenizer.json`, loaded with the `tokenizers` crate. The
//! router downloads nothing: a model id that is not a local path is refused
//! when the flags are read ([`crate::config`]). It serves `/v1/tokenize` and
//! `/v1/detokenize` as sglang-router's gateway does, and tokenizes requests
//! for policies that match them against the workers' KV caches
//! (`prefix-index.match-kv`).

use std::path::Path;

/// A loaded tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
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
    /// Load `path`, a `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| LoadError {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        // The first encode builds what the tokenizer builds lazily (about
        // 3 ms here, against 1.5 ms for 2.6 KB warm): pay it now, not in
        // the first request's time to first token. Its answer is not
        // needed.
        let _warm = inner.encode_fast("Warm up, the tokenizer: 0123456789.", true);
        Ok(Tokenizer { inner })
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
