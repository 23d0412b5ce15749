//! The simulated worker's parts in prefill/decode disaggregation and data
//! parallelism, enough to test a router against:
//!
//! - A prefill worker needs the bootstrap fields, registers each request's
//!   room, serves `GET /bootstrap/{room}` (the decode worker's KV pull), and
//!   answers only once the room was pulled (when a bootstrap port was given),
//!   so a router that does not send both halves at once never gets an answer.
//! - A decode worker needs the bootstrap fields, consistent across a batch,
//!   and pulls each room from `bootstrap_host:bootstrap_port` before decoding.
//! - With `--dp-size N`, `data_parallel_rank` must be below N; requests are
//!   counted per rank.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;

/// What part a simulated worker plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SimRole {
    /// Serves whole requests.
    Regular,
    /// Prefill half of a PD pair.
    Prefill,
    /// Decode half of a PD pair.
    Decode,
}

/// The bootstrap fields of one request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// The prefill worker's host.
    pub host: String,
    /// Its bootstrap port; `None` when the router sent `null`.
    pub port: Option<u16>,
    /// One room per prompt.
    pub rooms: Vec<u64>,
}

/// Read the bootstrap fields of `body`: scalars for one prompt, arrays of
/// `batch` entries (one prefill worker: the same host and port) for a batch.
pub fn bootstrap(body: &Value, batch: Option<usize>) -> Result<Bootstrap, String> {
    let field = |name: &str| {
        body.get(name).ok_or_else(|| {
            format!("missing {name}: a PD worker needs bootstrap_host, bootstrap_port and bootstrap_room (is the router in PD mode?)")
        })
    };
    let (host, port, room) = (
        field("bootstrap_host")?,
        field("bootstrap_port")?,
        field("bootstrap_room")?,
    );
    let entries = |name: &str, value: &Value| -> Result<Vec<Value>, String> {
        match (batch, value) {
            (None, Value::Array(_)) => Err(format!("{name} is an array for a single prompt")),
            (None, v) => Ok(vec![v.clone()]),
            (Some(n), Value::Array(items)) if items.len() == n => Ok(items.clone()),
            (Some(n), _) => Err(format!(
                "{name} must be an array of {n} entries for a batch of {n}"
            )),
        }
    };
    let hosts = entries("bootstrap_host", host)?;
    let ports = entries("bootstrap_port", port)?;
    let rooms = entries("bootstrap_room", room)?;
    if hosts.iter().any(|h| h != &hosts[0]) || ports.iter().any(|p| p != &ports[0]) {
        return Err(
            "a batch goes to one prefill worker: bootstrap_host and bootstrap_port entries differ"
                .into(),
        );
    }
    let host = hosts[0]
        .as_str()
        .filter(|h| !h.is_empty())
        .ok_or("bootstrap_host must be a non-empty string")?
        .to_string();
    let port = match &ports[0] {
        Value::Null => None,
        p => Some(
            p.as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or("bootstrap_port must be a port number or null")?,
        ),
    };
    let rooms = rooms
        .iter()
        .map(|r| {
            r.as_u64()
                .ok_or("bootstrap_room must be a non-negative integer")
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Bootstrap { host, port, rooms })
}

/// A prefill worker's rooms: registered when its request arrives, marked
/// when the decode worker pulls them.
#[derive(Debug, Default)]
pub struct Rooms {
    /// Room -> pulled.
    rooms: Mutex<HashMap<u64, bool>>,
    changed: Notify,
}

impl Rooms {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<u64, bool>) -> T) -> T {
        let out = f(&mut self.rooms.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.notify_waiters();
        out
    }

    /// Wait up to `limit` for `done` to hold; whether it did.
    async fn until(&self, limit: Duration, done: impl Fn(&HashMap<u64, bool>) -> bool) -> bool {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if done(&self.rooms.lock().unwrap_or_else(|e| e.into_inner())) {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    /// A prefill request arrived for `rooms`.
    pub fn open(&self, rooms: &[u64]) {
        self.with(|map| {
            for room in rooms {
                map.insert(*room, false);
            }
        });
    }

    /// Wait up to `limit` until every one of `rooms` was pulled; whether
    /// they were. The rooms are forgotten either way.
    pub async fn wait_pulled(&self, rooms: &[u64], limit: Duration) -> bool {
        let pulled = self
            .until(limit, |map| rooms.iter().all(|r| map.get(r) == Some(&true)))
            .await;
        self.with(|map| {
            for room in rooms {
                map.remove(room);
            }
        });
        pulled
    }

    /// The decode worker pulls `room`: wait up to `limit` for its prefill
    /// request to arrive, then mark it. Whether it arrived.
    pub async fn pull(&self, room: u64, limit: Duration) -> bool {
        let arrived = self.until(limit, |map| map.contains_key(&room)).await;
        arrived && self.with(|map| map.get_mut(&room).map(|p| *p = true).is_some())
    }
}

/// The decode side: pull every room from the prefill worker named in `b`.
pub async fn pull_all(client: &reqwest::Client, b: &Bootstrap) -> Result<(), String> {
    let Some(port) = b.port else {
        // No bootstrap port: nothing to pull from in the simulation.
        return Ok(());
    };
    let host = if b.host.contains(':') {
        format!("[{}]", b.host)
    } else {
        b.host.clone()
    };
    for room in &b.rooms {
        let url = format!("http://{host}:{port}/bootstrap/{room}");
        match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                return Err(format!(
                    "no KV cache for room {room} at {host}:{port}: {}",
                    r.status()
                ));
            }
            Err(e) => return Err(format!("cannot pull room {room} from {host}:{port}: {e}")),
        }
    }
    Ok(())
}

/// Check `data_parallel_rank` against `dp_size`; the rank, if given.
pub fn rank(body: &Value, dp_size: u32) -> Result<Option<u32>, String> {
    match body.get("data_parallel_rank") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64().and_then(|r| u32::try_from(r).ok()) {
            Some(r) if r < dp_size => Ok(Some(r)),
            _ => Err(format!(
                "data_parallel_rank {v} is not a rank of this worker (dp_size {dp_size})"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bootstrap_fields_must_be_present_and_consistent() {
        let one =
            json!({"bootstrap_host": "127.0.0.1", "bootstrap_port": 8998, "bootstrap_room": 7});
        assert_eq!(
            bootstrap(&one, None).unwrap(),
            Bootstrap {
                host: "127.0.0.1".into(),
                port: Some(8998),
                rooms: vec![7]
            }
        );
        assert!(bootstrap(&one, Some(1)).is_err(), "scalars for a batch");
        let batch = json!({"bootstrap_host": ["h", "h"], "bootstrap_port": [null, null], "bootstrap_room": [1, 2]});
        assert_eq!(bootstrap(&batch, Some(2)).unwrap().rooms, vec![1, 2]);
        assert!(bootstrap(&batch, Some(3)).is_err(), "wrong length");
        assert!(bootstrap(&batch, None).is_err(), "arrays for one prompt");
        let mixed = json!({"bootstrap_host": ["h", "g"], "bootstrap_port": [1, 1], "bootstrap_room": [1, 2]});
        assert!(bootstrap(&mixed, Some(2)).is_err(), "two hosts in a batch");
        assert!(bootstrap(&json!({"bootstrap_host": "h", "bootstrap_port": 1}), None).is_err());
        assert!(
            bootstrap(
                &json!({"bootstrap_host": "h", "bootstrap_port": 1, "bootstrap_room": -1}),
                None
            )
            .is_err()
        );
    }

    #[test]
    fn ranks_must_be_below_dp_size() {
        assert_eq!(rank(&json!({}), 2), Ok(None));
        assert_eq!(rank(&json!({"data_parallel_rank": 1}), 2), Ok(Some(1)));
        assert!(rank(&json!({"data_parallel_rank": 2}), 2).is_err());
        assert!(rank(&json!({"data_parallel_rank": "0"}), 2).is_err());
    }

    #[tokio::test]
    async fn a_room_is_answered_once_pulled_and_not_before() {
        let rooms = std::sync::Arc::new(Rooms::default());
        let limit = Duration::from_secs(30);
        assert!(!rooms.wait_pulled(&[1], Duration::from_millis(10)).await);
        let puller = tokio::spawn({
            let rooms = rooms.clone();
            async move { rooms.pull(5, limit).await }
        });
        rooms.open(&[5]);
        assert!(rooms.wait_pulled(&[5], limit).await);
        assert!(puller.await.unwrap());
        assert!(
            !rooms.pull(6, Duration::from_millis(10)).await,
            "never opened"
        );
    }
}
