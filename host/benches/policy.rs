//! Decision cost per `select`, native beside Wasm, the session-affinity
//! example in Rust beside AssemblyScript, the cache-affine example in every
//! language, and `select` throughput from two threads against one. Results
//! go to BENCHMARKS.md.
//!
//! Run: `./examples/build.sh && cargo bench -p wasm-router --bench policy`
//! (without the examples built, their comparison is skipped with a note).

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use wasm_router::config::Limits;
use wasm_router::policy::{
    self, Policy as _, PolicyEngine, PolicySource, Route, RouteRequest, WasmPolicy,
};
use wasm_router_policy::Policy as _;

const CANDIDATES: [usize; 3] = [8, 64, 1000];
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

/// What the router passes for request `id`: its route, text (empty unless
/// the policy needs it) and routing key.
fn request<'a>(
    id: u64,
    route: Route,
    text: &'a str,
    routing_key: Option<&'a str>,
) -> RouteRequest<'a> {
    RouteRequest {
        id,
        route,
        model: "",
        text,
        tokens: None,
        prompt_tokens: None,
        routing_key,
        headers: None,
        stream: false,
        max_new_tokens: None,
    }
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
            let sdk_cands: wasm_router_policy::Candidates<'static> = host_cands
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
                // The same policy as built against contract 0.1.0 (the test
                // fixture from the repository's history): what the contract's
                // change costs or saves per call.
                let v01 = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join(format!("cli/tests/fixtures/contract-0.1/{name}.wasm"));
                for (variant, source) in [
                    ("wasm", PolicySource::Builtin(name)),
                    ("wasm-0.1", PolicySource::File(v01)),
                ] {
                    group.bench_function(BenchmarkId::new(variant, &case), |b| {
                        let p = WasmPolicy::load(engine, source.clone(), "{}", Limits::default())
                            .expect("the policy loads");
                        let mut i = 0;
                        b.iter(|| {
                            i = (i + 1) % texts.len();
                            let req = request(i as u64, Route::Generate, text_of(i), None);
                            black_box(p.select(&req, &host_cands).unwrap().worker)
                        })
                    });
                }
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
                let req = request(i as u64, Route::ChatCompletions, "", Some(&keys[i]));
                black_box(p.select(&req, &candidates).unwrap().worker)
            })
        });
    }
    group.finish();
}

/// The cache-affine example (examples/cache-affine) in each language, as
/// examples/build.sh builds it: `select` over 8 and 64 candidates, on 1 KB
/// prompts that share system prompts (so the prefix index matches).
fn bench_languages(c: &mut Criterion, engine: &PolicyEngine) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/examples");
    let prompts = prompts(1 << 10);
    let mut group = c.benchmark_group("select/cache_affine");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for lang in ["rust", "c", "go", "python", "javascript", "typescript"] {
        let file = dir.join(format!("cache_affine_{lang}.wasm"));
        if !file.is_file() {
            println!(
                "skipping cache_affine in {lang}: {} is missing (run ./examples/build.sh)",
                file.display()
            );
            continue;
        }
        let p = WasmPolicy::load(engine, PolicySource::File(file), "{}", Limits::default())
            .expect("example loads");
        for n in CANDIDATES {
            let candidates: Vec<policy::Candidate> = (0..n as u32)
                .map(|id| policy::Candidate::idle(id, id % 3))
                .collect();
            group.bench_function(BenchmarkId::new(lang, format!("{n}cands/1KB")), |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % prompts.len();
                    let req = request(i as u64, Route::Generate, &prompts[i], None);
                    black_box(p.select(&req, &candidates).unwrap().worker)
                })
            });
        }
    }
    group.finish();
}

/// `select` throughput of `policy` from `threads` threads at once, each making
/// [`SCALING_CALLS`] calls: calls per second over all threads.
fn throughput(policy: &WasmPolicy, threads: usize) -> f64 {
    let candidates: Vec<policy::Candidate> = (0..8)
        .map(|id| policy::Candidate::idle(id, id % 3))
        .collect();
    let start = std::time::Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let candidates = &candidates;
            scope.spawn(move || {
                for i in 0..SCALING_CALLS {
                    let req = request((t * SCALING_CALLS + i) as u64, Route::Generate, "", None);
                    black_box(policy.select(&req, candidates).unwrap().worker);
                }
            });
        }
    });
    (threads * SCALING_CALLS) as f64 / start.elapsed().as_secs_f64()
}

/// Calls each thread makes in [`thread_scaling`].
const SCALING_CALLS: usize = 200_000;

/// Issue 17: `select` from two threads at once against one, for a
/// per-thread policy (random: an instance per core) and for a shared one
/// (round_robin: one instance, one lock), in the same run.
fn thread_scaling(engine: &PolicyEngine) {
    for name in ["random", "round_robin"] {
        let p = wasm(engine, name);
        throughput(&p, 1);
        let one = throughput(&p, 1);
        let two = throughput(&p, 2);
        println!(
            "select throughput, {name} ({} instances, 8 candidates): 1 thread {one:.0}/s, 2 threads {two:.0}/s, 2/1 = {:.2}x",
            p.instances(),
            two / one
        );
    }
}

fn main() {
    let engine = PolicyEngine::new(None).expect("engine");
    thread_scaling(&engine);
    let mut c = Criterion::default().configure_from_args();
    bench_select(&mut c, &engine);
    bench_examples(&mut c, &engine);
    bench_languages(&mut c, &engine);
    c.final_summary();
}
