//! Kubernetes service discovery, end to end: the router binary, with its
//! real `kube` client configured by a kubeconfig (`KUBECONFIG`), watches
//! `router sim-kube-api` over loopback; the pods' IPs are loopback
//! addresses (127.0.0.N) where simulated workers serve, all on the one
//! port discovery is given.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde_json::{Value, json};
use wasm_router_cli::sim::kube_api::{self, KubeApi, KubeApiHandle, ready_pod, unready};
use wasm_router_cli::sim::{self, SimArgs, SimHandle};

use crate::mock::{eventually, get_json, http};
use crate::soak::Proc;

fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// A fleet of simulated workers at 127.0.0.N, all on one port.
struct Fleet {
    port: u16,
    workers: Vec<SimHandle>,
}

impl Fleet {
    async fn start(hosts: &[u8], knobs: SimArgs) -> Fleet {
        let each: Vec<(u8, SimArgs)> = hosts.iter().map(|&n| (n, knobs.clone())).collect();
        Fleet::of(&each).await
    }

    /// Workers at 127.0.0.N with their own knobs, on one port.
    async fn of(hosts: &[(u8, SimArgs)]) -> Fleet {
        // A port free on the first address is most often free on the
        // others (each is its own address); tried again if not.
        for _ in 0..5 {
            let port = free_port(loopback(hosts[0].0));
            let mut workers = Vec::new();
            for (n, knobs) in hosts {
                let args = SimArgs {
                    host: IpAddr::V4(loopback(*n)),
                    port,
                    ..knobs.clone()
                };
                match sim::start(args, true).await {
                    Ok(w) => workers.push(w),
                    Err(_) => break,
                }
            }
            if workers.len() == hosts.len() {
                return Fleet { port, workers };
            }
            workers.iter().for_each(SimHandle::stop);
        }
        panic!("no port free on every loopback address");
    }

    /// Requests worker `i` (127.0.0.(hosts[i])) received.
    fn requests(&self, i: usize) -> u64 {
        let counters = &self.workers[i].sim.counters;
        counters.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The fake API server and a kubeconfig that points at it.
struct Cluster {
    server: KubeApiHandle,
    _dir: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
}

impl Cluster {
    async fn start(name: &str) -> Cluster {
        let server = kube_api::serve("127.0.0.1:0".parse().unwrap(), Arc::default())
            .await
            .unwrap();
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("k8s-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, kube_api::kubeconfig(&server.url())).unwrap();
        Cluster {
            server,
            _dir: dir,
            kubeconfig,
        }
    }

    fn api(&self) -> &KubeApi {
        &self.server.api
    }
}

/// A router discovering pods labelled `app=worker` on `port`, with
/// `extra` flags; its address.
async fn router(cluster: &Cluster, port: u16, extra: &[&str]) -> (Proc, SocketAddr, u16) {
    let (http_port, metrics) = (free_port(loopback(1)), free_port(loopback(1)));
    let child = Command::new(env!("CARGO_BIN_EXE_router"))
        .args(["--host", "127.0.0.1", "--port", &http_port.to_string()])
        .args(["--prometheus-port", &metrics.to_string()])
        .args([
            "--service-discovery",
            "--service-discovery-port",
            &port.to_string(),
        ])
        .args(["--health-check-interval-secs", "1", "--log-level", "warn"])
        .args(extra)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env(
            "XDG_CACHE_HOME",
            concat!(env!("CARGO_TARGET_TMPDIR"), "/discovery-cache"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the router");
    let addr: SocketAddr = (loopback(1), http_port).into();
    let proc = Proc(child);
    eventually("the router listens", async || {
        http()
            .get(format!("http://{addr}/health"))
            .send()
            .await
            .is_ok()
    })
    .await;
    (proc, addr, metrics)
}

async fn workers(addr: SocketAddr) -> Vec<Value> {
    get_json(&format!("http://{addr}/workers")).await["workers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn urls(addr: SocketAddr) -> Vec<String> {
    let mut urls: Vec<String> = workers(addr)
        .await
        .iter()
        .filter(|w| w["healthy"] == true)
        .map(|w| w["url"].as_str().unwrap_or_default().to_string())
        .collect();
    urls.sort();
    urls
}

async fn generate(addr: SocketAddr, text: &str) -> u16 {
    http()
        .post(format!("http://{addr}/generate"))
        .json(&json!({"text": text, "sampling_params": {"max_new_tokens": 2}}))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

fn pod(name: &str, host: u8) -> Value {
    ready_pod(name, &loopback(host).to_string(), &[("app", "worker")], &[])
}

fn instant() -> SimArgs {
    SimArgs {
        time_scale: 0.0,
        ..SimArgs::default()
    }
}

/// Ready pods are routed to; a pod that is not ready, or lacks the
/// selector's label, never is; one that becomes ready is; an admin cannot
/// remove a discovered worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_pods_that_match_are_workers_and_others_never_are() {
    let fleet = Fleet::start(&[2, 3, 4], instant()).await;
    let cluster = Cluster::start("ready").await;
    let api = cluster.api();
    api.put_pod(pod("a", 2));
    api.put_pod(unready(pod("b", 3)));
    api.put_pod(ready_pod("c", "127.0.0.4", &[("app", "other")], &[]));
    let (_router, addr, _) = router(&cluster, fleet.port, &["--selector", "app=worker"]).await;
    let a = format!("http://127.0.0.2:{}", fleet.port);
    let b = format!("http://127.0.0.3:{}", fleet.port);
    eventually("pod a is routed", async || urls(addr).await == [a.clone()]).await;
    for i in 0..20 {
        assert_eq!(generate(addr, &format!("q{i}")).await, 200);
    }
    assert_eq!(
        (fleet.requests(0), fleet.requests(1), fleet.requests(2)),
        (20, 0, 0)
    );
    let listed = workers(addr).await;
    assert_eq!(listed[0]["source"], "kubernetes");
    assert_eq!(listed[0]["pod"], "default/a");
    // An admin removal is refused, with what to do instead.
    let id = listed[0]["id"].as_str().unwrap().to_string();
    let refused = http()
        .delete(format!("http://{addr}/workers/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("change the pod"),
        "{body}"
    );
    // b becomes ready: it joins.
    api.put_pod(pod("b", 3));
    eventually("pod b joins", async || {
        urls(addr).await == [a.clone(), b.clone()]
    })
    .await;
    for i in 0..20 {
        assert_eq!(generate(addr, &format!("r{i}")).await, 200);
    }
    assert!(fleet.requests(1) > 0, "b was routed to");
    assert_eq!(fleet.requests(2), 0, "c lacks the label");
    // a stops being ready: it leaves.
    api.put_pod(unready(pod("a", 2)));
    eventually("pod a leaves", async || urls(addr).await == [b.clone()]).await;
    let before = fleet.requests(0);
    for i in 0..10 {
        assert_eq!(generate(addr, &format!("s{i}")).await, 200);
    }
    assert_eq!(fleet.requests(0), before, "a gets nothing once not ready");
}

/// A deleted pod gets no new request after its DELETED event, and the
/// stream in flight on it completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pods_stream_in_flight_completes() {
    let slow = SimArgs {
        decode_us_per_token: 20_000,
        output_tokens: 50,
        stream_pieces: 50,
        ..SimArgs::default()
    };
    let fleet = Fleet::start(&[5], slow).await;
    let cluster = Cluster::start("delete").await;
    cluster.api().put_pod(pod("a", 5));
    let (_router, addr, _) = router(&cluster, fleet.port, &["--selector", "app=worker"]).await;
    eventually("pod a is routed", async || urls(addr).await.len() == 1).await;
    let mut stream = http()
        .post(format!("http://{addr}/generate"))
        .json(&json!({"text": "a long answer", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(stream.chunk().await.unwrap().is_some());
    assert!(cluster.api().delete_pod("default/a"));
    eventually("pod a leaves", async || urls(addr).await.is_empty()).await;
    // No worker left: a new request is refused, not sent to the pod.
    let requests = fleet.requests(0);
    assert_eq!(generate(addr, "new").await, 503);
    assert_eq!(fleet.requests(0), requests);
    let mut rest = String::new();
    while let Some(chunk) = stream.chunk().await.unwrap() {
        rest.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(rest.contains("[DONE]"), "the stream ran to its end: {rest}");
}

/// The API server goes away: the workers found keep serving and no request
/// fails; the router says so in its metrics. It comes back having
/// forgotten its history (a 410 for the old watch): the router lists
/// again, dropping a pod deleted meanwhile and adding one created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_going_away_loses_no_worker_and_fails_no_request() {
    let fleet = Fleet::start(&[6, 7, 8], instant()).await;
    let mut cluster = Cluster::start("outage").await;
    cluster.api().put_pod(pod("a", 6));
    cluster.api().put_pod(pod("b", 7));
    let (_router, addr, metrics) =
        router(&cluster, fleet.port, &["--selector", "app=worker"]).await;
    eventually("both pods are routed", async || urls(addr).await.len() == 2).await;
    let api = cluster.server.api.clone();
    let server_addr = cluster.server.addr;
    cluster.server.stop();
    api.disconnect();
    let up = async || {
        let text = crate::mock::get_text(&format!("http://127.0.0.1:{metrics}/metrics")).await;
        text.lines()
            .find(|l| l.starts_with("wasm_router_discovery_api_up"))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_string)
    };
    eventually("the router sees the API server gone", async || {
        up().await.as_deref() == Some("0")
    })
    .await;
    for i in 0..30 {
        assert_eq!(
            generate(addr, &format!("q{i}")).await,
            200,
            "request {i} during the outage"
        );
    }
    assert_eq!(urls(addr).await.len(), 2);
    // Meanwhile: b is deleted, c created; the history is gone.
    api.delete_pod("default/b");
    api.put_pod(pod("c", 8));
    api.compact();
    cluster.server = kube_api::serve(server_addr, api).await.unwrap();
    let (a, c) = (
        format!("http://127.0.0.6:{}", fleet.port),
        format!("http://127.0.0.8:{}", fleet.port),
    );
    eventually("the router lists again", async || {
        urls(addr).await == [a.clone(), c.clone()]
    })
    .await;
    eventually("the router sees the API server back", async || {
        up().await.as_deref() == Some("1")
    })
    .await;
}

/// PD mode: prefill and decode pods found by their selectors, the prefill
/// pod's bootstrap port from its annotation; requests are served in pairs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pd_selectors_find_prefill_and_decode_pods_that_serve_in_pairs() {
    use wasm_router_cli::sim::pd::SimRole;
    let role = |role| SimArgs { role, ..instant() };
    let fleet = Fleet::of(&[(9, role(SimRole::Prefill)), (10, role(SimRole::Decode))]).await;
    let cluster = Cluster::start("pd").await;
    // The simulated prefill worker serves the KV pulls on its own port.
    let bootstrap = fleet.port.to_string();
    cluster.api().put_pod(ready_pod(
        "p",
        "127.0.0.9",
        &[("app", "prefill")],
        &[("sglang.ai/bootstrap-port", &bootstrap)],
    ));
    cluster
        .api()
        .put_pod(ready_pod("d", "127.0.0.10", &[("app", "decode")], &[]));
    let (_router, addr, _) = router(
        &cluster,
        fleet.port,
        &[
            "--pd-disaggregation",
            "--prefill-selector",
            "app=prefill",
            "--decode-selector",
            "app=decode",
        ],
    )
    .await;
    eventually("both halves are found", async || {
        urls(addr).await.len() == 2
    })
    .await;
    let listed = workers(addr).await;
    let prefill_view = listed.iter().find(|w| w["role"] == "prefill").unwrap();
    assert_eq!(prefill_view["bootstrap_port"].to_string(), bootstrap);
    for i in 0..5 {
        assert_eq!(generate(addr, &format!("pd{i}")).await, 200);
    }
    assert_eq!((fleet.requests(0), fleet.requests(1)), (5, 5));
}
