//! `router policy check`: load a policy the way the router would, make one
//! test call, and describe it.

use std::fmt::Write as _;

use crate::config::Limits;

use super::{
    Candidate, LoadError, Policy, PolicyEngine, PolicySource, Route, RouteRequest, SelectError,
    WasmPolicy,
};

/// Why a policy failed its check.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// It does not load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// It loads, but its test `select` picked nothing usable.
    #[error("{name} loads, but its test select failed: {reason}")]
    Select {
        /// The policy.
        name: String,
        /// What went wrong.
        reason: String,
    },
}

/// Load `source` with `config`, call `select` once, and return a report.
pub fn check(
    engine: &PolicyEngine,
    source: PolicySource,
    config: &str,
) -> Result<String, CheckError> {
    let label = source.label();
    // The test select is the instance's first call, perhaps on a busy
    // machine: it gets the maintenance deadline, which still stops a guest
    // that never returns, rather than the request path's 10 ms.
    let limits = Limits {
        call_deadline: Limits::default().maintenance_deadline,
        ..Limits::default()
    };
    let policy = WasmPolicy::load(engine, source, config, limits)?;
    let request = RouteRequest {
        id: 0,
        route: Route::Generate,
        model: "",
        text: "router policy check: a test prompt",
        tokens: None,
        prompt_tokens: None,
        routing_key: None,
        headers: None,
        stream: false,
        max_new_tokens: None,
    };
    let candidates = [Candidate::idle(0, 0), Candidate::idle(1, 0)];
    let select_failed = |reason: String| CheckError::Select {
        name: label.clone(),
        reason,
    };
    let pick = match policy.select(&request, &candidates) {
        Ok(decision) => match decision.fallback {
            None => format!("worker {} of [0, 1]", decision.worker),
            Some(fault) => return Err(select_failed(fault.to_string())),
        },
        // Declining is allowed by the contract; report it rather than fail.
        Err(SelectError::Declined(message)) => format!("declined: {message}"),
        Err(e) => return Err(select_failed(e.to_string())),
    };
    let info = policy.info();
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let how = if info.reads.declared {
        "declared"
    } else {
        "from its imports"
    };
    let mut out = String::new();
    let _ok = writeln!(out, "ok: {label}")
        .and_then(|_| writeln!(out, "  contract:       {}", policy.contract()))
        .and_then(|_| writeln!(out, "  name:           {}", info.name))
        .and_then(|_| writeln!(out, "  needs text:     {}", yes_no(info.needs_text)))
        .and_then(|_| writeln!(out, "  wants feedback: {}", yes_no(info.wants_feedback)))
        .and_then(|_| writeln!(out, "  instances:      {}", info.instances.label()))
        .and_then(|_| {
            let headers = yes_no(info.reads.headers);
            writeln!(out, "  reads headers:  {headers} ({how})")
        })
        .and_then(|_| {
            let kv = yes_no(info.reads.kv_matches);
            writeln!(out, "  reads KV match: {kv} ({how})")
        })
        .and_then(|_| match info.tick_interval {
            Some(every) => writeln!(out, "  tick every:     {every:?}"),
            None => writeln!(out, "  tick every:     never"),
        })
        .and_then(|_| writeln!(out, "  test select:    {pick}"))
        .and_then(|_| writeln!(out, "  sha256:         {}", policy.sha256()));
    Ok(out)
}
