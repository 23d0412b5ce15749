//! Settings of the policy lab: the decision log (`--decision-log*`) and
//! shadow policies (`--shadow-policy`).

use std::path::PathBuf;

use super::{ConfigError, RouterArgs, defaults as d, invalid};

/// Where decision records go, and how many.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionLogConfig {
    /// The file, or stdout.
    pub to: LogTarget,
    /// Share of requests recorded, in 0..=1.
    pub sample: f64,
    /// Size past which the file is rotated to `PATH.1`.
    pub max_bytes: u64,
    /// Records waiting for the writer at most.
    pub buffer: usize,
    /// Whether records carry the routing text.
    pub text: bool,
}

/// Where a log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// The router's standard output (`-`).
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

/// `--decision-log` and its companions; `None` when off.
pub(super) fn decision_log(s: &RouterArgs) -> Result<Option<DecisionLogConfig>, ConfigError> {
    let Some(path) = &s.decision_log else {
        for (given, flag) in [
            (s.decision_log_sample.is_some(), "--decision-log-sample"),
            (s.decision_log_max_mb.is_some(), "--decision-log-max-mb"),
            (s.decision_log_buffer.is_some(), "--decision-log-buffer"),
            (s.decision_log_text, "--decision-log-text"),
        ] {
            if given {
                return Err(invalid(flag, "needs --decision-log PATH (or - for stdout)"));
            }
        }
        return Ok(None);
    };
    let sample = s.decision_log_sample.unwrap_or(d::DECISION_LOG_SAMPLE);
    if !(0.0..=1.0).contains(&sample) {
        return Err(invalid(
            "--decision-log-sample",
            format!("{sample} is not between 0 and 1"),
        ));
    }
    let buffer = s.decision_log_buffer.unwrap_or(d::DECISION_LOG_BUFFER);
    if buffer == 0 {
        return Err(invalid("--decision-log-buffer", "must be at least 1"));
    }
    let max_mb = s.decision_log_max_mb.unwrap_or(d::DECISION_LOG_MAX_MB);
    if max_mb == 0 {
        return Err(invalid("--decision-log-max-mb", "must be at least 1"));
    }
    let to = match path.as_str() {
        "-" => LogTarget::Stdout,
        "" => return Err(invalid("--decision-log", "give a file, or - for stdout")),
        path => LogTarget::File(PathBuf::from(path)),
    };
    Ok(Some(DecisionLogConfig {
        to,
        sample,
        max_bytes: max_mb << 20,
        buffer,
        text: s.decision_log_text,
    }))
}

/// `--shadow-policy`: each a .wasm file or a built-in name, at most once.
pub(super) fn shadows(s: &RouterArgs) -> Result<Vec<String>, ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for shadow in &s.shadow_policy {
        if shadow.is_empty() {
            return Err(invalid(
                "--shadow-policy",
                "give a .wasm file or a built-in name",
            ));
        }
        if !seen.insert(shadow) {
            return Err(invalid(
                "--shadow-policy",
                format!("{shadow} is given twice"),
            ));
        }
    }
    if s.pd_disaggregation && !s.shadow_policy.is_empty() {
        return Err(invalid(
            "--shadow-policy",
            "shadows are asked about regular workers; PD mode has none",
        ));
    }
    Ok(s.shadow_policy.clone())
}
