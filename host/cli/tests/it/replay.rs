//! `router replay`: deterministic, ordering policies as their routing
//! deserves, reading Mooncake traces and decision records.

use std::path::PathBuf;

use serde_json::json;
use wasm_router::policy::PolicyEngine;
use wasm_router_cli::replay::{ReplayArgs, Row, read_trace, replay};

/// A Mooncake-format trace: 2,000 requests, each one of 12 shared
/// prefixes of 8 blocks and 2 blocks of its own, 5 ms apart on average.
fn shared_prefix_trace(name: &str) -> PathBuf {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut lines = String::new();
    let mut at = 0.0;
    for n in 0..2_000u64 {
        let group = rng.u64(0..12);
        let mut ids: Vec<u64> = (0..8).map(|k| group * 100 + k).collect();
        ids.extend([10_000 + 2 * n, 10_001 + 2 * n]);
        at += rng.f64() * 10.0;
        let line = json!({
            "timestamp": at as u64,
            "input_length": ids.len() * 512 - 100,
            "output_length": 32,
            "hash_ids": ids,
        });
        lines.push_str(&format!("{line}\n"));
    }
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}.jsonl", std::process::id()));
    std::fs::write(&path, lines).unwrap();
    path
}

/// Flags of a fleet of 8 workers whose caches hold a third of the
/// prefixes each.
pub fn fleet(trace: PathBuf, policies: &[&str]) -> ReplayArgs {
    ReplayArgs {
        trace,
        policies: policies.iter().map(|p| p.to_string()).collect(),
        config: "{}".into(),
        workers: 8,
        replicas: 1,
        capacity_tokens: 20_000,
        prefill_us_per_token: 20,
        decode_us_per_token: 500,
        batch_slowdown: 0.05,
        stream_pieces: 4,
        max_running: 16,
        serial_prefill: true,
        load_interval_ms: 100,
        speedup: 1.0,
        block_tokens: 512,
        seed: 0,
        limit: None,
        json: false,
    }
}

fn rows(args: &ReplayArgs) -> Vec<Row> {
    let engine = PolicyEngine::new(None).unwrap();
    let trace = read_trace(&args.trace, args).unwrap();
    args.policies
        .iter()
        .map(|p| replay(&engine, p, &trace, args).unwrap())
        .collect()
}

#[test]
fn replay_is_deterministic_and_puts_round_robin_below_cache_aware() {
    let args = fleet(
        shared_prefix_trace("shared"),
        &["round_robin", "cache_aware"],
    );
    let first = rows(&args);
    assert_eq!(first, rows(&args), "the same trace gave another table");
    assert_eq!(first[0].fallbacks + first[1].fallbacks, 0);
    let (rr, ca) = (&first[0], &first[1]);
    assert_eq!((rr.requests, ca.requests), (2_000, 2_000));
    assert_eq!(rr.per_worker, [250; 8], "round robin takes turns");
    assert!(
        ca.hit_rate > rr.hit_rate + 0.2,
        "cache_aware {} not above round_robin {}",
        ca.hit_rate,
        rr.hit_rate
    );
    assert!(ca.ttft_p50_ms < rr.ttft_p50_ms);
}

/// A policy that draws random numbers repeats its table for a seed, and
/// changes it with the seed.
#[test]
fn a_random_policy_repeats_for_its_seed() {
    let mut args = fleet(shared_prefix_trace("seeded"), &["random", "power_of_two"]);
    let first = rows(&args);
    assert_eq!(first, rows(&args), "the same seed gave another table");
    args.seed = 1;
    let other = rows(&args);
    assert_ne!(
        first[0].per_worker, other[0].per_worker,
        "the seed changed nothing"
    );
}

#[test]
fn replicas_each_keep_their_own_index() {
    let mut args = fleet(shared_prefix_trace("replicas"), &["cache_aware"]);
    let one = rows(&args).remove(0);
    args.replicas = 4;
    let four = rows(&args).remove(0);
    // Four replicas learn each prefix four times over: fewer hits, and
    // never more than one router that sees everything.
    assert!(
        four.hit_rate < one.hit_rate,
        "{} vs {}",
        four.hit_rate,
        one.hit_rate
    );
}

#[test]
fn a_mooncake_line_reads_as_its_blocks_and_times() {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mooncake-{}.jsonl", std::process::id()));
    std::fs::write(
        &path,
        "{\"timestamp\": 27482, \"input_length\": 6955, \"output_length\": 52, \"hash_ids\": [46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 2353, 2354]}\n\
         {\"timestamp\": 30535, \"input_length\": 6472, \"output_length\": 26, \"hash_ids\": [46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 2366]}\n",
    )
    .unwrap();
    let mut args = fleet(path.clone(), &["round_robin"]);
    args.speedup = 2.0;
    let trace = read_trace(&path, &args).unwrap();
    assert_eq!(trace.len(), 2);
    assert_eq!((trace[0].at_us, trace[1].at_us), (0, 1_526_500));
    assert_eq!(trace[1].blocks[..12], trace[0].blocks[..12]);
    assert_eq!(
        (
            trace[0].input_tokens,
            trace[0].output_tokens,
            trace[0].block_tokens
        ),
        (6955, 52, 512)
    );
    // The second finds the first's 12 shared blocks on the same worker
    // only if it goes there: one worker makes that certain.
    args.workers = 1;
    let row = rows(&args).remove(0);
    let expected = (12.0 * 512.0) / (6955.0 + 6472.0);
    assert!((row.hit_rate - expected).abs() < 1e-9, "{}", row.hit_rate);
}

/// A policy that matches KV pages reads the pages the simulated caches
/// publish: it finds the shared prefixes as cache_aware does from text.
#[test]
fn a_policy_that_matches_kv_pages_follows_the_simulated_caches() {
    let args = fleet(
        shared_prefix_trace("kv"),
        &["round_robin", "precise_cache_aware"],
    );
    let table = rows(&args);
    let (rr, precise) = (&table[0], &table[1]);
    assert_eq!(precise.fallbacks, 0);
    assert!(
        precise.hit_rate > rr.hit_rate + 0.2,
        "precise_cache_aware {} not above round_robin {}",
        precise.hit_rate,
        rr.hit_rate
    );
}
