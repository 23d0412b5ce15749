//! The simulated worker's inference routes: admission into the batch,
//! prefill against the cache, decode, and the SGLang / OpenAI response
//! shapes (streaming as server-sent events).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::SemaphorePermit;

use super::Sim;
use super::cache::Lookup;
use super::pd::{self, Bootstrap, SimRole};

/// Which response shape to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Generate,
    Completions,
    Chat,
}

/// `--fixed-response`: the same small body for every request.
/// (The body is read, as a real worker reads its request: answering
/// before it arrived would break the router's upload with a reset.)
pub async fn fixed(_body: Bytes) -> Response {
    (
        [("content-type", "application/json")],
        r#"{"text":"ok","meta_info":{"prompt_tokens":1,"completion_tokens":1,"cached_tokens":0}}"#,
    )
        .into_response()
}

pub async fn generate(State(s): State<Arc<Sim>>, body: Bytes) -> Response {
    serve(s, body, Shape::Generate).await
}

pub async fn completions(State(s): State<Arc<Sim>>, body: Bytes) -> Response {
    serve(s, body, Shape::Completions).await
}

pub async fn chat(State(s): State<Arc<Sim>>, body: Bytes) -> Response {
    serve(s, body, Shape::Chat).await
}

/// A request admitted to the batch; leaving it frees the slot and the KV
/// cache tokens it holds.
struct Running<'a> {
    sim: &'a Sim,
    _slot: SemaphorePermit<'a>,
    /// Its prompt's tokens, counted in `Counters::kv_tokens`.
    tokens: u64,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let c = &self.sim.counters;
        c.running.fetch_sub(1, Ordering::Relaxed);
        c.kv_tokens.fetch_sub(self.tokens, Ordering::Relaxed);
    }
}

/// What the request asked for.
struct Job {
    text: String,
    output_tokens: usize,
    stream: bool,
    return_logprob: bool,
    id: String,
    /// PD roles: the router's bootstrap fields.
    bootstrap: Option<Bootstrap>,
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": "sim_error", "code": status.as_u16()}})),
    )
        .into_response()
}

/// Apply the failure knobs; `Err` is the error to answer instead.
async fn knobs(s: &Sim) -> Result<(), (StatusCode, &'static str)> {
    let n = s.counters.requests.fetch_add(1, Ordering::Relaxed) as usize + 1;
    if s.args.crash_after.is_some_and(|limit| n > limit) {
        if !s.in_process {
            tracing::error!("simulated crash after {} requests", n - 1);
            std::process::exit(1);
        }
        s.stop.notify_waiters();
        return Err((StatusCode::SERVICE_UNAVAILABLE, "simulated crash"));
    }
    if s.args.hang {
        std::future::pending::<()>().await;
    }
    if n <= s.args.fail_first || fastrand::f64() < s.args.fail_rate {
        let status =
            StatusCode::from_u16(s.args.fail_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Err((status, "simulated failure"));
    }
    Ok(())
}

/// Read the request; `Err` is why it is a bad one.
fn parse(s: &Sim, body: &[u8]) -> Result<Job, String> {
    let peek = wasm_router::extract::peek(body).map_err(|e| e.to_string())?;
    let text = peek.routing_text().map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if let Some(rank) = pd::rank(&v, s.args.dp_size)? {
        s.counters.by_rank[rank as usize].fetch_add(1, Ordering::Relaxed);
    }
    let bootstrap = match s.args.role {
        SimRole::Regular => None,
        SimRole::Prefill | SimRole::Decode => Some(pd::bootstrap(&v, peek.batch_size())?),
    };
    let asked = [
        &v["sampling_params"]["max_new_tokens"],
        &v["max_tokens"],
        &v["max_completion_tokens"],
    ]
    .into_iter()
    .find_map(|t| t.as_u64());
    // A prefill worker computes the first token only; decode does the rest.
    let output_tokens = match s.args.role {
        SimRole::Prefill => 1,
        _ => asked
            .map_or(s.args.output_tokens, |t| t as usize)
            .clamp(1, 4096),
    };
    Ok(Job {
        text,
        output_tokens,
        stream: v["stream"] == true,
        return_logprob: v["return_logprob"] == true,
        id: format!("sim-{:016x}", fastrand::u64(..)),
        bootstrap,
    })
}

/// `GET /bootstrap/{room}`: a decode worker pulls a room's KV cache from
/// this prefill worker; it waits for the room's prefill request to arrive.
pub async fn bootstrap(State(s): State<Arc<Sim>>, Path(room): Path<u64>) -> Response {
    if s.rooms.pull(room, s.bootstrap_timeout()).await {
        s.counters.kv_pulls.fetch_add(1, Ordering::Relaxed);
        Json(json!({"room": room})).into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            &format!("no prefill request for room {room}"),
        )
    }
}

/// The PD half of a request before it runs: a prefill worker opens its
/// rooms and waits for the decode worker to pull them; a decode worker
/// pulls them. `Err` is the error to answer.
async fn pd_handshake(s: &Sim, job: &Job) -> Result<(), Response> {
    let Some(b) = &job.bootstrap else {
        return Ok(());
    };
    match s.args.role {
        SimRole::Prefill if b.port.is_some() => {
            s.rooms.open(&b.rooms);
            if !s.rooms.wait_pulled(&b.rooms, s.bootstrap_timeout()).await {
                let message = format!(
                    "no decode worker pulled room(s) {:?} within --bootstrap-timeout-ms",
                    b.rooms
                );
                return Err(error(StatusCode::GATEWAY_TIMEOUT, &message));
            }
        }
        SimRole::Decode => {
            pd::pull_all(&s.client, b)
                .await
                .map_err(|e| error(StatusCode::BAD_GATEWAY, &e))?;
            s.counters
                .kv_pulls
                .fetch_add(b.rooms.len() as u64, Ordering::Relaxed);
        }
        _ => {}
    }
    Ok(())
}

async fn serve(s: Arc<Sim>, body: Bytes, shape: Shape) -> Response {
    if let Err((status, message)) = knobs(&s).await {
        return error(status, message);
    }
    let job = match parse(&s, &body) {
        Ok(job) => job,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    if let Err(response) = pd_handshake(&s, &job).await {
        return response;
    }
    if job.stream {
        return stream(s, job, shape);
    }
    let (running, lookup) = prefill(&s, &job.text).await;
    tokio::time::sleep(decode_time(&s, job.output_tokens)).await;
    drop(running);
    Json(full_body(&s, &job, shape, lookup)).into_response()
}

/// Wait for a batch slot (and with `--serial-prefill` for the prefill
/// engine: the request counts as queued until its prefill starts), look the
/// prompt up in the cache, and spend the prefill time of what was not
/// cached.
async fn prefill<'a>(s: &'a Sim, text: &str) -> (Running<'a>, Lookup) {
    s.counters.queued.fetch_add(1, Ordering::Relaxed);
    let slot = s
        .slots
        .acquire()
        .await
        .expect("the batch semaphore is never closed");
    let engine = if s.args.serial_prefill {
        Some(s.prefill_engine.lock().await)
    } else {
        None
    };
    s.counters.queued.fetch_sub(1, Ordering::Relaxed);
    s.counters.running.fetch_add(1, Ordering::Relaxed);
    let mut running = Running {
        sim: s,
        _slot: slot,
        tokens: 0,
    };
    let lookup = s.process(text);
    running.tokens = lookup.prompt_tokens as u64;
    s.counters
        .kv_tokens
        .fetch_add(running.tokens, Ordering::Relaxed);
    s.counters
        .prompt_tokens
        .fetch_add(lookup.prompt_tokens as u64, Ordering::Relaxed);
    s.counters
        .cached_tokens
        .fetch_add(lookup.cached_tokens as u64, Ordering::Relaxed);
    tokio::time::sleep(s.prefill_time(lookup)).await;
    drop(engine);
    (running, lookup)
}

/// Decode time for `tokens`, slower the more requests share the batch.
fn decode_time(s: &Sim, tokens: usize) -> Duration {
    let batch = s.counters.running.load(Ordering::Relaxed).max(1) as f64;
    let per_token =
        s.args.decode_us_per_token as f64 * (1.0 + s.args.batch_slowdown * (batch - 1.0));
    s.scaled(per_token * tokens as f64)
}

fn output_text(tokens: usize) -> String {
    vec!["tok"; tokens].join(" ")
}

fn usage(lookup: Lookup, completion: usize) -> Value {
    json!({
        "prompt_tokens": lookup.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": lookup.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": lookup.cached_tokens},
    })
}

/// SGLang's `[logprob, token_id, token_text]` triples, made up.
fn logprobs(tokens: usize) -> Value {
    (0..tokens).map(|i| json!([-0.5, i, null])).collect()
}

/// The prompt's logprobs come from whoever read the prompt: not a decode
/// worker.
fn input_logprobs(s: &Sim, lookup: Lookup) -> Value {
    match s.args.role {
        SimRole::Decode => logprobs(0),
        _ => logprobs(lookup.prompt_tokens),
    }
}

fn full_body(s: &Sim, job: &Job, shape: Shape, lookup: Lookup) -> Value {
    let text = output_text(job.output_tokens);
    match shape {
        Shape::Generate => {
            let mut v = json!({
                "text": text,
                "meta_info": {
                    "id": job.id,
                    "prompt_tokens": lookup.prompt_tokens,
                    "completion_tokens": job.output_tokens,
                    "cached_tokens": lookup.cached_tokens,
                    "finish_reason": {"type": "length", "length": job.output_tokens},
                },
            });
            if job.return_logprob {
                v["meta_info"]["input_token_logprobs"] = input_logprobs(s, lookup);
                v["meta_info"]["output_token_logprobs"] = logprobs(job.output_tokens);
            }
            v
        }
        Shape::Completions => json!({
            "id": job.id, "object": "text_completion", "model": s.args.model,
            "choices": [{"index": 0, "text": text, "finish_reason": "length"}],
            "usage": usage(lookup, job.output_tokens),
        }),
        Shape::Chat => json!({
            "id": job.id, "object": "chat.completion", "model": s.args.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}],
            "usage": usage(lookup, job.output_tokens),
        }),
    }
}

/// One server-sent event per decoded piece (`--stream-pieces`): the first
/// after prefill, the last with the token accounting, then `[DONE]`.
fn stream(s: Arc<Sim>, job: Job, shape: Shape) -> Response {
    let pieces = s.args.stream_pieces as usize;
    let events = async_stream(s, job, shape, pieces);
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(events))
        .expect("static headers are valid")
}

fn async_stream(
    s: Arc<Sim>,
    job: Job,
    shape: Shape,
    pieces: usize,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(pieces + 2);
    tokio::spawn(async move {
        let (running, lookup) = prefill(&s, &job.text).await;
        let per_piece = job.output_tokens.div_ceil(pieces);
        let mut sent = 0;
        while sent < job.output_tokens {
            let n = per_piece.min(job.output_tokens - sent);
            if sent > 0 {
                tokio::time::sleep(decode_time(&s, n)).await;
            }
            sent += n;
            let last = sent == job.output_tokens;
            let event = piece(&s, &job, shape, n, sent, lookup, last);
            if tx
                .send(Bytes::from(format!("data: {event}\n\n")))
                .await
                .is_err()
            {
                return; // the client went away
            }
        }
        drop(running);
        // The receiver may be gone already; nothing is lost either way.
        if tx
            .send(Bytes::from_static(b"data: [DONE]\n\n"))
            .await
            .is_err()
        {
            tracing::debug!("stream closed before [DONE]");
        }
    });
    futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) },
    )
}

/// One streamed piece of `n` tokens, `sent` so far; the last carries the
/// token accounting. With `return_logprob`, `/generate` pieces carry their
/// tokens' logprobs, and the first the prompt's, as SGLang streams them.
fn piece(
    s: &Sim,
    job: &Job,
    shape: Shape,
    n: usize,
    sent: usize,
    lookup: Lookup,
    last: bool,
) -> Value {
    let end = last.then_some(lookup);
    // Deltas join into the full text: every piece but the first starts with
    // the space between tokens.
    let text = if sent == n {
        output_text(n)
    } else {
        format!(" {}", output_text(n))
    };
    match shape {
        Shape::Generate => {
            let mut v = json!({"text": output_text(sent), "meta_info": {"id": job.id, "completion_tokens": sent}});
            if job.return_logprob {
                let first = sent == n;
                v["meta_info"]["input_token_logprobs"] = if first {
                    input_logprobs(s, lookup)
                } else {
                    logprobs(0)
                };
                v["meta_info"]["output_token_logprobs"] = logprobs(n);
            }
            if let Some(l) = end {
                v["meta_info"]["prompt_tokens"] = l.prompt_tokens.into();
                v["meta_info"]["cached_tokens"] = l.cached_tokens.into();
                v["meta_info"]["finish_reason"] = json!({"type": "length", "length": sent});
            }
            v
        }
        Shape::Completions => {
            let mut v = json!({"id": job.id, "object": "text_completion", "model": s.args.model,
                "choices": [{"index": 0, "text": text, "finish_reason": end.map(|_| "length")}]});
            if let Some(l) = end {
                v["usage"] = usage(l, sent);
            }
            v
        }
        Shape::Chat => {
            let mut v = json!({"id": job.id, "object": "chat.completion.chunk", "model": s.args.model,
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": end.map(|_| "length")}]});
            if let Some(l) = end {
                v["usage"] = usage(l, sent);
            }
            v
        }
    }
}
