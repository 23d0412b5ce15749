//! `GET /v1/models`: the fleet's models in OpenAI's list shape, merged from
//! the healthy workers' own `/v1/models` answers (one entry per model id,
//! the first worker's). One worker is asked per known model (the least
//! loaded), and every healthy worker whose model is not known yet, all at
//! once: a fleet of hundreds serving one model costs one call.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::request_id;
use crate::errors::ApiError;
use crate::proxy;
use crate::state::AppState;
use crate::upstream::MAX_RELAYED_BODY;
use crate::workers::Worker;

pub(super) async fn models(
    State(s): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, ApiError> {
    let workers = s.registry.all();
    let mut healthy: Vec<&Arc<Worker>> = workers.iter().filter(|w| w.is_healthy()).collect();
    healthy.sort_by_key(|w| w.routing_load());
    let mut known = HashSet::new();
    let asked: Vec<_> = healthy
        .into_iter()
        .filter(|w| {
            let model = w.model();
            model.is_empty() || known.insert(model)
        })
        .collect();
    if asked.is_empty() {
        return Err(ApiError::NoHealthyWorker);
    }
    let (parts, _body) = req.into_parts();
    let headers = proxy::upstream_headers(&parts.headers, request_id(&parts));
    let deadline = Instant::now() + s.config.request_timeout;
    let asks = asked.iter().map(|worker| {
        let headers = headers.clone();
        let s = &s;
        async move {
            let _in_flight = worker.start_request();
            let url = format!("{}/v1/models", worker.url);
            let send = s.upstream.send(Method::GET, &url, headers, Bytes::new());
            let response = match tokio::time::timeout_at(deadline, send).await {
                Ok(Ok(response)) if response.status().is_success() => response,
                Ok(Ok(response)) => return Err(format!("answered {}", response.status())),
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_elapsed) => return Err("did not answer in time".into()),
            };
            let body = response
                .read_whole(MAX_RELAYED_BODY, deadline)
                .await
                .map_err(|e| e.to_string())?;
            let list: Value =
                serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
            match list.get("data") {
                Some(Value::Array(entries)) => Ok(entries.clone()),
                _ => Err("no `data` list".into()),
            }
        }
    });
    let answers = futures_util::future::join_all(asks).await;
    let mut seen = HashSet::new();
    let mut merged = Vec::new();
    let mut answered = false;
    for (worker, answer) in asked.iter().zip(answers) {
        match answer {
            Ok(entries) => {
                answered = true;
                for entry in entries {
                    let id = entry.get("id").and_then(Value::as_str).map(str::to_owned);
                    if id.is_none_or(|id| seen.insert(id)) {
                        merged.push(entry);
                    }
                }
            }
            Err(why) => tracing::warn!(worker = %worker.name(), "no /v1/models answer: {why}"),
        }
    }
    if !answered {
        return Err(ApiError::UpstreamConnect(
            "no worker answered /v1/models".into(),
        ));
    }
    Ok(axum::Json(json!({"object": "list", "data": merged})).into_response())
}
