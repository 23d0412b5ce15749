//! Debian's Prometheus server scrapes a running router's `/metrics`, and
//! queries for the request counter and the decision-time histogram answer.
//! Needs the `prometheus` binary (`apt-get install prometheus`; the README's
//! test command installs it).

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::mock::{eventually, get_json, http};
use crate::soak::{Proc, free_port};

fn prometheus_binary() -> &'static str {
    let found = Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "this test needs Prometheus' server: apt-get install prometheus (tests/run.sh does)"
    );
    "prometheus"
}

/// The first sample of an instant query's answer, as a number.
fn first_value(answer: &Value) -> Option<f64> {
    answer["data"]["result"][0]["value"][1]
        .as_str()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_request_counter_and_the_decision_histogram() {
    let prometheus = prometheus_binary();
    let worker = wasm_router_cli::sim::start(
        wasm_router_cli::sim::SimArgs {
            time_scale: 0.0,
            ..Default::default()
        },
        true,
    )
    .await
    .unwrap();
    let (port, metrics) = (free_port(), free_port());
    let _router = Proc(
        Command::new(env!("CARGO_BIN_EXE_router"))
            .args([
                "--port",
                &port.to_string(),
                "--prometheus-port",
                &metrics.to_string(),
            ])
            .args(["--worker-urls", &worker.url(), "--log-level", "warn"])
            .env(
                "XDG_CACHE_HOME",
                concat!(env!("CARGO_TARGET_TMPDIR"), "/prometheus-cache"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the router"),
    );
    let router = format!("http://127.0.0.1:{port}");
    eventually("the router routes", async || {
        let sent = http()
            .post(format!("{router}/generate"))
            .json(&serde_json::json!({"text": "hello"}))
            .send()
            .await;
        sent.is_ok_and(|r| r.status() == 200)
    })
    .await;
    for i in 0..9 {
        let sent = http()
            .post(format!("{router}/generate"))
            .json(&serde_json::json!({"text": format!("q{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), 200);
    }
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("prometheus");
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: wasm-router\n    \
             static_configs:\n      - targets: ['127.0.0.1:{metrics}']\n"
        ),
    )
    .unwrap();
    let web = free_port();
    let _prometheus = Proc(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let query = async |q: &str| -> Value {
        let url = format!("http://127.0.0.1:{web}/api/v1/query?query={q}");
        match http().get(url).send().await {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    };
    // Prometheus starts, then scrapes every second: up to a minute. The
    // routed ones: a request sent before the worker's first health check
    // passed is counted too, with its 503.
    let mut requests = None;
    for _ in 0..300 {
        requests = first_value(&query("sum(wasm_router_requests_total{status=\"200\"})").await);
        if requests.is_some_and(|n| n >= 10.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(requests, Some(10.0), "ten requests were routed");
    let decisions = query("sum(wasm_router_policy_decision_seconds_count)").await;
    assert_eq!(first_value(&decisions), Some(10.0), "{decisions}");
    // The histogram's buckets answer a quantile.
    let p99 = query(
        "histogram_quantile(0.99,sum(rate(wasm_router_policy_decision_seconds_bucket[1m]))by(le))",
    )
    .await;
    assert_eq!(p99["status"], "success", "{p99}");
    let targets = get_json(&format!("http://127.0.0.1:{web}/api/v1/targets")).await;
    assert_eq!(
        targets["data"]["activeTargets"][0]["health"], "up",
        "{targets}"
    );
    worker.stop();
}
