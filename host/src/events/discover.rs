//! Where each worker publishes its KV events, and keeping one subscription
//! per worker that does.
//!
//! A worker says in `/get_server_info`: `kv_events_config`, the JSON string
//! of its `--kv-events-config` (`{"publisher": "zmq", "endpoint":
//! "tcp://*:5557", "replay_endpoint": ..., "topic": ...}`). A wildcard host
//! (`*`, `0.0.0.0`, `::`) is the worker's own host; each data-parallel
//! rank publishes on the endpoint's port plus its rank. A worker added with
//! its own `kv_events_config` (`POST /workers`: vLLM reports none) is not
//! asked.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use super::{Endpoint, Subscriptions};
use crate::workers::Registry;

/// How often the worker list is compared with the subscriptions.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// How long one `/get_server_info` may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Workers asked at once when many join together.
const ASK_AT_ONCE: usize = 32;

/// The endpoint of the worker at `url` (rank `dp_rank`) from its
/// `kv_events_config` (a JSON string or object); `Ok(None)` when it
/// publishes none, `Err` saying what is wrong with the config.
pub fn endpoint_from_config(
    url: &str,
    dp_rank: Option<u32>,
    config: &Value,
) -> Result<Option<Endpoint>, String> {
    let parsed;
    let config = match config {
        Value::Null => return Ok(None),
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text)
                .map_err(|e| format!("kv_events_config is not JSON: {e}"))?;
            &parsed
        }
        other => other,
    };
    let publisher = config.get("publisher").and_then(Value::as_str);
    if publisher.is_none_or(|p| p != "zmq") {
        return Ok(None);
    }
    let host = worker_host(url)?;
    let at = |key: &str| -> Result<Option<String>, String> {
        config
            .get(key)
            .and_then(Value::as_str)
            .map(|e| placed(e, &host, dp_rank.unwrap_or(0)))
            .transpose()
    };
    let Some(publisher) = at("endpoint")? else {
        return Err("kv_events_config names no endpoint".into());
    };
    Ok(Some(Endpoint {
        publisher,
        replay: at("replay_endpoint")?,
        topic: config
            .get("topic")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    }))
}

/// The host of a worker's base URL, bracketed if IPv6.
fn worker_host(url: &str) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("worker URL {url}: {e}"))?;
    // host_str brackets an IPv6 address, as an endpoint wants it.
    parsed
        .host_str()
        .map(str::to_string)
        .ok_or_else(|| format!("worker URL {url} has no host"))
}

/// `endpoint` with a wildcard host replaced by `host` and its port moved up
/// by `rank`.
fn placed(endpoint: &str, host: &str, rank: u32) -> Result<String, String> {
    let rest = endpoint
        .strip_prefix("tcp://")
        .ok_or_else(|| format!("KV event endpoint {endpoint}: only tcp:// can be reached"))?;
    let (at, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("KV event endpoint {endpoint} has no port"))?;
    let port: u32 = port
        .parse()
        .ok()
        .filter(|p| p + rank <= u32::from(u16::MAX))
        .ok_or_else(|| format!("KV event endpoint {endpoint}: bad port for rank {rank}"))?;
    let at = match at {
        "*" | "0.0.0.0" | "[::]" | "::" => host,
        named => named,
    };
    Ok(format!("tcp://{at}:{}", port + rank))
}

/// Where the worker at `url` publishes: from its `given` config, or asked
/// of the worker. `None` when it did not answer (ask again later), else
/// what it said (`Some(None)`: it publishes nothing the router can follow).
async fn ask(
    client: &reqwest::Client,
    url: &str,
    dp_rank: Option<u32>,
    given: Option<&Value>,
) -> Option<Option<Endpoint>> {
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
fn followable(url: &str, dp_rank: Option<u32>, config: &Value) -> Option<Endpoint> {
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
    // Every worker that answered (publishing or not).
    let mut asked: HashSet<u32> = HashSet::new();
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
            }
            stays
        });
        let new: Vec<(u32, Known)> = current
            .into_iter()
            .filter(|(id, _)| !asked.contains(id))
            .collect();
        let found: Vec<(u32, String, Option<Option<Endpoint>>)> = futures_util::stream::iter(new)
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
            if let Some(endpoint) = endpoint {
                tracing::info!(worker = %url, publisher = %endpoint.publisher, "following its KV events");
                subscriptions.follow(id, endpoint);
            }
            asked.insert(id);
        }
        metrics::gauge!(crate::metrics::KV_INDEX_PAGES).set(subscriptions.index().len() as f64);
        metrics::gauge!(crate::metrics::KV_FOLLOWED).set(subscriptions.len() as f64);
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sglangs_config_string_becomes_the_workers_endpoint_per_rank() {
        let config = json!(r#"{"publisher": "zmq", "endpoint": "tcp://*:5557", "topic": "kv"}"#);
        let at = |url, rank| endpoint_from_config(url, rank, &config).unwrap().unwrap();
        assert_eq!(
            at("http://10.0.0.5:30000", None),
            Endpoint {
                publisher: "tcp://10.0.0.5:5557".into(),
                replay: None,
                topic: "kv".into()
            }
        );
        assert_eq!(
            at("http://[::1]:30000", Some(3)).publisher,
            "tcp://[::1]:5560"
        );
        let named = json!({"publisher": "zmq", "endpoint": "tcp://pub.local:7000", "replay_endpoint": "tcp://0.0.0.0:7100"});
        let endpoint = endpoint_from_config("http://w:1", Some(1), &named)
            .unwrap()
            .unwrap();
        assert_eq!(endpoint.publisher, "tcp://pub.local:7001");
        assert_eq!(endpoint.replay.as_deref(), Some("tcp://w:7101"));
    }

    #[test]
    fn no_publisher_is_none_and_a_broken_config_says_why() {
        for none in [json!(null), json!(r#"{"publisher": "null"}"#), json!({})] {
            assert_eq!(endpoint_from_config("http://w:1", None, &none), Ok(None));
        }
        for (config, why) in [
            (json!("{not json"), "not JSON"),
            (json!({"publisher": "zmq"}), "no endpoint"),
            (
                json!({"publisher": "zmq", "endpoint": "ipc:///tmp/kv"}),
                "only tcp://",
            ),
            (
                json!({"publisher": "zmq", "endpoint": "tcp://*"}),
                "no port",
            ),
            (
                json!({"publisher": "zmq", "endpoint": "tcp://*:65535"}),
                "bad port",
            ),
        ] {
            let error = endpoint_from_config("http://w:1", Some(1), &config).unwrap_err();
            assert!(error.contains(why), "{why:?} not in {error:?}");
        }
    }
}
