//! round_robin.wasm, the built-in component, through the engine.

use wasm_router::policy::{Policy, PolicySource, WasmPolicy};

use crate::fixtures::{engine, generous_limits, idle, request};

#[test]
fn cycles_over_exactly_the_candidates_it_is_given() {
    let p = WasmPolicy::load(
        &engine(),
        PolicySource::Builtin("round_robin"),
        "{}",
        generous_limits(),
    )
    .unwrap();
    assert_eq!(p.info().name, "round_robin");
    assert!(!p.info().needs_text);
    let pick = |ids: &[u32]| p.select(&request("", None), &idle(ids)).unwrap().worker;
    let three: Vec<u32> = (0..6).map(|_| pick(&[4, 8, 15])).collect();
    assert_eq!(three, vec![4, 8, 15, 4, 8, 15]);
    // A smaller list: only its members, each in turn.
    let two: Vec<u32> = (0..4).map(|_| pick(&[16, 23])).collect();
    let mut sorted = two.clone();
    sorted.sort();
    assert_eq!(sorted, vec![16, 16, 23, 23]);
    assert_ne!(two[0], two[1]);
}
