//! The prefix index the router keeps for the policy (`prefix-index` in
//! `wit/policy.wit`): which worker was sent which text. The request's text
//! is matched and inserted by the router, natively, without being copied
//! into the policy.
//!
//! [`match_kv`] asks the other index the router keeps: the pages each
//! worker says it holds, from its own KV cache events (`--kv-events`).
//!
//! In native builds (a policy's unit tests) there is no router: the
//! functions use an index of the calling thread's own, with the same code
//! the router runs ([`prefix_tree`]), and [`match_kv`] answers what the
//! test scripted with [`script_kv`]. Each test runs on its own thread, so
//! each starts empty.

use crate::Request;
pub use crate::bindings::wasm_router::policy::prefix_index::{KvMatch, KvPrefix, PrefixMatch};

/// The prompt's tokens and, for each of `workers`, its matched prefix in
/// its own KV cache (none when the router does not follow its events).
/// The policy must have declared `needs_text`.
pub fn match_kv(req: &Request<'_>, workers: &[u32]) -> KvPrefix {
    imp::match_kv(req, workers)
}

/// Native builds only: what [`match_kv`] answers on this thread from now
/// on: `prompt_tokens`, and the match of each worker listed (the others:
/// none).
#[cfg(not(target_arch = "wasm32"))]
pub fn script_kv(prompt_tokens: u32, matches: &[(u32, KvMatch)]) {
    imp::script_kv(prompt_tokens, matches)
}

/// The longest prefix of `req`'s routing text held for one of `workers`,
/// and who holds it. The policy must have declared `needs_text`.
pub fn match_request(req: &Request<'_>, workers: &[u32]) -> PrefixMatch {
    imp::match_request(req, workers)
}

/// Record that `req`'s routing text went to `worker`.
pub fn insert_request(req: &Request<'_>, worker: u32) {
    imp::insert_request(req, worker)
}

/// Characters held for each of `workers`, in their order.
pub fn sizes(workers: &[u32]) -> Vec<u64> {
    imp::sizes(workers)
}

/// Trim each worker's share to at most `max_chars`, least recently used
/// text first.
pub fn evict(max_chars: u64) {
    imp::evict(max_chars)
}

/// Forget every worker not in `workers`.
pub fn retain_workers(workers: &[u32]) {
    imp::retain_workers(workers)
}

/// Forget everything.
pub fn clear() {
    imp::clear()
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::PrefixMatch;
    use crate::Request;
    use crate::bindings::wasm_router::policy::prefix_index as host;

    /// A request the router did not lend (made by `Request::new`) has
    /// nothing in the router's index.
    pub fn match_request(req: &Request<'_>, workers: &[u32]) -> PrefixMatch {
        match req.lent_by_host() {
            Some(lent) => host::match_request(lent, workers),
            None => PrefixMatch {
                text_chars: req.text().chars().count() as u64,
                matched_chars: 0,
                worker: None,
            },
        }
    }

    pub fn insert_request(req: &Request<'_>, worker: u32) {
        if let Some(lent) = req.lent_by_host() {
            host::insert_request(lent, worker);
        }
    }

    pub fn sizes(workers: &[u32]) -> Vec<u64> {
        host::sizes(workers)
    }

    pub fn evict(max_chars: u64) {
        host::evict(max_chars)
    }

    pub fn retain_workers(workers: &[u32]) {
        host::retain_workers(workers)
    }

    pub fn clear() {
        host::clear()
    }

    pub fn match_kv(req: &Request<'_>, workers: &[u32]) -> super::KvPrefix {
        match req.lent_by_host() {
            Some(lent) => host::match_kv(lent, workers),
            None => super::KvPrefix {
                prompt_tokens: 0,
                matches: vec![None; workers.len()],
            },
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use std::cell::RefCell;

    use prefix_tree::Tree;

    use super::PrefixMatch;
    use crate::Request;

    thread_local! {
        static INDEX: RefCell<Tree> = RefCell::new(Tree::default());
        static KV: RefCell<(u32, Vec<(u32, super::KvMatch)>)> = const { RefCell::new((0, Vec::new())) };
    }

    pub fn script_kv(prompt_tokens: u32, matches: &[(u32, super::KvMatch)]) {
        KV.with(|kv| *kv.borrow_mut() = (prompt_tokens, matches.to_vec()));
    }

    pub fn match_kv(_: &Request<'_>, workers: &[u32]) -> super::KvPrefix {
        KV.with(|kv| {
            let (prompt_tokens, scripted) = &*kv.borrow();
            super::KvPrefix {
                prompt_tokens: *prompt_tokens,
                matches: workers
                    .iter()
                    .map(|w| scripted.iter().find(|(id, _)| id == w).map(|(_, m)| *m))
                    .collect(),
            }
        })
    }

    pub fn match_request(req: &Request<'_>, workers: &[u32]) -> PrefixMatch {
        let mut workers = workers.to_vec();
        workers.sort_unstable();
        let text = req.text();
        let found = INDEX.with(|t| t.borrow().prefix_match(text, &workers));
        PrefixMatch {
            text_chars: text.chars().count() as u64,
            matched_chars: found.matched_chars,
            worker: found.tenant,
        }
    }

    pub fn insert_request(req: &Request<'_>, worker: u32) {
        INDEX.with(|t| t.borrow_mut().insert(req.text(), worker));
    }

    pub fn sizes(workers: &[u32]) -> Vec<u64> {
        INDEX.with(|t| {
            let tree = t.borrow();
            workers.iter().map(|&w| tree.size(w)).collect()
        })
    }

    pub fn evict(max_chars: u64) {
        INDEX.with(|t| t.borrow_mut().evict(max_chars));
    }

    pub fn retain_workers(workers: &[u32]) {
        INDEX.with(|t| t.borrow_mut().retain_tenants(workers));
    }

    pub fn clear() {
        INDEX.with(|t| *t.borrow_mut() = Tree::default());
    }
}
