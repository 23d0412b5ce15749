//! Policies built from source for the tests, and small helpers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use wasm_router::config::Limits;
use wasm_router::config::Role;
use wasm_router::policy::{Candidate, PolicyEngine, Route, RouteRequest, WorkerInfo};

/// The workspace root.
pub fn workspace() -> PathBuf {
    // host/cli's grandparent.
    let cli = Path::new(env!("CARGO_MANIFEST_DIR"));
    cli.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// An engine whose compile cache is shared by the tests (debug builds of
/// Cranelift are slow; each component is compiled once).
pub fn engine() -> PolicyEngine {
    PolicyEngine::new(Some(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("policy-cache"),
    ))
    .unwrap()
}

/// Default limits with a generous call deadline, for tests that are not
/// about the deadline: on a busy machine 10 ms could fire first and hide
/// the behaviour under test behind the fallback.
pub fn generous_limits() -> Limits {
    Limits {
        call_deadline: Duration::from_secs(5),
        ..Limits::default()
    }
}

/// The hostile fixture (host/cli/tests/fixtures/hostile_policy), built for
/// wasm32-wasip2 and claiming contract `version` (the real one if `None`).
pub fn hostile(version: Option<&str>) -> PathBuf {
    match version {
        Some(v) => build_hostile(&format!("version-{v}"), &[("HOSTILE_CONTRACT_VERSION", v)]),
        None => build_hostile("current", &[]),
    }
}

/// A reference policy as committed when the contract was 0.1.0
/// (host/cli/tests/fixtures/contract-0.1, see its README).
pub fn contract_0_1(name: &str) -> PathBuf {
    workspace().join(format!("host/cli/tests/fixtures/contract-0.1/{name}.wasm"))
}

/// A reference policy built against 0.2.0 before later additions to it
/// (host/cli/tests/fixtures/contract-0.2-early, see its README).
pub fn contract_0_2_early(name: &str) -> PathBuf {
    workspace().join(format!(
        "host/cli/tests/fixtures/contract-0.2-early/{name}.wasm"
    ))
}

/// The hostile fixture built to always pick the candidate with the
/// smallest (`"first"`) or largest (`"last"`) id.
pub fn picker(which: &str) -> PathBuf {
    build_hostile(&format!("pick-{which}"), &[("HOSTILE_PICK", which)])
}

/// The Rust example policy (examples/rust-policy), built from source.
pub fn session_affinity() -> PathBuf {
    build_component("session-affinity", "session_affinity", "example", &[])
}

/// The cache-affine example in Rust (examples/cache-affine/rust), built
/// from source.
pub fn cache_affine_rust() -> PathBuf {
    build_component("cache-affine", "cache_affine", "example", &[])
}

/// The AssemblyScript glue's probe policy
/// (policies/sdk-assemblyscript/tests/probe.ts), built with npm.
pub fn assemblyscript_probe() -> PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        build_assemblyscript(
            "policies/sdk-assemblyscript",
            "build:test",
            "build/probe.core.wasm",
            "as-probe",
        )
    })
    .clone()
}

/// The AssemblyScript example policy (examples/assemblyscript-policy),
/// built with npm.
pub fn session_affinity_as() -> PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        build_assemblyscript(
            "examples/assemblyscript-policy",
            "build",
            "build/core.wasm",
            "session-affinity-as",
        )
    })
    .clone()
}

/// `npm ci` and `npm run <script>` in `project` (relative to the
/// workspace), then wrap its core module into `<name>.wasm` the way
/// `router policy componentize` does.
fn build_assemblyscript(project: &str, script: &str, core: &str, name: &str) -> PathBuf {
    // The example links the SDK's directory: one npm at a time.
    static NPM: Mutex<()> = Mutex::new(());
    let _guard = NPM.lock().unwrap_or_else(|e| e.into_inner());
    let dir = workspace().join(project);
    for args in [
        &["ci", "--no-audit", "--no-fund", "--silent"][..],
        &["run", "--silent", script],
    ] {
        let status = Command::new("npm")
            .current_dir(&dir)
            .args(args)
            .status()
            .expect("run npm (is Node.js installed?)");
        assert!(status.success(), "npm {args:?} failed in {project}");
    }
    let core = std::fs::read(dir.join(core)).unwrap();
    let component = wasm_router::policy::componentize::componentize(&core).unwrap();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.wasm"));
    std::fs::write(&out, component).unwrap();
    out
}

fn build_hostile(variant: &str, vars: &[(&str, &str)]) -> PathBuf {
    build_component("hostile-policy", "hostile_policy", variant, vars)
}

/// Build a workspace policy crate for wasm32-wasip2 with these build-time
/// variables, and copy it out as `<lib>-<variant>.wasm`.
fn build_component(package: &str, lib: &str, variant: &str, vars: &[(&str, &str)]) -> PathBuf {
    // Builds share one target directory; one at a time, each copied out.
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fixtures");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace())
        .args([
            "build",
            "--locked",
            "--quiet",
            "--target",
            "wasm32-wasip2",
            "--profile",
            "policy",
        ])
        .args(["-p", package, "--target-dir"])
        .arg(&target)
        .env_remove("RUSTFLAGS");
    for var in ["HOSTILE_CONTRACT_VERSION", "HOSTILE_PICK"] {
        cmd.env_remove(var);
    }
    cmd.envs(vars.iter().copied());
    let status = cmd
        .status()
        .expect("run cargo to build a policy from source");
    assert!(
        status.success(),
        "building {package} failed (is the wasm32-wasip2 target installed?)"
    );
    let out = target.join(format!("{lib}-{variant}.wasm"));
    std::fs::copy(
        target.join(format!("wasm32-wasip2/policy/{lib}.wasm")),
        &out,
    )
    .unwrap();
    out
}

/// A request with this text and routing key.
pub fn request<'a>(text: &'a str, routing_key: Option<&'a str>) -> RouteRequest<'a> {
    RouteRequest {
        id: 1,
        route: Route::Generate,
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

/// Regular workers with these ids, serving model `m`, for `workers-changed`.
pub fn workers(ids: &[u32]) -> Vec<WorkerInfo> {
    ids.iter()
        .map(|&id| WorkerInfo {
            id,
            url: format!("http://127.0.0.1:{}", 9000 + id),
            model: "m".into(),
            role: Role::Regular,
            dp_rank: None,
            ..Default::default()
        })
        .collect()
}

/// Idle candidates with these ids.
pub fn idle(ids: &[u32]) -> Vec<Candidate> {
    ids.iter().map(|&id| Candidate::idle(id, 0)).collect()
}

/// Poll `done` every few milliseconds for up to ten seconds.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
