//! The prefix index the router keeps for the policy (`prefix-index` in
//! `wit/policy.wit`): which worker was sent which text. The request's text
//! is matched and inserted by the router, natively, without being copied
//! into the policy.
//!
//! In native builds (a policy's unit tests) there is no router: the
//! functions use an index of the calling thread's own, with the same code
//! the router runs ([`prefix_tree`]). Each test runs on its own thread, so
//! each starts empty.

use crate::Request;
pub use crate::bindings::wasm_router::policy::prefix_index::PrefixMatch;

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
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use std::cell::RefCell;

    use prefix_tree::Tree;

    use super::PrefixMatch;
    use crate::Request;

    thread_local! {
        static INDEX: RefCell<Tree> = RefCell::new(Tree::default());
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
