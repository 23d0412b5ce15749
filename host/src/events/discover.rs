//! Keeping one subscription per worker that publishes KV events: where each
//! publishes is its `kv_events_config` ([`crate::config::endpoint_from_config`]),
//! asked of its `/get_server_info`. A worker added with its own
//! `kv_events_config` (`POST /workers`: vLLM reports none) is not asked.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use super::Subscriptions;
use crate::config::{KvEndpoint, endpoint_from_config};
use crate::workers::Registry;

/// How often the worker list is compared with the subscriptions.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// How long one `/get_server_info` may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Workers asked at once when many join together.
const ASK_AT_ONCE: usize = 32;

/// Where the worker at `url` publishes: from its `given` config, or asked
/// of the worker. `None` when it did not answer (ask again later), else
/// what it said (`Some(None)`: it publishes nothing the router can follow).
async fn ask(
    client: &reqwest::Client,
    url: &str,
    dp_rank: Option<u32>,
    given: Option<&Value>,
) -> Option<Option<KvEndpoint>> {
    if let Some(config) = given {
        return Some(followable(url, dp_rank, config));
    }
    let info: Value = crate::workers::server_info(client, url, ASK_TIMEOUT).await?;
    let Some(config) = info.get("kv_events_config") else {
        return Some(None);
    };
    Some(followable(url, dp_rank, config))
}

/// [`endpoint_from_config`], a config that is wrong logged and not
/// followed.
fn followable(url: &str, dp_rank: Option<u32>, config: &Value) -> Option<KvEndpoint> {
    endpoint_from_config(url, dp_rank, config).unwrap_or_else(|why| {
        tracing::warn!(worker = url, "not following its KV events: {why}");
        None
    })
}

/// Keep `subscriptions` to what the registry's workers publish, until the
/// registry is dropped: each new worker is asked where it publishes until
/// it answers, a worker that left is forgotten.
pub async fn follow_workers(
    registry: std::sync::Weak<Registry>,
    client: reqwest::Client,
    subscriptions: Arc<Subscriptions>,
) {
    // Every worker that answered (publishing or not), and those of them
    // that publish nothing the router can follow.
    let mut asked: HashSet<u32> = HashSet::new();
    let mut silent: HashSet<u32> = HashSet::new();
    loop {
        let Some(workers) = registry.upgrade().map(|r| r.all()) else {
            return;
        };
        type Known = (String, Option<u32>, Option<Value>);
        let current: HashMap<u32, Known> = workers
            .iter()
            .map(|w| (w.id, (w.url.clone(), w.dp_rank, w.kv_events_config.clone())))
            .collect();
        drop(workers);
        asked.retain(|id| {
            let stays = current.contains_key(id);
            if !stays {
                subscriptions.forget(*id);
                silent.remove(id);
            }
            stays
        });
        let new: Vec<(u32, Known)> = current
            .into_iter()
            .filter(|(id, _)| !asked.contains(id))
            .collect();
        let found: Vec<(u32, String, Option<Option<KvEndpoint>>)> = futures_util::stream::iter(new)
            .map(|(id, (url, rank, given))| {
                let client = &client;
                async move {
                    let endpoint = ask(client, &url, rank, given.as_ref()).await;
                    (id, url, endpoint)
                }
            })
            .buffer_unordered(ASK_AT_ONCE)
            .collect()
            .await;
        for (id, url, answer) in found {
            let Some(endpoint) = answer else { continue };
            match endpoint {
                Some(endpoint) => {
                    tracing::info!(worker = %url, publisher = %endpoint.publisher, "following its KV events");
                    subscriptions.follow(id, endpoint);
                }
                None => {
                    tracing::warn!(worker = %url, "it publishes no KV events: policies that match KV pages know of it only what this router sent it (start it with --kv-events-config, or give its kv_events_config when adding it)");
                    silent.insert(id);
                }
            }
            asked.insert(id);
        }
        metrics::gauge!(crate::metrics::KV_SILENT).set(silent.len() as f64);
        metrics::gauge!(crate::metrics::KV_INDEX_PAGES).set(subscriptions.index().len() as f64);
        metrics::gauge!(crate::metrics::KV_FOLLOWED).set(subscriptions.len() as f64);
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}
