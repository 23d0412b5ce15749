//! A per-worker circuit breaker, as the SGLang router's: closed until
//! `failure_threshold` consecutive failures (a success starts the count
//! again, and so does a failure more than `window` after the first of the
//! row: the window bounds a row, it does not count failures among
//! successes), then open (no traffic) for `open_for`, then half-open until
//! `success_threshold` successes close it or one failure opens it again.
//! Half-open, it lets at most `success_threshold` requests through per
//! [`TRIAL_PERIOD`]: a worker that just failed is not handed the whole
//! traffic again before it proved itself.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::BreakerConfig;

/// How often a half-open breaker gets its trial requests anew. A request
/// counts as a trial when the worker is offered to the policy as a
/// candidate, picked or not, so an unpicked offer costs at most this long.
pub const TRIAL_PERIOD: Duration = Duration::from_secs(1);

/// Breaker state, as exported in metrics (0 closed, 1 open, 2 half-open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Traffic flows.
    Closed,
    /// No traffic until the timeout passes.
    Open,
    /// Trial traffic.
    HalfOpen,
}

impl BreakerState {
    /// Its number in metrics.
    pub fn code(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed {
        failures: u32,
        since: Instant,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        successes: u32,
        /// Trials let through since `period`.
        trials: u32,
        period: Instant,
    },
}

/// See the module docs. `None` config: always closed.
pub struct Breaker {
    config: Option<BreakerConfig>,
    /// The worker's name, for the log lines.
    worker: String,
    inner: Mutex<Inner>,
    /// Whether `inner` is half-open, kept by every change: the candidate
    /// list reads it on each request without the lock.
    half_open: AtomicBool,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("state", &self.state())
            .finish()
    }
}

impl Breaker {
    /// A closed breaker of `worker`.
    pub fn new(config: Option<BreakerConfig>, worker: String) -> Self {
        Breaker {
            config,
            worker,
            inner: Mutex::new(Inner::Closed {
                failures: 0,
                since: Instant::now(),
            }),
            half_open: AtomicBool::new(false),
        }
    }

    /// Whether it is half-open (trial requests only), without its lock.
    pub fn is_half_open(&self) -> bool {
        self.half_open.load(Ordering::Relaxed)
    }

    /// Keep `half_open` in step with `inner`, after every change of state.
    fn keep_half_open(&self, inner: &Inner) {
        self.half_open
            .store(matches!(inner, Inner::HalfOpen { .. }), Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a request may go to the worker now; half-open, a yes takes
    /// one of the period's trials.
    pub fn admits(&self, now: Instant) -> bool {
        let Some(config) = self.config else {
            return true;
        };
        let mut inner = self.lock();
        match &mut *inner {
            Inner::Closed { .. } => true,
            Inner::Open { until } if now < *until => false,
            Inner::Open { .. } => {
                *inner = Inner::HalfOpen {
                    successes: 0,
                    trials: 1,
                    period: now,
                };
                self.keep_half_open(&inner);
                true
            }
            Inner::HalfOpen { trials, period, .. } => {
                if now.duration_since(*period) >= TRIAL_PERIOD {
                    (*trials, *period) = (0, now);
                }
                let admitted = *trials < config.success_threshold;
                *trials += u32::from(admitted);
                admitted
            }
        }
    }

    /// Record an attempt's result.
    pub fn record(&self, success: bool, now: Instant) {
        let Some(config) = self.config else { return };
        let mut inner = self.lock();
        *inner = match (&*inner, success) {
            (Inner::Closed { .. }, true) => Inner::Closed {
                failures: 0,
                since: now,
            },
            (Inner::Closed { failures, since }, false) => {
                let (failures, since) = if now.duration_since(*since) > config.window {
                    (1, now)
                } else {
                    (failures + 1, *since)
                };
                if failures >= config.failure_threshold {
                    tracing::warn!(worker = %self.worker, "circuit breaker opened after {failures} failures");
                    Inner::Open {
                        until: now + config.open_for,
                    }
                } else {
                    Inner::Closed { failures, since }
                }
            }
            (Inner::HalfOpen { successes, .. }, true)
                if successes + 1 >= config.success_threshold =>
            {
                tracing::info!(worker = %self.worker, "circuit breaker closed");
                Inner::Closed {
                    failures: 0,
                    since: now,
                }
            }
            (
                Inner::HalfOpen {
                    successes,
                    trials,
                    period,
                },
                true,
            ) => Inner::HalfOpen {
                successes: successes + 1,
                trials: *trials,
                period: *period,
            },
            (Inner::HalfOpen { .. }, false) => {
                tracing::warn!(worker = %self.worker, "circuit breaker opened again: a trial request failed");
                Inner::Open {
                    until: now + config.open_for,
                }
            }
            (Inner::Open { until }, _) => Inner::Open { until: *until },
        };
        self.keep_half_open(&inner);
    }

    /// Close the breaker, forgetting past failures: the worker was seen to
    /// recover by other means (its health checks passing again).
    pub fn reset(&self) {
        let mut inner = self.lock();
        if !matches!(*inner, Inner::Closed { .. }) {
            tracing::info!(worker = %self.worker, "circuit breaker closed: the worker passes its health checks again");
        }
        *inner = Inner::Closed {
            failures: 0,
            since: Instant::now(),
        };
        self.keep_half_open(&inner);
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn breaker() -> Breaker {
        Breaker::new(
            Some(BreakerConfig {
                failure_threshold: 2,
                success_threshold: 2,
                open_for: Duration::from_secs(10),
                window: Duration::from_secs(60),
            }),
            "w".into(),
        )
    }

    #[test]
    fn a_reset_closes_an_open_breaker_at_once() {
        let b = breaker();
        let t0 = Instant::now();
        b.record(false, t0);
        b.record(false, t0);
        assert!(!b.admits(t0));
        b.reset();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.admits(t0));
        b.record(false, t0);
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "the failure count starts over"
        );
    }

    #[test]
    fn opens_after_the_threshold_and_recovers_through_half_open() {
        let b = breaker();
        let t0 = Instant::now();
        b.record(false, t0);
        assert!(b.admits(t0));
        b.record(false, t0);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.admits(t0 + Duration::from_secs(9)));
        assert!(!b.is_half_open());
        assert!(b.admits(t0 + Duration::from_secs(10)));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.is_half_open(), "the lock-free flag follows the state");
        b.record(true, t0 + Duration::from_secs(10));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.record(true, t0 + Duration::from_secs(10));
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(!b.is_half_open());
    }

    /// Issue 15: half-open let all traffic through.
    #[test]
    fn half_open_lets_a_bounded_number_of_trials_through_per_period() {
        let b = breaker();
        let t0 = Instant::now();
        b.record(false, t0);
        b.record(false, t0);
        let t1 = t0 + Duration::from_secs(10);
        let admitted = (0..10).filter(|_| b.admits(t1)).count();
        assert_eq!(admitted, 2, "success_threshold trials");
        assert!(!b.admits(t1 + TRIAL_PERIOD / 2));
        assert!(b.admits(t1 + TRIAL_PERIOD), "a new period, new trials");
        b.record(true, t1 + TRIAL_PERIOD);
        b.record(true, t1 + TRIAL_PERIOD);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!((0..10).filter(|_| b.admits(t1)).count(), 10);
    }

    #[test]
    fn a_half_open_failure_reopens() {
        let b = breaker();
        let t0 = Instant::now();
        b.record(false, t0);
        b.record(false, t0);
        assert!(b.admits(t0 + Duration::from_secs(11)));
        b.record(false, t0 + Duration::from_secs(11));
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let b = breaker();
        let t0 = Instant::now();
        b.record(false, t0);
        b.record(false, t0 + Duration::from_secs(61));
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn disabled_always_admits() {
        let b = Breaker::new(None, "w".into());
        for _ in 0..100 {
            b.record(false, Instant::now());
        }
        assert!(b.admits(Instant::now()));
    }
}
