//! The host side of the policy boundary, against a guest that answers what
//! the fuzzer tells it: any worker id (among the candidates or not) or a
//! refusal of any length and content, over any candidate list. The router
//! must always end with one of the candidates, a capped refusal, or "no
//! candidates" when there were none.
//!
//! The guest is the hostile test fixture's `echo` mode, built by
//! fuzz/run.sh into target/wasm32-wasip2/policy/hostile_policy.wasm.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wasm_router::config::Limits;
use wasm_router::policy::{
    Candidate, Policy, PolicyEngine, PolicySource, Route, RouteRequest, SelectError,
    WasmPolicy,
};

fn policy() -> &'static WasmPolicy {
    static POLICY: OnceLock<WasmPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/wasm32-wasip2/policy/hostile_policy.wasm");
        let engine = PolicyEngine::new(None).expect("engine");
        WasmPolicy::load(&engine, PolicySource::File(file), "{}", Limits::default())
            .expect("the hostile fixture loads: run fuzz/run.sh, which builds it")
    })
}

fuzz_target!(|data: &[u8]| {
    // First byte: how many candidates; then 8 bytes each (id, load); the
    // rest is the text the guest answers with.
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(count % 32).min(rest.len() / 8);
    let (table, text) = rest.split_at(count * 8);
    let candidates: Vec<Candidate> = table
        .chunks_exact(8)
        .map(|c| {
            Candidate::idle(
                u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            )
        })
        .collect();
    let text = String::from_utf8_lossy(text);
    let req = RouteRequest {
        id: 0,
        route: Route::Generate,
        model: "",
        text: &text,
        tokens: None,
        prompt_tokens: None,
        routing_key: Some("echo"),
        headers: None,
        stream: false,
        max_new_tokens: None,
    };
    match policy().select(&req, &candidates) {
        Ok(decision) => assert!(
            candidates.iter().any(|c| c.id == decision.worker),
            "picked {} from {candidates:?}",
            decision.worker
        ),
        Err(SelectError::NoCandidates) => assert!(candidates.is_empty()),
        Err(SelectError::Declined(message)) => {
            assert!(!candidates.is_empty());
            assert!(message.len() <= 1100, "refusal of {} bytes", message.len());
        }
        // Only maintenance (ticks, worker changes, reloads) makes a policy
        // busy, and nothing here runs any.
        Err(SelectError::Busy) => panic!("busy with no maintenance running"),
    }
});
