//! `prefix-index`: the approximate index of what this router sent
//! ([`crate::index::Approximate`]) and, through [`super::KvView`], the
//! precise one the workers' KV events feed.

use wasmtime::component::Resource;

use super::Host;
use crate::policy::bindings::v2::wasm_router::policy::prefix_index;
use crate::policy::lent::RequestData;

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
        // The tokens the router gave the request before the call, or their
        // start (the rest counted in `prompt_tokens`); none (no tokenizer,
        // or a text the tokenizer refused): nothing matches.
        let tokens: &[u32] = self.request.tokens.as_deref().unwrap_or_default();
        let prompt_tokens = self
            .request
            .prompt_tokens
            .map_or(tokens.len(), |n| n as usize);
        let matches = match &kv.index {
            None => vec![None; workers.len()],
            Some(index) => {
                let found = index.matched(tokens, &workers);
                let cached = &mut self.request.kv_cached;
                cached.clear();
                for (&w, m) in workers.iter().zip(&found) {
                    if index.follows(w) {
                        cached.push((w, m.gpu));
                    }
                }
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
