//! Decision cost per `select`, native beside Wasm, the session-affinity
//! example in Rust beside AssemblyScript, and cache_aware's guest memory per
//! million characters inserted. Results go to BENCHMARKS.md.
//!
//! Run: `./examples/build.sh && cargo bench -p wasm-router --bench policy`
//! (without the examples built, their comparison is skipped with a note).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use wasm_router::policy::{
    self, Limits, Policy as _, PolicyEngine, PolicySource, Route, RouteRequest, WasmPolicy,
};
use wasm_router_policy::Policy as _;

const CANDIDATES: [usize; 2] = [8, 64];
const PROMPTS: [(&str, usize); 2] = [("1KB", 1 << 10), ("32KB", 32 << 10)];
/// Distinct prompts cycled through: 16 shared system prompts, each with
/// 16 questions, so cache_aware sees both hits and new branches.
const GROUPS: usize = 16;
const PER_GROUP: usize = 16;

/// A small deterministic generator of lowercase words.
struct Words(u64);

impl Words {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn text(&mut self, chars: usize) -> String {
        let mut out = String::with_capacity(chars + 8);
        while out.len() < chars {
            let len = 2 + self.next() % 8;
            out.extend((0..len).map(|_| (b'a' + (self.next() % 26) as u8) as char));
            out.push(' ');
        }
        out.truncate(chars);
        out
    }
}

/// Prompts of `size` bytes: a system prompt (7/8 of it) and a question.
fn prompts(size: usize) -> Vec<String> {
    let mut words = Words(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::with_capacity(GROUPS * PER_GROUP);
    for _ in 0..GROUPS {
        let system = words.text(size - size / 8);
        for _ in 0..PER_GROUP {
            out.push(format!("{system}{}", words.text(size / 8)));
        }
    }
    out
}

fn wasm(engine: &PolicyEngine, name: &'static str) -> WasmPolicy {
    WasmPolicy::load(engine, PolicySource::Builtin(name), "{}", Limits::default())
        .expect("built-in loads")
}

fn sdk_request(text: &str) -> wasm_router_policy::Request<'static> {
    wasm_router_policy::Request::new(text, None)
}

fn bench_select(c: &mut Criterion, engine: &PolicyEngine) {
    for (label, size) in PROMPTS {
        let texts = prompts(size);
        let native_requests: Vec<_> = texts.iter().map(|t| sdk_request(t)).collect();
        for n in CANDIDATES {
            let host_cands: Vec<policy::Candidate> = (0..n as u32)
                .map(|id| policy::Candidate::idle(id, id % 3))
                .collect();
            let sdk_cands: Vec<wasm_router_policy::Candidate> = host_cands
                .iter()
                .map(|c| wasm_router_policy::Candidate::idle(c.id, c.load))
                .collect();
            let case = format!("{n}cands/{label}");
            for name in ["round_robin", "cache_aware"] {
                let mut group = c.benchmark_group(format!("select/{name}"));
                group
                    .measurement_time(Duration::from_secs(3))
                    .warm_up_time(Duration::from_secs(1));
                let needs_text = name == "cache_aware";
                // The router passes the text only to policies that ask for it.
                let text_of = |i: usize| if needs_text { texts[i].as_str() } else { "" };
                group.bench_function(BenchmarkId::new("native", &case), |b| {
                    let mut rr = round_robin::RoundRobin::init("{}").unwrap().0;
                    let mut ca = cache_aware::CacheAware::init("{}").unwrap().0;
                    let mut i = 0;
                    b.iter(|| {
                        i = (i + 1) % native_requests.len();
                        let req = &native_requests[i];
                        let pick = if needs_text {
                            ca.select(req, &sdk_cands)
                        } else {
                            rr.select(req, &sdk_cands)
                        };
                        black_box(pick.unwrap())
                    })
                });
                group.bench_function(BenchmarkId::new("wasm", &case), |b| {
                    let p = wasm(engine, name);
                    let mut i = 0;
                    b.iter(|| {
                        i = (i + 1) % texts.len();
                        let req = RouteRequest {
                            id: i as u64,
                            route: Route::Generate,
                            model: "",
                            text: text_of(i),
                            routing_key: None,
                            stream: false,
                            max_new_tokens: None,
                        };
                        black_box(p.select(&req, &host_cands).unwrap().worker)
                    })
                });
                group.finish();
            }
        }
    }
}

/// The same session-affinity logic compiled from Rust and from
/// AssemblyScript (examples/), as built by examples/build.sh.
fn bench_examples(c: &mut Criterion, engine: &PolicyEngine) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/examples");
    let files = [
        ("rust", dir.join("session_affinity.wasm")),
        ("assemblyscript", dir.join("session_affinity_as.wasm")),
    ];
    if let Some((_, missing)) = files.iter().find(|(_, f)| !f.is_file()) {
        println!(
            "skipping the Rust/AssemblyScript comparison: {} is missing (run ./examples/build.sh)",
            missing.display()
        );
        return;
    }
    let keys: Vec<String> = (0..1000).map(|i| format!("session-{i}")).collect();
    let candidates: Vec<policy::Candidate> = (0..8)
        .map(|id| policy::Candidate::idle(id, id % 3))
        .collect();
    let mut group = c.benchmark_group("select/session_affinity");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for (lang, file) in &files {
        group.bench_function(BenchmarkId::new(*lang, "8cands/1000keys"), |b| {
            let p = WasmPolicy::load(
                engine,
                PolicySource::File(file.clone()),
                "{}",
                Limits::default(),
            )
            .expect("example loads");
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % keys.len();
                let req = RouteRequest {
                    id: i as u64,
                    route: Route::ChatCompletions,
                    model: "",
                    text: "",
                    routing_key: Some(&keys[i]),
                    stream: false,
                    max_new_tokens: None,
                };
                black_box(p.select(&req, &candidates).unwrap().worker)
            })
        });
    }
    group.finish();
}

/// Guest memory per million characters inserted into cache_aware's tree:
/// unique text (the worst case, nothing shared) and the shared-prefix mix.
fn memory_per_million_chars(engine: &PolicyEngine) {
    let candidates: Vec<policy::Candidate> =
        (0..8).map(|id| policy::Candidate::idle(id, 0)).collect();
    let mut words = Words(42);
    let unique: Vec<String> = (0..4000).map(|_| words.text(1000)).collect();
    let shared = prompts(1000);
    for (label, texts) in [
        ("unique 1000-char prompts", &unique),
        ("shared-prefix 1000-char prompts", &shared),
    ] {
        let p = wasm(engine, "cache_aware");
        let before = p.memory_bytes();
        let mut inserted = 0usize;
        let mut i = 0;
        while inserted < 4_000_000 {
            let text = &texts[i % texts.len()];
            // A distinct ending, so every call inserts new text.
            let text = format!("{text} {i:08}");
            inserted += text.chars().count();
            let req = RouteRequest {
                id: i as u64,
                route: Route::Generate,
                model: "",
                text: &text,
                routing_key: None,
                stream: false,
                max_new_tokens: None,
            };
            p.select(&req, &candidates).unwrap();
            i += 1;
        }
        let grown = p.memory_bytes() - before;
        println!(
            "cache_aware memory, {label}: {:.2} MB of guest memory per million characters inserted ({inserted} chars, {} requests)",
            grown as f64 / (inserted as f64 / 1e6) / 1e6,
            i
        );
    }
}

fn main() {
    let engine = PolicyEngine::new(None).expect("engine");
    memory_per_million_chars(&engine);
    let mut c = Criterion::default().configure_from_args();
    bench_select(&mut c, &engine);
    bench_examples(&mut c, &engine);
    c.final_summary();
}
