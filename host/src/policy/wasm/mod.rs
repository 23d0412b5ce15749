//! [`WasmPolicy`]: a policy component behind the [`Policy`] seam.
//!
//! Instances live in slots, each behind its own mutex. A policy that keeps
//! private state ([`Instances::Shared`], and every 0.1 policy) has one slot:
//! its calls run one at a time. One that keeps none ([`Instances::PerThread`])
//! has one slot per core: a serving thread starts at its own slot and takes
//! the first free one, so no call waits while a slot is free, whatever the
//! core count.
//!
//! Maintenance (`tick`, `workers-changed`, a reload's `snapshot` and
//! `restore`) never holds a serving thread: while it has the slot, `select` answers [`SelectError::Busy`] and the proxy
//! awaits [`Policy::until_ready`] (the thread serves its other connections
//! meanwhile), and `on-complete` leaves its outcome in a bounded queue that
//! the maintenance call hands over before it lets go. A serving thread waits
//! on the lock only behind another request's call, which takes microseconds.
//!
//! Every call gets a deadline. A trap poisons its instance's store: it is
//! dropped, the request is answered by [`LeastLoad`], and a fresh instance is
//! built on a background thread from the pre-linked component, after a
//! back-off that doubles with each consecutive fault of that slot; it is
//! started and told the workers outside the slot's lock, which it takes
//! only to be put in. What the policy keeps in the host (`state`,
//! `prefix-index`) is untouched by all of this. A shared instance's private
//! state comes back too: [`Policy::checkpoint`] (every
//! [`CHECKPOINT_INTERVAL`], from the router's maintenance task, as
//! maintenance) keeps its last `snapshot`, and the instance rebuilt after a
//! fault is `restore`d from it, unless that instance faulted again before
//! one request succeeded: then the checkpoint is suspect and it starts
//! fresh.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use wasmtime::component::Linker;

use super::engine::{PolicyEngine, sha256_hex};
use super::imports::{PolicyHost, policy_key};
use super::instance::{Live, Pre, cap_message, classify};

mod restart;

use super::sandbox::{self, StoreState};
use super::source::{PolicySource, check_header};
use super::{
    Candidate, Decision, Instances, LeastLoad, LoadError, Outcome, Policy, PolicyFault, PolicyInfo,
    RouteRequest, SelectError, WorkerInfo,
};
use crate::config::Limits;
use restart::backoff;

/// How often the router checkpoints a shared instance that was called since
/// its last checkpoint ([`Policy::checkpoint`]): at most this much of its
/// private state is lost to a fault.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

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
    /// One for a shared policy, one per core for a per-thread one.
    slots: Box<[Cell]>,
    /// Woken when a maintenance call lets go of its slot.
    freed: tokio::sync::Notify,
    /// Outcomes that came while every slot was busy with maintenance.
    deferred: Mutex<VecDeque<Outcome>>,
    /// `deferred.len()`, read without its lock.
    deferred_len: AtomicUsize,
    /// The worker list a rebuilt instance is told. Locked before a slot
    /// when both are.
    workers: Mutex<Vec<WorkerInfo>>,
    fallback: LeastLoad,
    faults: AtomicU64,
    last_fault: Mutex<Option<String>>,
    ticks: AtomicU64,
    /// A shared instance's last `snapshot` ([`Policy::checkpoint`]), for the
    /// instance rebuilt after a fault.
    checkpoint: Mutex<Option<Vec<u8>>>,
    /// Whether a shared instance was called since its last checkpoint.
    dirty: AtomicBool,
}

/// A slot, and whether a maintenance call has it (or waits for it). Each
/// on its own cache lines: two threads locking neighbouring slots must not
/// contend for one line.
#[repr(align(128))]
struct Cell {
    slot: Mutex<Slot>,
    maintaining: AtomicBool,
}

impl Cell {
    fn new(live: Live) -> Cell {
        Cell {
            slot: Mutex::new(Slot {
                live: Some(live),
                consecutive_faults: 0,
            }),
            maintaining: AtomicBool::new(false),
        }
    }
}

/// Outcomes held for a policy busy with maintenance, at most: past this,
/// outcomes are dropped (and counted) rather than held without bound.
pub const MAX_DEFERRED_OUTCOMES: usize = 4096;

/// One instance, and how its calls have been going.
struct Slot {
    /// `None` after a fault, until the rebuild installs a fresh instance.
    live: Option<Live>,
    consecutive_faults: u32,
}

/// How many slots a per-thread policy gets: one per core the router runs
/// serving threads on (one per core), and at least two, so that a call
/// never waits behind another while the router also serves from elsewhere
/// (tests, background tasks).
fn per_thread_slots() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .max(2)
}

/// Each thread's first slot to try: threads numbered as they first route.
fn home_slot(slots: usize) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static THREAD: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    THREAD.with(|n| *n) % slots
}

fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    // A panic while holding the lock cannot leave the slot inconsistent: at
    // worst the instance is dropped and rebuilt.
    slot.lock().unwrap_or_else(|e| e.into_inner())
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
        let (first, info) = Live::start(&pre, engine, &host, &name, config, limits)?;
        let count = match info.instances {
            Instances::Shared => 1,
            Instances::PerThread => limits.instances.unwrap_or_else(per_thread_slots),
        };
        let mut slots = vec![Cell::new(first)];
        for _ in 1..count {
            let (live, _) = Live::start(&pre, engine, &host, &name, config, limits)?;
            slots.push(Cell::new(live));
        }
        tracing::info!(policy = %info.name, source = %name, contract = pre.version(), instances = count, "policy loaded");
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
                slots: slots.into_boxed_slice(),
                freed: tokio::sync::Notify::new(),
                deferred: Mutex::new(VecDeque::new()),
                deferred_len: AtomicUsize::new(0),
                workers: Mutex::new(Vec::new()),
                fallback: LeastLoad::default(),
                faults: AtomicU64::new(0),
                last_fault: Mutex::new(None),
                ticks: AtomicU64::new(0),
                checkpoint: Mutex::new(None),
                dirty: AtomicBool::new(false),
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

    /// The prefix index the host keeps for it (`prefix-index`).
    pub fn index(&self) -> &crate::index::Approximate {
        self.shared.host.index()
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

    /// Linear memory of the running instances in bytes (0 while restarting).
    pub fn memory_bytes(&self) -> usize {
        self.shared
            .slots
            .iter()
            .filter_map(|cell| Some(lock(&cell.slot).live.as_ref()?.store.data().limits.current))
            .sum()
    }

    /// Whether every instance is running (false while one is rebuilt after
    /// a fault).
    pub fn is_running(&self) -> bool {
        self.shared
            .slots
            .iter()
            .all(|cell| lock(&cell.slot).live.is_some())
    }

    /// How many instances it runs: 1, or one per core for a per-thread
    /// policy.
    pub fn instances(&self) -> usize {
        self.shared.slots.len()
    }

    /// The policy's private state, to hand to its successor on a hot
    /// reload: a shared instance's `snapshot`; nothing for a per-thread
    /// policy, which keeps none.
    pub fn snapshot(&self) -> Result<Option<Vec<u8>>, PolicyFault> {
        if self.shared.info.instances == Instances::PerThread {
            return Ok(None);
        }
        let shared = &self.shared;
        let deadline = shared.limits.maintenance_deadline;
        shared.maintain(0, deadline, Live::snapshot).map(Some)
    }

    /// Take over state from [`WasmPolicy::snapshot`]. `Err` carries the
    /// policy's refusal or the fault; the instance keeps its fresh state.
    pub fn restore(&self, state: &[u8]) -> Result<(), String> {
        let shared = &self.shared;
        let deadline = shared.limits.maintenance_deadline;
        shared
            .maintain(0, deadline, |live| live.restore(state))
            .unwrap_or_else(|fault| Err(fault.to_string()))
            .map_err(cap_message)
    }
}

impl Shared {
    /// Run maintenance call `f` on slot `at`'s instance under `deadline`
    /// (never from a serving thread), then hand it the outcomes deferred
    /// meanwhile, and wake the requests that waited.
    fn maintain<R>(
        self: &Arc<Self>,
        at: usize,
        deadline: Duration,
        f: impl FnOnce(&mut Live) -> wasmtime::Result<R>,
    ) -> Result<R, PolicyFault> {
        let cell = &self.slots[at];
        cell.maintaining.store(true, Ordering::SeqCst);
        let mut slot = lock(&cell.slot);
        let result = self.call_locked(at, &mut slot, deadline, f);
        self.drain_deferred(at, &mut slot);
        cell.maintaining.store(false, Ordering::SeqCst);
        drop(slot);
        self.freed.notify_waiters();
        result
    }

    /// Hand the deferred outcomes to slot `at`'s instance (locked).
    fn drain_deferred(self: &Arc<Self>, at: usize, slot: &mut Slot) {
        if self.deferred_len.load(Ordering::SeqCst) == 0 {
            return;
        }
        let outcomes: Vec<Outcome> = {
            let mut deferred = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
            self.deferred_len.store(0, Ordering::SeqCst);
            deferred.drain(..).collect()
        };
        for outcome in &outcomes {
            let result = self.call_locked(at, slot, self.limits.call_deadline, |live| {
                live.on_complete(outcome)
            });
            self.skipped("on-complete", result);
        }
    }

    /// Keep `outcome` for the instance busy with maintenance.
    fn defer(&self, outcome: &Outcome) {
        let mut deferred = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
        if deferred.len() >= MAX_DEFERRED_OUTCOMES {
            metrics::counter!(crate::metrics::POLICY_OUTCOMES_DROPPED, "policy" => self.info.name.clone())
                .increment(1);
            return;
        }
        deferred.push_back(outcome.clone());
        self.deferred_len.store(deferred.len(), Ordering::SeqCst);
    }

    /// Run `f` on the instance of `slot` (number `at`, locked) under
    /// `deadline`. On a trap, drop the instance, record the fault and
    /// schedule its rebuild.
    fn call_locked<R>(
        self: &Arc<Self>,
        at: usize,
        slot: &mut Slot,
        deadline: Duration,
        f: impl FnOnce(&mut Live) -> wasmtime::Result<R>,
    ) -> Result<R, PolicyFault> {
        let live = slot.live.as_mut().ok_or(PolicyFault::PolicyRestarting)?;
        if self.info.instances == Instances::Shared {
            // Under the one slot's lock already: no contention of its own.
            self.dirty.store(true, Ordering::Relaxed);
        }
        let _awake = self.engine.arm(&mut live.store, deadline);
        f(live).map_err(|error| {
            let fault = classify(&error);
            slot.live = None;
            slot.consecutive_faults += 1;
            self.record_fault(&fault);
            self.schedule_restart(at, backoff(slot.consecutive_faults));
            fault
        })
    }

    /// The slot a serving thread calls into, locked: its own if free, else
    /// the next free one; if all are taken, the first that another request
    /// (not maintenance) has, once that request's call is done; `None` if
    /// maintenance has them all.
    fn serving_slot(&self) -> Option<(usize, MutexGuard<'_, Slot>)> {
        let n = self.slots.len();
        let home = if n == 1 { 0 } else { home_slot(n) };
        let order = || (home..n).chain(0..home);
        for at in order() {
            match self.slots[at].slot.try_lock() {
                Ok(guard) => return Some((at, guard)),
                Err(TryLockError::Poisoned(e)) => return Some((at, e.into_inner())),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        // Maintenance that starts between this check and the lock is waited
        // for: rare, and bounded by its deadline.
        let at = order().find(|&at| !self.slots[at].maintaining.load(Ordering::SeqCst))?;
        Some((at, lock(&self.slots[at].slot)))
    }

    /// Whether some slot is free of maintenance.
    fn ready(&self) -> bool {
        self.slots
            .iter()
            .any(|cell| !cell.maintaining.load(Ordering::SeqCst))
    }

    /// Note a call that did not run or did not finish. Faults were already
    /// counted and logged by [`Shared::call_locked`]; this records the skip.
    fn skipped(&self, what: &str, result: Result<(), PolicyFault>) {
        if let Err(fault) = result {
            tracing::debug!(policy = %self.info.name, "{what} skipped: {fault}");
        }
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
            cached_tokens: None,
        })
    }
}

impl Policy for WasmPolicy {
    fn component_sha256(&self) -> Option<&str> {
        Some(&self.shared.sha256)
    }

    fn prefix_index(&self) -> Option<&crate::index::Approximate> {
        Some(self.index())
    }

    fn info(&self) -> &PolicyInfo {
        &self.shared.info
    }

    fn workers_changed(&self, workers: &[WorkerInfo]) {
        let shared = &self.shared;
        let mut held = shared.workers.lock().unwrap_or_else(|e| e.into_inner());
        *held = workers.to_vec();
        let deadline = shared.limits.maintenance_deadline;
        for at in 0..shared.slots.len() {
            let result = shared.maintain(at, deadline, |live| live.workers_changed(workers));
            // A restarting instance is told the stored list when it starts.
            shared.skipped("workers-changed", result);
        }
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
        let Some((at, mut slot)) = shared.serving_slot() else {
            return Err(SelectError::Busy);
        };
        shared.drain_deferred(at, &mut slot);
        let answer = shared.call_locked(at, &mut slot, shared.limits.call_deadline, |live| {
            live.select(req, candidates)
        });
        match answer {
            Ok(Ok((id, cached_tokens))) if candidates.iter().any(|c| c.id == id) => {
                slot.consecutive_faults = 0;
                Ok(Decision {
                    worker: id,
                    fallback: None,
                    cached_tokens,
                })
            }
            Ok(Ok((id, _))) => {
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
        let shared = &self.shared;
        let Some((at, mut slot)) = shared.serving_slot() else {
            shared.defer(outcome);
            return;
        };
        shared.drain_deferred(at, &mut slot);
        let result = shared.call_locked(at, &mut slot, shared.limits.call_deadline, |live| {
            live.on_complete(outcome)
        });
        shared.skipped("on-complete", result);
    }

    fn tick(&self, now_ms: u64) {
        // On the first slot: a per-thread policy's serving threads take the
        // others meanwhile.
        let shared = &self.shared;
        let result = shared.maintain(0, shared.limits.tick_deadline, |live| live.tick(now_ms));
        if result.is_ok() {
            shared.ticks.fetch_add(1, Ordering::Relaxed);
        }
        shared.skipped("tick", result);
    }

    fn checkpoint(&self) -> bool {
        let shared = &self.shared;
        if shared.info.instances == Instances::PerThread || !shared.dirty.load(Ordering::Relaxed) {
            return false;
        }
        let deadline = shared.limits.maintenance_deadline;
        // Cleared under the slot's lock, after this call marked it: what
        // changes the state later marks it again.
        let taken = shared.maintain(0, deadline, |live| {
            shared.dirty.store(false, Ordering::Relaxed);
            live.snapshot()
        });
        match taken {
            Ok(state) => {
                *shared.checkpoint.lock().unwrap_or_else(|e| e.into_inner()) = Some(state);
                true
            }
            Err(fault) => {
                shared.skipped("checkpoint", Err(fault));
                false
            }
        }
    }

    fn until_ready(&self) -> super::ReadyWait<'_> {
        Box::pin(async move {
            let freed = self.shared.freed.notified();
            tokio::pin!(freed);
            // Registered before the check: a release between the two wakes it.
            freed.as_mut().enable();
            if !self.shared.ready() {
                freed.await;
            }
        })
    }
}
