//! Decoding the msgpack payload of one KV event message, as SGLang and the
//! vLLM releases encode it:
//!
//! - SGLang (`kv_events.py`): the batch is an array `[ts, events]` or
//!   `[ts, events, attn_dp_rank]`; each event an array tagged by its first
//!   element: `["BlockStored", block_hashes, parent_block_hash, token_ids,
//!   block_size, lora_id, medium?]`, `["BlockRemoved", block_hashes,
//!   medium?]`, `["AllBlocksCleared"]`. Hashes are signed 64-bit ints.
//! - vLLM before 0.11: the same arrays, the batch's third element
//!   `data_parallel_rank`, and `BlockStored` continuing with `medium`,
//!   `lora_name`, `extra_keys`, `group_idx`, `kv_cache_spec_kind`,
//!   `kv_cache_spec_sliding_window`.
//! - vLLM since: maps, `{"ts", "events", "data_parallel_rank"}`, each event
//!   a map tagged by `"type"`, fields by name, defaults left out. Hashes
//!   are unsigned 64-bit ints, or bytes (a sha256 block hash).
//!
//! Any hash becomes a u64 (bytes through xxh3): the index only needs to
//! tell the engine's pages apart. Unknown event types and fields are
//! skipped, so a newer publisher still feeds an older router.

use rmpv::Value;
use xxhash_rust::xxh3::xxh3_64;

use crate::index::Medium;

/// A batch of events as one message carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The publisher's timestamp, seconds since the epoch.
    pub ts: f64,
    /// The data-parallel rank that published it, when the batch says.
    pub dp_rank: Option<u32>,
    /// Its events, in order.
    pub events: Vec<Event>,
    /// Events of a type this router does not know, left out.
    pub skipped: usize,
}

/// One KV cache event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Pages were stored.
    Stored(Stored),
    /// Pages were dropped from `medium`.
    Removed {
        /// The engine's hashes of the pages.
        hashes: Vec<u64>,
        /// Where from.
        medium: Medium,
    },
    /// Every page was dropped.
    Cleared,
}

/// A `BlockStored` event.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The engine's hashes of the pages, in order.
    pub hashes: Vec<u64>,
    /// The engine's hash of the first page's parent; none for a sequence's
    /// first page.
    pub parent: Option<u64>,
    /// The pages' token ids, `block_size` per page.
    pub token_ids: Vec<u32>,
    /// Tokens per page.
    pub block_size: u32,
    /// Where they are.
    pub medium: Medium,
    /// The LoRA adapter they were computed under (`lora_name`, else
    /// `lora_id`), as a seed for the router's keys: 0 for the base model.
    pub lora_seed: u64,
    /// Whether the pages are prefix cache: vLLM's groups of sliding-window
    /// or other non-full attention layers are not.
    pub prefix_cache: bool,
}

/// Why a payload could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not msgpack.
    #[error("not msgpack: {0}")]
    Msgpack(String),
    /// Bytes after the batch.
    #[error("{0} bytes after the batch")]
    Trailing(usize),
    /// Msgpack of another shape.
    #[error("not a KV event batch: {0}")]
    Shape(String),
}

fn shape(what: impl Into<String>) -> DecodeError {
    DecodeError::Shape(what.into())
}

/// Decode one message's payload.
pub fn decode(payload: &[u8]) -> Result<Batch, DecodeError> {
    let mut rest = payload;
    let value =
        rmpv::decode::read_value(&mut rest).map_err(|e| DecodeError::Msgpack(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    let (ts, events, rank) = match &value {
        Value::Array(items) => (items.first(), items.get(1), items.get(2)),
        Value::Map(_) => (
            field(&value, "ts"),
            field(&value, "events"),
            field(&value, "data_parallel_rank").or_else(|| field(&value, "attn_dp_rank")),
        ),
        _ => return Err(shape("the batch is neither an array nor a map")),
    };
    let ts = ts
        .and_then(Value::as_f64)
        .ok_or_else(|| shape("the batch has no timestamp"))?;
    let dp_rank = match rank {
        None | Some(Value::Nil) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|r| u32::try_from(r).ok())
                .ok_or_else(|| shape("the DP rank is not a small unsigned int"))?,
        ),
    };
    let Some(Value::Array(items)) = events else {
        return Err(shape("the batch's events are not an array"));
    };
    let mut batch = Batch {
        ts,
        dp_rank,
        events: Vec::with_capacity(items.len()),
        skipped: 0,
    };
    for item in items {
        match event(item)? {
            Some(event) => batch.events.push(event),
            None => batch.skipped += 1,
        }
    }
    Ok(batch)
}

/// The value of `key` in a map.
fn field<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// An event's fields, by position (arrays, after the tag) or by name (maps).
struct Fields<'a> {
    value: &'a Value,
    names: &'static [&'static str],
}

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Option<&'a Value> {
        let found = match self.value {
            Value::Array(items) => {
                let at = self.names.iter().position(|n| *n == name)?;
                items.get(at + 1)
            }
            _ => field(self.value, name),
        };
        found.filter(|v| !v.is_nil())
    }
}

const STORED: &[&str] = &[
    "block_hashes",
    "parent_block_hash",
    "token_ids",
    "block_size",
    "lora_id",
    "medium",
    "lora_name",
    "extra_keys",
    "group_idx",
    "kv_cache_spec_kind",
    "kv_cache_spec_sliding_window",
];
const REMOVED: &[&str] = &["block_hashes", "medium", "group_idx"];

/// One event; `None` for a type this router does not know.
fn event(value: &Value) -> Result<Option<Event>, DecodeError> {
    let tag = match value {
        Value::Array(items) => items.first().and_then(Value::as_str),
        Value::Map(_) => field(value, "type").and_then(Value::as_str),
        _ => None,
    }
    .ok_or_else(|| shape("an event has no type tag"))?;
    Ok(Some(match tag {
        "BlockStored" => Event::Stored(stored(&Fields {
            value,
            names: STORED,
        })?),
        "BlockRemoved" => {
            let fields = Fields {
                value,
                names: REMOVED,
            };
            Event::Removed {
                hashes: hashes(fields.get("block_hashes"))?,
                medium: medium(fields.get("medium"))?,
            }
        }
        "AllBlocksCleared" => Event::Cleared,
        _ => return Ok(None),
    }))
}

fn stored(fields: &Fields<'_>) -> Result<Stored, DecodeError> {
    let token_ids = fields
        .get("token_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| shape("BlockStored has no token_ids"))?
        .iter()
        .map(|t| t.as_u64().and_then(|t| u32::try_from(t).ok()))
        .collect::<Option<Vec<u32>>>()
        .ok_or_else(|| shape("a token id is not a u32"))?;
    let block_size = fields
        .get("block_size")
        .and_then(Value::as_u64)
        .and_then(|b| u32::try_from(b).ok())
        .filter(|&b| b > 0)
        .ok_or_else(|| shape("BlockStored has no positive block_size"))?;
    let lora_seed = match (fields.get("lora_name"), fields.get("lora_id")) {
        (Some(Value::String(name)), _) => xxh3_64(name.as_bytes()).max(1),
        (_, Some(id)) => id
            .as_u64()
            .or_else(|| id.as_i64().map(|i| i as u64))
            .map(|id| xxh3_64(&id.to_le_bytes()).max(1))
            .unwrap_or(0),
        _ => 0,
    };
    let prefix_cache = fields
        .get("kv_cache_spec_kind")
        .and_then(Value::as_str)
        .is_none_or(|kind| kind.to_ascii_lowercase().contains("full"))
        && fields.get("kv_cache_spec_sliding_window").is_none();
    Ok(Stored {
        hashes: hashes(fields.get("block_hashes"))?,
        parent: fields.get("parent_block_hash").map(hash).transpose()?,
        token_ids,
        block_size,
        medium: medium(fields.get("medium"))?,
        lora_seed,
        prefix_cache,
    })
}

fn hashes(value: Option<&Value>) -> Result<Vec<u64>, DecodeError> {
    value
        .and_then(Value::as_array)
        .ok_or_else(|| shape("an event has no block_hashes"))?
        .iter()
        .map(hash)
        .collect()
}

/// An engine's block hash: a signed or unsigned 64-bit int, or bytes.
fn hash(value: &Value) -> Result<u64, DecodeError> {
    match value {
        Value::Integer(i) => i
            .as_u64()
            .or_else(|| i.as_i64().map(|i| i as u64))
            .ok_or_else(|| shape("a block hash is not a 64-bit int")),
        Value::Binary(bytes) => Ok(xxh3_64(bytes)),
        _ => Err(shape("a block hash is neither an int nor bytes")),
    }
}

/// Where pages are: absent means GPU, the publishers' default; anything but
/// GPU or CPU (disk, a connector's remote tier) counts as [`Medium::Disk`].
fn medium(value: Option<&Value>) -> Result<Medium, DecodeError> {
    let Some(value) = value else {
        return Ok(Medium::Gpu);
    };
    let name = value
        .as_str()
        .ok_or_else(|| shape("a medium is not a string"))?
        .to_ascii_uppercase();
    Ok(if name.starts_with("GPU") || name == "CUDA" {
        Medium::Gpu
    } else if name.starts_with("CPU") {
        Medium::Cpu
    } else {
        Medium::Disk
    })
}

#[cfg(test)]
mod tests;
