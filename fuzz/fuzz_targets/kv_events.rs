//! A KV event payload as a worker (or anything that can reach the event
//! port) sends it: decoding gives a batch or an error, never a panic, and
//! folding the batch into a small index keeps the index within its limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasm_router::events::{apply, decode};
use wasm_router::index::Precise;

fuzz_target!(|payload: &[u8]| {
    let Ok(batch) = decode(payload) else { return };
    let index = Precise::with_limits(64, 16);
    for worker in [1, 2] {
        apply(&index, worker, &batch);
        assert!(index.pages_of(worker) <= 16);
    }
    assert!(index.len() <= 64);
    let tokens: Vec<u32> = (0..64).collect();
    let matched = index.matched(&tokens, &[1, 2, 3]);
    assert!(matched.iter().all(|m| m.gpu <= m.cpu && m.cpu <= m.disk && m.disk <= 64));
});
