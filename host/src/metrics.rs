//! Prometheus metrics: names in one place, the recorder, and the text
//! endpoint on its own port (`--prometheus-host:--prometheus-port`).

use std::sync::OnceLock;

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::route::Route;

/// Requests answered, by route and status.
pub const REQUESTS: &str = "wasm_router_requests_total";
/// Requests answered with an error by the router itself, by route and code.
pub const ERRORS: &str = "wasm_router_errors_total";
/// Time from request to response headers or error, by route.
pub const REQUEST_DURATION: &str = "wasm_router_request_duration_seconds";
/// Time to the first response byte from the worker, by route.
pub const TTFB: &str = "wasm_router_time_to_first_byte_seconds";
/// Registered workers, by state (healthy, unhealthy). Read from the
/// registry at each scrape, like the worker series below.
pub const WORKERS: &str = "wasm_router_workers";
/// Requests in flight, over all workers.
pub const WORKERS_IN_FLIGHT: &str = "wasm_router_workers_in_flight";
/// Requests in flight per worker.
pub const WORKER_IN_FLIGHT: &str = "wasm_router_worker_in_flight";
/// 1 if the worker passes health checks.
pub const WORKER_HEALTHY: &str = "wasm_router_worker_healthy";
/// Breaker state per worker: 0 closed, 1 open, 2 half-open.
pub const WORKER_BREAKER: &str = "wasm_router_worker_circuit_breaker_state";
/// Retries, by route.
pub const RETRIES: &str = "wasm_router_retries_total";
/// Time spent in the policy's `select`.
pub const POLICY_DECISION: &str = "wasm_router_policy_decision_seconds";
/// Policy reloads, by result (swapped, error).
pub const POLICY_RELOADS: &str = "wasm_router_policy_reloads_total";
/// Policy faults answered by the fallback, by policy and kind.
pub const POLICY_FAULTS: &str = "wasm_router_policy_faults_total";
/// Policy log lines held back by the rate limit, by policy.
pub const POLICY_LOG_SUPPRESSED: &str = "wasm_router_policy_log_lines_suppressed_total";
/// Outcomes dropped because a policy busy with maintenance had too many
/// waiting, by policy.
pub const POLICY_OUTCOMES_DROPPED: &str = "wasm_router_policy_outcomes_dropped_total";
/// Inserts a policy's prefix index dropped because it was full, by policy.
pub const POLICY_INDEX_FULL: &str = "wasm_router_policy_index_full_total";
/// Responses cut off mid-body by a timeout, by reason (deadline, idle).
pub const RESPONSES_CUT_OFF: &str = "wasm_router_responses_cut_off_total";
/// KV cache events received from the workers (src/events).
pub const KV_EVENTS: &str = "wasm_router_kv_events_total";
/// KV event messages that did not decode.
pub const KV_EVENTS_MALFORMED: &str = "wasm_router_kv_events_malformed_total";
/// Gaps in a worker's KV event sequence.
pub const KV_EVENTS_GAPS: &str = "wasm_router_kv_event_gaps_total";
/// KV event batches recovered from a worker's replay socket.
pub const KV_EVENTS_REPLAYED: &str = "wasm_router_kv_event_batches_replayed_total";
/// Times a worker's index entries were cleared because its events could
/// no longer be trusted (a gap not replayed, a publisher restart).
pub const KV_EVENTS_STALE: &str = "wasm_router_kv_event_resyncs_total";
/// `BlockStored` events whose parent page was unknown.
pub const KV_EVENTS_ORPHANS: &str = "wasm_router_kv_event_orphans_total";
/// Pages in the precise prefix index, over all workers.
pub const KV_INDEX_PAGES: &str = "wasm_router_kv_index_pages";
/// Workers whose KV events the router follows.
pub const KV_FOLLOWED: &str = "wasm_router_kv_event_workers";
/// Workers that answered they publish no KV events the router can follow
/// (`--kv-events`): precise routing sees only what was sent to them.
pub const KV_SILENT: &str = "wasm_router_kv_event_workers_silent";
/// Finished trace spans not exported: the export queue was full, or the
/// collector refused or could not be reached (`--enable-trace`).
pub const TRACE_SPANS_DROPPED: &str = "wasm_router_trace_spans_dropped_total";
/// Workers service discovery keeps from Kubernetes pods, by role.
pub const DISCOVERY_WORKERS: &str = "wasm_router_discovery_workers";
/// 1 while service discovery's watch of the API server works, 0 while it
/// cannot reach it (the last known workers keep serving), by role.
pub const DISCOVERY_API_UP: &str = "wasm_router_discovery_api_up";
/// Errors of service discovery's list or watch, by role.
pub const DISCOVERY_ERRORS: &str = "wasm_router_discovery_errors_total";
/// Decision records written (`--decision-log`).
pub const DECISIONS_WRITTEN: &str = "wasm_router_decision_records_written_total";
/// Decision records dropped because the writer was behind.
pub const DECISIONS_DROPPED: &str = "wasm_router_decision_records_dropped_total";
/// A shadow policy's answers, by shadow and whether it agreed with the
/// live pick.
pub const SHADOW_DECISIONS: &str = "wasm_router_shadow_decisions_total";
/// A shadow policy's faults, by shadow and kind.
pub const SHADOW_FAULTS: &str = "wasm_router_shadow_faults_total";
/// Questions a shadow policy was not asked because it was behind.
pub const SHADOW_DROPPED: &str = "wasm_router_shadow_dropped_total";
/// A shadow's picks, by shadow and worker.
pub const SHADOW_PICKS: &str = "wasm_router_shadow_picks_total";
/// Prefix (characters, or tokens when requests are tokenized) a shadow's
/// picks held, summed, by shadow.
pub const SHADOW_MATCHED: &str = "wasm_router_shadow_matched_total";
/// The same for the live picks of the requests a shadow answered.
pub const SHADOW_LIVE_MATCHED: &str = "wasm_router_shadow_live_matched_total";
/// `BlockStored` events the index refused (shape, page size, full).
pub const KV_EVENTS_REFUSED: &str = "wasm_router_kv_events_refused_total";

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
const DECISION_BUCKETS: &[f64] = &[
    1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 1e-4, 1e-3, 1e-2,
];

/// Handles of one route's per-request metrics, made once: on the request
/// path, a label lookup costs more than the update.
#[derive(Debug)]
pub struct RouteMetrics {
    /// [`REQUESTS`] with status 200 (other statuses are looked up).
    pub ok: Counter,
    /// [`REQUEST_DURATION`].
    pub duration: Histogram,
    /// [`TTFB`].
    pub ttfb: Histogram,
}

/// The handles of `route`'s metrics.
pub fn for_route(route: Route) -> &'static RouteMetrics {
    const ROUTES: [Route; 5] = [
        Route::Generate,
        Route::Completions,
        Route::ChatCompletions,
        Route::Embeddings,
        Route::Other,
    ];
    static HANDLES: OnceLock<Vec<RouteMetrics>> = OnceLock::new();
    let handles = HANDLES.get_or_init(|| {
        ROUTES
            .iter()
            .map(|&r| RouteMetrics {
                ok: metrics::counter!(REQUESTS, "route" => r.label(), "status" => "200"),
                duration: metrics::histogram!(REQUEST_DURATION, "route" => r.label()),
                ttfb: metrics::histogram!(TTFB, "route" => r.label()),
            })
            .collect()
    });
    &handles[ROUTES
        .iter()
        .position(|&r| r == route)
        .expect("every route is listed")]
}

/// The handle of [`POLICY_DECISION`].
pub fn policy_decision() -> &'static Histogram {
    static HANDLE: OnceLock<Histogram> = OnceLock::new();
    HANDLE.get_or_init(|| metrics::histogram!(POLICY_DECISION))
}

/// Install the process-wide recorder (once; later calls reuse it, and
/// their `duration_buckets` are not used): [`REQUEST_DURATION`] and
/// [`TTFB`] get `duration_buckets` (`--prometheus-duration-buckets`) if
/// given.
pub fn install(duration_buckets: Option<&[f64]>) -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(POLICY_DECISION.into()), DECISION_BUCKETS)
                .and_then(|b| b.set_buckets(LATENCY_BUCKETS))
                .expect("bucket lists are not empty");
            if let Some(buckets) = duration_buckets {
                for name in [REQUEST_DURATION, TTFB] {
                    builder = builder
                        .set_buckets_for_metric(Matcher::Full(name.into()), buckets)
                        .expect("validation keeps the list non-empty");
                }
            }
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "a metrics recorder was already installed; Prometheus output will be empty"
                );
            }
            handle
        })
        .clone()
}

/// One worker's state, as its series show it.
#[derive(Debug, Clone, Copy)]
pub struct WorkerSeries<'a> {
    /// Its name, the `worker` label.
    pub name: &'a str,
    /// Requests in flight to it.
    pub in_flight: u32,
    /// Whether it passes health checks.
    pub healthy: bool,
    /// Its breaker: 0 closed, 1 open, 2 half-open.
    pub breaker: u8,
}

/// Append the workers' series to a scrape: [`WORKERS`] and
/// [`WORKERS_IN_FLIGHT`] over all of them, and the per-worker series of
/// the first `cap` (`--prometheus-worker-series`). Rendered from the
/// registry rather than kept in the recorder: a worker's series go with
/// it, the text stays bounded however many workers come and go, and a
/// request updates no gauge.
pub fn render_workers(out: &mut String, workers: &[WorkerSeries<'_>], cap: usize) {
    write_workers(out, workers, cap).expect("a String takes every write");
}

/// A per-worker gauge: its name, help and value.
type Series = (&'static str, &'static str, fn(&WorkerSeries<'_>) -> u32);

fn write_workers(out: &mut String, workers: &[WorkerSeries<'_>], cap: usize) -> std::fmt::Result {
    use std::fmt::Write as _;
    const SERIES: [Series; 3] = [
        (WORKER_IN_FLIGHT, "Requests in flight per worker.", |w| {
            w.in_flight
        }),
        (
            WORKER_HEALTHY,
            "1 if the worker passes health checks.",
            |w| u32::from(w.healthy),
        ),
        (
            WORKER_BREAKER,
            "Breaker state per worker: 0 closed, 1 open, 2 half-open.",
            |w| u32::from(w.breaker),
        ),
    ];
    let healthy = workers.iter().filter(|w| w.healthy).count();
    let in_flight: u64 = workers.iter().map(|w| u64::from(w.in_flight)).sum();
    write!(
        out,
        "# HELP {WORKERS} Registered workers, by health.\n# TYPE {WORKERS} gauge\n\
         {WORKERS}{{state=\"healthy\"}} {healthy}\n{WORKERS}{{state=\"unhealthy\"}} {}\n\
         # HELP {WORKERS_IN_FLIGHT} Requests in flight, over all workers.\n\
         # TYPE {WORKERS_IN_FLIGHT} gauge\n{WORKERS_IN_FLIGHT} {in_flight}\n",
        workers.len() - healthy
    )?;
    let shown = &workers[..cap.min(workers.len())];
    if shown.is_empty() {
        return Ok(());
    }
    for (name, help, value) in SERIES {
        writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge")?;
        for w in shown {
            writeln!(
                out,
                "{name}{{worker=\"{}\"}} {}",
                LabelValue(w.name),
                value(w)
            )?;
        }
    }
    Ok(())
}

/// A label value in Prometheus' text format: backslash, quote and newline
/// escaped.
struct LabelValue<'a>(&'a str);

impl std::fmt::Display for LabelValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// How often recorded histogram samples are folded into their buckets.
/// The recorder keeps every sample until then (or until a scrape): without
/// this, a router nobody scrapes grows by 24 bytes per request.
const UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Serve the Prometheus text format on `listener`: the recorder's, then
/// what `more` appends (the workers' series); and keep the recorder's
/// memory bounded, until the task is aborted.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    more: impl Fn(&mut String) + Clone + Send + Sync + 'static,
) -> std::io::Result<()> {
    let upkeep = {
        let handle = handle.clone();
        async move {
            let mut every = tokio::time::interval(UPKEEP);
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        }
    };
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let mut text = handle.render();
            more(&mut text);
            async move { text }
        }),
    );
    tracing::info!(
        "Prometheus metrics on http://{}/metrics",
        listener.local_addr()?
    );
    tokio::select! {
        served = axum::serve(listener, app) => served,
        () = upkeep => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(name: &str, healthy: bool) -> WorkerSeries<'_> {
        WorkerSeries {
            name,
            in_flight: 2,
            healthy,
            breaker: 1,
        }
    }

    #[test]
    fn worker_series_are_capped_counted_and_escaped() {
        let workers = [
            worker("http://a:1", true),
            worker("odd \"name\"\\", false),
            worker("http://c:1", true),
        ];
        let mut text = String::new();
        render_workers(&mut text, &workers, 2);
        assert!(
            text.contains("wasm_router_workers{state=\"healthy\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("wasm_router_workers{state=\"unhealthy\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("wasm_router_workers_in_flight 6\n"), "{text}");
        assert!(
            text.contains("wasm_router_worker_healthy{worker=\"odd \\\"name\\\"\\\\\"} 0\n"),
            "{text}"
        );
        assert!(!text.contains("http://c:1"), "past the cap: {text}");

        let mut none = String::new();
        render_workers(&mut none, &workers, 0);
        assert!(!none.contains("worker="), "{none}");
        assert!(none.contains("wasm_router_workers_in_flight 6\n"), "{none}");
    }
}
