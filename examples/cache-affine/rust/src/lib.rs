//! The cache-affine example, in Rust (`examples/cache-affine/README.md`
//! says the rule; every language's build of it picks the same).
//!
//! A request goes to the worker that was sent the longest prefix of its
//! text, if that prefix is at least half the text and that worker has at
//! most `LOAD_SLACK` more requests than the least loaded candidate; else to
//! the least loaded (ties: the smaller id). Either way the router's prefix
//! index learns where the text went.
//!
//! Build: `cargo build -p cache-affine --target wasm32-wasip2 --profile
//! policy`.

use wasm_router_policy::{
    Candidates, Instances, Policy, PolicyInfo, Request, export_policy, needs, prefix_index,
};

/// How much busier than the least loaded candidate the cache's worker may be.
pub const LOAD_SLACK: u32 = 4;
/// The share of the text (in percent) a match must cover to be followed.
pub const MIN_MATCH_PERCENT: u64 = 50;

/// The policy: it keeps nothing itself (the router keeps the prefix index),
/// so it runs one instance per router thread.
pub struct CacheAffine;

impl Policy for CacheAffine {
    fn init(_config: &str) -> Result<(Self, PolicyInfo), String> {
        needs::declare(needs::Reads::empty());
        let mut info = PolicyInfo::new("cache_affine");
        info.needs_text = true;
        info.instances = Instances::PerThread;
        Ok((CacheAffine, info))
    }

    fn select(&mut self, req: &Request<'_>, candidates: &Candidates<'_>) -> Result<u32, String> {
        let least = candidates
            .iter()
            .min_by_key(|c| (c.load, c.id))
            .ok_or("no candidates")?;
        let ids: Vec<u32> = candidates.iter().map(|c| c.id).collect();
        let found = prefix_index::match_request(req, &ids);
        let cached = found
            .worker
            .and_then(|w| candidates.iter().find(|c| c.id == w));
        let pick = match cached {
            Some(c)
                if found.matched_chars * 100 >= found.text_chars * MIN_MATCH_PERCENT
                    && found.text_chars > 0
                    && c.load <= least.load + LOAD_SLACK =>
            {
                c.id
            }
            _ => least.id,
        };
        prefix_index::insert_request(req, pick);
        Ok(pick)
    }
}

export_policy!(CacheAffine);
