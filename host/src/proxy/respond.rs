//! The client's response from a worker's: status and headers, and the body
//! passed through chunk by chunk, carrying what lives as long as it does
//! (the worker's in-flight count and the policy's feedback; the admission
//! slot is held around it, [`super::ingress::admit`]) and bounded in time: by the request's deadline
//! (`--request-timeout-secs`) and by the longest pause between two chunks
//! (`--stream-idle-timeout-secs`). A stream cut off by either ends with an
//! SSE error event in OpenAI's shape; any other body breaks off (the client
//! sees an incomplete response).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::BoxError;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::Sleep;

use crate::errors::ApiError;
use crate::lab::log::Draft;
use crate::metrics as m;
use crate::policy::{AttemptError, Loaded, Outcome};
use crate::upstream;
use crate::workers::{InFlight, Worker};

/// Headers of a worker's response that belong to its connection and are
/// not passed on to the client.
const HOP_BY_HOP: [HeaderName; 10] = [
    header::CONNECTION,
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// The [`Outcome`] status of a response whose client went away before its
/// end (nginx's "client closed request").
pub(crate) const CLIENT_GONE: u16 = 499;

/// How long a response body may take: until the request's `deadline`, and
/// at most `idle` between two chunks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub deadline: tokio::time::Instant,
    pub idle: Duration,
}

/// What a response body holds until it ends: the worker's in-flight count,
/// the policy's feedback, the attempt's trace span.
pub(crate) struct Held {
    pub in_flight: InFlight,
    pub feedback: Option<Feedback>,
    pub attempt: Option<crate::traces::AttemptSpan>,
}

/// The client's response: the worker's status and headers, and its body
/// passed through as it arrives, holding `held` until it ends.
pub(crate) fn stream_back(
    response: upstream::Response,
    request_id: &str,
    held: Held,
    timeouts: Timeouts,
) -> Response {
    let head = response_head(&response, request_id);
    respond_with(head, response.into_body(), held, timeouts)
}

/// The status and headers the client gets for a worker's `response`.
pub(crate) fn response_head(
    response: &upstream::Response,
    request_id: &str,
) -> (StatusCode, HeaderMap) {
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = HeaderMap::with_capacity(response.headers().len() + 1);
    for (name, value) in response.headers() {
        if !HOP_BY_HOP.contains(name) || name == header::CONTENT_LENGTH {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), id);
    }
    (status, headers)
}

/// The client's response: `head`, and `body` passed through as it arrives;
/// see [`stream_back`].
pub(crate) fn respond_with<B>(
    (status, headers): (StatusCode, HeaderMap),
    body: B,
    held: Held,
    timeouts: Timeouts,
) -> Response
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let sse = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let body = Tracked {
        body,
        held: Some(held),
        success: status.is_success(),
        first_byte: None,
        sse,
        timeouts,
        last_chunk: tokio::time::Instant::now(),
        alarm: Box::pin(tokio::time::sleep_until(
            (tokio::time::Instant::now() + timeouts.idle).min(timeouts.deadline),
        )),
        overdue: false,
    };
    let mut out = Response::new(Body::new(body));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// A worker's response body on its way to the client, with what it holds
/// ([`Held`]: given back when the body ends, is cut off, or the client goes
/// away) and its time limits. The policy's feedback reads token counts on
/// the way.
struct Tracked<B> {
    body: B,
    /// `None` once the body ended.
    held: Option<Held>,
    /// The worker answered 2xx: a whole body counts in its moving averages.
    success: bool,
    /// When the body's first bytes arrived.
    first_byte: Option<std::time::Instant>,
    /// Whether the body is an SSE stream, which is ended with an error event.
    sse: bool,
    timeouts: Timeouts,
    last_chunk: tokio::time::Instant,
    /// Fires at the earliest moment the body can be out of time; re-armed
    /// lazily when it fires early (chunks arrived meanwhile), so a chunk
    /// costs no timer update.
    alarm: Pin<Box<Sleep>>,
    /// A chunk arrived after the deadline: it was passed on, the body ends.
    overdue: bool,
}

impl<B> Tracked<B> {
    /// The body ended, failed with `failure` (the status for the policy's
    /// outcome and why) if it did; give back what it held. A whole 2xx
    /// body counts in the worker's moving averages.
    fn finish(&mut self, failure: Option<(u16, AttemptError)>) {
        let Some(Held {
            in_flight,
            mut feedback,
            attempt,
        }) = self.held.take()
        else {
            return;
        };
        if let (Some(span), Some((status, error))) = (&attempt, failure) {
            span.ended(status, Some(error));
        }
        match failure {
            Some((status, error)) => Feedback::failed(&mut feedback, status, error),
            None if self.success => in_flight.served(self.first_byte),
            None => {}
        }
        // The policy hears of the end after the worker's count went down.
        drop((in_flight, feedback, attempt));
    }

    /// The body is out of time: cut it off with `error`.
    fn cut_off(&mut self, error: ApiError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let reason = match error {
            ApiError::UpstreamIdle => "idle",
            _ => "deadline",
        };
        if let Some(held) = &self.held {
            tracing::warn!(worker = %held.in_flight.worker().name(), reason, "response cut off: {error}");
        }
        metrics::counter!(m::RESPONSES_CUT_OFF, "reason" => reason).increment(1);
        self.finish(Some((error.status().as_u16(), AttemptError::Timeout)));
        if self.sse {
            let event = format!("data: {}\n\n", error.to_json());
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))))
        } else {
            Poll::Ready(Some(Err(error.into())))
        }
    }

    /// Whether the body is out of time, checked when it has nothing to give:
    /// `Some` with the reason, or `None` with `cx` woken at the next moment
    /// it could be.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<ApiError> {
        loop {
            if self.alarm.as_mut().poll(cx).is_pending() {
                return None;
            }
            let now = tokio::time::Instant::now();
            if now >= self.timeouts.deadline {
                return Some(ApiError::UpstreamTimeout);
            }
            let idle_until = self.last_chunk + self.timeouts.idle;
            if now >= idle_until {
                return Some(ApiError::UpstreamIdle);
            }
            self.alarm
                .as_mut()
                .reset(idle_until.min(self.timeouts.deadline));
        }
    }
}

impl<B> http_body::Body for Tracked<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.held.is_none() {
            return Poll::Ready(None);
        }
        if this.overdue {
            return this.cut_off(ApiError::UpstreamTimeout);
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if this.first_byte.is_none() {
                        this.first_byte = Some(std::time::Instant::now());
                        if let Some(held) = this.held.as_mut() {
                            held.in_flight.answer_began();
                            if let Some(span) = &held.attempt {
                                span.first_byte();
                            }
                        }
                    }
                    if let Some(feedback) = this.held.as_mut().and_then(|h| h.feedback.as_mut()) {
                        feedback.scan(data);
                    }
                    this.last_chunk = tokio::time::Instant::now();
                    this.overdue = this.last_chunk >= this.timeouts.deadline;
                }
                if this.body.is_end_stream() {
                    this.finish(None);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(Some((
                    StatusCode::BAD_GATEWAY.as_u16(),
                    AttemptError::BrokenBody,
                )));
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.finish(None);
                Poll::Ready(None)
            }
            Poll::Pending => match this.expired(cx) {
                Some(error) => this.cut_off(error),
                None => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for Tracked<B> {
    /// Dropped before its end: the client went away.
    fn drop(&mut self) {
        self.finish(Some((CLIENT_GONE, AttemptError::ClientAbort)));
    }
}

/// Reports an attempt's [`Outcome`] to the policy when dropped: the attempt
/// failed, or its body ended, was cut off, or lost its client; with the
/// token counts found in the body.
pub(crate) struct Feedback {
    /// The policy to report to, when it wants feedback.
    policy: Option<Loaded>,
    /// The request's decision record, which takes the outcome too.
    draft: Option<Draft>,
    outcome: Outcome,
    sent: Instant,
    /// The end of the previous chunk, so a field split across chunks is found.
    tail: Vec<u8>,
}

impl Feedback {
    const TAIL: usize = 64;

    /// Feedback on attempt `attempt` (1-based) of request `seq`, sent to
    /// `worker` now, if the policy wants it or the request has a decision
    /// record (`draft`); its status is [`CLIENT_GONE`] (dropped with the
    /// request) until [`Feedback::answered`] or [`Feedback::failed`] says
    /// otherwise. It is reported to the instance serving, and the record
    /// written, when it is dropped.
    pub(crate) fn wanted(
        policy: &Loaded,
        seq: u64,
        attempt: u32,
        worker: &Worker,
        draft: Option<Draft>,
    ) -> Option<Feedback> {
        let report = policy.policy.info().wants_feedback;
        (report || draft.is_some()).then(|| Feedback {
            policy: report.then(|| policy.clone()),
            draft,
            outcome: Outcome {
                request_id: seq,
                worker: worker.id,
                attempt,
                status: CLIENT_GONE,
                error: Some(AttemptError::ClientAbort),
                ..Outcome::default()
            },
            sent: Instant::now(),
            tail: Vec::new(),
        })
    }

    /// The worker answered with `status`: an error if it is one.
    pub(crate) fn answered(feedback: &mut Option<Feedback>, status: u16) {
        if let Some(f) = feedback {
            f.outcome.status = status;
            f.outcome.error = (status >= 400).then_some(AttemptError::Status);
        }
    }

    /// The attempt failed with `error`, and `status` for the policy (0 when
    /// the worker gave none).
    pub(crate) fn failed(feedback: &mut Option<Feedback>, status: u16, error: AttemptError) {
        if let Some(f) = feedback {
            f.outcome.status = status;
            f.outcome.error = Some(error);
        }
    }

    /// The attempt failed and the request goes on: its decision record,
    /// with this attempt's outcome, for the next attempt to take over.
    pub(crate) fn take_draft(feedback: &mut Option<Feedback>) -> Option<Draft> {
        let f = feedback.as_mut()?;
        let mut draft = f.draft.take()?;
        f.outcome.latency_us = f.sent.elapsed().as_micros() as u64;
        draft.ended(&f.outcome);
        Some(draft)
    }

    /// Look for token counts in the next piece of the body; the first
    /// piece's arrival is the time to first byte.
    pub(crate) fn scan(&mut self, chunk: &Bytes) {
        if self.outcome.ttft_us.is_none() {
            self.outcome.ttft_us = Some(self.sent.elapsed().as_micros() as u64);
        }
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(chunk);
        let o = &mut self.outcome;
        for (field, slot) in [
            ("\"prompt_tokens\":", &mut o.prompt_tokens),
            ("\"cached_tokens\":", &mut o.cached_tokens),
            ("\"completion_tokens\":", &mut o.completion_tokens),
        ] {
            if let Some(n) = last_number_after(&window, field.as_bytes()) {
                *slot = Some(n);
            }
        }
        let keep = window.len().saturating_sub(Self::TAIL);
        self.tail = window.split_off(keep);
    }
}

impl Drop for Feedback {
    fn drop(&mut self) {
        self.outcome.latency_us = self.sent.elapsed().as_micros() as u64;
        if let Some(policy) = &self.policy {
            policy.report(&self.outcome);
        }
        if let Some(draft) = &mut self.draft {
            draft.ended(&self.outcome);
        }
    }
}

/// The number after the last `field` in `haystack`, if complete.
fn last_number_after(haystack: &[u8], field: &[u8]) -> Option<u32> {
    let at = haystack.windows(field.len()).rposition(|w| w == field)?;
    let rest = &haystack[at + field.len()..];
    let digits: Vec<u8> = rest
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workers::Registry;
    use http_body_util::BodyExt;
    use std::sync::Arc;
    use std::time::Duration;

    /// A body that sends one chunk and then nothing, with the content type
    /// `content_type`, passed back under `timeouts`; and the worker whose
    /// in-flight count it holds.
    fn stalled_response(content_type: &'static str, timeouts: Timeouts) -> (Response, Arc<Worker>) {
        let registry = Registry::new(None, true);
        let worker = registry.add("http://127.0.0.1:1").unwrap();
        let chunks = futures_util::StreamExt::chain(
            futures_util::stream::iter([Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(
                b"data: 1\n\n",
            )))]),
            futures_util::stream::pending(),
        );
        let body = http_body_util::StreamBody::new(chunks);
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        let held = Held {
            in_flight: worker.start_request(),
            feedback: None,
            attempt: None,
        };
        let response = respond_with((StatusCode::OK, headers), body, held, timeouts);
        (response, worker)
    }

    /// Issue 15: nothing timed out after the response headers; a stalled
    /// stream held its worker's count until the client left.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_stream_ends_with_an_error_event_and_frees_its_worker() {
        let timeouts = Timeouts {
            deadline: tokio::time::Instant::now() + Duration::from_secs(3600),
            idle: Duration::from_secs(5),
        };
        let (response, worker) = stalled_response("text/event-stream", timeouts);
        let mut body = response.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "data: 1\n\n");
        assert_eq!(worker.load(), 1);
        // Paused time moves to the idle timeout, the only timer.
        let event = body.frame().await.unwrap().unwrap().into_data().unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(event.strip_prefix(b"data: ").unwrap()).unwrap();
        assert_eq!(json["error"]["code"], "upstream_idle_timeout", "{json}");
        assert!(event.ends_with(b"\n\n"));
        assert_eq!(worker.load(), 0, "the count is given back at the cut");
        assert!(
            body.frame().await.is_none(),
            "the stream ends after the event"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_past_the_deadline_breaks_off() {
        let timeouts = Timeouts {
            deadline: tokio::time::Instant::now() + Duration::from_secs(2),
            idle: Duration::from_secs(3600),
        };
        let (response, worker) = stalled_response("application/json", timeouts);
        let mut body = response.into_body();
        assert!(body.frame().await.unwrap().is_ok());
        let cut = body.frame().await.unwrap();
        assert!(cut.is_err(), "not an SSE stream: the body breaks off");
        assert_eq!(worker.load(), 0);
    }

    #[test]
    fn token_counts_are_found_across_chunks() {
        let least_load: Box<dyn crate::policy::Policy> =
            Box::new(crate::policy::LeastLoad::default());
        let policy = Loaded::from(&Arc::new(arc_swap::ArcSwap::from_pointee(least_load)));
        let mut f = Feedback {
            policy: Some(policy),
            draft: None,
            outcome: Outcome::default(),
            sent: Instant::now(),
            tail: Vec::new(),
        };
        f.scan(&Bytes::from_static(
            br#"{"usage": {"prompt_tokens": 12, "prompt_tokens_details": {"cached_to"#,
        ));
        f.scan(&Bytes::from_static(
            br#"kens": 8}, "completion_tokens": 3}}"#,
        ));
        assert_eq!(f.outcome.prompt_tokens, Some(12));
        assert_eq!(f.outcome.cached_tokens, Some(8));
        assert_eq!(f.outcome.completion_tokens, Some(3));
    }
}
