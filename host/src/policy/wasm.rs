//! [`WasmPolicy`]: a policy component behind the [`Policy`] seam.
//!
//! One instance serves all requests, behind a mutex (calls take well under a
//! microsecond to a few; state such as cache_aware's tree is shared anyway).
//! Every call gets a deadline. A trap poisons the instance's store: it is
//! dropped, the request is answered by [`LeastLoad`], and a fresh instance is
//! built on a background thread from the pre-linked component, after a
//! back-off that doubles with each consecutive fault.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use wasmtime::component::Linker;

use super::engine::{Limits, PolicyEngine, sha256_hex};
use super::imports::{PolicyHost, policy_key};
use super::instance::{Live, Pre, cap_message, classify};
use super::sandbox::{self, StoreState};
use super::source::{PolicySource, check_header};
use super::{
    Candidate, Decision, LeastLoad, LoadError, Outcome, Policy, PolicyFault, PolicyInfo,
    RouteRequest, SelectError, WorkerInfo,
};

/// Wait before rebuilding after the second consecutive fault; doubles with
/// each further one, up to [`RESTART_BACKOFF_MAX`]. The first rebuild is
/// immediate.
pub const RESTART_BACKOFF_START: Duration = Duration::from_millis(10);
/// The longest wait between rebuilds of a policy that keeps faulting.
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A policy's messages (refusals, trap reports) reach clients and logs; past
/// this many bytes they are cut (a guest may return megabytes).
pub const MAX_POLICY_MESSAGE: usize = 1024;

/// A policy component, loaded, checked and running. See the module docs.
pub struct WasmPolicy {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WasmPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmPolicy")
            .field("source", &self.shared.source)
            .field("info", &self.shared.info)
            .finish()
    }
}

struct Shared {
    engine: PolicyEngine,
    pre: Pre,
    host: Arc<PolicyHost>,
    source: PolicySource,
    sha256: String,
    config: String,
    limits: Limits,
    info: PolicyInfo,
    slot: Mutex<Slot>,
    fallback: LeastLoad,
    faults: AtomicU64,
    last_fault: Mutex<Option<String>>,
    ticks: AtomicU64,
}

/// The running instance and what a rebuilt one must be told.
struct Slot {
    /// `None` after a fault, until the rebuild installs a fresh instance.
    live: Option<Live>,
    workers: Vec<WorkerInfo>,
    consecutive_faults: u32,
}

impl WasmPolicy {
    /// Load a policy: read, compile (or fetch from the cache), check it
    /// against the contract, instantiate it in the sandbox and `init` it with
    /// `config` (a JSON object). Any failure says what to fix.
    pub fn load(
        engine: &PolicyEngine,
        source: PolicySource,
        config: &str,
        limits: Limits,
    ) -> Result<Self, LoadError> {
        let bytes = source.read()?;
        Self::from_bytes(engine, source, &bytes, config, limits)
    }

    /// [`WasmPolicy::load`] with the component's bytes already read from
    /// `source` (a reload reads them once, to compare and to load).
    pub fn from_bytes(
        engine: &PolicyEngine,
        source: PolicySource,
        bytes: &[u8],
        config: &str,
        limits: Limits,
    ) -> Result<Self, LoadError> {
        let name = source.label();
        check_header(bytes, &name)?;
        let component = engine.compile(bytes).map_err(|e| LoadError::Compile {
            name: name.clone(),
            reason: format!("{e:#}"),
        })?;
        let mut linker = Linker::<StoreState>::new(engine.engine());
        sandbox::add_to_linker(&mut linker).expect("the sandbox's interfaces link once");
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Imports {
                name: name.clone(),
                reason: format!("{e:#}"),
            })?;
        let host = engine.host(&policy_key(&source));
        let pre = Pre::new(engine, &component, pre, &host, &name, limits)?;
        let (live, info) = Live::start(&pre, engine, &host, &name, config, limits)?;
        tracing::info!(policy = %info.name, source = %name, contract = pre.version(), "policy loaded");
        Ok(WasmPolicy {
            shared: Arc::new(Shared {
                engine: engine.clone(),
                pre,
                host,
                sha256: sha256_hex(bytes),
                source,
                config: config.to_string(),
                limits,
                info,
                slot: Mutex::new(Slot {
                    live: Some(live),
                    workers: Vec::new(),
                    consecutive_faults: 0,
                }),
                fallback: LeastLoad::default(),
                faults: AtomicU64::new(0),
                last_fault: Mutex::new(None),
                ticks: AtomicU64::new(0),
            }),
        })
    }

    /// Where it was loaded from.
    pub fn source(&self) -> &PolicySource {
        &self.shared.source
    }

    /// The contract version the component speaks.
    pub fn contract(&self) -> &'static str {
        self.shared.pre.version()
    }

    /// The key-value store the host keeps for it (contract 0.2's `state`).
    pub fn state(&self) -> &super::imports::Store {
        self.shared.host.state()
    }

    /// Hex sha256 of the component's bytes.
    pub fn sha256(&self) -> &str {
        &self.shared.sha256
    }

    /// Faults so far: traps, deadlines, memory limits, bad picks.
    pub fn faults(&self) -> u64 {
        self.shared.faults.load(Ordering::Relaxed)
    }

    /// `tick` calls that returned, over every instance of this policy.
    pub fn ticks(&self) -> u64 {
        self.shared.ticks.load(Ordering::Relaxed)
    }

    /// The latest fault, as logged; `None` if there was none.
    pub fn last_fault(&self) -> Option<String> {
        self.shared
            .last_fault
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Linear memory of the running instance in bytes (0 while restarting).
    pub fn memory_bytes(&self) -> usize {
        self.shared
            .lock()
            .live
            .as_ref()
            .map_or(0, |live| live.store.data().limits.current)
    }

    /// Whether an instance is running (false while rebuilding after a fault).
    pub fn is_running(&self) -> bool {
        self.shared.lock().live.is_some()
    }

    /// The policy's state, to hand to its successor on a hot reload.
    pub fn snapshot(&self) -> Result<Vec<u8>, PolicyFault> {
        let mut slot = self.shared.lock();
        let limits = self.shared.limits;
        self.shared
            .call(&mut slot, limits.maintenance_deadline, Live::snapshot)
    }

    /// Take over state from [`WasmPolicy::snapshot`]. `Err` carries the
    /// policy's refusal or the fault; the instance keeps its fresh state.
    pub fn restore(&self, state: &[u8]) -> Result<(), String> {
        let mut slot = self.shared.lock();
        let limits = self.shared.limits;
        self.shared
            .call(&mut slot, limits.maintenance_deadline, |live| {
                live.restore(state)
            })
            .unwrap_or_else(|fault| Err(fault.to_string()))
            .map_err(cap_message)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        // A panic while holding the lock cannot leave the slot inconsistent:
        // at worst the instance is dropped and rebuilt.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `f` on the live instance under `deadline`. On a trap, drop the
    /// instance, record the fault and schedule a rebuild.
    fn call<R>(
        self: &Arc<Self>,
        slot: &mut Slot,
        deadline: Duration,
        f: impl FnOnce(&mut Live) -> wasmtime::Result<R>,
    ) -> Result<R, PolicyFault> {
        let live = slot.live.as_mut().ok_or(PolicyFault::PolicyRestarting)?;
        live.store.set_epoch_deadline(Limits::ticks(deadline));
        f(live).map_err(|error| {
            let fault = classify(&error);
            slot.live = None;
            slot.consecutive_faults += 1;
            self.record_fault(&fault);
            self.schedule_restart(backoff(slot.consecutive_faults));
            fault
        })
    }

    /// Note a call that did not run or did not finish. Faults were already
    /// counted and logged by [`Shared::call`]; this records the skip.
    fn skipped(&self, what: &str, result: Result<(), PolicyFault>) {
        if let Err(fault) = result {
            tracing::debug!(policy = %self.info.name, "{what} skipped: {fault}");
        }
    }

    fn record_fault(&self, fault: &PolicyFault) {
        let total = self.faults.fetch_add(1, Ordering::Relaxed) + 1;
        *self.last_fault.lock().unwrap_or_else(|e| e.into_inner()) = Some(fault.to_string());
        metrics::counter!(crate::metrics::POLICY_FAULTS, "policy" => self.info.name.clone(), "kind" => fault.kind())
            .increment(1);
        tracing::warn!(policy = %self.info.name, faults = total, "{fault}; answering with the least-load fallback");
    }

    /// Rebuild the instance on a background thread after `delay`, retrying
    /// with back-off until it starts or the policy is dropped.
    fn schedule_restart(self: &Arc<Self>, mut delay: Duration) {
        let weak: Weak<Shared> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("policy-restart".into())
            .spawn(move || {
                let mut attempt = 1;
                loop {
                    std::thread::sleep(delay);
                    let Some(shared) = weak.upgrade() else { return };
                    match shared.restart() {
                        Ok(()) => return,
                        Err(e) => {
                            tracing::warn!(policy = %shared.info.name, "policy restart failed: {e}");
                            attempt += 1;
                            delay = backoff(attempt).max(RESTART_BACKOFF_START);
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(policy = %self.info.name, "cannot spawn the policy restart thread: {e}");
        }
    }

    /// Start a fresh instance and install it, told the current workers.
    fn restart(self: &Arc<Self>) -> Result<(), LoadError> {
        let name = self.source.label();
        let (mut live, _) = Live::start(
            &self.pre,
            &self.engine,
            &self.host,
            &name,
            &self.config,
            self.limits,
        )?;
        let mut slot = self.lock();
        live.store
            .set_epoch_deadline(Limits::ticks(self.limits.maintenance_deadline));
        live.workers_changed(&slot.workers)
            .map_err(|e| LoadError::StartFault {
                name,
                fault: classify(&e),
            })?;
        slot.live = Some(live);
        tracing::info!(policy = %self.info.name, "policy instance restarted");
        Ok(())
    }

    fn fallback(
        &self,
        candidates: &[Candidate],
        fault: PolicyFault,
    ) -> Result<Decision, SelectError> {
        let worker = self
            .fallback
            .pick(candidates)
            .ok_or(SelectError::NoCandidates)?;
        Ok(Decision {
            worker,
            fallback: Some(fault),
        })
    }
}

/// Delay before rebuild number `faults` in a row: 0, then doubling from
/// [`RESTART_BACKOFF_START`] up to [`RESTART_BACKOFF_MAX`].
fn backoff(faults: u32) -> Duration {
    if faults <= 1 {
        return Duration::ZERO;
    }
    RESTART_BACKOFF_START
        .saturating_mul(1u32 << (faults - 2).min(16))
        .min(RESTART_BACKOFF_MAX)
}

impl Policy for WasmPolicy {
    fn info(&self) -> &PolicyInfo {
        &self.shared.info
    }

    fn workers_changed(&self, workers: &[WorkerInfo]) {
        let mut slot = self.shared.lock();
        slot.workers = workers.to_vec();
        let deadline = self.shared.limits.maintenance_deadline;
        let result = self
            .shared
            .call(&mut slot, deadline, |live| live.workers_changed(workers));
        // A restarting instance is told the stored list when it starts.
        self.shared.skipped("workers-changed", result);
    }

    fn select(
        &self,
        req: &RouteRequest<'_>,
        candidates: &[Candidate],
    ) -> Result<Decision, SelectError> {
        if candidates.is_empty() {
            return Err(SelectError::NoCandidates);
        }
        let shared = &self.shared;
        let mut slot = shared.lock();
        let answer = shared.call(&mut slot, shared.limits.call_deadline, |live| {
            live.select(req, candidates)
        });
        match answer {
            Ok(Ok(id)) if candidates.iter().any(|c| c.id == id) => {
                slot.consecutive_faults = 0;
                Ok(Decision {
                    worker: id,
                    fallback: None,
                })
            }
            Ok(Ok(id)) => {
                drop(slot);
                let fault = PolicyFault::NotACandidate(id);
                shared.record_fault(&fault);
                shared.fallback(candidates, fault)
            }
            Ok(Err(message)) => Err(SelectError::Declined(cap_message(message))),
            Err(fault) => shared.fallback(candidates, fault),
        }
    }

    fn on_complete(&self, outcome: &Outcome) {
        let mut slot = self.shared.lock();
        let deadline = self.shared.limits.call_deadline;
        let result = self
            .shared
            .call(&mut slot, deadline, |live| live.on_complete(outcome));
        self.shared.skipped("on-complete", result);
    }

    fn tick(&self, now_ms: u64) {
        let mut slot = self.shared.lock();
        let deadline = self.shared.limits.tick_deadline;
        let result = self
            .shared
            .call(&mut slot, deadline, |live| live.tick(now_ms));
        if result.is_ok() {
            self.shared.ticks.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.skipped("tick", result);
    }
}
