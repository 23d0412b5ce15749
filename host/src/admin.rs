//! Worker administration: `POST/GET /workers`, `GET/DELETE /workers/{id}`,
//! the SGLang router's older `/add_worker`, `/remove_worker`,
//! `/list_workers`, the fan-out routes `/flush_cache` and `/get_loads`, the
//! policy routes `GET /policies`, `POST /policies/reload` and `POST
//! /policies/promote`, and the decision log's `GET /decisions`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth;
use crate::config::{Labels, Role, Source, WorkerEntry, WorkerSpec, validate_worker_entry};
use crate::errors::ApiError;
use crate::state::AppState;
use crate::workers::{Worker, health};

type S = State<Arc<AppState>>;

/// The admin routes, behind the admin boundary (an admin key, or a
/// loopback client; see [`auth::admin_check`]).
pub fn routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/workers", post(add).get(list))
        .route("/workers/{id}", get(show).delete(remove))
        .route("/add_worker", post(add_legacy))
        .route("/remove_worker", post(remove_legacy))
        .route("/list_workers", get(list_urls))
        .route("/flush_cache", post(flush_cache))
        .route("/policies", get(policies))
        .route("/policies/reload", post(reload_policy))
        .route("/policies/promote", post(promote_policy))
        .route("/decisions", get(decisions))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            auth::require_admin,
        ))
}

/// A worker to add: its URL, weight and labels, and in PD mode its role
/// (`prefill` or `decode`) and, for a prefill worker, its bootstrap port.
#[derive(Deserialize)]
struct WorkerUrl {
    url: String,
    /// `prefill` or `decode` in PD mode; sglang-router's clients send it
    /// as `worker_type`.
    #[serde(default, alias = "worker_type")]
    role: Option<String>,
    #[serde(default)]
    bootstrap_port: Option<u16>,
    /// Its share of traffic relative to the others, for policies that
    /// weigh workers (1 unless given).
    #[serde(default)]
    weight: Option<u32>,
    /// Labels policies can read; sglang-router's name.
    #[serde(default)]
    labels: Labels,
    /// Where it publishes its KV events, as its own `--kv-events-config`
    /// (a JSON object or string), for a worker whose `/get_server_info`
    /// does not say (vLLM).
    #[serde(default)]
    kv_events_config: Option<Value>,
}

/// Validate and enroll a worker (each of its ranks with `--dp-aware`); its
/// model is discovered in the background.
async fn register(s: &AppState, w: WorkerUrl) -> Result<Vec<Arc<Worker>>, ApiError> {
    let entry = WorkerEntry {
        url: w.url,
        weight: w.weight,
        labels: w.labels,
        kv_events_config: w.kv_events_config,
    };
    let regular = validate_worker_entry(&entry, s.kv_events.is_some())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let role = match (s.config.pd.is_some(), w.role.as_deref()) {
        (false, None | Some("regular")) => Role::Regular,
        (true, Some("prefill")) => Role::Prefill,
        (true, Some("decode")) => Role::Decode,
        (false, Some(other)) => {
            return Err(ApiError::BadRequest(format!(
                "role {other:?}: workers have roles prefill and decode only with --pd-disaggregation"
            )));
        }
        (true, other) => {
            return Err(ApiError::BadRequest(format!(
                "role {other:?}: in PD mode a worker's role is prefill or decode"
            )));
        }
    };
    if w.bootstrap_port.is_some() && role != Role::Prefill {
        return Err(ApiError::BadRequest(
            "bootstrap_port is for prefill workers".into(),
        ));
    }
    let spec = WorkerSpec {
        role,
        bootstrap_port: w.bootstrap_port,
        source: Source::Admin,
        ..regular
    };
    health::enroll(
        &s.registry,
        &s.client,
        spec,
        s.config.dp_aware,
        s.config.health.as_ref(),
    )
    .await
}

async fn add(
    State(s): S,
    body: Result<Json<WorkerUrl>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| {
        ApiError::BadRequest(format!("expected {{\"url\": \"http://HOST:PORT\"}}: {e}"))
    })?;
    let added = register(&s, body).await?;
    // Ids are strings, as sglang-router gives them (a client testing
    // `if worker_id:` refuses a numeric 0).
    let ids: Vec<String> = added.iter().map(|w| w.id.to_string()).collect();
    let location = format!("/workers/{}", ids[0]);
    // One id per data-parallel rank with --dp-aware; `id` is the first.
    // `worker_id` and `message` are sglang-router 0.3.2's names, which its
    // clients read.
    let reply = json!({
        "id": ids[0],
        "ids": ids,
        "worker_id": ids[0],
        "url": added[0].url,
        "status": "accepted",
        "location": location,
        "message": "worker registered; its model and health are checked in the background",
    });
    Ok((StatusCode::ACCEPTED, [("location", location)], Json(reply)).into_response())
}

/// The workers, with sglang-router 0.3.2's `total` and `stats` beside.
async fn list(State(s): S) -> Json<Value> {
    let workers = s.registry.all();
    let count = |role: Role| workers.iter().filter(|w| w.role == role).count();
    Json(json!({
        "workers": s.registry.views(),
        "total": workers.len(),
        "stats": {
            "prefill_count": count(Role::Prefill),
            "decode_count": count(Role::Decode),
            "regular_count": count(Role::Regular),
        },
    }))
}

fn parse_id(id: &str) -> Result<u32, ApiError> {
    id.parse()
        .map_err(|_| ApiError::NotFound(format!("no worker with id {id:?}")))
}

async fn show(State(s): S, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let view = s.registry.views().into_iter().find(|v| v.id() == id);
    let view = view.ok_or_else(|| ApiError::NotFound(format!("no worker with id {id}")))?;
    Ok(Json(json!(view)))
}

/// `DELETE /workers/{id}`: 202 Accepted, as sglang-router answers (the
/// worker takes no new request; those in flight finish).
async fn remove(State(s): S, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let found = s.registry.get(id);
    let found = found.ok_or_else(|| ApiError::NotFound(format!("no worker with id {id}")))?;
    refuse_discovered(&found)?;
    let worker = s
        .registry
        .remove(id)
        .ok_or_else(|| ApiError::NotFound(format!("no worker with id {id}")))?;
    let reply = json!({"id": id.to_string(), "url": worker.url, "status": "removed"});
    Ok((StatusCode::ACCEPTED, Json(reply)).into_response())
}

/// A discovered worker is removed by changing its pod, not by an admin.
fn refuse_discovered(worker: &Worker) -> Result<(), ApiError> {
    match &worker.source {
        Source::Pod(pod) => Err(ApiError::DiscoveredWorker(worker.name(), pod.clone())),
        _ => Ok(()),
    }
}

async fn add_legacy(State(s): S, Query(q): Query<WorkerUrl>) -> Result<String, ApiError> {
    let added = register(&s, q).await?;
    Ok(format!("Successfully added worker: {}", added[0].url))
}

async fn remove_legacy(State(s): S, Query(q): Query<WorkerUrl>) -> Result<String, ApiError> {
    let url = q.url.trim_end_matches('/');
    let entries = s.registry.all_at(url);
    if entries.is_empty() {
        return Err(ApiError::NotFound(format!("no worker with url {url}")));
    }
    entries.iter().try_for_each(|w| refuse_discovered(w))?;
    for worker in entries {
        s.registry.remove(worker.id);
    }
    Ok(format!("Successfully removed worker: {url}"))
}

async fn list_urls(State(s): S) -> Json<Value> {
    Json(json!({"urls": s.registry.urls()}))
}

/// `POST /flush_cache` on every worker (once per server, whatever its
/// data-parallel ranks); 200 only if all succeeded.
async fn flush_cache(State(s): S) -> Response {
    let calls = s.registry.urls().into_iter().map(|url| {
        let request = s
            .client
            .post(format!("{url}/flush_cache"))
            .timeout(s.config.request_timeout);
        async move { (url, request.send().await.map(|r| r.status().as_u16())) }
    });
    let results: Vec<(String, Result<u16, reqwest::Error>)> =
        futures_util::future::join_all(calls).await;
    let all_ok = results
        .iter()
        .all(|(_, r)| matches!(r, Ok(s) if (200..300).contains(s)));
    let report: Vec<Value> = results
        .into_iter()
        .map(|(url, r)| match r {
            Ok(status) => json!({"url": url, "status": status}),
            Err(e) => json!({"url": url, "error": e.to_string()}),
        })
        .collect();
    let status = if all_ok {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    (status, Json(json!({"workers": report}))).into_response()
}

/// `GET /get_loads`: the router's in-flight count per worker, and each
/// worker's own `/get_load` answer where it gives one.
pub async fn get_loads(State(s): S) -> Json<Value> {
    let workers = s.registry.all();
    let calls = workers.iter().map(|w| {
        let request = s
            .client
            .get(format!("{}/get_load", w.url))
            .timeout(s.config.request_timeout);
        async move {
            let reported = match request.send().await {
                Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                _ => None,
            };
            json!({"id": w.id.to_string(), "url": w.url, "in_flight": w.load(), "worker_load": reported})
        }
    });
    Json(json!({"workers": futures_util::future::join_all(calls).await}))
}

/// `GET /policies`: what is loaded, and how reloads went.
async fn policies(State(s): S) -> Json<Value> {
    Json(json!({"policies": statuses(&s), "shadows": shadow_statuses(&s)}))
}

/// Each shadow policy's status and counts.
fn shadow_statuses(s: &AppState) -> Vec<Value> {
    let shadows = s.shadows.as_ref().map_or(&[][..], |s| s.all());
    shadows
        .iter()
        .map(|shadow| json!(shadow.status()))
        .collect()
}

/// `POST /policies/promote`'s body.
#[derive(Deserialize)]
struct Promote {
    /// The shadow, as given to `--shadow-policy` or by its declared name.
    shadow: String,
}

/// `POST /policies/promote {"shadow": NAME}`: make a shadow the live policy
/// by a reload's build, check and swap; it is no longer asked as a shadow.
async fn promote_policy(State(s): S, body: Json<Promote>) -> Result<Json<Value>, ApiError> {
    let Some(shadow) = s
        .shadows
        .as_ref()
        .and_then(|sh| sh.find(&body.shadow))
        .cloned()
    else {
        return Err(ApiError::NotFound(format!(
            "no shadow policy {}: GET /policies lists them (start the router with --shadow-policy FILE.wasm)",
            body.shadow
        )));
    };
    let wanted = crate::policy::reload::Wanted {
        policy: shadow.name.clone(),
        config: s.config.policy_config.clone(),
    };
    let manager = s.policies.clone();
    let result = tokio::task::spawn_blocking(move || manager.promote(wanted))
        .await
        .map_err(|e| ApiError::PolicyReload(format!("promote task failed: {e}")))?;
    result.map_err(|e| ApiError::PolicyReload(format!("shadow {}: {e}", body.shadow)))?;
    shadow.retire();
    Ok(Json(
        json!({"promoted": shadow.name, "policy": s.policies.status()}),
    ))
}

/// `GET /decisions?last=N`'s query.
#[derive(Deserialize)]
struct Last {
    #[serde(default = "hundred")]
    last: usize,
}

fn hundred() -> usize {
    100
}

/// `GET /decisions?last=N`: the latest decision records (100 unless given,
/// at most [`crate::lab::log::RECENT`]), oldest first.
async fn decisions(State(s): S, Query(q): Query<Last>) -> Result<Response, ApiError> {
    let Some(log) = &s.decisions else {
        return Err(ApiError::NotFound(
            "no decision log: start the router with --decision-log PATH (or - for stdout)".into(),
        ));
    };
    let recent = log.recent(q.last);
    let mut body = String::from("{\"decisions\":[");
    for (n, record) in recent.iter().enumerate() {
        if n > 0 {
            body.push(',');
        }
        body.push_str(record);
    }
    body.push_str(&format!("],\"dropped\":{}}}", log.dropped()));
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// Each policy's status, with the workers it routes to (`serves`: regular,
/// or prefill and decode in PD mode).
fn statuses(s: &AppState) -> Vec<Value> {
    s.managers()
        .into_iter()
        .map(|(serves, manager)| {
            let mut status = json!(manager.status());
            status["serves"] = serves.into();
            status
        })
        .collect()
}

/// `POST /policies/reload`: reload now, even if nothing changed (both
/// policies in PD mode).
async fn reload_policy(State(s): S) -> Result<Json<Value>, ApiError> {
    for (serves, manager) in s.managers() {
        let manager = manager.clone();
        let result = tokio::task::spawn_blocking(move || manager.reload(true))
            .await
            .map_err(|e| ApiError::PolicyReload(format!("reload task failed: {e}")))?;
        result.map_err(|e| ApiError::PolicyReload(format!("{serves} policy: {e}")))?;
    }
    Ok(Json(
        json!({"reloaded": true, "policy": s.policies.status(), "policies": statuses(&s)}),
    ))
}
