//! The precise prefix index (issue 18): how fast it takes in KV events,
//! and what matching a long prompt over many workers costs.
//!
//! Run: `cargo bench -p wasm-router --bench kv_index`
//!
//! - `kv_index/ingest`: one msgpack batch of 64 `BlockStored` events (one
//!   16-token page each, a chain), decoded and applied, as a subscriber
//!   does per message; then the same pages removed. Throughput is in events.
//! - `kv_index/match/8k-tokens/64-workers`: an 8192-token prompt (512
//!   pages of 16) against 64 workers that each hold a different share of it
//!   (worker `w` the first `8 * w` pages).
//! - `kv_index/tokenize/{1,32}KB`: what `match-kv` spends first, tokenizing
//!   the routing text with the repository's tokenizer
//!   (host/cli/assets/tokenizer), on English prose from README.md.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rmpv::Value;
use wasm_router::events::{apply, decode};
use wasm_router::index::{Medium, Precise, StoredPages};

const PAGE: u32 = 16;

/// A batch of `n` chained BlockStored events (SGLang's arrays), hashes
/// from `first`.
fn stored_batch(first: i64, n: i64) -> Vec<u8> {
    let events = (0..n)
        .map(|i| {
            let hash = first + i;
            let tokens: Vec<Value> = (0..PAGE as i64)
                .map(|t| Value::from(hash * 16 + t))
                .collect();
            Value::Array(vec![
                "BlockStored".into(),
                Value::Array(vec![hash.into()]),
                if i == 0 {
                    Value::Nil
                } else {
                    (hash - 1).into()
                },
                Value::Array(tokens),
                PAGE.into(),
                Value::Nil,
                "GPU".into(),
            ])
        })
        .collect();
    let mut out = Vec::new();
    rmpv::encode::write_value(
        &mut out,
        &Value::Array(vec![1.0.into(), Value::Array(events)]),
    )
    .unwrap();
    out
}

fn removed_batch(first: i64, n: i64) -> Vec<u8> {
    let hashes = (first..first + n).map(Value::from).collect();
    let event = Value::Array(vec!["BlockRemoved".into(), Value::Array(hashes)]);
    let mut out = Vec::new();
    rmpv::encode::write_value(
        &mut out,
        &Value::Array(vec![1.0.into(), Value::Array(vec![event])]),
    )
    .unwrap();
    out
}

fn ingest(c: &mut Criterion) {
    let mut group = c.benchmark_group("kv_index");
    let stored = stored_batch(1, 64);
    let removed = removed_batch(1, 64);
    let index = Precise::default();
    group.throughput(Throughput::Elements(65));
    group.bench_function("ingest", |b| {
        b.iter(|| {
            for payload in [&stored, &removed] {
                let batch = decode(payload).unwrap();
                apply(&index, 1, &batch);
            }
        })
    });
    group.finish();
}

fn matching(c: &mut Criterion) {
    let prompt: Vec<u32> = (0..8192).collect();
    let index = Precise::default();
    let workers: Vec<u32> = (1..=64).collect();
    for &w in &workers {
        let pages = (8 * w) as usize;
        let hashes: Vec<u64> = (0..pages as u64).collect();
        index
            .store(
                w,
                StoredPages {
                    medium: Medium::Gpu,
                    parent: None,
                    hashes: &hashes,
                    tokens: &prompt[..pages * PAGE as usize],
                    block_size: PAGE,
                    seed: 0,
                },
            )
            .unwrap();
    }
    let mut group = c.benchmark_group("kv_index/match");
    group.bench_with_input(
        BenchmarkId::new("8k-tokens", "64-workers"),
        &prompt,
        |b, prompt| b.iter(|| index.matched(prompt, &workers)),
    );
    group.finish();
}

fn tokenizing(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tokenizer = wasm_router::tokenizer::Tokenizer::load(
        &root.join("host/cli/assets/tokenizer/tokenizer.json"),
        Default::default(),
    )
    .unwrap();
    let prose = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut group = c.benchmark_group("kv_index/tokenize");
    for kb in [1usize, 32] {
        let text: String = prose.chars().cycle().take(kb * 1024).collect();
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{kb}KB")),
            &text,
            |b, t| b.iter(|| tokenizer.encode(t, true).unwrap()),
        );
    }
    group.finish();
}

criterion_group!(benches, ingest, matching, tokenizing);
criterion_main!(benches);
