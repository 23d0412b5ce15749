//! The epoch ticker that enforces policy call deadlines: it advances the
//! engine's epoch every [`EPOCH_TICK`] while a call may be running, and
//! sleeps after [`LINGER`] without one, so that an idle router does not
//! wake a thread a thousand times a second. A call arms its deadline with
//! [`Ticker::arm`], which wakes the ticker if it sleeps and keeps it awake
//! until the returned guard drops.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use wasmtime::{Engine, Store};

/// How often the epoch advances. Deadlines are whole multiples of it.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How long the ticker keeps ticking after the last call ended: a few
/// ticks, so that a steady stream of calls keeps it awake without a wake
/// per call, while calls spaced wider cost a wake and a few ticks each. At
/// 100 ms, one router at 18 requests/s never slept: a thousand wake-ups a
/// second, a fifth of its CPU (BENCHMARKS.md, issue 35).
pub const LINGER: Duration = Duration::from_millis(3);

/// How often a sleeping ticker looks whether its engine is gone.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// A deadline as epoch ticks, rounded up, at least one.
pub fn ticks(deadline: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos();
    (deadline.as_nanos().div_ceil(tick)).max(1) as u64
}

/// What the ticker thread and the calls share.
#[derive(Debug, Default)]
pub struct Ticker {
    /// Calls armed and not yet done.
    active: AtomicUsize,
    /// Calls armed so far.
    started: AtomicU64,
    /// The ticker waits on `wake`.
    asleep: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

/// Keeps the ticker awake while a call bounded by a deadline runs.
#[derive(Debug)]
pub struct Awake(Arc<Ticker>);

impl Drop for Awake {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Ticker {
    /// A ticker for `engine`, on a thread that holds only a weak reference
    /// to it and ends when the last engine clone is dropped.
    pub fn spawn(engine: &Engine) -> Arc<Ticker> {
        let ticker = Arc::new(Ticker::default());
        let weak = engine.weak();
        let shared = ticker.clone();
        std::thread::Builder::new()
            .name("policy-epoch".into())
            .spawn(move || {
                let mut seen = shared.started.load(Ordering::SeqCst);
                let mut quiet = Duration::ZERO;
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                    let started = shared.started.load(Ordering::SeqCst);
                    if started != seen || shared.active.load(Ordering::SeqCst) > 0 {
                        (seen, quiet) = (started, Duration::ZERO);
                        continue;
                    }
                    quiet += EPOCH_TICK;
                    if quiet >= LINGER {
                        quiet = Duration::ZERO;
                        if !shared.sleep_until_armed(seen, || weak.upgrade().is_some()) {
                            return;
                        }
                    }
                }
            })
            .expect("spawn the policy epoch thread");
        ticker
    }

    /// Set `store`'s deadline `deadline` from now and keep the epoch
    /// advancing until the guard drops: hold it across the calls the
    /// deadline bounds.
    pub fn arm<T>(self: &Arc<Self>, store: &mut Store<T>, deadline: Duration) -> Awake {
        self.active.fetch_add(1, Ordering::SeqCst);
        self.started.fetch_add(1, Ordering::SeqCst);
        // The ticker stores `asleep` before it looks at `started` (both
        // SeqCst): either it sees this call, or this call sees it asleep
        // and wakes it, taking the lock it waits with.
        if self.asleep.load(Ordering::SeqCst) {
            let _held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_one();
        }
        store.set_epoch_deadline(ticks(deadline));
        Awake(self.clone())
    }

    /// Whether the ticker sleeps now.
    pub fn is_asleep(&self) -> bool {
        self.asleep.load(Ordering::SeqCst)
    }

    /// Sleep until a call is armed after the `seen`th; `false` if
    /// `alive` says the engine is gone meanwhile.
    fn sleep_until_armed(&self, seen: u64, alive: impl Fn() -> bool) -> bool {
        let mut held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.asleep.store(true, Ordering::SeqCst);
        while self.started.load(Ordering::SeqCst) == seen && self.active.load(Ordering::SeqCst) == 0
        {
            if !alive() {
                return false;
            }
            held = self
                .wake
                .wait_timeout(held, IDLE_CHECK)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        self.asleep.store(false, Ordering::SeqCst);
        true
    }
}
