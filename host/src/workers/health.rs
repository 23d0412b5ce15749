//! Background work on workers: enrolling a new worker (its data-parallel
//! ranks with `--dp-aware`, then its model in the background), and periodic
//! health checks that flip a worker after N results in a row.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{Registry, Worker};
use crate::config::{HealthConfig, WorkerSpec};
use crate::errors::ApiError;

/// How long model discovery waits for each endpoint.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long model discovery waits before asking a worker that did not say
/// again: at first, and at most (doubling in between).
const DISCOVERY_RETRY: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

/// How long `--dp-aware` keeps asking a new worker for its `dp_size`:
/// workers are often registered while they still load their model.
const DP_SIZE_WAIT: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct ServerInfo {
    dp_size: Option<u32>,
}

/// `--dp-aware`: the worker's `dp_size` from `/get_server_info` (1 when it
/// does not say), asked every half second until it answers or a minute has
/// passed.
pub async fn dp_size(client: &reqwest::Client, url: &str) -> Result<u32, String> {
    let deadline = tokio::time::Instant::now() + DP_SIZE_WAIT;
    loop {
        let answer = client
            .get(format!("{url}/get_server_info"))
            .timeout(DISCOVERY_TIMEOUT)
            .send()
            .await;
        let why = match answer {
            Ok(resp) if resp.status().is_success() => match resp.json::<ServerInfo>().await {
                Ok(ServerInfo { dp_size: Some(0) }) => "it reported dp_size 0".to_string(),
                Ok(info) => return Ok(info.dp_size.unwrap_or(1)),
                Err(e) => format!("unreadable /get_server_info: {e}"),
            },
            Ok(resp) => format!("/get_server_info answered {}", resp.status()),
            Err(e) => format!("unreachable: {e}"),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "cannot learn the dp_size of {url} within {DP_SIZE_WAIT:?} (--dp-aware): {why}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Register a worker and onboard it in the background; with `dp_aware`,
/// first learn its `dp_size` and register one entry per rank.
pub async fn enroll(
    registry: &Arc<Registry>,
    client: &reqwest::Client,
    spec: WorkerSpec,
    dp_aware: bool,
    health: Option<&HealthConfig>,
) -> Result<Vec<Arc<Worker>>, ApiError> {
    let specs = if dp_aware {
        let size = dp_size(client, &spec.url)
            .await
            .map_err(ApiError::UpstreamConnect)?;
        (0..size).map(|rank| spec.at_rank(rank)).collect()
    } else {
        vec![spec]
    };
    let mut added = Vec::with_capacity(specs.len());
    for spec in specs {
        let worker = registry.register(spec)?;
        tokio::spawn(onboard(
            registry.clone(),
            client.clone(),
            worker.clone(),
            health.cloned(),
        ));
        added.push(worker);
    }
    Ok(added)
}

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
/// registry's listeners; if it did not say its model, keep asking
/// ([`learn_model`]). Runs in the background after registration.
async fn onboard(
    registry: Arc<Registry>,
    client: reqwest::Client,
    worker: Arc<Worker>,
    health: Option<HealthConfig>,
) {
    let registered = tokio::time::Instant::now();
    if let Some(model) = discover_model(&client, &worker.url).await {
        tracing::info!(worker = %worker.name(), %model, "worker model discovered");
        worker.set_model(model);
    }
    if let Some(h) = &health {
        let ok = check(&client, &worker, h).await;
        // The first check decides, so a new worker takes traffic at once.
        worker.record_health(ok, 1, 1);
        if !ok {
            registry.touched();
            if !come_up(&registry, &client, &worker, h, registered).await {
                return;
            }
        }
    }
    registry.touched();
    if worker.model().is_empty() {
        tracing::warn!(worker = %worker.name(), "worker did not say which model it serves; asking again until it does");
        learn_model(registry, client, worker).await;
    }
}

/// A new worker that failed its first check, as sglang-router treats it:
/// checked again every `--worker-startup-check-interval` until it passes,
/// or removed, and named in an error, once `--worker-startup-timeout-secs`
/// have passed since it was registered. Whether it came up (and is still
/// registered).
async fn come_up(
    registry: &Registry,
    client: &reqwest::Client,
    worker: &Arc<Worker>,
    h: &HealthConfig,
    registered: tokio::time::Instant,
) -> bool {
    let deadline = registered + h.startup_timeout;
    loop {
        if registry.get(worker.id).is_none() {
            return false;
        }
        // The periodic checks may have seen it pass first.
        if worker.is_healthy() {
            return true;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            tracing::error!(
                worker = %worker.name(),
                "worker did not pass a health check within {:?} of its registration (--worker-startup-timeout-secs); removed",
                h.startup_timeout
            );
            registry.remove(worker.id);
            return false;
        }
        tokio::time::sleep(h.startup_check_interval.min(deadline - now)).await;
        if check(client, worker, h).await {
            tracing::info!(worker = %worker.name(), "worker is up");
            worker.record_health(true, 1, 1);
            return registry.get(worker.id).is_some();
        }
    }
}

/// Ask `worker` for its model again, after 1 s and then doubling waits up
/// to a minute, until it says, for as long as it is registered; the
/// registry's listeners hear of a new model. Used when a worker did not
/// say at registration (it was still loading) and when it comes back
/// after failed health checks (a restart may serve another model). One
/// such task per worker at a time; it ends with the registry too.
pub async fn learn_model(registry: Arc<Registry>, client: reqwest::Client, worker: Arc<Worker>) {
    use std::sync::atomic::Ordering;
    if worker.discovering.swap(true, Ordering::SeqCst) {
        return;
    }
    let registry = Arc::downgrade(&registry);
    let (mut wait, longest) = DISCOVERY_RETRY;
    loop {
        tokio::time::sleep(wait).await;
        let Some(registry) = registry.upgrade().filter(|r| r.get(worker.id).is_some()) else {
            break;
        };
        if let Some(model) = discover_model(&client, &worker.url).await {
            if *worker.model() != model {
                tracing::info!(worker = %worker.name(), %model, "worker model discovered");
                worker.set_model(model);
                registry.touched();
            }
            break;
        }
        wait = (wait * 2).min(longest);
    }
    worker.discovering.store(false, Ordering::SeqCst);
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
                    tracing::info!(worker = %worker.name(), "worker is healthy");
                    // Health checks failed and now pass: the worker came back
                    // (a restart, say). Its breaker learned about the old
                    // process; waiting out --cb-timeout-duration-secs would
                    // keep a healthy worker idle.
                    worker.breaker.reset();
                    tokio::spawn(learn_model(
                        registry.clone(),
                        client.clone(),
                        worker.clone(),
                    ));
                } else {
                    tracing::warn!(worker = %worker.name(), "worker is unhealthy: {} failed health checks", h.failure_threshold);
                }
            }
        }
    }
}
