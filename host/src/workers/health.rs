//! Background work on workers: discovering each new worker's model, and
//! periodic health checks that flip a worker after N results in a row.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{Registry, Worker};
use crate::config::HealthConfig;

/// How long model discovery waits for each endpoint.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
struct ModelInfo {
    model_path: Option<String>,
}

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    id: String,
}

/// Ask a worker which model it serves: SGLang's `/get_model_info`, then
/// OpenAI's `/v1/models`. `None` if it answers neither.
pub async fn discover_model(client: &reqwest::Client, url: &str) -> Option<String> {
    let get = |path: &str| {
        client
            .get(format!("{url}{path}"))
            .timeout(DISCOVERY_TIMEOUT)
            .send()
    };
    if let Ok(resp) = get("/get_model_info").await
        && resp.status().is_success()
        && let Ok(ModelInfo {
            model_path: Some(m),
        }) = resp.json().await
    {
        return Some(m);
    }
    if let Ok(resp) = get("/v1/models").await
        && resp.status().is_success()
        && let Ok(list) = resp.json::<ModelList>().await
    {
        return list.data.into_iter().next().map(|e| e.id);
    }
    None
}

/// Discover a new worker's model, check its health once, and tell the
/// registry's listeners. Runs in the background after registration.
pub async fn onboard(
    registry: Arc<Registry>,
    client: reqwest::Client,
    worker: Arc<Worker>,
    health: Option<HealthConfig>,
) {
    match discover_model(&client, &worker.url).await {
        Some(model) => {
            tracing::info!(worker = %worker.url, %model, "worker model discovered");
            worker.set_model(model);
        }
        None => tracing::warn!(worker = %worker.url, "worker did not say which model it serves"),
    }
    if let Some(h) = &health {
        let ok = check(&client, &worker, h).await;
        // The first check decides, so a new worker takes traffic at once.
        worker.record_health(ok, 1, 1);
    }
    registry.touched();
}

async fn check(client: &reqwest::Client, worker: &Worker, h: &HealthConfig) -> bool {
    let result = client
        .get(format!("{}{}", worker.url, h.endpoint))
        .timeout(h.timeout)
        .send()
        .await;
    matches!(result, Ok(resp) if resp.status().is_success())
}

/// Check every worker every `interval`, forever (the task is aborted at
/// shutdown).
pub async fn run(registry: Arc<Registry>, client: reqwest::Client, h: HealthConfig) {
    let mut every = tokio::time::interval(h.interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let workers = registry.all();
        let checks = workers.iter().map(|w| {
            let client = &client;
            let h = &h;
            async move { (w, check(client, w, h).await) }
        });
        for (worker, ok) in futures_util::future::join_all(checks).await {
            if let Some(healthy) =
                worker.record_health(ok, h.failure_threshold, h.success_threshold)
            {
                if healthy {
                    tracing::info!(worker = %worker.url, "worker is healthy");
                    // Health checks failed and now pass: the worker came back
                    // (a restart, say). Its breaker learned about the old
                    // process; waiting out --cb-timeout-duration-secs would
                    // keep a healthy worker idle.
                    worker.breaker.reset();
                } else {
                    tracing::warn!(worker = %worker.url, "worker is unhealthy: {} failed health checks", h.failure_threshold);
                }
            }
        }
    }
}
