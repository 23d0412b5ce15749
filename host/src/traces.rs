//! OpenTelemetry traces (`--enable-trace`, `--otlp-traces-endpoint
//! HOST:PORT`): per request, a server span (route, model, status, request
//! id) that continues the client's W3C `traceparent`, a child span for the
//! policy's decision (policy, component digest, candidates, pick, matched
//! prefix tokens, decision time, fallback), and a client span for each
//! upstream attempt (worker, status, error kind, time to first byte),
//! whose context is the `traceparent` the worker receives.
//!
//! Spans leave the request path at once: a finished span goes into a
//! bounded queue ([`QUEUE`] spans; a full queue drops the span and counts
//! it in `wasm_router_trace_spans_dropped_total`), and one task exports
//! batches over OTLP/gRPC. Without `--enable-trace` there is no tracer and
//! the request path only tests an `Option`.

use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    SdkTracer, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor,
};
use tokio::sync::mpsc;

use crate::metrics as m;
use crate::policy::{AttemptError, Route};

/// Spans waiting for export, at most.
pub const QUEUE: usize = 4096;
/// Spans per export, at most.
const BATCH: usize = 512;
/// The longest a finished span waits before its batch is sent.
const LINGER: Duration = Duration::from_secs(1);

/// Tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot export traces to {endpoint}: {why} (give --otlp-traces-endpoint HOST:PORT of an OTLP/gRPC collector)"
)]
pub struct TraceError {
    endpoint: String,
    why: String,
}

/// The router's tracer, when `--enable-trace` is on.
#[derive(Debug, Clone)]
pub struct Traces {
    /// Holds its provider, and so the queue.
    tracer: SdkTracer,
}

impl Traces {
    /// Export to the collector at `endpoint` (`HOST:PORT`, or a URL); in a
    /// Tokio runtime, which runs the export task.
    pub fn start(endpoint: &str) -> Result<Traces, TraceError> {
        let url = if endpoint.contains("://") {
            endpoint.to_string()
        } else {
            format!("http://{endpoint}")
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(url)
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| TraceError {
                endpoint: endpoint.to_string(),
                why: e.to_string(),
            })?;
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(export(exporter, rx));
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("wasm-router")
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Queue { tx })
            .with_resource(resource)
            .build();
        Ok(Traces {
            tracer: provider.tracer("wasm-router"),
        })
    }

    /// The span of a request that came in on `route` with `headers`,
    /// continuing the client's `traceparent` when it gives a valid one.
    pub fn request(&self, headers: &HeaderMap, route: Route, request_id: &str) -> RequestSpan {
        let parent = TraceContextPropagator::new().extract(&Headers(headers));
        let mut span = self
            .tracer
            .span_builder(route.span_name())
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        // A span the sampler left out records nothing: nothing is made for it.
        let recording = span.is_recording();
        if recording {
            span.set_attributes([
                KeyValue::new("http.route", route.label()),
                KeyValue::new("wasm_router.request_id", request_id.to_string()),
            ]);
        }
        RequestSpan {
            cx: parent.with_span(span),
            tracer: self.tracer.clone(),
            recording,
        }
    }
}

/// A request's span; its children are the decision and the attempts.
#[derive(Debug, Clone)]
pub struct RequestSpan {
    cx: Context,
    tracer: SdkTracer,
    /// Sampled: its children are too, and attributes are worth making.
    recording: bool,
}

/// What the decision span records.
#[derive(Debug)]
pub struct DecisionRecord<'a> {
    /// The policy's name.
    pub policy: &'a str,
    /// The component's sha256, for a Wasm policy.
    pub digest: Option<&'a str>,
    /// How many candidates it chose from.
    pub candidates: usize,
    /// The pick's URL.
    pub picked: Option<&'a str>,
    /// The prompt tokens the pick holds, when the policy matched KV pages.
    pub matched_tokens: Option<u32>,
    /// Why the native fallback decided, if it did.
    pub fallback: Option<String>,
    /// When the policy was asked.
    pub started: SystemTime,
    /// How long the decision took.
    pub took: Duration,
}

impl RequestSpan {
    /// Whether it is sampled (`OTEL_TRACES_SAMPLER`): a decision is worth
    /// recording.
    pub fn recording(&self) -> bool {
        self.recording
    }

    /// The model the request names.
    pub fn model(&self, model: &str) {
        if self.recording && !model.is_empty() {
            self.cx
                .span()
                .set_attribute(KeyValue::new("gen_ai.request.model", model.to_string()));
        }
    }

    /// Record the policy's decision as a child span.
    pub fn decision(&self, d: DecisionRecord<'_>) {
        if !self.recording {
            return;
        }
        let mut attributes = vec![
            KeyValue::new("wasm_router.policy", d.policy.to_string()),
            KeyValue::new("wasm_router.candidates", d.candidates as i64),
            KeyValue::new("wasm_router.decision_us", d.took.as_micros() as i64),
        ];
        if let Some(digest) = d.digest {
            attributes.push(KeyValue::new(
                "wasm_router.policy_sha256",
                digest.to_string(),
            ));
        }
        if let Some(picked) = d.picked {
            attributes.push(KeyValue::new("wasm_router.worker", picked.to_string()));
        }
        if let Some(n) = d.matched_tokens {
            attributes.push(KeyValue::new(
                "wasm_router.matched_prefix_tokens",
                i64::from(n),
            ));
        }
        if let Some(why) = &d.fallback {
            attributes.push(KeyValue::new("wasm_router.fallback", why.clone()));
        }
        let mut span = self
            .tracer
            .span_builder("route")
            .with_kind(SpanKind::Internal)
            .with_start_time(d.started)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &self.cx);
        span.end_with_timestamp(d.started + d.took);
    }

    /// A span for attempt number `attempt` at `worker`.
    pub fn attempt(&self, worker: &str, attempt: u32) -> AttemptSpan {
        let mut span = self
            .tracer
            .span_builder("attempt")
            .with_kind(SpanKind::Client)
            .start_with_context(&self.tracer, &self.cx);
        if self.recording {
            span.set_attributes([
                KeyValue::new("server.address", worker.to_string()),
                KeyValue::new("wasm_router.attempt", i64::from(attempt)),
            ]);
        }
        AttemptSpan {
            cx: self.cx.with_span(span),
            sent: std::time::Instant::now(),
            recording: self.recording,
        }
    }

    /// The response's status; the span ends when this value is dropped
    /// (with the response's body, [`crate::hold`]).
    pub fn status(&self, status: u16) {
        if !self.recording {
            return;
        }
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            span.set_status(Status::error(format!("status {status}")));
        }
    }
}

impl Drop for RequestSpan {
    fn drop(&mut self) {
        self.cx.span().end();
    }
}

/// An upstream attempt's span; it ends when dropped.
#[derive(Debug)]
pub struct AttemptSpan {
    cx: Context,
    sent: std::time::Instant,
    recording: bool,
}

impl AttemptSpan {
    /// Put this attempt's context in the worker's `traceparent` (and
    /// `tracestate`), in place of the client's.
    pub fn inject(&self, headers: &mut HeaderMap) {
        TraceContextPropagator::new().inject_context(&self.cx, &mut HeadersMut(headers));
    }

    /// The answer's first body byte arrived.
    pub fn first_byte(&self) {
        if !self.recording {
            return;
        }
        let ttfb = self.sent.elapsed().as_micros() as i64;
        self.cx
            .span()
            .set_attribute(KeyValue::new("wasm_router.ttfb_us", ttfb));
    }

    /// How the attempt ended: the worker's status (0: none), and the error
    /// when it failed.
    pub fn ended(&self, status: u16, error: Option<AttemptError>) {
        if !self.recording {
            return;
        }
        let span = self.cx.span();
        if status != 0 {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        if let Some(error) = error {
            let kind = format!("{error:?}").to_lowercase();
            span.set_attribute(KeyValue::new("error.type", kind.clone()));
            span.set_status(Status::error(kind));
        }
    }
}

impl Drop for AttemptSpan {
    fn drop(&mut self) {
        self.cx.span().end();
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// The span processor: finished spans into the bounded queue.
#[derive(Debug)]
struct Queue {
    tx: mpsc::Sender<SpanData>,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.tx.try_send(span).is_err() {
            metrics::counter!(m::TRACE_SPANS_DROPPED).increment(1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Export what the queue holds, a batch at a time: when [`BATCH`] spans
/// are there or the oldest has waited [`LINGER`].
async fn export(exporter: opentelemetry_otlp::SpanExporter, mut rx: mpsc::Receiver<SpanData>) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let Some(first) = rx.recv().await else {
            return;
        };
        batch.push(first);
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        while batch.len() < BATCH {
            tokio::select! {
                span = rx.recv() => match span {
                    Some(span) => batch.push(span),
                    None => break,
                },
                () = &mut linger => break,
            }
        }
        let sent = batch.len();
        if let Err(e) = exporter.export(std::mem::take(&mut batch)).await {
            metrics::counter!(m::TRACE_SPANS_DROPPED).increment(sent as u64);
            tracing::debug!("trace export of {sent} spans failed: {e}");
        }
    }
}
