//! Hot reload, as build, check, swap: a new component (or new config) is
//! compiled, instantiated and `init`ed off the request path, takes over the
//! old instance's state through `snapshot`/`restore`, learns the workers, and
//! only then replaces the old one behind the seam in one atomic store.
//! Requests already holding the old instance finish on it. Any failure keeps
//! the old policy serving and is recorded for `GET /policies`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::Serialize;

use super::{Instances, Policy, PolicyEngine, PolicySource, Seam, WasmPolicy, WorkerInfo};
use crate::config::{Config, Limits, PolicySlot};

/// How long events on a file written in place must stop before a reload
/// starts: `cp` writes in several steps, and a half-written file must not
/// be loaded. A file renamed into place is reloaded at once (see `watch`).
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// What to load: the policy spec (name or path) and its JSON config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Built-in name or path.
    pub policy: String,
    /// JSON object for `init`.
    pub config: String,
}

/// Where the wanted policy comes from: fixed at start, or re-read from the
/// router's config file on each reload.
pub type WantedSource = Box<dyn Fn() -> Result<Wanted, String> + Send + Sync>;

/// Where reloads find the policy in `slot`: the config file again when
/// there is one (so a changed `[policy]` table re-inits the policy),
/// else the settings of this run.
pub fn wanted_source(config: &Config, slot: PolicySlot) -> WantedSource {
    let fixed = Wanted {
        policy: config.policy_of(slot).to_string(),
        config: config.policy_config.clone(),
    };
    match config.reload_from.clone() {
        None => Box::new(move || Ok(fixed.clone())),
        Some(args) => Box::new(move || {
            let config = Config::load(&args).map_err(|e| e.to_string())?;
            Ok(Wanted {
                policy: config.policy_of(slot).to_string(),
                config: config.policy_config,
            })
        }),
    }
}

/// The files a running router watches for the policy in `slot`: its file
/// (if the policy is a path) and the config file.
pub fn watched_files(config: &Config, slot: PolicySlot) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Ok(PolicySource::File(path)) = PolicySource::parse(config.policy_of(slot)) {
        files.push(path);
    }
    if let Some(path) = config.reload_from.as_ref().and_then(|a| a.config.clone()) {
        files.push(path);
    }
    files
}

/// The worker list: calls its argument with it, holding the registry's
/// change notifications back meanwhile (`Registry::with_infos`).
pub type WorkersSource = Box<dyn Fn(&mut dyn FnMut(&[WorkerInfo])) + Send + Sync>;

/// `GET /policies`: what is loaded and how reloads went.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyStatus {
    /// Name the policy declared.
    pub name: String,
    /// `builtin:NAME` or the file path.
    pub source: String,
    /// sha256 of the component.
    pub sha256: String,
    /// The contract version it speaks (`0.2.0`, `0.1.0`).
    pub contract: &'static str,
    /// `per-thread` or `shared`.
    pub instances: &'static str,
    /// When the current instance was loaded (seconds since the Unix epoch).
    pub loaded_at: u64,
    /// Successful reloads since start.
    pub reload_count: u64,
    /// The last failed reload's reason, cleared by the next success.
    pub last_error: Option<String>,
    /// Faults of the current policy (they survive its instance restarts).
    pub faults: u64,
    /// The latest of those faults, as logged.
    pub last_fault: Option<String>,
    /// `tick` calls the current policy completed (0 if it asks for none):
    /// its housekeeping, such as cache_aware's eviction, is running.
    pub ticks: u64,
}

/// The outcome of one reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// A new instance is serving.
    Swapped,
    /// Same component and config: nothing to do.
    Unchanged,
}

/// Owns the active policy and reloads it. See the module docs.
pub struct PolicyManager {
    engine: PolicyEngine,
    limits: Limits,
    wanted: WantedSource,
    workers: WorkersSource,
    /// The seam the data plane reads.
    active: Seam,
    /// Held for a whole reload: the file watcher's and `POST
    /// /policies/reload`'s run one after the other, never interleaved.
    reloading: Mutex<()>,
    state: Mutex<State>,
}

struct State {
    current: Arc<WasmPolicy>,
    wanted: Wanted,
    /// What [`PolicyManager::promote`] made live: reloads load it instead
    /// of what `wanted` says, until the router restarts.
    promoted: Option<Wanted>,
    loaded_at: u64,
    reload_count: u64,
    last_error: Option<String>,
}

impl std::fmt::Debug for PolicyManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyManager")
            .field("status", &self.status())
            .finish()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Load the wanted policy; a policy that matches KV pages only where the
/// router can match them. Errors as text: they go to logs, metrics and
/// `GET /policies`.
fn load(engine: &PolicyEngine, wanted: &Wanted, limits: Limits) -> Result<WasmPolicy, String> {
    let source = PolicySource::parse(&wanted.policy).map_err(|e| e.to_string())?;
    let policy =
        WasmPolicy::load(engine, source, &wanted.config, limits).map_err(|e| e.to_string())?;
    let info = policy.info();
    if info.reads.kv_matches {
        engine
            .kv()
            .check_matchable(&info.name)
            .map_err(|e| e.to_string())?;
    }
    Ok(policy)
}

impl PolicyManager {
    /// Load the first policy; an error here stops the router from starting.
    pub fn start(
        engine: PolicyEngine,
        limits: Limits,
        wanted: WantedSource,
        workers: WorkersSource,
    ) -> anyhow::Result<Self> {
        let first = wanted().map_err(anyhow::Error::msg)?;
        let current = Arc::new(load(&engine, &first, limits).map_err(anyhow::Error::msg)?);
        let boxed: Box<dyn Policy> = Box::new(current.clone());
        let active = Arc::new(ArcSwap::from_pointee(boxed));
        // Later changes reach the seam through the registry's listener.
        workers(&mut |list| current.workers_changed(list));
        Ok(PolicyManager {
            engine,
            limits,
            wanted,
            workers,
            active,
            reloading: Mutex::new(()),
            state: Mutex::new(State {
                current,
                wanted: first,
                promoted: None,
                loaded_at: now_secs(),
                reload_count: 0,
                last_error: None,
            }),
        })
    }

    /// The policy loaded now.
    pub fn current(&self) -> Arc<WasmPolicy> {
        self.lock().current.clone()
    }

    /// The seam the data plane reads.
    pub fn active(&self) -> Seam {
        self.active.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reload. Blocking (compiles, and waits for a reload under way):
    /// call it off the async workers. `force` reloads even an unchanged
    /// component and config.
    pub fn reload(&self, force: bool) -> Result<Reloaded, String> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.try_reload(force);
        self.reloaded(result)
    }

    /// Make `wanted` (a shadow's policy) the one this manager serves, by
    /// the same build, check and swap as a reload; a failure keeps the old
    /// one. Later reloads load it again, until the router restarts (put it
    /// in the config to keep it).
    pub fn promote(&self, wanted: Wanted) -> Result<Reloaded, String> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let before = self.lock().promoted.replace(wanted);
        let result = self.try_reload(true);
        if result.is_err() {
            self.lock().promoted = before;
        }
        self.reloaded(result)
    }

    /// Count, log and keep the outcome of a reload.
    fn reloaded(&self, result: Result<Reloaded, String>) -> Result<Reloaded, String> {
        let mut state = self.lock();
        match &result {
            Ok(Reloaded::Swapped) => {
                state.last_error = None;
                metrics::counter!(crate::metrics::POLICY_RELOADS, "result" => "swapped")
                    .increment(1);
            }
            // The file is back to what is serving: the error is over.
            Ok(Reloaded::Unchanged) => state.last_error = None,
            Err(e) => {
                tracing::error!(policy = %state.wanted.policy, "policy reload failed, the old policy keeps serving: {e}");
                state.last_error = Some(e.clone());
                metrics::counter!(crate::metrics::POLICY_RELOADS, "result" => "error").increment(1);
            }
        }
        result
    }

    fn try_reload(&self, force: bool) -> Result<Reloaded, String> {
        let promoted = self.lock().promoted.clone();
        let wanted = match promoted {
            Some(wanted) => wanted,
            None => (self.wanted)()?,
        };
        let source = PolicySource::parse(&wanted.policy).map_err(|e| e.to_string())?;
        let bytes = source.read().map_err(|e| e.to_string())?;
        {
            let state = self.lock();
            let same_bytes = super::engine::sha256_hex(&bytes) == state.current.sha256();
            if !force && same_bytes && wanted == state.wanted {
                return Ok(Reloaded::Unchanged);
            }
        }
        let next =
            WasmPolicy::from_bytes(&self.engine, source, &bytes, &wanted.config, self.limits);
        let next = Arc::new(next.map_err(|e| e.to_string())?);
        let old = self.lock().current.clone();
        // From the snapshot to the swap as little as can be: the state the
        // old instance learns meanwhile (from requests it routes) is lost.
        // Outcomes reported after the swap go to the new one (`Loaded`).
        // Private state goes from shared instance to shared instance;
        // per-thread policies keep theirs in the host, which stays.
        if next.info().instances == Instances::Shared {
            match old.snapshot() {
                Ok(Some(state)) => {
                    if let Err(e) = next.restore(&state) {
                        tracing::warn!(policy = %next.info().name, "the new policy did not take the old state, starting fresh: {e}");
                    }
                }
                Ok(None) => {}
                Err(fault) => {
                    tracing::warn!(
                        "no state carried over: the old policy faulted in snapshot: {fault}"
                    )
                }
            }
        }
        // The workers and the swap together, notifications held back: a
        // change after this reaches the new instance through the seam, and
        // none before it can overtake.
        (self.workers)(&mut |list| {
            next.workers_changed(list);
            let boxed: Box<dyn Policy> = Box::new(next.clone());
            self.active.store(Arc::new(boxed));
        });
        let mut state = self.lock();
        state.current = next;
        state.wanted = wanted;
        state.loaded_at = now_secs();
        state.reload_count += 1;
        tracing::info!(policy = %state.current.info().name, sha256 = %state.current.sha256(), "policy reloaded");
        Ok(Reloaded::Swapped)
    }

    /// What is loaded and how reloads went.
    pub fn status(&self) -> PolicyStatus {
        let state = self.lock();
        PolicyStatus {
            name: state.current.info().name.clone(),
            source: match state.current.source() {
                PolicySource::Builtin(name) => format!("builtin:{name}"),
                PolicySource::File(path) => path.display().to_string(),
            },
            sha256: state.current.sha256().to_string(),
            contract: state.current.contract(),
            instances: state.current.info().instances.label(),
            loaded_at: state.loaded_at,
            reload_count: state.reload_count,
            last_error: state.last_error.clone(),
            faults: state.current.faults(),
            last_fault: state.current.last_fault(),
            ticks: state.current.ticks(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// Issue 15: the file watcher's reload and `POST /policies/reload` could
    /// run at once, each snapshotting the old instance and swapping in its
    /// own. The first reload here waits inside (reading what to load) for up
    /// to a second for another to join it; serialised, none can.
    #[test]
    fn two_reloads_never_run_at_once() {
        let calls = Arc::new(AtomicUsize::new(0));
        let inside = Arc::new(AtomicUsize::new(0));
        let overlapped = Arc::new(AtomicBool::new(false));
        let wanted: WantedSource = Box::new({
            let overlapped = overlapped.clone();
            move || {
                // Call 0 is the start's; 1 and 2 are the reloads'.
                let call = calls.fetch_add(1, Ordering::SeqCst);
                if call > 0 {
                    if inside.fetch_add(1, Ordering::SeqCst) > 0 {
                        overlapped.store(true, Ordering::SeqCst);
                    }
                    let until = std::time::Instant::now() + Duration::from_secs(1);
                    while call == 1
                        && !overlapped.load(Ordering::SeqCst)
                        && std::time::Instant::now() < until
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    inside.fetch_sub(1, Ordering::SeqCst);
                }
                Ok(Wanted {
                    policy: "round_robin".into(),
                    config: "{}".into(),
                })
            }
        });
        let manager = Arc::new(
            PolicyManager::start(
                PolicyEngine::new(None).unwrap(),
                Limits::default(),
                wanted,
                Box::new(|f: &mut dyn FnMut(&[WorkerInfo])| f(&[])),
            )
            .unwrap(),
        );
        let reloads: Vec<_> = (0..2)
            .map(|_| {
                let manager = manager.clone();
                std::thread::spawn(move || manager.reload(true))
            })
            .collect();
        for reload in reloads {
            assert_eq!(reload.join().unwrap(), Ok(Reloaded::Swapped));
        }
        assert!(
            !overlapped.load(Ordering::SeqCst),
            "two reloads ran at once"
        );
        assert_eq!(manager.status().reload_count, 2);
    }
}
