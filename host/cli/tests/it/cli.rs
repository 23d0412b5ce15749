//! The `router` binary's commands, run as a user would.

use std::process::{Command, Output};

use crate::fixtures::{hostile, workspace};

fn router(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_router"))
        .args(args)
        .current_dir(workspace())
        .env(
            "XDG_CACHE_HOME",
            concat!(env!("CARGO_TARGET_TMPDIR"), "/cli-cache"),
        )
        .output()
        .expect("run router")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn policy_check_describes_a_valid_component() {
    let out = router(&["policy", "check", "policies/cache_aware.wasm"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in [
        "contract:       0.2.0",
        "name:           cache_aware",
        "needs text:     yes",
        "instances:      per-thread",
        "tick every:     60s",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    assert!(stdout.contains("test select:    worker"), "{stdout}");
}

/// Issue 17: a component built against contract 0.1.0 (cache_aware as it
/// was committed before 0.2) still loads, and the check says which
/// contract it speaks.
#[test]
fn policy_check_names_the_contract_of_a_0_1_component() {
    let file = crate::fixtures::contract_0_1("cache_aware");
    let out = router(&["policy", "check", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in [
        "contract:       0.1.0",
        "name:           cache_aware",
        "instances:      shared",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}

#[test]
fn policy_check_accepts_builtin_names_and_passes_config() {
    let out = router(&[
        "policy",
        "check",
        "cache_aware",
        "--config",
        r#"{"eviction_interval_secs": 5}"#,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("tick every:     5s"));
}

#[test]
fn policy_check_rejects_a_file_that_is_not_a_component() {
    let out = router(&["policy", "check", "Cargo.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a WebAssembly file"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn policy_check_rejects_another_contract_version() {
    let file = hostile(Some("9.9.9"));
    let out = router(&["policy", "check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("built for policy contract 9.9.9, this router speaks 0.2.0 and 0.1.0"),
        "{stderr}"
    );
}

#[test]
fn policy_check_reports_a_trap_in_init() {
    let file = hostile(None);
    let out = router(&[
        "policy",
        "check",
        file.to_str().unwrap(),
        "--config",
        r#"{"trap-in-init": 1}"#,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("faulted while starting"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn policy_check_rejects_a_config_that_is_not_json() {
    let out = router(&["policy", "check", "round_robin", "--config", "{"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--config must be a JSON object"));
}

#[test]
fn a_bad_flag_is_a_usage_error() {
    let out = router(&["policy", "check"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn invalid_settings_exit_2_naming_the_setting() {
    let out = router(&[
        "--worker-urls",
        "http://127.0.0.1:1",
        "--cache-threshold",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--cache-threshold"),
        "{}",
        text(&out.stderr)
    );
    let out = router(&["--worker-urls", "localhost:8000"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("worker url"),
        "{}",
        text(&out.stderr)
    );
    let out = router(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn an_invalid_config_file_exits_2_naming_the_key() {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bad-router.toml");
    std::fs::write(&path, "port = 1\nmax_concurent_requests = 3\n").unwrap();
    let out = router(&["--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("max_concurent_requests"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn sigterm_stops_the_router_cleanly() {
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string()
    };
    let (port, metrics_port) = (free_port(), free_port());
    let logs = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sigterm-logs");
    // Left by an earlier run, if any: the test counts the files.
    let _fresh = std::fs::remove_dir_all(&logs);
    let child = Command::new(env!("CARGO_BIN_EXE_router"))
        .args([
            "--port",
            &port,
            "--prometheus-port",
            &metrics_port,
            "--policy",
            "round_robin",
            "--log-dir",
            logs.to_str().unwrap(),
            "--control-plane-api-keys",
            "k1:alice:admin:s1",
            "k2:bob:user:s2",
            "--control-plane-audit-enabled",
        ])
        .env(
            "XDG_CACHE_HOME",
            concat!(env!("CARGO_TARGET_TMPDIR"), "/cli-cache"),
        )
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    crate::fixtures::wait_until("the router listens", || {
        std::net::TcpStream::connect(&addr).is_ok()
    });
    // Control-plane keys (issue 16): an admin key passes, a user key is
    // refused; the audit names both.
    let get_workers = |key: &str| {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        let request = format!(
            "GET /workers HTTP/1.1\r\nhost: router\r\nauthorization: Bearer {key}\r\nconnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    assert!(get_workers("s1").starts_with("HTTP/1.1 200"));
    assert!(get_workers("s2").starts_with("HTTP/1.1 403"));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("shutting down"));
    // --log-dir (issue 16): the same lines in the day's file, uncolored.
    let files: Vec<_> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_str().unwrap().to_owned();
    assert!(name.starts_with("wasm-router."), "{name}");
    let logged = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        logged.contains("router listening") && logged.contains("shutting down"),
        "{logged}"
    );
    assert!(!logged.contains('\x1b'), "no color codes in the file");
    let audit: Vec<_> = logged
        .lines()
        .filter(|l| l.contains("control_plane_audit"))
        .collect();
    assert_eq!(audit.len(), 2, "{logged}");
    assert!(
        audit[0].contains("principal=k1") && audit[0].contains("outcome=\"success\""),
        "{}",
        audit[0]
    );
    assert!(
        audit[1].contains("principal=k2") && audit[1].contains("outcome=\"denied\""),
        "{}",
        audit[1]
    );
}

/// Issue 30: the demo's first screen is its table; stderr holds its
/// progress, one line per row, and nothing else.
#[test]
fn the_quick_demo_prints_its_table_and_only_its_progress() {
    let out = router(&["demo", "--quick", "--time-scale", "0.2"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("cache hit")
            && stdout.contains("round_robin")
            && stdout.contains("cache_aware"),
        "{stdout}"
    );
    let rows = stdout.lines().count() - 2;
    let progress = stderr
        .lines()
        .filter(|l| l.contains(" requests answered in "))
        .count();
    assert_eq!(progress, rows, "one progress line per row: {stderr}");
    // A busy machine may make a policy miss its deadline: warnings show.
    let other: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains(" requests answered in ") && !l.contains(" WARN "))
        .collect();
    assert!(other.is_empty(), "{other:?}");
}

/// Issue 30: at `--log-level info` the router's own lines show, other
/// crates' do not (the ZMQ publisher's connection notes were about a
/// hundred lines of the demo's stderr).
#[test]
fn at_info_the_demo_logs_no_other_crates_info_lines() {
    let out = router(&[
        "demo",
        "--quick",
        "--time-scale",
        "0.2",
        "--replicas",
        "2",
        "--log-level",
        "info",
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let info: Vec<&str> = stderr.lines().filter(|l| l.contains(" INFO ")).collect();
    assert!(
        info.iter().any(|l| l.contains(" wasm_router")),
        "the router's own lines show: {stderr}"
    );
    let noise: Vec<&&str> = info
        .iter()
        .filter(|l| !l.contains(" wasm_router") && !l.contains(" policy:"))
        .collect();
    assert!(noise.is_empty(), "other crates' INFO lines: {noise:?}");
}

#[test]
fn a_log_level_keeps_other_crates_at_warn_unless_debugging() {
    use wasm_router_cli::run::log_filter;
    let quiet = "kube_client=off,kube_runtime=off";
    assert_eq!(
        log_filter("info"),
        format!("warn,wasm_router=info,wasm_router_cli=info,policy=info,{quiet}")
    );
    assert_eq!(
        log_filter("error"),
        format!("error,wasm_router=error,wasm_router_cli=error,policy=error,{quiet}")
    );
    assert_eq!(log_filter("debug"), "debug");
    assert_eq!(log_filter("zeromq=info"), "zeromq=info");
}

#[test]
fn policy_new_rust_builds_and_passes_check() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("new-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = router(&[
        "policy",
        "new",
        "--lang",
        "rust",
        "my-policy",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let project = dir.join("my-policy");
    // Cargo in the project, as its author would run it, in a target
    // directory of the tests' own.
    let cargo = |args: &[&str]| {
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&project)
            .args(args)
            .env(
                "CARGO_TARGET_DIR",
                concat!(env!("CARGO_TARGET_TMPDIR"), "/new-policy-target"),
            )
            .status()
            .unwrap()
    };
    let built = cargo(&["build", "--quiet", "--release", "--target", "wasm32-wasip2"]);
    assert!(built.success(), "the scaffolded project builds");
    // Its own unit test, natively.
    let tested = cargo(&["test", "--quiet"]);
    assert!(tested.success(), "the scaffolded project's test passes");
    let wasm = concat!(
        env!("CARGO_TARGET_TMPDIR"),
        "/new-policy-target/wasm32-wasip2/release/my_policy.wasm"
    );
    let out = router(&["policy", "check", wasm]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("name:           my-policy"));
    // Refuses to overwrite, and bad names.
    let again = router(&["policy", "new", "my-policy", "--dir", dir.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&router(&["policy", "new", "Bad Name"]).stderr).contains("lowercase"));
}

#[test]
fn policy_new_assemblyscript_builds_and_passes_check() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("new-as-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = router(&[
        "policy",
        "new",
        "--lang",
        "assemblyscript",
        "my-as-policy",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("./build.sh"));
    let project = dir.join("my-as-policy");
    let built = Command::new(project.join("build.sh"))
        .env("ROUTER", env!("CARGO_BIN_EXE_router"))
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "the scaffolded project builds: {}",
        text(&built.stderr)
    );
    // build.sh ends with `router policy check` of the component.
    assert!(
        text(&built.stdout).contains("name:           my-as-policy"),
        "{}",
        text(&built.stdout)
    );
    assert!(project.join("my-as-policy.wasm").is_file());
}

/// `policy new` for the languages that start from the cache-affine
/// example: each project builds `NAME.wasm` with its own build.sh, and the
/// policy carries the project's name. (JavaScript shares TypeScript's SDK
/// and build, and the examples' own test builds it.)
#[test]
fn policy_new_python_typescript_c_and_go_build_and_pass_check() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("new-lang-policies-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for lang in ["python", "typescript", "c", "go"] {
        let name = format!("my-{lang}-policy");
        let out = router(&[
            "policy",
            "new",
            "--lang",
            lang,
            &name,
            "--dir",
            dir.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{lang}: {}", text(&out.stderr));
        let project = dir.join(&name);
        assert!(project.join("README.md").is_file(), "{lang}: a README");
        let built = Command::new(project.join("build.sh"))
            .env("ROUTER", env!("CARGO_BIN_EXE_router"))
            // Venvs of its own: the examples' test may be making theirs.
            .env("VENV", dir.join("python-venv"))
            .env("GO_VENV", dir.join("go-venv"))
            .output()
            .unwrap();
        assert!(
            built.status.success(),
            "{lang}: the scaffolded project builds: {}",
            text(&built.stderr)
        );
        let file = project.join(format!("{name}.wasm"));
        let checked = router(&["policy", "check", file.to_str().unwrap()]);
        assert!(
            checked.status.success(),
            "{lang}: {}",
            text(&checked.stderr)
        );
        let lib = name.replace('-', "_");
        assert!(
            text(&checked.stdout).contains(&format!("name:           {lib}")),
            "{lang}: {}",
            text(&checked.stdout)
        );
    }
}
