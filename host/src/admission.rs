//! Admission control: at most `max_concurrent` requests are forwarded at
//! once; up to `queue_size` more wait in FIFO order (tokio's semaphore is
//! fair) for at most `timeout`. Past the queue: 429; past the wait: 408.
//!
//! With `--rate-limit-tokens-per-second R`, the slots are sglang-router's
//! token bucket instead: `max_concurrent` tokens, one taken per request and
//! given back when it ends, and R more added each second up to
//! `max_concurrent` ([`Admission::refill`]), so more than `max_concurrent`
//! requests may be in flight, as there.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::response::Response;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::QueueConfig;
use crate::errors::ApiError;

/// See the module docs.
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    config: QueueConfig,
}

/// A forwarding slot (a token), held until the response body ends; given
/// back then, except to a full bucket.
#[derive(Debug)]
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    /// The bucket's size when it is refilled; `None`: a strict limit, the
    /// slot always goes back.
    bucket: Option<usize>,
}

impl Slot {
    /// `response`, its body holding this slot until it ends or is dropped
    /// (the client went away).
    pub fn hold_until_end(self, response: Response) -> Response {
        crate::hold::hold_until_end(response, self)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let (Some(permit), Some(size)) = (self.permit.take(), self.bucket)
            && permit.semaphore().available_permits() >= size
        {
            permit.forget();
        }
    }
}

impl Admission {
    /// Slots and a queue as configured.
    pub fn new(config: QueueConfig) -> Self {
        Admission {
            slots: Arc::new(Semaphore::new(config.max_concurrent)),
            waiting: AtomicUsize::new(0),
            config,
        }
    }

    /// Requests waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Slots free now.
    pub fn free(&self) -> usize {
        self.slots.available_permits()
    }

    /// Wait for a slot. Cancellation-safe: a caller dropped while waiting
    /// (its client went away) gives its queue place back.
    pub async fn admit(&self) -> Result<Slot, ApiError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(self.slot(permit));
        }
        let place = QueuePlace::take(&self.waiting);
        if place.ahead >= self.config.queue_size {
            return Err(ApiError::QueueFull);
        }
        let waited =
            tokio::time::timeout(self.config.timeout, self.slots.clone().acquire_owned()).await;
        drop(place);
        match waited {
            Ok(Ok(permit)) => Ok(self.slot(permit)),
            Ok(Err(_closed)) => Err(ApiError::ShuttingDown),
            Err(_elapsed) => Err(ApiError::QueueTimeout),
        }
    }
}

impl Admission {
    fn slot(&self, permit: OwnedSemaphorePermit) -> Slot {
        Slot {
            permit: Some(permit),
            bucket: self
                .config
                .refill_per_sec
                .map(|_| self.config.max_concurrent),
        }
    }

    /// With a refill rate, add its tokens, up to the bucket's size, every
    /// tenth of a second, until the task is aborted; without, return.
    pub async fn refill(&self) {
        let Some(per_sec) = self.config.refill_per_sec else {
            return;
        };
        const EVERY: Duration = Duration::from_millis(100);
        let mut every = tokio::time::interval(EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut due = 0.0;
        loop {
            every.tick().await;
            due += f64::from(per_sec) * EVERY.as_secs_f64();
            let room = self
                .config
                .max_concurrent
                .saturating_sub(self.slots.available_permits());
            let add = (due.floor() as usize).min(room);
            self.slots.add_permits(add);
            // Tokens for a full bucket are not saved up.
            due = if room > add { due - add as f64 } else { 0.0 };
        }
    }
}

/// A place in the queue, counted in `waiting` for as long as it lives: it
/// is given back when dropped, however the wait ends.
struct QueuePlace<'a> {
    waiting: &'a AtomicUsize,
    /// Places taken before this one.
    ahead: usize,
}

impl<'a> QueuePlace<'a> {
    fn take(waiting: &'a AtomicUsize) -> Self {
        let ahead = waiting.fetch_add(1, Ordering::SeqCst);
        QueuePlace { waiting, ahead }
    }
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn admission(max: usize, queue: usize) -> Admission {
        Admission::new(QueueConfig {
            max_concurrent: max,
            queue_size: queue,
            timeout: Duration::from_secs(5),
            refill_per_sec: None,
        })
    }

    /// Issue 16: `--rate-limit-tokens-per-second`, as sglang-router 0.3.2's
    /// bucket behaves (seen by running it): tokens come back when requests
    /// end and are refilled on top, never past the bucket's size.
    #[tokio::test(start_paused = true)]
    async fn a_refilled_bucket_admits_past_its_size_but_never_holds_more() {
        let a = Arc::new(Admission::new(QueueConfig {
            max_concurrent: 2,
            queue_size: 0,
            timeout: Duration::from_secs(5),
            refill_per_sec: Some(1),
        }));
        let refill = tokio::spawn({
            let a = a.clone();
            async move { a.refill().await }
        });
        // A full bucket: requests that end give their token back, and the
        // bucket holds no more than its size.
        for _ in 0..5 {
            drop(a.admit().await.unwrap());
        }
        assert_eq!(a.slots.available_permits(), 2);
        let held = [a.admit().await.unwrap(), a.admit().await.unwrap()];
        assert_eq!(a.admit().await.unwrap_err(), ApiError::QueueFull);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let third = a.admit().await.expect("a token refilled after a second");
        assert_eq!(a.admit().await.unwrap_err(), ApiError::QueueFull);
        drop((held, third));
        assert_eq!(a.slots.available_permits(), 2, "capped at the size");
        refill.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_is_429_and_a_long_wait_is_408() {
        let a = Arc::new(admission(1, 1));
        let held = a.admit().await.unwrap();
        let queued = tokio::spawn({
            let a = a.clone();
            async move { a.admit().await }
        });
        tokio::task::yield_now().await;
        assert_eq!(a.admit().await.unwrap_err(), ApiError::QueueFull);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(queued.await.unwrap().unwrap_err(), ApiError::QueueTimeout);
        drop(held);
        assert!(a.admit().await.is_ok());
    }

    /// Issue 15: a client that gave up while queued kept its place for
    /// ever, and after `queue_size` of them every wait was refused.
    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_goes_away_gives_its_place_back() {
        let a = Arc::new(admission(1, 2));
        let held = a.admit().await.unwrap();
        for _ in 0..3 {
            let waiter = tokio::spawn({
                let a = a.clone();
                async move { a.admit().await }
            });
            tokio::task::yield_now().await;
            assert_eq!(a.waiting(), 1);
            waiter.abort();
            assert!(waiter.await.unwrap_err().is_cancelled());
            assert_eq!(a.waiting(), 0, "the dropped wait gave its place back");
        }
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let a = a.clone();
                tokio::spawn(async move { a.admit().await.map(drop) })
            })
            .collect();
        tokio::task::yield_now().await;
        assert_eq!(a.waiting(), 2, "both wait: the queue has room for two");
        drop(held);
        for waiter in waiters {
            assert_eq!(waiter.await.unwrap(), Ok(()));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_first_in_first_out() {
        let a = Arc::new(admission(1, 10));
        let held = a.admit().await.unwrap();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (a, order) = (a.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let slot = a.admit().await.unwrap();
                order.lock().unwrap().push(i);
                drop(slot);
            }));
            tokio::task::yield_now().await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
    }
}
