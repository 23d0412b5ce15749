//! The client's response from a worker's: status and headers, and the body
//! passed through chunk by chunk, carrying what lives as long as it does
//! (the worker's in-flight count, the admission slot, the policy's
//! feedback).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::HOP_BY_HOP;
use crate::admission::Slot;
use crate::policy::{Outcome, Policy};
use crate::upstream;
use crate::workers::{InFlight, Worker};

/// The client's response: the worker's status and headers, and its body
/// passed through as it arrives. The in-flight count, the admission slot and
/// the policy feedback live until the body ends or the client goes away.
pub(crate) fn stream_back(
    response: upstream::Response,
    request_id: &str,
    in_flight: InFlight,
    slot: Option<Slot>,
    feedback: Option<Feedback>,
) -> Response {
    let head = response_head(&response, request_id);
    respond_with(head, response.into_body(), in_flight, slot, feedback)
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
    in_flight: InFlight,
    slot: Option<Slot>,
    feedback: Option<Feedback>,
) -> Response
where
    B: http_body::Body<Data = Bytes, Error = hyper::Error> + Send + Unpin + 'static,
{
    let body = Tracked {
        body,
        _in_flight: in_flight,
        _slot: slot,
        feedback,
    };
    let mut out = Response::new(Body::new(body));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// A worker's response body on its way to the client, with what lives as
/// long as it does: the in-flight count, the admission slot, and the
/// policy feedback, which reads token counts on the way and reports when
/// dropped (the body ended or the client went away).
struct Tracked<B> {
    body: B,
    _in_flight: InFlight,
    _slot: Option<Slot>,
    feedback: Option<Feedback>,
}

impl<B> http_body::Body for Tracked<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        if let (Some(feedback), Some(Ok(frame))) = (this.feedback.as_mut(), &frame)
            && let Some(data) = frame.data_ref()
        {
            feedback.scan(data);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Reports a response's [`Outcome`] to the policy when dropped (the body
/// ended or the client went away), with token counts found in the body.
pub(crate) struct Feedback {
    policy: Arc<Box<dyn Policy>>,
    outcome: Outcome,
    sent: Instant,
    /// The end of the previous chunk, so a field split across chunks is found.
    tail: Vec<u8>,
}

impl Feedback {
    const TAIL: usize = 64;

    /// Feedback on request `seq` served by `worker`, if the policy wants it.
    pub(crate) fn wanted(
        policy: &Arc<Box<dyn Policy>>,
        seq: u64,
        worker: &Worker,
        status: u16,
        sent: Instant,
    ) -> Option<Feedback> {
        policy.info().wants_feedback.then(|| Feedback {
            policy: policy.clone(),
            outcome: Outcome {
                request_id: seq,
                worker: worker.id,
                status,
                ..Outcome::default()
            },
            sent,
            tail: Vec::new(),
        })
    }

    /// Look for token counts in the next piece of the body.
    pub(crate) fn scan(&mut self, chunk: &Bytes) {
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
        self.policy.on_complete(&self.outcome);
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

    #[test]
    fn token_counts_are_found_across_chunks() {
        let policy: Arc<Box<dyn Policy>> = Arc::new(Box::new(crate::policy::LeastLoad::default()));
        let mut f = Feedback {
            policy,
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
