//! `router sim-kube-api`: a Kubernetes API server that serves pods only,
//! enough for the router's service discovery to be tested and measured
//! with the real `kube` client over loopback: list (with its
//! resourceVersion and a label selector of `key=value` pairs), watch from
//! a resourceVersion (chunked JSON lines: ADDED, MODIFIED, DELETED as a
//! pod enters, changes in or leaves the selector, BOOKMARK every second,
//! and the `410 Gone` ERROR event for a version older than it keeps), in
//! one namespace or all.
//!
//! Pods are set through [`KubeApi`] in process, or over HTTP for scripts:
//! `PUT /sim/pods` with a pod (JSON) creates or replaces it, `DELETE
//! /sim/pods/{namespace}/{name}` deletes it, `POST /sim/compact` forgets
//! the history (every watch from before gets a 410), `POST
//! /sim/disconnect` ends every open watch.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use bytes::Bytes;
use clap::Args;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// Knobs of `router sim-kube-api`.
#[derive(Debug, Clone, Args)]
pub struct KubeApiArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
}

/// One change, as a watch sends it.
#[derive(Debug, Clone)]
struct Change {
    version: u64,
    /// The pod before (none when created).
    before: Option<Value>,
    /// The pod after (none when deleted).
    after: Option<Value>,
}

#[derive(Debug, Default)]
struct Store {
    pods: BTreeMap<String, Value>,
    version: u64,
    /// Changes kept for watches from an older version; those before
    /// `oldest` are forgotten (a watch from there gets a 410).
    history: VecDeque<Change>,
    oldest: u64,
}

/// The server's pods and watches.
#[derive(Debug)]
pub struct KubeApi {
    store: Mutex<Store>,
    changes: broadcast::Sender<Change>,
    disconnect: tokio::sync::watch::Sender<u64>,
}

/// How many changes a watch may fall behind before it is ended (it then
/// watches again from its last version, as clients do).
const LAG: usize = 4096;
/// How many changes are kept for watches from an older version.
const HISTORY: usize = 100_000;

fn key_of(pod: &Value) -> String {
    let meta = &pod["metadata"];
    format!(
        "{}/{}",
        meta["namespace"].as_str().unwrap_or("default"),
        meta["name"].as_str().unwrap_or_default()
    )
}

impl Default for KubeApi {
    fn default() -> Self {
        KubeApi {
            store: Mutex::default(),
            changes: broadcast::channel(LAG).0,
            disconnect: tokio::sync::watch::channel(0).0,
        }
    }
}

impl KubeApi {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, store: &mut Store, key: String, after: Option<Value>) {
        store.version += 1;
        let version = store.version;
        let after = after.map(|mut pod| {
            pod["metadata"]["resourceVersion"] = json!(version.to_string());
            pod
        });
        let before = match &after {
            Some(pod) => store.pods.insert(key, pod.clone()),
            None => store.pods.remove(&key),
        };
        let change = Change {
            version,
            before,
            after,
        };
        store.history.push_back(change.clone());
        if store.history.len() > HISTORY {
            store.history.pop_front();
            store.oldest = store.history.front().map_or(version, |c| c.version - 1);
        }
        // No watch open is no error.
        self.changes.send(change).ok();
    }

    /// Create or replace a pod (its `metadata.namespace` defaults to
    /// `default`).
    pub fn put_pod(&self, mut pod: Value) {
        if pod["metadata"]["namespace"].is_null() {
            pod["metadata"]["namespace"] = json!("default");
        }
        let mut store = self.store();
        self.record(&mut store, key_of(&pod), Some(pod));
    }

    /// Delete pod `namespace/name`; whether it existed.
    pub fn delete_pod(&self, key: &str) -> bool {
        let mut store = self.store();
        if !store.pods.contains_key(key) {
            return false;
        }
        self.record(&mut store, key.to_string(), None);
        true
    }

    /// Forget the history: a watch from a version before now gets `410
    /// Gone` and must list again.
    pub fn compact(&self) {
        let mut store = self.store();
        store.history.clear();
        store.oldest = store.version;
    }

    /// End every open watch (clients watch again from their version).
    pub fn disconnect(&self) {
        self.disconnect.send_modify(|n| *n += 1);
    }
}

/// A ready, running pod `name` at `ip` with `labels` and `annotations`.
pub fn ready_pod(
    name: &str,
    ip: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
) -> Value {
    let map = |pairs: &[(&str, &str)]| -> Value {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": map(labels), "annotations": map(annotations)},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    })
}

/// The same pod, not ready.
pub fn unready(mut pod: Value) -> Value {
    pod["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
    pod
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    label_selector: Option<String>,
    #[serde(default)]
    watch: bool,
    resource_version: Option<String>,
    timeout_seconds: Option<u64>,
}

/// Whether `pod` is in `namespace` (all when none) and has every
/// `key=value` of `selector`.
fn selected(pod: &Value, namespace: Option<&str>, selector: &[(String, String)]) -> bool {
    let meta = &pod["metadata"];
    namespace.is_none_or(|ns| meta["namespace"] == ns)
        && selector
            .iter()
            .all(|(k, v)| meta["labels"][k].as_str() == Some(v.as_str()))
}

/// The `key=value` pairs of a selector; a pair of another form is named.
fn parse_selector(selector: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for pair in selector
        .unwrap_or_default()
        .split(',')
        .filter(|p| !p.is_empty())
    {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!(
                "unsupported label selector {pair:?} (this server takes key=value)"
            ));
        };
        out.push((k.trim_end_matches('=').to_string(), v.to_string()));
    }
    Ok(out)
}

/// The event a watch of (`namespace`, `selector`) sends for `change`, if
/// any: a pod entering the selection is ADDED, leaving it DELETED.
fn event_for(
    change: &Change,
    namespace: Option<&str>,
    selector: &[(String, String)],
) -> Option<Value> {
    let was = change
        .before
        .as_ref()
        .filter(|p| selected(p, namespace, selector));
    let is = change
        .after
        .as_ref()
        .filter(|p| selected(p, namespace, selector));
    let (kind, object) = match (was, is) {
        (None, Some(pod)) => ("ADDED", pod.clone()),
        (Some(_), Some(pod)) => ("MODIFIED", pod.clone()),
        (Some(pod), None) => {
            let mut pod = pod.clone();
            pod["metadata"]["resourceVersion"] = json!(change.version.to_string());
            ("DELETED", pod)
        }
        (None, None) => return None,
    };
    Some(json!({"type": kind, "object": object}))
}

fn line(event: &Value) -> Result<Bytes, std::io::Error> {
    let mut bytes = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    Ok(Bytes::from(bytes))
}

async fn all_pods(State(api): State<Arc<KubeApi>>, Query(q): Query<ListQuery>) -> Response {
    list_or_watch(&api, None, q)
}

async fn namespaced_pods(
    State(api): State<Arc<KubeApi>>,
    Path(namespace): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    list_or_watch(&api, Some(namespace), q)
}

/// A list of the pods in `namespace` (all when none), or a watch of them.
fn list_or_watch(api: &KubeApi, namespace: Option<String>, q: ListQuery) -> Response {
    let selector = match parse_selector(q.label_selector.as_deref()) {
        Ok(s) => s,
        Err(message) => {
            let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": message, "reason": "BadRequest", "code": 400});
            return (StatusCode::BAD_REQUEST, axum::Json(status)).into_response();
        }
    };
    if !q.watch {
        let store = api.store();
        let items: Vec<&Value> = store
            .pods
            .values()
            .filter(|p| selected(p, namespace.as_deref(), &selector))
            .collect();
        return axum::Json(json!({
            "kind": "PodList", "apiVersion": "v1",
            "metadata": {"resourceVersion": store.version.to_string()},
            "items": items,
        }))
        .into_response();
    }
    let from: u64 = q
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (backlog, live, version) = {
        let store = api.store();
        if from < store.oldest {
            let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                "status": "Failure", "message": format!("too old resource version: {from} ({})", store.oldest),
                "reason": "Expired", "code": 410}});
            return Body::from(line(&gone).unwrap_or_default()).into_response();
        }
        let backlog: Vec<Change> = store
            .history
            .iter()
            .filter(|c| c.version > from)
            .cloned()
            .collect();
        (backlog, api.changes.subscribe(), store.version)
    };
    let timeout = Duration::from_secs(q.timeout_seconds.unwrap_or(300).min(300));
    let mut disconnect = api.disconnect.subscribe();
    disconnect.mark_unchanged();
    let stream = watch_events(
        backlog, live, version, namespace, selector, timeout, disconnect,
    );
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The events of one watch: the backlog, then live changes and a BOOKMARK
/// every second, until the timeout, a disconnect or a lag.
fn watch_events(
    backlog: Vec<Change>,
    mut live: broadcast::Receiver<Change>,
    mut version: u64,
    namespace: Option<String>,
    selector: Vec<(String, String)>,
    timeout: Duration,
    mut disconnect: tokio::sync::watch::Receiver<u64>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let ns = namespace.as_deref();
        for change in &backlog {
            if let Some(event) = event_for(change, ns, &selector)
                && tx.send(line(&event)).await.is_err()
            {
                return;
            }
        }
        let end = tokio::time::Instant::now() + timeout;
        let mut bookmark = tokio::time::interval(Duration::from_secs(1));
        loop {
            let event = tokio::select! {
                _ = tokio::time::sleep_until(end) => return,
                _ = disconnect.changed() => return,
                _ = bookmark.tick() => json!({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1",
                    "metadata": {"resourceVersion": version.to_string()}}}),
                change = live.recv() => match change {
                    Ok(change) if change.version <= version => continue,
                    Ok(change) => {
                        version = change.version;
                        match event_for(&change, ns, &selector) {
                            Some(event) => event,
                            None => continue,
                        }
                    }
                    // Behind or closed: the client watches again.
                    Err(_) => return,
                },
            };
            if tx.send(line(&event)).await.is_err() {
                return;
            }
        }
    });
    receiver_stream(rx)
}

fn receiver_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn put_pod(
    State(api): State<Arc<KubeApi>>,
    axum::Json(pod): axum::Json<Value>,
) -> StatusCode {
    if pod["metadata"]["name"].as_str().is_none_or(str::is_empty) {
        return StatusCode::BAD_REQUEST;
    }
    api.put_pod(pod);
    StatusCode::NO_CONTENT
}

async fn delete_pod(
    State(api): State<Arc<KubeApi>>,
    Path((ns, name)): Path<(String, String)>,
) -> StatusCode {
    if api.delete_pod(&format!("{ns}/{name}")) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

/// A running fake API server.
#[derive(Debug)]
pub struct KubeApiHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its pods.
    pub api: Arc<KubeApi>,
    task: tokio::task::JoinHandle<()>,
}

impl KubeApiHandle {
    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop serving (the pods are kept in `api`).
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// Serve `api` on `addr`.
pub async fn serve(addr: SocketAddr, api: Arc<KubeApi>) -> std::io::Result<KubeApiHandle> {
    let app = Router::new()
        .route("/api/v1/pods", get(all_pods))
        .route("/api/v1/namespaces/{namespace}/pods", get(namespaced_pods))
        .route("/sim/pods", put(put_pod))
        .route("/sim/pods/{namespace}/{name}", delete(delete_pod))
        .route(
            "/sim/compact",
            post(async |State(api): State<Arc<KubeApi>>| api.compact()),
        )
        .route(
            "/sim/disconnect",
            post(async |State(api): State<Arc<KubeApi>>| api.disconnect()),
        )
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("sim-kube-api stopped: {e}");
        }
    });
    Ok(KubeApiHandle { addr, api, task })
}

/// A kubeconfig for a client of the server at `url`, with no credentials.
pub fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: {url}\n\
         contexts:\n- name: sim\n  context:\n    cluster: sim\n    user: sim\n    namespace: default\n\
         current-context: sim\nusers:\n- name: sim\n  user: {{}}\n"
    )
}
