//! Unit tests of layering and validation.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use super::*;

/// The file under the flags, validated, as `Config::load` does it.
fn merge(flags: &RouterArgs, file: RouterArgs) -> Result<Config, ConfigError> {
    Config::validate(layer(file, flags))
}

#[test]
fn flags_override_the_file_which_overrides_defaults() {
    let file: RouterArgs = toml::from_str(
        "port = 1234\nhost = \"0.0.0.0\"\ncache_threshold = 0.5\nworker_urls = [\"http://127.0.0.1:1\"]\n[policy]\nmax_tree_size = 99\n",
    )
    .unwrap();
    let args = RouterArgs {
        port: Some(4321),
        ..RouterArgs::default()
    };
    let c = merge(&args, file).unwrap();
    assert_eq!(c.listen, "0.0.0.0:4321".parse().unwrap());
    assert_eq!(c.workers, vec![WorkerSpec::regular("http://127.0.0.1:1")]);
    let policy: Value = serde_json::from_str(&c.policy_config).unwrap();
    assert_eq!(policy["cache_threshold"], 0.5);
    assert_eq!(policy["max_tree_size"], 99);
    assert_eq!(c.retry.max_retries, 5);
}

#[test]
fn errors_name_the_setting() {
    let args = RouterArgs {
        cache_threshold: Some(3.0),
        ..RouterArgs::default()
    };
    let err = merge(&args, RouterArgs::default()).unwrap_err().to_string();
    assert!(err.contains("--cache-threshold"), "{err}");
    let args = RouterArgs {
        assignment_mode: Some("fastest".into()),
        ..RouterArgs::default()
    };
    let err = merge(&args, RouterArgs::default()).unwrap_err().to_string();
    assert!(err.contains("--assignment-mode"), "{err}");
    let err = toml::from_str::<RouterArgs>("prot = 1")
        .unwrap_err()
        .to_string();
    assert!(err.contains("prot"), "{err}");
}

fn parse_flags(argv: &[&str]) -> Result<Config, ConfigError> {
    use clap::Parser;
    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        args: RouterArgs,
    }
    let flags = Flags::try_parse_from([&["router"], argv].concat()).unwrap();
    merge(&flags.args, RouterArgs::default())
}

#[test]
fn pd_flags_give_prefill_and_decode_workers_and_their_policies() {
    let c = parse_flags(&[
        "--pd-disaggregation",
        "--prefill",
        "http://127.0.0.1:1",
        "8998",
        "--prefill",
        "http://127.0.0.1:2",
        "--prefill",
        "http://127.0.0.1:3",
        "none",
        "--decode",
        "http://127.0.0.1:4",
        "--decode",
        "http://127.0.0.1:5/",
        "--policy",
        "random",
        "--decode-policy",
        "round_robin",
    ])
    .unwrap();
    let pd = c.pd.as_ref().unwrap();
    let workers: Vec<_> = pd
        .workers
        .iter()
        .map(|w| (w.url.as_str(), w.role, w.bootstrap_port))
        .collect();
    assert_eq!(
        workers,
        vec![
            ("http://127.0.0.1:1", Role::Prefill, Some(8998)),
            ("http://127.0.0.1:2", Role::Prefill, None),
            ("http://127.0.0.1:3", Role::Prefill, None),
            ("http://127.0.0.1:4", Role::Decode, None),
            ("http://127.0.0.1:5", Role::Decode, None),
        ]
    );
    assert_eq!(c.policy_of(PolicySlot::Prefill), "random");
    assert_eq!(c.policy_of(PolicySlot::Main), "round_robin");
}

#[test]
fn pd_workers_can_come_from_the_file() {
    let file: RouterArgs = toml::from_str(
        "pd_disaggregation = true\nprefill_policy = \"random\"\ndecode = [\"http://127.0.0.1:2\"]\n\
         prefill = [{ url = \"http://127.0.0.1:1\", bootstrap_port = 8998 }, { url = \"http://127.0.0.1:3\" }]\n",
    )
    .unwrap();
    let c = merge(&RouterArgs::default(), file).unwrap();
    let ports: Vec<_> =
        c.pd.unwrap()
            .workers
            .iter()
            .map(|w| (w.role, w.bootstrap_port))
            .collect();
    assert_eq!(
        ports,
        vec![
            (Role::Prefill, Some(8998)),
            (Role::Prefill, None),
            (Role::Decode, None)
        ]
    );
}

#[test]
fn pd_mistakes_name_the_flag() {
    for (argv, flag) in [
        (
            &["--pd-disaggregation", "--decode", "http://h:1"][..],
            "--prefill/--decode",
        ),
        (
            &["--prefill", "http://h:1", "--decode", "http://h:2"][..],
            "--pd-disaggregation",
        ),
        (
            &[
                "--pd-disaggregation",
                "--prefill",
                "http://h:1",
                "99999",
                "--decode",
                "http://h:2",
            ][..],
            "--prefill",
        ),
        (
            &[
                "--pd-disaggregation",
                "--prefill",
                "h:1",
                "--decode",
                "http://h:2",
            ][..],
            "--prefill",
        ),
        (
            &[
                "--pd-disaggregation",
                "--worker-urls",
                "http://h:3",
                "--prefill",
                "http://h:1",
                "--decode",
                "http://h:2",
            ][..],
            "--worker-urls",
        ),
    ] {
        let err = parse_flags(argv).unwrap_err().to_string();
        assert!(err.contains(flag), "{argv:?}: {err}");
    }
}

#[test]
fn worker_entries_carry_weight_labels_and_their_event_endpoint() {
    let file = r#"
        worker_urls = ["http://127.0.0.1:1"]
        kv_events = true
        [[workers]]
        url = "http://127.0.0.1:2/"
        weight = 3
        labels = { zone = "b", "gpu.kind" = "h100" }
        kv_events_config = { publisher = "zmq", endpoint = "tcp://*:5557" }
        [[workers]]
        url = "http://[::1]:3"
    "#;
    let c = merge(&RouterArgs::default(), toml::from_str(file).unwrap()).unwrap();
    let urls: Vec<_> = c.workers.iter().map(|w| w.url.as_str()).collect();
    assert_eq!(
        urls,
        ["http://127.0.0.1:1", "http://127.0.0.1:2", "http://[::1]:3"]
    );
    let given = &c.workers[1];
    assert_eq!(given.weight, 3);
    assert_eq!(
        given.labels.iter().collect::<Vec<_>>(),
        [
            (&"gpu.kind".to_string(), &"h100".to_string()),
            (&"zone".to_string(), &"b".to_string())
        ]
    );
    assert_eq!(
        given.kv_events_config.as_ref().unwrap()["endpoint"],
        "tcp://*:5557"
    );
    assert_eq!((c.workers[0].weight, c.workers[2].weight), (1, 1));
    assert!(c.workers[2].labels.is_empty());
}

#[test]
fn bad_worker_entries_are_refused_and_named() {
    let long_value = "v".repeat(257);
    for (entry, named) in [
        ("url = \"h:1\"", "worker url"),
        ("url = \"http://127.0.0.1:1\"", "given twice"),
        ("url = \"http://127.0.0.1:2\"\nweight = 0", "weight"),
        ("url = \"http://127.0.0.1:2\"\nweight = 1001", "weight"),
        (
            "url = \"http://127.0.0.1:2\"\nlabels = { \"a b\" = \"x\" }",
            "key \"a b\"",
        ),
        (
            "url = \"http://127.0.0.1:2\"\nlabels = { \"\" = \"x\" }",
            "labels",
        ),
        (
            &format!("url = \"http://127.0.0.1:2\"\nlabels = {{ a = \"{long_value}\" }}"),
            "longer than 256",
        ),
        (
            "url = \"http://127.0.0.1:2\"\nkv_events_config = { publisher = \"zmq\", endpoint = \"tcp://*:1\" }",
            "--kv-events",
        ),
    ] {
        let file = format!("worker_urls = [\"http://127.0.0.1:1\"]\n[[workers]]\n{entry}\n");
        let err = merge(&RouterArgs::default(), toml::from_str(&file).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains(named), "{entry}: {err}");
    }
    let many: String = (0..33).map(|i| format!("k{i} = \"v\", ")).collect();
    let file = format!(
        "[[workers]]\nurl = \"http://127.0.0.1:2\"\nlabels = {{ {} }}\n",
        many.trim_end_matches(", ")
    );
    let err = merge(&RouterArgs::default(), toml::from_str(&file).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("at most 32"), "{err}");
    // Fields of an entry are checked like every other key of the file.
    let err = toml::from_str::<RouterArgs>("[[workers]]\nurl = \"http://h:1\"\nwieght = 2\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("wieght"), "{err}");
    let pd = "pd_disaggregation = true\nprefill = [{ url = \"http://127.0.0.1:5\" }]\ndecode = [\"http://127.0.0.1:6\"]\n[[workers]]\nurl = \"http://127.0.0.1:2\"\n";
    let err = merge(&RouterArgs::default(), toml::from_str(pd).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("[[workers]]"), "{err}");
}

#[test]
fn worker_urls_are_validated() {
    assert_eq!(
        validate_worker_url("http://127.0.0.1:8000/").unwrap(),
        "http://127.0.0.1:8000"
    );
    for bad in [
        "127.0.0.1:8000",
        "ftp://h:1",
        "http://",
        "http://h:1/?a=b",
        "http://h:0",
        "http://h:65536",
        "http://:secret@h:1",
        "http://user@h:1",
        "not a url",
    ] {
        assert!(validate_worker_url(bad).is_err(), "{bad}");
    }
}

/// One declaration: every flag is a key of the file and every key a flag,
/// under the same name but for the documented exceptions. A setting added
/// with `#[arg(skip)]` or `#[serde(skip)]` fails here; the Python launcher
/// and `Router(...)` take the flag table itself (python/src/lib.rs).
#[test]
fn every_setting_is_both_a_flag_and_a_file_key() {
    use clap::CommandFactory;
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        args: RouterArgs,
    }
    // `--config` names the file; the file's `policy` is the policy's table
    // and `workers` its structured worker entries (the flag's form is
    // --worker-urls); `--policy` is `policy_name` in the file.
    let flag_only = ["config"];
    let file_only = ["policy", "workers"];
    let file_key = |id: &str| {
        if id == "policy" {
            "policy_name".to_string()
        } else {
            id.to_string()
        }
    };
    let flags: BTreeSet<String> = Flags::command()
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .filter(|id| id != "help" && !flag_only.contains(&id.as_str()))
        .map(|id| file_key(&id))
        .collect();
    let Value::Object(defaults) = serde_json::to_value(RouterArgs::default()).unwrap() else {
        panic!("settings serialize to an object");
    };
    let keys: BTreeSet<String> = defaults
        .keys()
        .filter(|k| !file_only.contains(&k.as_str()))
        .cloned()
        .collect();
    assert!(flags.len() > 50, "{flags:?}");
    assert_eq!(
        flags.difference(&keys).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "flags that the config file does not take"
    );
    assert_eq!(
        keys.difference(&flags).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "file keys that have no flag"
    );
}

#[test]
fn a_flag_wins_over_the_file_only_when_given() {
    let file: RouterArgs = toml::from_str(
        "retry_max_retries = 2\ndisable_retries = true\nrequest_id_headers = [\"x-a\"]\n",
    )
    .unwrap();
    let flags = RouterArgs {
        retry_max_retries: Some(7),
        ..RouterArgs::default()
    };
    let c = merge(&flags, file).unwrap();
    assert_eq!(c.retry.max_retries, 0, "the file's switch stays on");
    assert_eq!(c.request_id_headers, vec!["x-a"], "the file's list stays");
    let layered = layer(toml::from_str("retry_max_retries = 2").unwrap(), &flags);
    assert_eq!(layered.retry_max_retries, Some(7));
}

/// Issue 16: the launcher exited 2 on 48 of sglang-router 0.3.2's flags.
/// At their defaults (and where they work here, at other values) they are
/// accepted.
#[test]
fn sglang_router_flags_are_accepted_at_their_defaults() {
    let c = parse_flags(&[
        "--max-concurrent-requests",
        "-1",
        "--enable-igw",
        "--backend",
        "openai",
        "--history-backend",
        "memory",
        "--worker-startup-timeout-secs",
        "1800",
        "--worker-startup-check-interval",
        "30",
        "--service-discovery-port",
        "80",
        "--otlp-traces-endpoint",
        "localhost:4317",
        "--oracle-pool-min",
        "1",
        "--redis-retention-days",
        "30",
        "--tokenizer-cache-l1-max-memory",
        "52428800",
        "--cors-allowed-origins",
        "--control-plane-api-keys",
        "--jwt-role-mapping",
        "--bucket-adjust-interval-secs",
        "7",
        "--prometheus-duration-buckets",
        "0.1",
        "1",
        "10",
    ])
    .unwrap();
    assert_eq!(c.queue, None, "-1 is no limit, as in sglang-router");
    let policy: Value = serde_json::from_str(&c.policy_config).unwrap();
    assert_eq!(policy["bucket_adjust_interval_secs"], 7);
    assert_eq!(c.duration_buckets, Some(vec![0.1, 1.0, 10.0]));
}

/// Issue 31: sglang-router's tokenizer cache flags size the router's
/// routing caches (on whether or not they are enabled by flag).
#[test]
fn tokenizer_cache_flags_size_the_routing_caches() {
    let c = parse_flags(&[
        "--tokenizer-cache-enable-l0",
        "--tokenizer-cache-l0-max-entries",
        "5",
        "--tokenizer-cache-enable-l1",
        "--tokenizer-cache-l1-max-memory",
        "1024",
    ])
    .unwrap();
    assert_eq!(
        c.tokenizer_cache,
        TokenizerCache {
            l0_entries: 5,
            l1_bytes: 1024
        }
    );
    let c = parse_flags(&[]).unwrap();
    assert_eq!(
        c.tokenizer_cache.l1_bytes as u64,
        defaults::TOKENIZER_CACHE_L1_MAX_MEMORY
    );
}

/// `--jwt-*` as sglang-router takes them, and the mistakes said by name.
#[test]
fn jwt_flags_make_a_verifier_config() {
    let c = parse_flags(&[
        "--jwt-issuer",
        "https://idp.test/realms/r",
        "--jwt-audience",
        "router",
        "--jwt-role-mapping",
        "Gateway.Admin=admin",
        "Gateway.User=user",
    ])
    .unwrap();
    assert_eq!(
        c.jwt,
        Some(JwtConfig {
            issuer: "https://idp.test/realms/r".into(),
            audience: "router".into(),
            jwks_uri: None,
            role_mapping: vec![
                ("Gateway.Admin".into(), true),
                ("Gateway.User".into(), false)
            ],
        })
    );
    for (argv, named) in [
        (
            &["--jwt-issuer", "https://idp.test"][..],
            "--jwt-issuer/--jwt-audience",
        ),
        (&["--jwt-audience", "router"], "--jwt-issuer/--jwt-audience"),
        (
            &["--jwt-jwks-uri", "https://idp.test/keys"],
            "--jwt-jwks-uri/--jwt-role-mapping",
        ),
        (
            &["--jwt-issuer", "idp.test", "--jwt-audience", "router"],
            "--jwt-issuer",
        ),
        (
            &[
                "--jwt-issuer",
                "https://idp.test",
                "--jwt-audience",
                "r",
                "--jwt-role-mapping",
                "a=root",
            ],
            "--jwt-role-mapping",
        ),
    ] {
        let err = parse_flags(argv).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("invalid {named}:")),
            "{argv:?}: {err}"
        );
    }
}

/// A local tokenizer.json, named or in a model directory; a model id is
/// refused: the router downloads nothing.
#[test]
fn tokenizer_flags_name_a_local_file() {
    let assets = concat!(env!("CARGO_MANIFEST_DIR"), "/cli/assets/tokenizer");
    let file = format!("{assets}/tokenizer.json");
    let named = parse_flags(&["--tokenizer-path", &file]).unwrap();
    assert_eq!(named.tokenizer, Some(PathBuf::from(&file)));
    let found = parse_flags(&["--model-path", assets]).unwrap();
    assert_eq!(
        found.tokenizer,
        Some(Path::new(assets).join("tokenizer.json"))
    );
    let err = parse_flags(&["--model-path", "meta-llama/Llama-3.1-8B-Instruct"])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("invalid --model-path:") && err.contains("downloads nothing"),
        "{err}"
    );
    let err = parse_flags(&["--tokenizer-path", "/no/such/tokenizer.json"])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("invalid --tokenizer-path:"), "{err}");
}

/// What this router does not offer is refused by name, not ignored.
#[test]
fn sglang_router_flags_this_router_does_not_offer_are_refused_by_name() {
    for argv in [
        &["--mini-lb"][..],
        &["--chat-template", "t.jinja"],
        &["--tool-call-parser", "json"],
        &["--reasoning-parser", "deepseek-r1"],
        &["--mcp-config-path", "mcp.yaml"],
        &["--history-backend", "postgres"],
        &["--postgres-db-url", "postgres://db"],
        &["--oracle-pool-max", "4"],
        &["--redis-url", "redis://r"],
    ] {
        let err = parse_flags(argv).unwrap_err().to_string();
        assert!(
            err.starts_with(argv[0]) && err.contains("is not supported:"),
            "{argv:?}: {err}"
        );
    }
    let err = parse_flags(&["--backend", "vllm"]).unwrap_err().to_string();
    assert!(err.contains("--backend"), "{err}");
    let err = parse_flags(&["--max-concurrent-requests", "-2"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("--max-concurrent-requests"), "{err}");
}

/// Tracing as sglang-router's flags say: off unless enabled, its default
/// collector, and an endpoint that is not HOST:PORT named.
#[test]
fn tracing_is_off_unless_enabled_and_its_endpoint_is_host_and_port() {
    assert_eq!(parse_flags(&[]).unwrap().otlp_traces, None);
    let on = parse_flags(&["--enable-trace"]).unwrap();
    assert_eq!(on.otlp_traces.as_deref(), Some("localhost:4317"));
    let given = parse_flags(&["--enable-trace", "--otlp-traces-endpoint", "collector:4317"]);
    assert_eq!(
        given.unwrap().otlp_traces.as_deref(),
        Some("collector:4317")
    );
    for (argv, names) in [
        (
            &["--otlp-traces-endpoint", "collector:4317"][..],
            "needs --enable-trace",
        ),
        (
            &["--enable-trace", "--otlp-traces-endpoint", "collector"],
            "HOST:PORT",
        ),
    ] {
        let err = parse_flags(argv).unwrap_err().to_string();
        assert!(err.contains(names), "{argv:?}: {err}");
    }
}

/// Service discovery's flags as sglang-router's: a selector of key=value
/// pairs; PD mode's two selectors; a misuse named with what to give.
#[test]
fn service_discovery_takes_sglang_routers_flags_and_names_what_is_missing() {
    let config = parse_flags(&[
        "--service-discovery",
        "--selector",
        "app=sglang",
        "tier=gpu",
        "--service-discovery-namespace",
        "llm",
    ])
    .unwrap();
    let discovery = config.discovery.unwrap();
    assert_eq!(
        discovery.selector.get("tier").map(String::as_str),
        Some("gpu")
    );
    assert_eq!(discovery.selector.len(), 2);
    assert_eq!(
        (discovery.port, discovery.namespace.as_deref()),
        (80, Some("llm"))
    );
    assert!(parse_flags(&[]).unwrap().discovery.is_none());
    let pd = parse_flags(&[
        "--pd-disaggregation",
        "--service-discovery",
        "--prefill-selector",
        "app=prefill",
        "--decode-selector",
        "app=decode",
        "--service-discovery-port",
        "30000",
    ])
    .unwrap();
    let discovery = pd.discovery.unwrap();
    assert_eq!(discovery.port, 30000);
    assert!(discovery.selector.is_empty() && pd.pd.unwrap().workers.is_empty());
    for (argv, names) in [
        (&["--service-discovery"][..], "--selector"),
        (&["--selector", "app=sglang"], "needs --service-discovery"),
        (
            &["--service-discovery", "--selector", "app"],
            "not key=value",
        ),
        (
            &[
                "--service-discovery",
                "--selector",
                "a=b",
                "--decode-selector",
                "c=d",
            ],
            "need --pd-disaggregation",
        ),
        (
            &[
                "--pd-disaggregation",
                "--service-discovery",
                "--prefill-selector",
                "a=b",
            ],
            "needs both",
        ),
    ] {
        let err = parse_flags(argv).unwrap_err().to_string();
        assert!(err.contains(names), "{argv:?}: {err}");
    }
}

/// Each default is one constant: the help shows it, once, from there.
#[test]
fn each_default_is_shown_in_the_help_from_its_constant() {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        run: RouterArgs,
    }
    let command = show_defaults(<Cli as clap::CommandFactory>::command());
    let shown = defaults::shown();
    assert!(shown.len() > 40, "{shown:?}");
    for (flag, value) in shown {
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == flag)
            .unwrap_or_else(|| panic!("{flag} is no flag"));
        let help = arg.get_help().unwrap().to_string();
        assert!(
            help.ends_with(&format!("[default: {value}].")),
            "{flag}: {help}"
        );
        assert_eq!(
            help.matches("[default:").count(),
            1,
            "{flag}'s help writes its default by hand: {help}"
        );
    }
    let config = Config::validate(RouterArgs::default()).unwrap();
    assert_eq!(config.listen.port(), defaults::PORT);
    assert_eq!(config.policy, defaults::POLICY);
    assert_eq!(
        config.request_timeout.as_secs(),
        defaults::REQUEST_TIMEOUT_SECS
    );
}

/// The policy lab's settings: off unless a log is named, its companions
/// refused alone, values checked, a shadow named once, and no shadow in PD
/// mode.
#[test]
fn decision_log_and_shadow_settings_are_checked() {
    assert_eq!(parse_flags(&[]).unwrap().decision_log, None);
    let on = parse_flags(&["--decision-log", "-", "--decision-log-sample", "0.25"]).unwrap();
    let log = on.decision_log.unwrap();
    assert_eq!(log.to, super::LogTarget::Stdout);
    assert_eq!(
        (log.sample, log.buffer, log.max_bytes),
        (0.25, 4096, 100 << 20)
    );
    let file = parse_flags(&["--decision-log", "/tmp/d.jsonl"]).unwrap();
    assert_eq!(
        file.decision_log.unwrap().to,
        super::LogTarget::File("/tmp/d.jsonl".into())
    );
    let two = parse_flags(&["--shadow-policy", "a.wasm", "--shadow-policy", "random"]).unwrap();
    assert_eq!(two.shadows, ["a.wasm", "random"]);
    for (argv, names) in [
        (
            &["--decision-log-sample", "0.5"][..],
            "needs --decision-log",
        ),
        (
            &["--decision-log", "-", "--decision-log-sample", "2"],
            "between 0 and 1",
        ),
        (
            &["--decision-log", "-", "--decision-log-buffer", "0"],
            "at least 1",
        ),
        (
            &["--shadow-policy", "a.wasm", "--shadow-policy", "a.wasm"],
            "given twice",
        ),
        (
            &[
                "--pd-disaggregation",
                "--prefill",
                "http://p:1",
                "--decode",
                "http://d:1",
                "--shadow-policy",
                "random",
            ],
            "PD mode",
        ),
    ] {
        let error = parse_flags(argv).unwrap_err().to_string();
        assert!(error.contains(names), "{argv:?}: {error}");
    }
}
