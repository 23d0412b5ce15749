//! The one place that owns wasmtime: engine settings, the epoch ticker that
//! enforces call deadlines (`ticker.rs`), memory limits, and the
//! compiled-artifact cache.
//! Every wasmtime setting is here, each with its reason; the limits a
//! user sets (deadlines, memory) are [`crate::config::Limits`].

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, OptLevel};

use super::imports::{HostShelf, PolicyHost};
use super::ticker::{Awake, Ticker};

/// A wasmtime engine configured for policies, with its epoch ticker and an
/// optional on-disk cache of compiled components. Cheap to clone.
#[derive(Clone)]
pub struct PolicyEngine {
    engine: Engine,
    cache_dir: Option<Arc<Path>>,
    /// What the host keeps for each policy (`state`, metrics, log limits):
    /// as long-lived as the engine, so reloads and rebuilt instances find it.
    shelf: Arc<HostShelf>,
    /// Advances the epoch while calls run.
    ticker: Arc<Ticker>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("cache_dir", &self.cache_dir)
            .finish()
    }
}

impl PolicyEngine {
    /// An engine that caches compiled components in `cache_dir` (none: compile
    /// on every load). The directory must be writable only by the router's
    /// user: its files are loaded as trusted native code.
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        // Deadlines: every store sets one before each call (see `Limits`).
        config.epoch_interruption(true);
        config.cranelift_opt_level(OptLevel::Speed);
        let engine = Engine::new(&config)?;
        let ticker = Ticker::spawn(&engine);
        Ok(PolicyEngine {
            engine,
            cache_dir: cache_dir.map(Arc::from),
            shelf: Arc::default(),
            ticker,
        })
    }

    /// This engine, its policies reading the workers' KV caches through
    /// `kv` (`prefix-index.match-kv`). Call before loading any policy.
    pub fn with_kv(mut self, kv: super::imports::KvView) -> Self {
        self.shelf = Arc::new(HostShelf::with_kv(kv));
        self
    }

    /// What its policies read of the workers' KV caches.
    pub fn kv(&self) -> &super::imports::KvView {
        self.shelf.kv()
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Give `store`'s next calls `deadline` from now: the epoch advances
    /// until the returned guard drops (see [`Ticker`]).
    pub fn arm<T>(&self, store: &mut wasmtime::Store<T>, deadline: Duration) -> Awake {
        self.ticker.arm(store, deadline)
    }

    /// Whether the epoch ticker sleeps now (no call for a while).
    pub fn ticker_asleep(&self) -> bool {
        self.ticker.is_asleep()
    }

    /// What the host keeps for the policy with key `key`
    /// ([`super::imports::policy_key`]).
    pub fn host(&self, key: &str) -> Arc<PolicyHost> {
        self.shelf.get(key)
    }

    /// Compile a component, or load its compiled form from the cache. The
    /// cache is an optimisation only: any cache error falls back to compiling.
    pub fn compile(&self, bytes: &[u8]) -> wasmtime::Result<Component> {
        let Some(dir) = &self.cache_dir else {
            return Component::new(&self.engine, bytes);
        };
        let path = dir.join(self.cache_key(bytes));
        if path.is_file() {
            // SAFETY: the file was written by `precompile_component` of an
            // engine with the same compatibility hash (it is in the name), in a
            // directory the router's user owns; see `PolicyEngine::new`.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unusable compiled policy: {e:#}")
                }
            }
        }
        let artifact = self.engine.precompile_component(bytes)?;
        if let Err(e) = write_atomically(dir, &path, &artifact) {
            tracing::warn!(dir = %dir.display(), "cannot cache compiled policy: {e}");
        }
        // SAFETY: `artifact` was just produced by this engine.
        unsafe { Component::deserialize(&self.engine, &artifact) }
    }

    /// `<sha256 of the component>-<engine compatibility hash>.cwasm`.
    fn cache_key(&self, bytes: &[u8]) -> String {
        let mut engine_hash = DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        format!("{}-{:016x}.cwasm", sha256_hex(bytes), engine_hash.finish())
    }
}

/// Hex sha256 of `bytes`, as `GET /policies` shows it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Write `path` (in `dir`) whole or not at all: readers never see half an
/// artifact, even with several routers sharing the cache.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(bytes)?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}
