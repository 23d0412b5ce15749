//! Settings of the routing policies: which policy, the JSON its `init`
//! takes (the cache-aware and manual flags, under the file's `[policy]`
//! table), and the limits each instance runs under.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::{ConfigError, RouterArgs, defaults as d, invalid, readable};

/// Deadline for `select` and `on-complete`: they run on the request path. A
/// 32 KB prompt through cache_aware takes well under a millisecond; the
/// margin absorbs a busy machine descheduling the thread
/// (`--policy-call-deadline-ms`).
pub const DEFAULT_CALL_DEADLINE: Duration = Duration::from_millis(d::POLICY_CALL_DEADLINE_MS);

/// Deadline for calls off the request path (`init`, `workers-changed`,
/// `snapshot`, `restore`), which may walk the whole state.
pub const DEFAULT_MAINTENANCE_DEADLINE: Duration = Duration::from_secs(1);

/// Deadline for `tick`. Requests that come during a tick wait for the
/// instance (without holding a serving thread): long enough for an eviction
/// over a large state, short enough that a guest spinning in `tick` delays
/// those requests only briefly.
pub const DEFAULT_TICK_DEADLINE: Duration = Duration::from_millis(100);

/// Linear memory a policy instance may grow to (`--policy-memory-limit-mb`).
/// cache_aware's tree is the router's (`prefix-index`), not in this memory;
/// policies that keep large tables of their own (manual's assignments, say)
/// may need more for large fleets.
pub const DEFAULT_MEMORY_LIMIT: usize = d::POLICY_MEMORY_LIMIT_MB << 20;

/// Per-instance limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deadline for calls on the request path.
    pub call_deadline: Duration,
    /// Deadline for maintenance calls.
    pub maintenance_deadline: Duration,
    /// Deadline for `tick`.
    pub tick_deadline: Duration,
    /// Maximum linear memory, in bytes.
    pub memory: usize,
    /// Instances of a per-thread policy; `None`: one per core, at least 2.
    pub instances: Option<usize>,
    /// Seed of the randomness the sandbox gives the policy; `None`: the
    /// system's. Replay sets it, so that a run repeats.
    pub random_seed: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_deadline: DEFAULT_CALL_DEADLINE,
            maintenance_deadline: DEFAULT_MAINTENANCE_DEADLINE,
            tick_deadline: DEFAULT_TICK_DEADLINE,
            memory: DEFAULT_MEMORY_LIMIT,
            instances: None,
            random_seed: None,
        }
    }
}

/// The router's caches of routing tokenizations
/// (`--tokenizer-cache-l0-max-entries`, `--tokenizer-cache-l1-max-memory`):
/// whole texts, and chunks of their prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenizerCache {
    /// Whole texts kept.
    pub l0_entries: usize,
    /// Bytes of prefix chunks kept.
    pub l1_bytes: usize,
}

impl Default for TokenizerCache {
    fn default() -> Self {
        TokenizerCache {
            l0_entries: d::TOKENIZER_CACHE_L0_MAX_ENTRIES as usize,
            l1_bytes: d::TOKENIZER_CACHE_L1_MAX_MEMORY as usize,
        }
    }
}

/// The tokenizer caches' sizes. Always on: they serve the router's own
/// tokenization for KV matching (sglang-router's `--tokenizer-cache-enable-*`
/// are accepted and change nothing).
pub(super) fn tokenizer_cache(s: &RouterArgs) -> TokenizerCache {
    let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    TokenizerCache {
        l0_entries: size(
            s.tokenizer_cache_l0_max_entries
                .unwrap_or(d::TOKENIZER_CACHE_L0_MAX_ENTRIES),
        ),
        l1_bytes: size(
            s.tokenizer_cache_l1_max_memory
                .unwrap_or(d::TOKENIZER_CACHE_L1_MAX_MEMORY),
        ),
    }
}

/// Which of a router's policies: the main one (of regular workers, or of
/// decode workers in PD mode) or PD mode's prefill policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySlot {
    /// Regular workers, or decode workers in PD mode.
    Main,
    /// Prefill workers in PD mode.
    Prefill,
}

/// The JSON object passed to the policy's `init`: the cache-aware and
/// manual flags, under the file's `[policy]` table (the policy's own: it
/// wins over the flags).
pub(super) fn init_config(s: &RouterArgs) -> Result<String, ConfigError> {
    let cache_threshold = s.cache_threshold.unwrap_or(d::CACHE_THRESHOLD);
    if !(0.0..=1.0).contains(&cache_threshold) {
        return Err(invalid(
            "--cache-threshold",
            format!("{cache_threshold} is not between 0 and 1"),
        ));
    }
    let assignment_mode = s
        .assignment_mode
        .clone()
        .unwrap_or_else(|| d::ASSIGNMENT_MODE.into());
    if !["random", "min_load", "min_group"].contains(&assignment_mode.as_str()) {
        return Err(invalid(
            "--assignment-mode",
            format!("{assignment_mode:?} is not random, min_load or min_group"),
        ));
    }
    let max_idle_secs = s.max_idle_secs.unwrap_or(d::MAX_IDLE_SECS);
    if max_idle_secs == 0 {
        return Err(invalid("--max-idle-secs", "must be above 0"));
    }
    let mut config = Map::new();
    config.insert("cache_threshold".into(), cache_threshold.into());
    config.insert(
        "balance_abs_threshold".into(),
        s.balance_abs_threshold
            .unwrap_or(d::BALANCE_ABS_THRESHOLD)
            .into(),
    );
    config.insert(
        "balance_rel_threshold".into(),
        s.balance_rel_threshold
            .unwrap_or(d::BALANCE_REL_THRESHOLD)
            .into(),
    );
    config.insert(
        "eviction_interval_secs".into(),
        s.eviction_interval_secs
            .unwrap_or(d::EVICTION_INTERVAL_SECS)
            .into(),
    );
    config.insert(
        "max_tree_size".into(),
        s.max_tree_size.unwrap_or(d::MAX_TREE_SIZE).into(),
    );
    config.insert("assignment_mode".into(), assignment_mode.into());
    config.insert("max_idle_secs".into(), max_idle_secs.into());
    config.insert(
        "bucket_adjust_interval_secs".into(),
        s.bucket_adjust_interval_secs
            .unwrap_or(d::BUCKET_ADJUST_INTERVAL_SECS)
            .into(),
    );
    config.extend(s.policy_table.clone());
    Ok(Value::Object(config).to_string())
}

/// `--policy-call-deadline-ms`, `--policy-memory-limit-mb` and
/// `--policy-instances`.
pub(super) fn limits(s: &RouterArgs) -> Result<Limits, ConfigError> {
    let call_deadline = s
        .policy_call_deadline_ms
        .unwrap_or(d::POLICY_CALL_DEADLINE_MS);
    if call_deadline == 0 {
        return Err(invalid("--policy-call-deadline-ms", "must be above 0"));
    }
    let memory_mb = s
        .policy_memory_limit_mb
        .unwrap_or(d::POLICY_MEMORY_LIMIT_MB);
    if memory_mb == 0 || memory_mb > 4096 {
        return Err(invalid(
            "--policy-memory-limit-mb",
            "must be between 1 and 4096",
        ));
    }
    if s.policy_instances == Some(0) {
        return Err(invalid("--policy-instances", "must be at least 1"));
    }
    Ok(Limits {
        call_deadline: Duration::from_millis(call_deadline),
        memory: memory_mb << 20,
        instances: s.policy_instances,
        ..Limits::default()
    })
}

/// Where compiled policies are cached unless `--no-policy-cache`:
/// `$XDG_CACHE_HOME/wasm-router`, else `$HOME/.cache/wasm-router`; `None`
/// when neither is set.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("wasm-router"))
}

/// The tokenizer.json named by `--tokenizer-path`, or found in the
/// `--model-path` directory; a model id is refused, as nothing is
/// downloaded.
pub(super) fn tokenizer_file(s: &RouterArgs) -> Result<Option<PathBuf>, ConfigError> {
    if let Some(path) = &s.tokenizer_path {
        return readable("--tokenizer-path", PathBuf::from(path)).map(Some);
    }
    let Some(model) = &s.model_path else {
        return Ok(None);
    };
    let dir = Path::new(model);
    if !dir.is_dir() {
        return Err(invalid(
            "--model-path",
            format!(
                "{model:?} is not a local directory: the router downloads nothing; give a directory holding tokenizer.json, or --tokenizer-path FILE"
            ),
        ));
    }
    readable("--model-path", dir.join("tokenizer.json")).map(Some)
}
