//! The simulated worker's KV cache events (`--kv-events-port`): what its
//! cache stores, evicts and flushes, published as SGLang publishes them
//! (ZMQ PUB, `[topic, 8-byte big-endian sequence, msgpack batch]`, the
//! batch `[ts, events]` of tagged arrays, block hashes as i64) or as newer
//! vLLM releases do (`--kv-events-format vllm`: maps tagged by `"type"`,
//! hashes as u64).
//!
//! Events go through one channel to one publishing task, sent while the
//! cache's lock is held: the sequence follows the cache's own order.

use bytes::Bytes;
use rmpv::Value;
use tokio::sync::mpsc;
use zeromq::{PubSocket, Socket, SocketSend, ZmqMessage};

use super::cache::CacheEvent;

/// The wire format of the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// SGLang's `kv_events.py`: arrays.
    Sglang,
    /// vLLM's `kv_events.py` since it encodes maps.
    Vllm,
}

/// The publishing side: hand it each request's events, in cache order.
#[derive(Debug)]
pub struct Publisher {
    events: mpsc::UnboundedSender<Vec<CacheEvent>>,
    /// The port it publishes on.
    pub port: u16,
}

impl Publisher {
    /// Bind a PUB socket on `host:port` (0: any free port) and start
    /// publishing.
    pub async fn bind(host: std::net::IpAddr, port: u16, format: Format) -> anyhow::Result<Self> {
        let mut socket = PubSocket::new();
        let host = match host {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            v4 => v4.to_string(),
        };
        let bound = socket.bind(&format!("tcp://{host}:{port}")).await?;
        let zeromq::Endpoint::Tcp(_, port) = bound else {
            anyhow::bail!("the KV event socket is not on TCP: {bound}");
        };
        let (events, mut rx) = mpsc::unbounded_channel::<Vec<CacheEvent>>();
        tokio::spawn(async move {
            let mut seq: u64 = 0;
            while let Some(batch) = rx.recv().await {
                let message = ZmqMessage::try_from(vec![
                    Bytes::new(),
                    Bytes::copy_from_slice(&seq.to_be_bytes()),
                    Bytes::from(encode(&batch, format)),
                ])
                .expect("three frames");
                seq += 1;
                if let Err(e) = socket.send(message).await {
                    tracing::warn!("simulated worker: cannot publish KV events: {e}");
                }
            }
        });
        Ok(Publisher { events, port })
    }

    /// Publish `events` as one batch (nothing if empty).
    pub fn publish(&self, events: Vec<CacheEvent>) {
        if !events.is_empty() && self.events.send(events).is_err() {
            tracing::debug!("simulated worker: the KV event publisher has stopped");
        }
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One batch's msgpack payload.
fn encode(events: &[CacheEvent], format: Format) -> Vec<u8> {
    let hash = |h: u64| match format {
        Format::Sglang => Value::from(h as i64),
        Format::Vllm => Value::from(h),
    };
    let events: Vec<Value> = events
        .iter()
        .map(|event| match (format, event) {
            (
                Format::Sglang,
                CacheEvent::Stored {
                    hash: h,
                    parent,
                    tokens,
                },
            ) => Value::Array(vec![
                "BlockStored".into(),
                Value::Array(vec![hash(*h)]),
                parent.map_or(Value::Nil, hash),
                Value::Array(tokens.iter().map(|&t| t.into()).collect()),
                (tokens.len() as u64).into(),
                Value::Nil,
                "GPU".into(),
            ]),
            (Format::Sglang, CacheEvent::Removed(hashes)) => Value::Array(vec![
                "BlockRemoved".into(),
                Value::Array(hashes.iter().map(|&h| hash(h)).collect()),
                "GPU".into(),
            ]),
            (Format::Sglang, CacheEvent::Cleared) => Value::Array(vec!["AllBlocksCleared".into()]),
            (
                Format::Vllm,
                CacheEvent::Stored {
                    hash: h,
                    parent,
                    tokens,
                },
            ) => map(vec![
                ("type", "BlockStored".into()),
                ("block_hashes", Value::Array(vec![hash(*h)])),
                ("parent_block_hash", parent.map_or(Value::Nil, hash)),
                (
                    "token_ids",
                    Value::Array(tokens.iter().map(|&t| t.into()).collect()),
                ),
                ("block_size", (tokens.len() as u64).into()),
                ("medium", "GPU".into()),
            ]),
            (Format::Vllm, CacheEvent::Removed(hashes)) => map(vec![
                ("type", "BlockRemoved".into()),
                (
                    "block_hashes",
                    Value::Array(hashes.iter().map(|&h| hash(h)).collect()),
                ),
                ("medium", "GPU".into()),
            ]),
            (Format::Vllm, CacheEvent::Cleared) => map(vec![("type", "AllBlocksCleared".into())]),
        })
        .collect();
    let batch = match format {
        Format::Sglang => Value::Array(vec![now().into(), Value::Array(events)]),
        Format::Vllm => map(vec![("ts", now().into()), ("events", Value::Array(events))]),
    };
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &batch).expect("writing to a Vec cannot fail");
    out
}

fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both formats decode, with the router's own decoder, to the same
    /// events.
    #[test]
    fn both_formats_decode_to_the_same_events() {
        let events = [
            CacheEvent::Stored {
                hash: u64::MAX - 1,
                parent: None,
                tokens: vec![1, 2],
            },
            CacheEvent::Stored {
                hash: 5,
                parent: Some(u64::MAX - 1),
                tokens: vec![3, 4],
            },
            CacheEvent::Removed(vec![5]),
            CacheEvent::Cleared,
        ];
        let decoded: Vec<_> = [Format::Sglang, Format::Vllm]
            .map(|f| {
                wasm_router::events::decode(&encode(&events, f))
                    .unwrap()
                    .events
            })
            .into_iter()
            .collect();
        assert_eq!(decoded[0], decoded[1]);
        assert_eq!(decoded[0].len(), 4);
        let wasm_router::events::Event::Stored(second) = &decoded[0][1] else {
            panic!("{:?}", decoded[0]);
        };
        assert_eq!(
            (second.hashes.as_slice(), second.parent, second.block_size),
            (&[5][..], Some(u64::MAX - 1), 2)
        );
    }
}
