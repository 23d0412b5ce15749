//! What the host gives contract-0.2 policies: the getters of the request
//! they are lent ([`RequestData`]), and the `log`, `metrics`, `state` and
//! `prefix-index` imports.
//!
//! `log`'s rate limit, the metric registry, the key-value store and the
//! prefix index ([`crate::index::Approximate`]) belong
//! to the policy's key ([`PolicyHost`], kept by [`HostShelf`] for the
//! engine's life), not to an instance: every instance of the policy shares
//! them, and they outlive faults (a rebuilt instance finds them) and reloads
//! (a new build of the same file does too). Each instance holds an [`Host`]:
//! its handle on them, and its own cache of metric handles, so recording a
//! metric takes no lock.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use wasmtime::component::Resource;

use super::bindings::route_v2;
use super::bindings::v2::wasm_router::policy::{
    log, metrics as wit_metrics, prefix_index, state, types,
};
use super::lent::{CandidatesData, RequestData};
use super::{Labels, RouteRequest, WorkerId};

/// A policy's key: the file's stem, or the built-in's name. See `state` in
/// `wit/policy.wit`.
pub fn policy_key(source: &super::PolicySource) -> String {
    match source {
        super::PolicySource::Builtin(name) => name.to_string(),
        super::PolicySource::File(path) => path
            .file_stem()
            .map_or_else(|| "policy".into(), |s| s.to_string_lossy().into_owned()),
    }
}

/// A duration in whole microseconds, at most `u32::MAX` (71 minutes).
fn saturating_micros(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// Bytes of a routing text that `prefix-index.match-kv` tokenizes when the
/// router has not tokenized the request before the call (a caller of the
/// engine that gives no [`RouteRequest::tokens`](super::RouteRequest)): it
/// runs inside the policy's call deadline, and tokenizing costs about
/// 0.2-0.3 ms per KiB (BENCHMARKS.md). Past this, pages are matched on the
/// text's first part only, and its token count is estimated at the same
/// rate.
pub const MAX_KV_TOKENIZE_BYTES: usize = 8 << 10;

/// What `prefix-index.match-kv` reads: the index the workers' KV events
/// feed, and the tokenizer requests are matched with.
#[derive(Debug, Clone, Default)]
pub struct KvView {
    /// The precise index (`--kv-events`); `None`: no worker is followed.
    pub index: Option<Arc<crate::index::Precise>>,
    /// The router's tokenizer (`--tokenizer-path`); `None`: requests have
    /// no tokens, and match nothing.
    pub tokenizer: Option<Arc<crate::tokenizer::Tokenizer>>,
}

/// Every policy key's [`PolicyHost`], for as long as the engine lives.
#[derive(Debug, Default)]
pub struct HostShelf {
    hosts: Mutex<HashMap<String, Arc<PolicyHost>>>,
    kv: KvView,
}

impl HostShelf {
    /// A shelf whose policies read the workers' KV caches through `kv`.
    pub fn with_kv(kv: KvView) -> Self {
        HostShelf {
            hosts: Mutex::default(),
            kv,
        }
    }

    /// The host side of policy `key`, made on first use.
    pub fn get(&self, key: &str) -> Arc<PolicyHost> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts
            .entry(key.to_string())
            .or_insert_with(|| Arc::new(PolicyHost::new(key, self.kv.clone())))
            .clone()
    }
}

/// What the host keeps for one policy key. See the module docs.
#[derive(Debug)]
pub struct PolicyHost {
    key: String,
    log: Mutex<LogBucket>,
    metrics: Mutex<Vec<Declared>>,
    state: Store,
    index: crate::index::Approximate,
    kv: KvView,
}

impl PolicyHost {
    fn new(key: &str, kv: KvView) -> Self {
        PolicyHost {
            key: key.to_string(),
            log: Mutex::new(LogBucket {
                tokens: LOG_BURST,
                last: Instant::now(),
                suppressed: 0,
            }),
            metrics: Mutex::new(Vec::new()),
            state: Store::default(),
            index: crate::index::Approximate::default(),
            kv,
        }
    }

    /// The key-value store.
    pub fn state(&self) -> &Store {
        &self.state
    }

    /// The prefix index.
    pub fn index(&self) -> &crate::index::Approximate {
        &self.index
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves its data whole.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One instance's side of the imports.
#[derive(Debug)]
pub struct Host {
    policy: Arc<PolicyHost>,
    request: RequestData,
    candidates: CandidatesData,
    /// Handles of the metrics this instance recorded: by declared handle,
    /// then label value.
    metrics: HashMap<u32, HashMap<String, Handle>>,
    /// Handles in `metrics`.
    cached_metrics: usize,
    /// What the candidates' `weights` and `label` columns read: the
    /// workers' static attributes by id, from the last `workers-changed`
    /// (so a `select` copies none of them unless the policy asks).
    workers: HashMap<WorkerId, Attributes>,
}

/// What a worker was registered with that does not change while it is.
#[derive(Debug)]
struct Attributes {
    weight: u32,
    labels: Arc<Labels>,
}

impl Host {
    /// An instance's side of policy `policy`'s imports.
    pub fn new(policy: Arc<PolicyHost>) -> Self {
        Host {
            policy,
            request: RequestData::default(),
            candidates: CandidatesData::default(),
            metrics: HashMap::new(),
            cached_metrics: 0,
            workers: HashMap::new(),
        }
    }

    /// Keep the attributes of `workers`, the list `workers-changed` is
    /// about to give the instance.
    pub(super) fn know_workers(&mut self, workers: &[super::WorkerInfo]) {
        self.workers.clear();
        self.workers.extend(workers.iter().map(|w| {
            let attributes = Attributes {
                weight: w.weight,
                labels: w.labels.clone(),
            };
            (w.id, attributes)
        }));
    }

    /// Lend `req` and `candidates` to the next `select`.
    pub(super) fn lend(
        &mut self,
        req: &RouteRequest<'_>,
        candidates: &[super::Candidate],
    ) -> (Resource<RequestData>, Resource<CandidatesData>) {
        self.request.fill(req);
        self.candidates.fill(candidates);
        // One of each is lent at a time, for one call: the handles' numbers
        // are never looked up.
        (Resource::new_borrow(0), Resource::new_borrow(0))
    }
}

impl types::Host for Host {}

impl types::HostRequest for Host {
    fn id(&mut self, _: Resource<RequestData>) -> u64 {
        self.request.id
    }

    fn route(&mut self, _: Resource<RequestData>) -> types::Route {
        route_v2(self.request.route)
    }

    fn model(&mut self, _: Resource<RequestData>) -> String {
        self.request.model.clone()
    }

    fn text(&mut self, _: Resource<RequestData>) -> String {
        self.request.text.clone()
    }

    fn text_length(&mut self, _: Resource<RequestData>) -> u32 {
        u32::try_from(self.request.text.len()).unwrap_or(u32::MAX)
    }

    fn routing_key(&mut self, _: Resource<RequestData>) -> Option<String> {
        self.request.routing_key.clone()
    }

    fn stream(&mut self, _: Resource<RequestData>) -> bool {
        self.request.stream
    }

    fn text_prefix(&mut self, _: Resource<RequestData>, min_bytes: u32) -> String {
        let text = &self.request.text;
        let at = usize::try_from(min_bytes)
            .unwrap_or(usize::MAX)
            .min(text.len());
        text[..text.ceil_char_boundary(at)].to_string()
    }

    fn max_new_tokens(&mut self, _: Resource<RequestData>) -> Option<u32> {
        self.request.max_new_tokens
    }

    fn header(&mut self, _: Resource<RequestData>, name: String) -> Option<String> {
        if HIDDEN_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            return None;
        }
        fn text(v: &axum::http::HeaderValue) -> Option<&str> {
            std::str::from_utf8(v.as_bytes()).ok()
        }
        let mut values = self.request.headers.get_all(name.as_str()).iter();
        let mut joined = text(values.next()?)?.to_string();
        for value in values {
            joined.push_str(", ");
            joined.push_str(text(value)?);
        }
        Some(joined)
    }

    fn drop(&mut self, _: Resource<RequestData>) -> wasmtime::Result<()> {
        // Lent, never owned by the guest: nothing to free.
        Ok(())
    }
}

/// A log line's message and each field value are cut at this many bytes.
pub const MAX_LOG_FIELD: usize = 1024;
/// Lines a policy may write at once before the rate limit holds them back.
pub const LOG_BURST: f64 = 100.0;
/// Lines per second a policy may write, on average.
pub const LOG_PER_SECOND: f64 = 20.0;

#[derive(Debug)]
struct LogBucket {
    tokens: f64,
    last: Instant,
    suppressed: u64,
}

impl LogBucket {
    /// Take a token; `Some(lines suppressed since the last one)` if there
    /// was one.
    fn take(&mut self, now: Instant) -> Option<u64> {
        let refill = now.duration_since(self.last).as_secs_f64() * LOG_PER_SECOND;
        self.tokens = (self.tokens + refill).min(LOG_BURST);
        self.last = now;
        if self.tokens < 1.0 {
            self.suppressed += 1;
            return None;
        }
        self.tokens -= 1.0;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// `text` cut at `max` bytes on a character boundary, control characters
/// as spaces: a policy cannot forge or split log lines.
fn clean(text: &str, max: usize) -> String {
    text[..text.floor_char_boundary(max)]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Client headers a policy is never shown: credentials, which routing has
/// no use for and a policy's log lines or metrics could leak.
const HIDDEN_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

impl types::HostCandidates for Host {
    fn ids(&mut self, _: Resource<CandidatesData>) -> Vec<u32> {
        self.candidates.column(|c| c.id)
    }

    fn loads(&mut self, _: Resource<CandidatesData>) -> Vec<u32> {
        self.candidates.column(|c| c.load)
    }

    fn in_flight(&mut self, _: Resource<CandidatesData>) -> Vec<u32> {
        self.candidates.column(|c| c.in_flight)
    }

    fn reported_loads(&mut self, _: Resource<CandidatesData>) -> Vec<Option<u32>> {
        self.candidates.column(|c| c.reported_load)
    }

    fn queued(&mut self, _: Resource<CandidatesData>) -> Vec<Option<u32>> {
        self.candidates.column(|c| c.queued)
    }

    fn half_open(&mut self, _: Resource<CandidatesData>) -> Vec<bool> {
        self.candidates.column(|c| c.half_open)
    }

    fn ttft_ewma_us(&mut self, _: Resource<CandidatesData>) -> Vec<Option<u32>> {
        self.candidates
            .column(|c| c.ttft_ewma.map(saturating_micros))
    }

    fn latency_ewma_us(&mut self, _: Resource<CandidatesData>) -> Vec<Option<u32>> {
        self.candidates
            .column(|c| c.latency_ewma.map(saturating_micros))
    }

    fn kv_usage(&mut self, _: Resource<CandidatesData>) -> Vec<Option<f32>> {
        self.candidates.column(|c| {
            let capacity = c.kv_capacity.filter(|&n| n > 0)?;
            Some(c.kv_tokens? as f32 / capacity as f32)
        })
    }

    fn weights(&mut self, _: Resource<CandidatesData>) -> Vec<u32> {
        let known = &self.workers;
        self.candidates
            .column(|c| known.get(&c.id).map_or(1, |w| w.weight))
    }

    fn label(&mut self, _: Resource<CandidatesData>, key: String) -> Vec<Option<String>> {
        let known = &self.workers;
        self.candidates
            .column(|c| known.get(&c.id).and_then(|w| w.labels.get(&key)).cloned())
    }

    fn drop(&mut self, _: Resource<CandidatesData>) -> wasmtime::Result<()> {
        // Lent, never owned by the guest: nothing to free.
        Ok(())
    }
}

impl log::Host for Host {
    fn write(&mut self, level: log::Level, message: String, fields: Vec<(String, String)>) {
        let Some(suppressed) = lock(&self.policy.log).take(Instant::now()) else {
            metrics::counter!(crate::metrics::POLICY_LOG_SUPPRESSED, "policy" => self.policy.key.clone())
                .increment(1);
            return;
        };
        let message = clean(&message, MAX_LOG_FIELD);
        let mut fields: String = fields
            .iter()
            .take(16)
            .map(|(k, v)| format!(" {}={}", clean(k, 64), clean(v, MAX_LOG_FIELD)))
            .collect();
        if suppressed > 0 {
            fields.push_str(&format!(" suppressed_before={suppressed}"));
        }
        let policy = &self.policy.key;
        match level {
            log::Level::Debug => {
                tracing::debug!(target: "policy", policy = %policy, "{message}{fields}")
            }
            log::Level::Info => {
                tracing::info!(target: "policy", policy = %policy, "{message}{fields}")
            }
            log::Level::Warn => {
                tracing::warn!(target: "policy", policy = %policy, "{message}{fields}")
            }
            log::Level::Error => {
                tracing::error!(target: "policy", policy = %policy, "{message}{fields}")
            }
        }
    }
}

/// Metrics one policy may declare.
pub const MAX_METRICS: usize = 32;
/// Values one metric's label may take; later ones are recorded as `other`.
pub const MAX_LABEL_VALUES: usize = 64;
/// Prefix of every policy metric's name.
pub const METRIC_PREFIX: &str = "wasm_router_policy_";
/// Names the router's own metrics use under [`METRIC_PREFIX`].
const RESERVED: [&str; 4] = [
    "decision_seconds",
    "reloads_total",
    "faults_total",
    "log_lines_suppressed_total",
];

#[derive(Debug)]
struct Declared {
    name: String,
    kind: wit_metrics::Kind,
    label: Option<String>,
    values: HashMap<String, Handle>,
}

#[derive(Debug, Clone)]
enum Handle {
    Counter(metrics::Counter),
    Gauge(metrics::Gauge),
    Histogram(metrics::Histogram),
}

impl Handle {
    fn record(&self, value: f64) {
        match self {
            // A counter only grows: negative or non-finite values are dropped.
            Handle::Counter(c) if value.is_finite() && value >= 0.0 => c.increment(value as u64),
            Handle::Counter(_) => {}
            Handle::Gauge(g) => g.set(value),
            Handle::Histogram(h) => h.record(value),
        }
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Declared {
    /// The handle for `value` of the label, made on first use; past
    /// [`MAX_LABEL_VALUES`] values, the `other` one.
    fn handle(&mut self, policy: &str, value: &str) -> Handle {
        let value = match &self.label {
            None => "",
            Some(_) if self.values.contains_key(value) => value,
            Some(_) if self.values.len() < MAX_LABEL_VALUES => value,
            Some(_) => "other",
        };
        if let Some(handle) = self.values.get(value) {
            return handle.clone();
        }
        let name = format!("{METRIC_PREFIX}{}", self.name);
        let mut labels = vec![metrics::Label::new("policy", policy.to_string())];
        if let Some(key) = &self.label {
            labels.push(metrics::Label::new(key.clone(), clean(value, 128)));
        }
        let handle = match self.kind {
            wit_metrics::Kind::Counter => Handle::Counter(metrics::counter!(name, labels)),
            wit_metrics::Kind::Gauge => Handle::Gauge(metrics::gauge!(name, labels)),
            wit_metrics::Kind::Histogram => Handle::Histogram(metrics::histogram!(name, labels)),
        };
        self.values.insert(value.to_string(), handle.clone());
        handle
    }
}

impl wit_metrics::Host for Host {
    fn declare(
        &mut self,
        name: String,
        kind: wit_metrics::Kind,
        help: String,
        label: Option<String>,
    ) -> Result<u32, String> {
        if !valid_name(&name) || RESERVED.contains(&name.as_str()) {
            return Err(format!(
                "metric name {name:?}: use 1 to 64 lower-case letters, digits and `_`, starting with a letter, other than {}",
                RESERVED.join(", ")
            ));
        }
        if let Some(key) = &label
            && (!valid_name(key) || key == "policy")
        {
            return Err(format!(
                "label {key:?}: use 1 to 64 lower-case letters, digits and `_`, other than `policy`"
            ));
        }
        let mut declared = lock(&self.policy.metrics);
        if let Some(at) = declared.iter().position(|d| d.name == name) {
            let d = &declared[at];
            if d.kind != kind || d.label != label {
                return Err(format!(
                    "metric {name:?} is already declared as a {:?} with label {:?}",
                    d.kind, d.label
                ));
            }
            return Ok(at as u32);
        }
        if declared.len() >= MAX_METRICS {
            return Err(format!(
                "a policy may declare at most {MAX_METRICS} metrics"
            ));
        }
        let full = format!("{METRIC_PREFIX}{name}");
        let help = clean(&help, 256);
        match kind {
            wit_metrics::Kind::Counter => metrics::describe_counter!(full, help),
            wit_metrics::Kind::Gauge => metrics::describe_gauge!(full, help),
            wit_metrics::Kind::Histogram => metrics::describe_histogram!(full, help),
        }
        declared.push(Declared {
            name,
            kind,
            label,
            values: HashMap::new(),
        });
        Ok((declared.len() - 1) as u32)
    }

    fn record(&mut self, metric: u32, label_value: String, value: f64) {
        let cached = self.metrics.get(&metric);
        if let Some(handle) = cached.and_then(|m| m.get(label_value.as_str())) {
            return handle.record(value);
        }
        let handle = {
            let mut declared = lock(&self.policy.metrics);
            let Some(d) = declared.get_mut(metric as usize) else {
                return;
            };
            d.handle(&self.policy.key, &label_value)
        };
        handle.record(value);
        // Bounded like the registry: at most every declared value per metric.
        if self.cached_metrics < MAX_METRICS * (MAX_LABEL_VALUES + 1) {
            self.metrics
                .entry(metric)
                .or_default()
                .insert(label_value, handle);
            self.cached_metrics += 1;
        }
    }
}

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
    bytes: AtomicUsize,
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

impl prefix_index::Host for Host {
    fn match_request(
        &mut self,
        _: Resource<RequestData>,
        workers: Vec<u32>,
    ) -> prefix_index::PrefixMatch {
        let mut workers = workers;
        workers.sort_unstable();
        let text = &self.request.text;
        let found = self.policy.index.prefix_match(text, &workers);
        prefix_index::PrefixMatch {
            text_chars: text.chars().count() as u64,
            matched_chars: found.matched_chars,
            worker: found.tenant,
        }
    }

    fn insert_request(&mut self, _: Resource<RequestData>, worker: u32) {
        if !self.policy.index.insert(&self.request.text, worker) {
            metrics::counter!(crate::metrics::POLICY_INDEX_FULL, "policy" => self.policy.key.clone())
                .increment(1);
        }
    }

    fn sizes(&mut self, workers: Vec<u32>) -> Vec<u64> {
        self.policy.index.sizes(&workers)
    }

    fn evict(&mut self, max_chars: u64) {
        self.policy.index.evict(max_chars);
    }

    fn retain_workers(&mut self, workers: Vec<u32>) {
        self.policy.index.retain(&workers);
    }

    fn clear(&mut self) {
        self.policy.index.clear();
    }

    fn match_kv(&mut self, _: Resource<RequestData>, workers: Vec<u32>) -> prefix_index::KvPrefix {
        let kv = &self.policy.kv;
        let text = self.request.text.as_str();
        let (tokens, prompt_tokens) = match &self.request.tokens {
            Some(tokens) => (
                std::borrow::Cow::Borrowed(tokens.as_slice()),
                tokens.len() as u64,
            ),
            None => {
                let mut cut = text.len().min(MAX_KV_TOKENIZE_BYTES);
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                // With special tokens, as a worker tokenizes a /generate
                // prompt.
                let tokens = match &kv.tokenizer {
                    Some(tokenizer) if cut > 0 => {
                        tokenizer.encode(&text[..cut], true).unwrap_or_default()
                    }
                    _ => Vec::new(),
                };
                let count = if cut < text.len() && cut > 0 {
                    (tokens.len() as f64 * text.len() as f64 / cut as f64) as u64
                } else {
                    tokens.len() as u64
                };
                (std::borrow::Cow::Owned(tokens), count)
            }
        };
        let matches = match &kv.index {
            None => vec![None; workers.len()],
            Some(index) => {
                let found = index.matched(&tokens, &workers);
                workers
                    .iter()
                    .zip(found)
                    .map(|(&w, m)| {
                        index.follows(w).then_some(prefix_index::KvMatch {
                            gpu: m.gpu,
                            cpu: m.cpu,
                            disk: m.disk,
                        })
                    })
                    .collect()
            }
        };
        prefix_index::KvPrefix {
            prompt_tokens: u32::try_from(prompt_tokens).unwrap_or(u32::MAX),
            matches,
        }
    }
}

#[cfg(test)]
mod tests;
