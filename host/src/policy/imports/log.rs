//! `log`: a policy's lines in the router's log, cleaned and rate-limited
//! per policy.

use std::time::Instant;

use super::{Host, lock};
use crate::policy::bindings::v2::wasm_router::policy::log;

/// A log line's message and each field value are cut at this many bytes.
pub const MAX_LOG_FIELD: usize = 1024;
/// Lines a policy may write at once before the rate limit holds them back.
pub const LOG_BURST: f64 = 100.0;
/// Lines per second a policy may write, on average.
pub const LOG_PER_SECOND: f64 = 20.0;

/// One policy's rate limit: a token bucket of log lines.
#[derive(Debug)]
pub(super) struct LogBucket {
    tokens: f64,
    last: Instant,
    suppressed: u64,
}

impl LogBucket {
    /// A full bucket at `now`.
    pub(super) fn full(now: Instant) -> Self {
        LogBucket {
            tokens: LOG_BURST,
            last: now,
            suppressed: 0,
        }
    }

    /// Take a token; `Some(lines suppressed since the last one)` if there
    /// was one.
    pub(super) fn take(&mut self, now: Instant) -> Option<u64> {
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
pub(super) fn clean(text: &str, max: usize) -> String {
    text[..text.floor_char_boundary(max)]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
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
