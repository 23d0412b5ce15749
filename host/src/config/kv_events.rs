//! Where a worker publishes its KV cache events, from the JSON of its
//! `--kv-events-config`: validated here (a `[[workers]]` entry or `POST
//! /workers` that gives one is refused when the router could not follow
//! it) and followed by [`crate::events`].
//!
//! A worker says in `/get_server_info`: `kv_events_config`, the JSON string
//! of its `--kv-events-config` (`{"publisher": "zmq", "endpoint":
//! "tcp://*:5557", "replay_endpoint": ..., "topic": ...}`). A wildcard host
//! (`*`, `0.0.0.0`, `::`) is the worker's own host; each data-parallel
//! rank publishes on the endpoint's port plus its rank.

use serde_json::Value;

/// Where a worker publishes its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEndpoint {
    /// The PUB socket, `tcp://HOST:PORT`.
    pub publisher: String,
    /// The ROUTER socket that replays missed batches, if any.
    pub replay: Option<String>,
    /// The topic to subscribe to ("" for all).
    pub topic: String,
}

/// The endpoint of the worker at `url` (rank `dp_rank`) from its
/// `kv_events_config` (a JSON string or object); `Ok(None)` when it
/// publishes none, `Err` saying what is wrong with the config.
pub fn endpoint_from_config(
    url: &str,
    dp_rank: Option<u32>,
    config: &Value,
) -> Result<Option<KvEndpoint>, String> {
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
    Ok(Some(KvEndpoint {
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
    let port = port
        .parse::<u32>()
        .ok()
        .filter(|&p| p + rank <= u32::from(u16::MAX))
        .ok_or_else(|| format!("KV event endpoint {endpoint}: bad port for rank {rank}"))?;
    let at = match at {
        "*" | "0.0.0.0" | "[::]" | "::" => host,
        named => named,
    };
    Ok(format!("tcp://{at}:{}", port + rank))
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
            KvEndpoint {
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
