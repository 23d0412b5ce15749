//! `state`: a policy's host-held key-value store, shared by its
//! instances and kept across faults and reloads.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::{Host, lock};
use crate::policy::bindings::v2::wasm_router::policy::state;

/// A `state` key's largest size, in bytes.
pub const MAX_STATE_KEY: usize = 256;
/// A `state` value's largest size, in bytes.
pub const MAX_STATE_VALUE: usize = 64 << 10;
/// Keys one policy may keep.
pub const MAX_STATE_KEYS: usize = 4096;
/// Bytes (keys and values) one policy may keep.
pub const MAX_STATE_BYTES: usize = 16 << 20;

const SHARDS: usize = 16;

/// A policy's key-value store: sharded, so instances on different threads
/// rarely wait for each other, and bounded in keys and bytes.
#[derive(Debug, Default)]
pub struct Store {
    shards: [Mutex<HashMap<String, Vec<u8>>>; SHARDS],
    keys: AtomicUsize,
    pub(super) bytes: AtomicUsize,
}

impl Store {
    fn shard(&self, key: &str) -> MutexGuard<'_, HashMap<String, Vec<u8>>> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        lock(&self.shards[h.finish() as usize % SHARDS])
    }

    /// The value at `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.shard(key).get(key).cloned()
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.keys.load(Ordering::Relaxed)
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Store `value` at `key`, within the bounds.
    pub fn set(&self, key: &str, value: Vec<u8>) -> Result<(), String> {
        self.put(&mut self.shard(key), key, value)
    }

    /// [`Store::set`] in a shard already locked: every write's bounds.
    fn put(
        &self,
        shard: &mut HashMap<String, Vec<u8>>,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(), String> {
        if key.len() > MAX_STATE_KEY {
            return Err(format!(
                "state key of {} bytes: at most {MAX_STATE_KEY}",
                key.len()
            ));
        }
        if value.len() > MAX_STATE_VALUE {
            return Err(format!(
                "state value of {} bytes: at most {MAX_STATE_VALUE}",
                value.len()
            ));
        }
        let old = shard.get(key).map(|v| key.len() + v.len());
        if old.is_none() && self.keys.fetch_add(1, Ordering::Relaxed) >= MAX_STATE_KEYS {
            self.keys.fetch_sub(1, Ordering::Relaxed);
            return Err(format!(
                "the policy holds {MAX_STATE_KEYS} state keys already: remove some first"
            ));
        }
        let (old, new) = (old.unwrap_or(0), key.len() + value.len());
        let grow = new.saturating_sub(old);
        if grow > 0 && self.bytes.fetch_add(grow, Ordering::Relaxed) + grow > MAX_STATE_BYTES {
            self.bytes.fetch_sub(grow, Ordering::Relaxed);
            if !shard.contains_key(key) {
                self.keys.fetch_sub(1, Ordering::Relaxed);
            }
            return Err(format!(
                "the policy's state would pass {MAX_STATE_BYTES} bytes: remove some first"
            ));
        }
        self.bytes
            .fetch_sub(old.saturating_sub(new), Ordering::Relaxed);
        shard.insert(key.to_string(), value);
        Ok(())
    }

    /// Remove `key`.
    pub fn remove(&self, key: &str) {
        if let Some(value) = self.shard(key).remove(key) {
            self.keys.fetch_sub(1, Ordering::Relaxed);
            self.bytes
                .fetch_sub(key.len() + value.len(), Ordering::Relaxed);
        }
    }

    /// Add `delta` to the little-endian i64 at `key` (absent: 0), in one
    /// step: no other call on the key comes between the read and the write.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64, String> {
        let mut shard = self.shard(key);
        let current = match shard.get(key) {
            None => 0,
            Some(v) => i64::from_le_bytes(v.as_slice().try_into().map_err(|_| {
                format!(
                    "state key {key:?} holds {} bytes, not a counter's 8",
                    v.len()
                )
            })?),
        };
        let sum = current
            .checked_add(delta)
            .ok_or_else(|| format!("state counter {key:?} would overflow"))?;
        self.put(&mut shard, key, sum.to_le_bytes().to_vec())?;
        Ok(sum)
    }
}

impl state::Host for Host {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.policy.state.get(&key)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        self.policy.state.set(&key, value)
    }

    fn remove(&mut self, key: String) {
        self.policy.state.remove(&key)
    }

    fn add(&mut self, key: String, delta: i64) -> Result<i64, String> {
        self.policy.state.add(&key, delta)
    }
}
