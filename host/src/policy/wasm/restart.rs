//! Faults of a [`super::WasmPolicy`]: counting and logging them, and
//! rebuilding a faulted slot's instance on a background thread with
//! back-off, restored from the last checkpoint when that is safe.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Shared, lock};
use crate::policy::instance::{Live, cap_message, classify};
use crate::policy::{LoadError, PolicyFault};

/// Wait before rebuilding after the second consecutive fault; doubles with
/// each further one, up to [`RESTART_BACKOFF_MAX`]. The first rebuild is
/// immediate.
pub const RESTART_BACKOFF_START: Duration = Duration::from_millis(10);
/// The longest wait between rebuilds of a policy that keeps faulting.
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Shared {
    pub(super) fn record_fault(&self, fault: &PolicyFault) {
        let total = self.faults.fetch_add(1, Ordering::Relaxed) + 1;
        *self.last_fault.lock().unwrap_or_else(|e| e.into_inner()) = Some(fault.to_string());
        metrics::counter!(crate::metrics::POLICY_FAULTS, "policy" => self.info.name.clone(), "kind" => fault.kind())
            .increment(1);
        tracing::warn!(policy = %self.info.name, faults = total, "{fault}; answering with the least-load fallback");
    }

    /// Rebuild slot `at`'s instance on a background thread after `delay`,
    /// retrying with back-off until it starts or the policy is dropped.
    pub(super) fn schedule_restart(self: &Arc<Self>, at: usize, mut delay: Duration) {
        let weak: Weak<Shared> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("policy-restart".into())
            .spawn(move || {
                let mut attempt = 1;
                loop {
                    std::thread::sleep(delay);
                    let Some(shared) = weak.upgrade() else { return };
                    match shared.restart(at) {
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

    /// Start a fresh instance, tell it the current workers, give it the last
    /// checkpoint (a shared instance, first fault in a row), and install it
    /// in slot `at`: the slot is locked only for the swap.
    fn restart(self: &Arc<Self>, at: usize) -> Result<(), LoadError> {
        let name = self.source.label();
        let (mut live, _) = Live::start(
            &self.pre,
            &self.engine,
            &self.host,
            &name,
            &self.config,
            self.limits,
        )?;
        // Held to the swap: a change of workers meanwhile waits, then
        // reaches the installed instance.
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        let awake = self
            .engine
            .arm(&mut live.store, self.limits.maintenance_deadline);
        live.workers_changed(&workers)
            .map_err(|e| LoadError::StartFault {
                name: name.clone(),
                fault: classify(&e),
            })?;
        drop(awake);
        let restored = self.restore_checkpoint(at, &mut live, &name)?;
        lock(&self.slots[at].slot).live = Some(live);
        tracing::info!(policy = %self.info.name, restored, "policy instance restarted");
        Ok(())
    }

    /// Restore the last checkpoint into `live`, the rebuild of slot `at`;
    /// whether it was. A checkpoint is used for the first rebuild after a
    /// success only: if that instance faults too, the state may be what
    /// makes it fault, and the checkpoint is dropped. A trap in `restore`
    /// drops it as well, and fails this start (the retry starts fresh).
    fn restore_checkpoint(
        &self,
        at: usize,
        live: &mut Live,
        name: &str,
    ) -> Result<bool, LoadError> {
        let mut held = self.checkpoint.lock().unwrap_or_else(|e| e.into_inner());
        let first_in_a_row = lock(&self.slots[at].slot).consecutive_faults <= 1;
        if !first_in_a_row {
            *held = None;
        }
        let Some(state) = held.as_deref() else {
            return Ok(false);
        };
        let _awake = self
            .engine
            .arm(&mut live.store, self.limits.maintenance_deadline);
        match live.restore(state) {
            Ok(Ok(())) => Ok(true),
            Ok(Err(message)) => {
                tracing::warn!(policy = %self.info.name, "the rebuilt instance refused its checkpoint, starting fresh: {}", cap_message(message));
                Ok(false)
            }
            Err(e) => {
                *held = None;
                Err(LoadError::StartFault {
                    name: name.to_string(),
                    fault: classify(&e),
                })
            }
        }
    }
}

/// Delay before rebuild number `faults` in a row: 0, then doubling from
/// [`RESTART_BACKOFF_START`] up to [`RESTART_BACKOFF_MAX`].
pub(super) fn backoff(faults: u32) -> Duration {
    if faults <= 1 {
        return Duration::ZERO;
    }
    RESTART_BACKOFF_START
        .saturating_mul(1u32 << (faults - 2).min(16))
        .min(RESTART_BACKOFF_MAX)
}
