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

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::Value;

use super::logprobs::{merge_first_event, merge_logprobs, streamed_input_logprobs};
use super::respond::{Feedback, respond_with, response_head, stream_back};
use super::retry::{Failure, Retries, failed_answer};
use super::{Forward, body_for, pick, upstream_headers};
use crate::admission::Slot;
use crate::config::Config;
use crate::errors::ApiError;
use crate::extract::{Peek, with_fields};
use crate::metrics as m;
use crate::policy::{Policy, Role};
use crate::upstream::{self, Upstream};
use crate::workers::{InFlight, Registry, Worker};

/// The two policies of PD mode, as loaded for this request.
pub struct PdPolicies {
    /// Picks the prefill worker.
    pub prefill: Arc<Box<dyn Policy>>,
    /// Picks the decode worker.
    pub decode: Arc<Box<dyn Policy>>,
}

/// One half's answer: response headers, or why there are none.
type Answer = Result<upstream::Response, Failure>;

/// Forward `req` to a prefill/decode pair, retrying with a new pair as
/// configured. `peek` is the body as [`crate::extract::peek`] read it.
pub async fn forward(
    config: &Config,
    upstream: &Upstream,
    registry: &Registry,
    policies: PdPolicies,
    req: Forward<'_>,
    peek: &Peek<'_>,
    slot: Option<Slot>,
) -> Result<Response, ApiError> {
    let headers = upstream_headers(req.headers, req.request_id);
    let timeout = config.attempt_timeout.unwrap_or(config.request_timeout);
    let mut retries = Retries::new(config, req.route, req.request_id);
    while retries.next().await {
        let excluded = retries.excluded();
        let prefill = pick(registry, &**policies.prefill, Role::Prefill, &req, excluded)?;
        let decode = pick(registry, &**policies.decode, Role::Decode, &req, excluded)?;
        let (Some(prefill), Some(decode)) = (prefill, decode) else {
            break;
        };
        let body = with_fields(&req.body, &bootstrap_fields(&prefill, peek.batch_size()));
        let send = |worker: &Worker| {
            let url = format!("{}{}", worker.url, req.path_and_query);
            let (headers, body) = (headers.clone(), body_for(worker, &body));
            async move {
                let call = upstream.send(Method::POST, &url, headers, body);
                match tokio::time::timeout(timeout, call).await {
                    Err(_elapsed) => Err(Failure::Timeout),
                    Ok(Err(e)) => Err(Failure::Unreachable(e)),
                    Ok(Ok(response)) => Ok(response),
                }
            }
        };
        let prefill_in_flight = prefill.start_request();
        let decode_in_flight = decode.start_request();
        let sent = Instant::now();
        // Both at once: the decode worker waits for the prefill's KV cache,
        // and a prefill worker may hold its answer until the transfer ends.
        // Whichever half fails first ends the attempt; dropping the other
        // call cancels it.
        let prefill_call = send(&prefill);
        let decode_call = send(&decode);
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
                    prefill: (&prefill, prefill_in_flight, p),
                    decode: (&decode, decode_in_flight, d),
                };
                return Ok(respond(config, &policies, &req, peek, pair, sent, slot).await);
            }
            (Some(p), _) if !prefill_ok => (prefill, p),
            (_, Some(d)) => (decode, d),
            (_, None) => unreachable!("the loop above ends on a failure or both answers"),
        };
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
        if let Some(end) = retries.failed(worker, failure).await {
            return end;
        }
    }
    retries.exhausted()
}

/// Both halves answered with success.
struct Pair<'w> {
    prefill: (&'w Arc<Worker>, InFlight, upstream::Response),
    decode: (&'w Arc<Worker>, InFlight, upstream::Response),
}

/// The client's response: the decode's, streamed; with `return_logprob`,
/// the prefill's body is read first and its prompt logprobs merged in.
async fn respond(
    config: &Config,
    policies: &PdPolicies,
    req: &Forward<'_>,
    peek: &Peek<'_>,
    pair: Pair<'_>,
    sent: Instant,
    slot: Option<Slot>,
) -> Response {
    let (prefill, prefill_in_flight, prefill_response) = pair.prefill;
    let (decode, decode_in_flight, decode_response) = pair.decode;
    let feedback =
        |policy: &Arc<Box<dyn Policy>>, worker: &Worker, response: &upstream::Response| {
            Feedback::wanted(policy, req.seq, worker, response.status().as_u16(), sent)
        };
    let prefill_feedback = feedback(&policies.prefill, prefill, &prefill_response);
    let decode_feedback = feedback(&policies.decode, decode, &decode_response);
    if peek.wants_logprobs() && peek.streams() {
        let prefill_body = prefill_response.bytes().await;
        let mut prefill_feedback = prefill_feedback;
        if let (Some(f), Ok(body)) = (prefill_feedback.as_mut(), &prefill_body) {
            f.scan(body);
        }
        drop((prefill_feedback, prefill_in_flight));
        let front = prefill_body
            .ok()
            .and_then(|body| streamed_input_logprobs(&body));
        let (status, mut headers) = response_head(&decode_response, req.request_id);
        // The first event changes length.
        headers.remove(header::CONTENT_LENGTH);
        let events = merge_first_event(decode_response.bytes_stream(), front);
        let body = http_body_util::StreamBody::new(Box::pin(
            events.map(|chunk| chunk.map(http_body::Frame::data)),
        ));
        return respond_with(
            (status, headers),
            body,
            decode_in_flight,
            slot,
            decode_feedback,
        );
    }
    if !peek.wants_logprobs() {
        tokio::spawn(drain(
            prefill_response,
            prefill_in_flight,
            prefill_feedback,
            config.request_timeout,
        ));
        return stream_back(
            decode_response,
            req.request_id,
            decode_in_flight,
            slot,
            decode_feedback,
        );
    }
    let status = decode_response.status().as_u16();
    let (prefill_body, decode_body) =
        tokio::join!(prefill_response.bytes(), decode_response.bytes());
    let (Ok(prefill_body), Ok(decode_body)) = (prefill_body, decode_body) else {
        return ApiError::UpstreamConnect("a worker's response broke off".into()).into_response();
    };
    for (mut feedback, body) in [
        (prefill_feedback, &prefill_body),
        (decode_feedback, &decode_body),
    ] {
        if let Some(f) = feedback.as_mut() {
            f.scan(body);
        }
    }
    drop((prefill_in_flight, decode_in_flight, slot));
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
/// feedback complete), in the background, for at most `limit`.
async fn drain(
    response: upstream::Response,
    in_flight: InFlight,
    mut feedback: Option<Feedback>,
    limit: Duration,
) {
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
    if tokio::time::timeout(limit, read).await.is_err() {
        tracing::warn!(worker = %in_flight.worker().name(), "prefill body still open after {limit:?}; dropped");
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
