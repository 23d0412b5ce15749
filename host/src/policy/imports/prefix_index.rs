//! `prefix-index`: the approximate index of what this router sent
//! ([`crate::index::Approximate`]) and, through [`super::KvView`], the
//! precise one the workers' KV events feed.

use wasmtime::component::Resource;

use super::Host;
use crate::policy::bindings::v2::wasm_router::policy::prefix_index;
use crate::policy::lent::RequestData;

/// Bytes of a routing text that `prefix-index.match-kv` tokenizes when the
/// router has not tokenized the request before the call (a caller of the
/// engine that gives no [`RouteRequest::tokens`](super::RouteRequest)): it
/// runs inside the policy's call deadline, and tokenizing costs about
/// 0.2-0.3 ms per KiB (BENCHMARKS.md). Past this, pages are matched on the
/// text's first part only, and its token count is estimated at the same
/// rate.
pub const MAX_KV_TOKENIZE_BYTES: usize = 8 << 10;

impl prefix_index::Host for Host {
    fn match_request(
        &mut self,
        _: Resource<RequestData>,
        workers: Vec<u32>,
    ) -> prefix_index::PrefixMatch {
        let mut workers = workers;
        workers.sort_unstable();
        let text = &self.request.text;
        let found = self.policy.index.prefix_match(text, &workers);
        prefix_index::PrefixMatch {
            text_chars: text.chars().count() as u64,
            matched_chars: found.matched_chars,
            worker: found.tenant,
        }
    }

    fn insert_request(&mut self, _: Resource<RequestData>, worker: u32) {
        if !self.policy.index.insert(&self.request.text, worker) {
            metrics::counter!(crate::metrics::POLICY_INDEX_FULL, "policy" => self.policy.key.clone())
                .increment(1);
        }
    }

    fn sizes(&mut self, workers: Vec<u32>) -> Vec<u64> {
        self.policy.index.sizes(&workers)
    }

    fn evict(&mut self, max_chars: u64) {
        self.policy.index.evict(max_chars);
    }

    fn retain_workers(&mut self, workers: Vec<u32>) {
        self.policy.index.retain(&workers);
    }

    fn clear(&mut self) {
        self.policy.index.clear();
    }

    fn match_kv(&mut self, _: Resource<RequestData>, workers: Vec<u32>) -> prefix_index::KvPrefix {
        let kv = &self.policy.kv;
        let text = self.request.text.as_str();
        let (tokens, prompt_tokens) = match &self.request.tokens {
            Some(tokens) => (
                std::borrow::Cow::Borrowed(tokens.as_slice()),
                tokens.len() as u64,
            ),
            None => {
                let mut cut = text.len().min(MAX_KV_TOKENIZE_BYTES);
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                // With special tokens, as a worker tokenizes a /generate
                // prompt.
                let tokens = match &kv.tokenizer {
                    Some(tokenizer) if cut > 0 => {
                        tokenizer.encode(&text[..cut], true).unwrap_or_default()
                    }
                    _ => Vec::new(),
                };
                let count = if cut < text.len() && cut > 0 {
                    (tokens.len() as f64 * text.len() as f64 / cut as f64) as u64
                } else {
                    tokens.len() as u64
                };
                (std::borrow::Cow::Owned(tokens), count)
            }
        };
        let matches = match &kv.index {
            None => vec![None; workers.len()],
            Some(index) => {
                let found = index.matched(&tokens, &workers);
                workers
                    .iter()
                    .zip(found)
                    .map(|(&w, m)| {
                        index.follows(w).then_some(prefix_index::KvMatch {
                            gpu: m.gpu,
                            cpu: m.cpu,
                            disk: m.disk,
                        })
                    })
                    .collect()
            }
        };
        prefix_index::KvPrefix {
            prompt_tokens: u32::try_from(prompt_tokens).unwrap_or(u32::MAX),
            matches,
        }
    }
}
