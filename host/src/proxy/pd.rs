//! Prefill/decode disaggregation (`--pd-disaggregation`), as the SGLang
//! router does it: each request goes to a prefill worker and a decode
//! worker at once, each picked by its own policy. The body gains the prefill
//! worker's bootstrap address and a random room (`bootstrap_host`,
//! `bootstrap_port`, `bootstrap_room`; arrays for a batch), where the decode
//! worker pulls the prompt's KV cache from. The client gets the decode
//! worker's response, streamed as it comes; a prefill that fails fails the
//! request with the prefill's own answer; a retry picks a new pair (and a
//! new room). With `return_logprob`, the prefill's input logprobs are put in
//! front of the decode's: in the response, or in a stream's first event.

use std::time::Instant;

use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::Value;

use super::logprobs::{merge_first_event, merge_logprobs, streamed_input_logprobs};
use super::respond::{Feedback, Held, respond_with, response_head, stream_back};
use super::retry::{Failure, Retries, failed_answer};
use super::{Forward, body_for, pick, upstream_headers};
use crate::config::Config;
use crate::config::Role;
use crate::errors::ApiError;
use crate::extract::{Peek, with_fields};
use crate::metrics as m;
use crate::policy::{AttemptError, Loaded};
use crate::upstream::{self, MAX_RELAYED_BODY, Upstream};
use crate::workers::{InFlight, Registry, Worker};

/// The two policies of PD mode, as loaded for this request.
pub struct PdPolicies {
    /// Picks the prefill worker.
    pub prefill: Loaded,
    /// Picks the decode worker.
    pub decode: Loaded,
}

/// One half's answer: response headers, or why there are none.
type Answer = Result<upstream::Response, Failure>;

/// The largest answer read whole to merge the prompt logprobs into a
/// non-streamed response (with `return_logprob`, each of its tokens has
/// its logprobs); a longer one is a 502.
const MAX_MERGED_BODY: usize = 64 << 20;

/// Forward `req` to a prefill/decode pair, retrying with a new pair as
/// configured. `peek` is the body as [`crate::extract::peek`] read it.
pub async fn forward_to_pair(
    config: &Config,
    upstream: &Upstream,
    registry: &Registry,
    policies: PdPolicies,
    req: Forward<'_>,
    peek: &Peek<'_>,
) -> Result<Response, ApiError> {
    let headers = upstream_headers(req.headers, req.request_id);
    let mut retries = Retries::new(config, req.route, req.request_id, req.deadline);
    while retries.next().await {
        let excluded = retries.excluded();
        let prefill = pick(
            registry,
            &**policies.prefill.policy,
            Role::Prefill,
            &req,
            excluded,
        )
        .await?;
        let decode = pick(
            registry,
            &**policies.decode.policy,
            Role::Decode,
            &req,
            excluded,
        )
        .await?;
        let (Some(prefill), Some(decode)) = (prefill, decode) else {
            break;
        };
        let body = with_fields(&req.body, &bootstrap_fields(&prefill, peek.batch_size()));
        let attempt_deadline = req.attempt_deadline(config);
        let attempt = retries.attempt();
        // Each half is an attempt span of its own; they end with the
        // attempt's answers (the decode's body is not followed).
        let spans = req.trace.map(|t| {
            (
                t.attempt(&prefill.url, attempt),
                t.attempt(&decode.url, attempt),
            )
        });
        let send = |worker: &Worker, span: Option<&crate::traces::AttemptSpan>| {
            let url = format!("{}{}", worker.url, req.path_and_query);
            let (mut headers, body) = (headers.clone(), body_for(worker, &body));
            if let Some(span) = span {
                span.inject(&mut headers);
            }
            async move {
                let call = upstream.send(Method::POST, &url, headers, body);
                match tokio::time::timeout_at(attempt_deadline, call).await {
                    Err(_elapsed) => Err(Failure::Timeout),
                    Ok(Err(e)) => Err(Failure::Unreachable(e)),
                    Ok(Ok(response)) => Ok(response),
                }
            }
        };
        let prefill_in_flight = prefill.start_request();
        // The decode worker computes no prefill: it takes the KV cache.
        let decode_in_flight = Worker::start_request(&decode);
        let mut prefill_feedback =
            Feedback::wanted(&policies.prefill, req.seq, attempt, &prefill, None);
        let mut decode_feedback =
            Feedback::wanted(&policies.decode, req.seq, attempt, &decode, None);
        let sent = Instant::now();
        // Both at once: the decode worker waits for the prefill's KV cache,
        // and a prefill worker may hold its answer until the transfer ends.
        // Whichever half fails first ends the attempt; dropping the other
        // call cancels it.
        let prefill_call = send(&prefill, spans.as_ref().map(|s| &s.0));
        let decode_call = send(&decode, spans.as_ref().map(|s| &s.1));
        tokio::pin!(prefill_call, decode_call);
        let (mut prefill_answer, mut decode_answer) = (None::<Answer>, None::<Answer>);
        loop {
            tokio::select! {
                answer = &mut prefill_call, if prefill_answer.is_none() => prefill_answer = Some(answer),
                answer = &mut decode_call, if decode_answer.is_none() => decode_answer = Some(answer),
            }
            let failed = |answer: &Option<Answer>| match answer {
                Some(Ok(r)) => !r.status().is_success(),
                Some(Err(_)) => true,
                None => false,
            };
            if failed(&prefill_answer)
                || failed(&decode_answer)
                || (prefill_answer.is_some() && decode_answer.is_some())
            {
                break;
            }
        }
        let (prefill_span, decode_span) = spans.unzip();
        for (feedback, answer, span) in [
            (&mut prefill_feedback, &prefill_answer, &prefill_span),
            (&mut decode_feedback, &decode_answer, &decode_span),
        ] {
            let (status, error) = match answer {
                Some(Ok(response)) => {
                    let status = response.status().as_u16();
                    Feedback::answered(feedback, status);
                    (status, (status >= 400).then_some(AttemptError::Status))
                }
                Some(Err(Failure::Timeout)) => (0, Some(AttemptError::Timeout)),
                Some(Err(_)) => (0, Some(AttemptError::Connect)),
                None => (0, Some(AttemptError::Cancelled)),
            };
            if let (Some(error), 0) = (error, status) {
                Feedback::failed(feedback, 0, error);
            }
            if let Some(span) = span {
                span.ended(status, error);
            }
        }
        drop((prefill_span, decode_span));
        let succeeded =
            |answer: &Option<Answer>| matches!(answer, Some(Ok(r)) if r.status().is_success());
        let (prefill_ok, decode_ok) = (succeeded(&prefill_answer), succeeded(&decode_answer));
        // A failed prefill decides the attempt, whatever the decode did.
        let (worker, answer) = match (prefill_answer, decode_answer) {
            (Some(Ok(p)), Some(Ok(d))) if prefill_ok && decode_ok => {
                prefill.breaker.record(true, Instant::now());
                decode.breaker.record(true, Instant::now());
                m::for_route(req.route).ttfb.record(sent.elapsed());
                let pair = Pair {
                    prefill: Half {
                        in_flight: prefill_in_flight,
                        feedback: prefill_feedback,
                        response: p,
                    },
                    decode: Half {
                        in_flight: decode_in_flight,
                        feedback: decode_feedback,
                        response: d,
                    },
                };
                return Ok(respond(config, &req, peek, pair).await);
            }
            (Some(p), _) if !prefill_ok => (prefill, p),
            (_, Some(d)) => (decode, d),
            (_, None) => unreachable!("the loop above ends on a failure or both answers"),
        };
        // Both halves' outcomes are reported as they stand: the other one
        // was cut short (status 0) or answered.
        drop((prefill_feedback, decode_feedback));
        let failure = match answer {
            Err(failure) => failure,
            Ok(response) if retries.retries(response.status().as_u16()) => {
                Failure::Status(response)
            }
            // The worker's own error answer, passed on as it is.
            Ok(response) => {
                worker
                    .breaker
                    .record(!response.status().is_server_error(), Instant::now());
                return failed_answer(response, worker.role).await;
            }
        };
        if let Some(end) = retries.failed(worker.worker, failure).await {
            return end;
        }
    }
    retries.exhausted()
}

/// One half of a pair that answered with success.
struct Half {
    in_flight: InFlight,
    feedback: Option<Feedback>,
    response: upstream::Response,
}

/// Both halves answered with success.
struct Pair {
    prefill: Half,
    decode: Half,
}

/// The client's response: the decode's, streamed; with `return_logprob`,
/// the prefill's body is read first and its prompt logprobs merged in.
/// Bodies read whole are capped ([`MAX_RELAYED_BODY`] for the prefill's,
/// [`MAX_MERGED_BODY`] for a non-streamed decode's) and bounded by the
/// request's deadline.
async fn respond(config: &Config, req: &Forward<'_>, peek: &Peek<'_>, pair: Pair) -> Response {
    let Pair { prefill, decode } = pair;
    let timeouts = req.body_timeouts(config);
    if !peek.wants_logprobs() {
        tokio::spawn(drain(prefill, req.deadline));
        let held = Held {
            in_flight: decode.in_flight,
            feedback: decode.feedback,
            attempt: None,
        };
        return stream_back(decode.response, req.request_id, held, timeouts);
    }
    if peek.streams() {
        let Half {
            in_flight,
            mut feedback,
            response,
        } = prefill;
        let prefill_body = response.read_whole(MAX_RELAYED_BODY, req.deadline).await;
        match (&prefill_body, feedback.as_mut()) {
            (Ok(body), Some(f)) => f.scan(body),
            (Err(e), _) => {
                tracing::warn!(worker = %in_flight.worker().name(), "prefill answer not merged: {e}");
            }
            _ => {}
        }
        drop((feedback, in_flight));
        let front = prefill_body
            .ok()
            .and_then(|body| streamed_input_logprobs(&body));
        let (status, mut headers) = response_head(&decode.response, req.request_id);
        // The first event changes length.
        headers.remove(header::CONTENT_LENGTH);
        let events = merge_first_event(decode.response.bytes_stream(), front);
        let body = http_body_util::StreamBody::new(Box::pin(
            events.map(|chunk| chunk.map(http_body::Frame::data)),
        ));
        let held = Held {
            in_flight: decode.in_flight,
            feedback: decode.feedback,
            attempt: None,
        };
        return respond_with((status, headers), body, held, timeouts);
    }
    let status = decode.response.status().as_u16();
    let (prefill_body, decode_body) = tokio::join!(
        prefill.response.read_whole(MAX_RELAYED_BODY, req.deadline),
        decode.response.read_whole(MAX_MERGED_BODY, req.deadline)
    );
    let (prefill_body, decode_body) = match (prefill_body, decode_body) {
        (Ok(p), Ok(d)) => (p, d),
        (Err(upstream::BodyError::Timeout), _) | (_, Err(upstream::BodyError::Timeout)) => {
            return ApiError::UpstreamTimeout.into_response();
        }
        (Err(e), _) | (_, Err(e)) => {
            return ApiError::UpstreamConnect(e.to_string()).into_response();
        }
    };
    for (mut feedback, body) in [
        (prefill.feedback, &prefill_body),
        (decode.feedback, &decode_body),
    ] {
        if let Some(f) = feedback.as_mut() {
            f.scan(body);
        }
    }
    drop((prefill.in_flight, decode.in_flight));
    let merged = match (
        serde_json::from_slice::<Value>(&prefill_body),
        serde_json::from_slice::<Value>(&decode_body),
    ) {
        (Ok(prefill), Ok(mut decode)) => {
            merge_logprobs(&prefill, &mut decode);
            bytes::Bytes::from(decode.to_string())
        }
        _ => decode_body,
    };
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        [(header::CONTENT_TYPE, "application/json")],
        merged,
    )
        .into_response()
}

/// Read the prefill's body to its end (so its connection is reused and its
/// feedback complete), in the background, until the request's `deadline`.
async fn drain(prefill: Half, deadline: tokio::time::Instant) {
    let Half {
        in_flight,
        mut feedback,
        response,
    } = prefill;
    let read = async {
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) => {
                    if let Some(f) = feedback.as_mut() {
                        f.scan(&bytes);
                    }
                }
                Err(e) => {
                    tracing::debug!(worker = %in_flight.worker().name(), "prefill body broke off: {e}");
                    return;
                }
            }
        }
    };
    if tokio::time::timeout_at(deadline, read).await.is_err() {
        tracing::warn!(worker = %in_flight.worker().name(), "prefill body still open at the request's deadline; dropped");
    }
}

/// The bootstrap fields for a request to `prefill`'s pair: its host, its
/// bootstrap port (`null`: the worker's default) and a random room, each an
/// array of `batch` entries for a batch.
fn bootstrap_fields(prefill: &Worker, batch: Option<usize>) -> String {
    let host = reqwest::Url::parse(&prefill.url)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()))
        .unwrap_or_default();
    let host = Value::from(host).to_string();
    let port = prefill
        .bootstrap_port
        .map_or_else(|| "null".to_string(), |p| p.to_string());
    let room = || fastrand::u64(..1 << 63).to_string();
    match batch {
        None => format!(
            r#""bootstrap_host":{host},"bootstrap_port":{port},"bootstrap_room":{}"#,
            room()
        ),
        Some(n) => {
            let repeat = |value: &str| vec![value; n].join(",");
            let rooms: Vec<String> = (0..n).map(|_| room()).collect();
            format!(
                r#""bootstrap_host":[{}],"bootstrap_port":[{}],"bootstrap_room":[{}]"#,
                repeat(&host),
                repeat(&port),
                rooms.join(",")
            )
        }
    }
}
