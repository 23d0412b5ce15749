//! Forwarding a request to the worker the policy picks, and in PD mode to a
//! prefill/decode pair ([`pd`]), after the way in ([`ingress`]: admission,
//! the body, what the policy needs): one retry loop for both ([`retry`]: only
//! before any byte reached the client, each asking the policy again without
//! the workers that failed), breaker bookkeeping, and streaming the worker's
//! response back chunk by chunk as it arrives ([`respond`]). Knows nothing
//! of Wasm: the policy is a [`Policy`].

use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::Response;
use bytes::Bytes;

use crate::config::{Config, Role};
use crate::errors::ApiError;
use crate::lab::log::Draft;
use crate::metrics as m;
use crate::policy::{
    AttemptError, Decision, LeastLoad, Loaded, Policy, PolicyFault, Route, RouteRequest,
    SelectError,
};
use crate::upstream::Upstream;
use crate::workers::{InFlight, Registry, Worker};

pub mod ingress;
mod logprobs;
pub mod pd;
mod respond;
mod retry;

use respond::{Feedback, Held, Timeouts, stream_back};
use retry::{Failure, Retries};

/// One request to forward.
#[derive(Debug)]
pub struct Forward<'a> {
    /// Route, for the policy and metrics.
    pub route: Route,
    /// Path and query to request on the worker.
    pub path_and_query: &'a str,
    /// The client's headers.
    pub headers: &'a HeaderMap,
    /// The client's body, unchanged.
    pub body: Bytes,
    /// Request id (echoed and forwarded).
    pub request_id: &'a str,
    /// Router sequence number, for the policy.
    pub seq: u64,
    /// The body's `model`.
    pub model: &'a str,
    /// Routing text (empty unless the policy needs it).
    pub text: &'a str,
    /// Its tokens, when the router tokenized it for the precise index.
    pub tokens: Option<&'a [u32]>,
    /// The whole text's token count when `tokens` is its start only.
    pub prompt_tokens: Option<u32>,
    /// Routing key header.
    pub routing_key: Option<&'a str>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The most tokens the client asked to be generated.
    pub max_new_tokens: Option<u32>,
    /// When the request's time (`--request-timeout-secs`) is up.
    pub deadline: tokio::time::Instant,
    /// Its trace span, with `--enable-trace`.
    pub trace: Option<&'a crate::traces::RequestSpan>,
    /// What the policy lab records and asks of it (regular mode only).
    pub lab: Option<crate::lab::Watch<'a>>,
}

impl Forward<'_> {
    /// When an attempt started now must have its response headers: at
    /// `--attempt-timeout-secs`, or the request's deadline.
    fn attempt_deadline(&self, config: &Config) -> tokio::time::Instant {
        config.attempt_timeout.map_or(self.deadline, |t| {
            (tokio::time::Instant::now() + t).min(self.deadline)
        })
    }

    /// The time limits of the response body.
    fn body_timeouts(&self, config: &Config) -> Timeouts {
        Timeouts {
            deadline: self.deadline,
            idle: config.stream_idle_timeout,
        }
    }
}

/// Forward `req` to the worker the policy picks, retrying as configured;
/// the response streams back.
pub async fn forward_to_worker(
    config: &Config,
    upstream: &Upstream,
    registry: &Registry,
    policy: Loaded,
    req: Forward<'_>,
) -> Result<Response, ApiError> {
    let headers = upstream_headers(req.headers, req.request_id);
    let mut retries = Retries::new(config, req.route, req.request_id, req.deadline);
    // The decision record of the attempt that failed, which the next one
    // takes over; written as it is if there is no next one.
    let mut carried: Option<Draft> = None;
    while retries.next().await {
        let Some(mut worker) = pick(
            registry,
            &**policy.policy,
            Role::Regular,
            &req,
            retries.excluded(),
        )
        .await?
        else {
            break;
        };
        let draft = worker.draft.take().map(|mut draft| {
            if let Some(failed) = carried.take() {
                failed.retried(&mut draft);
            }
            draft
        });
        let in_flight = worker.start_request();
        let mut feedback = Feedback::wanted(&policy, req.seq, retries.attempt(), &worker, draft);
        let attempt = req.trace.map(|t| t.attempt(&worker.url, retries.attempt()));
        let mut headers = headers.clone();
        if let Some(span) = &attempt {
            span.inject(&mut headers);
        }
        let sent = Instant::now();
        let url = format!("{}{}", worker.url, req.path_and_query);
        let send = upstream.send(Method::POST, &url, headers, body_for(&worker, &req.body));
        let answer = tokio::time::timeout_at(req.attempt_deadline(config), send).await;
        let (failure, status, error) = match answer {
            Err(_elapsed) => (Failure::Timeout, 0, Some(AttemptError::Timeout)),
            Ok(Err(cause)) => (Failure::Unreachable(cause), 0, Some(AttemptError::Connect)),
            Ok(Ok(response)) if retries.retries(response.status().as_u16()) => {
                let status = response.status().as_u16();
                (
                    Failure::Status(response),
                    status,
                    Some(AttemptError::Status),
                )
            }
            Ok(Ok(response)) => {
                let status = response.status();
                worker
                    .breaker
                    .record(!status.is_server_error(), Instant::now());
                m::for_route(req.route).ttfb.record(sent.elapsed());
                Feedback::answered(&mut feedback, status.as_u16());
                if let Some(span) = &attempt {
                    span.ended(status.as_u16(), None);
                }
                let held = Held {
                    in_flight,
                    feedback,
                    attempt,
                };
                let timeouts = req.body_timeouts(config);
                return Ok(stream_back(response, req.request_id, held, timeouts));
            }
        };
        match error {
            Some(AttemptError::Status) => Feedback::answered(&mut feedback, status),
            Some(error) => Feedback::failed(&mut feedback, status, error),
            None => {}
        }
        if let Some(span) = &attempt {
            span.ended(status, error);
        }
        carried = Feedback::take_draft(&mut feedback).or(carried);
        drop((in_flight, feedback, attempt));
        if let Some(end) = retries.failed(worker.worker, failure).await {
            return end;
        }
    }
    retries.exhausted()
}

/// A worker a policy picked, and the prompt tokens it must compute for the
/// request: estimated, those the policy's KV match found in its cache left
/// out ([`crate::policy::Decision::cached_tokens`]).
#[derive(Debug)]
pub(crate) struct Picked {
    pub(crate) worker: Arc<Worker>,
    prefill_tokens: u32,
    /// The request's decision record, when the lab keeps one.
    pub(crate) draft: Option<Draft>,
}

impl Picked {
    fn new(worker: Arc<Worker>, req: &Forward<'_>, cached_tokens: Option<u32>) -> Self {
        // Four characters a token when the router did not tokenize; none
        // when it did not extract the text (the policy reads none).
        let prompt = req.prompt_tokens.unwrap_or_else(|| match req.tokens {
            Some(tokens) => u32::try_from(tokens.len()).unwrap_or(u32::MAX),
            None => u32::try_from(req.text.len() / 4).unwrap_or(u32::MAX),
        });
        Picked {
            worker,
            prefill_tokens: prompt.saturating_sub(cached_tokens.unwrap_or(0)),
            draft: None,
        }
    }

    /// Count the request in flight there, and its prefill ahead of later
    /// requests until its answer begins.
    pub(crate) fn start_request(&self) -> InFlight {
        let mut in_flight = self.worker.start_request();
        in_flight.expect_prefill(self.prefill_tokens);
        in_flight
    }
}

impl std::ops::Deref for Picked {
    type Target = Arc<Worker>;

    fn deref(&self) -> &Arc<Worker> {
        &self.worker
    }
}

/// Ask `policy` to pick one of the `role` workers that may take `req`,
/// except `excluded`; `None` when there is none. A policy busy with its
/// maintenance is waited for without holding the serving thread.
pub(crate) async fn pick(
    registry: &Registry,
    policy: &dyn Policy,
    role: Role,
    req: &Forward<'_>,
    excluded: &[u32],
) -> Result<Option<Picked>, ApiError> {
    loop {
        match pick_now(registry, policy, role, req, excluded) {
            Err(Busy) => policy.until_ready().await,
            Ok(picked) => return picked,
        }
    }
}

/// The policy was busy: [`pick`] waits, then asks again.
struct Busy;

/// [`pick`], once.
fn pick_now(
    registry: &Registry,
    policy: &dyn Policy,
    role: Role,
    req: &Forward<'_>,
    excluded: &[u32],
) -> Result<Result<Option<Picked>, ApiError>, Busy> {
    let workers = match registry.candidates(req.model, role, excluded) {
        Ok(workers) if workers.is_empty() => return Ok(Ok(None)),
        Ok(workers) => workers,
        Err(e) => return Ok(Err(e)),
    };
    let candidates = Registry::as_candidates(&workers);
    let asked = Instant::now();
    let asked_at = req
        .trace
        .filter(|t| t.recording())
        .map(|_| std::time::SystemTime::now());
    let request = RouteRequest {
        id: req.seq,
        route: req.route,
        model: req.model,
        text: req.text,
        tokens: req.tokens,
        prompt_tokens: req.prompt_tokens,
        routing_key: req.routing_key,
        headers: policy.info().reads.headers.then_some(req.headers),
        stream: req.stream,
        max_new_tokens: req.max_new_tokens,
    };
    let decision = match policy.select(&request, &candidates) {
        Ok(decision) => decision,
        Err(SelectError::Busy) => return Err(Busy),
        Err(SelectError::NoCandidates) => return Ok(Err(ApiError::NoHealthyWorker)),
        Err(SelectError::Declined(message)) => return Ok(Err(ApiError::PolicyDeclined(message))),
    };
    let took = asked.elapsed();
    m::policy_decision().record(took);
    if let (Some(span), Some(started)) = (req.trace, asked_at) {
        let picked = workers.iter().find(|w| w.id == decision.worker);
        span.decision(crate::traces::DecisionRecord {
            policy: &policy.info().name,
            digest: policy.component_sha256(),
            candidates: candidates.len(),
            picked: picked.map(|w| w.url.as_str()),
            matched_tokens: decision.cached_tokens,
            fallback: decision.fallback.as_ref().map(ToString::to_string),
            started,
            took,
        });
    }
    let (worker, decision) = match workers.iter().find(|w| w.id == decision.worker) {
        Some(worker) => (worker.clone(), decision),
        None => {
            // Every implementation is checked here, not only Wasm ones.
            let name = &policy.info().name;
            tracing::warn!(policy = %name, worker = decision.worker, "the policy picked a worker that is not a candidate; routed by the fallback");
            metrics::counter!(m::POLICY_FAULTS, "policy" => name.clone(), "kind" => "not_a_candidate")
                .increment(1);
            let Some(worker) = LeastLoad::default()
                .pick(&candidates)
                .and_then(|id| workers.iter().find(|w| w.id == id))
            else {
                return Ok(Ok(None));
            };
            let decision = Decision {
                worker: worker.id,
                fallback: Some(PolicyFault::NotACandidate(decision.worker)),
                cached_tokens: None,
            };
            (worker.clone(), decision)
        }
    };
    let mut picked = Picked::new(worker, req, decision.cached_tokens);
    if let Some(lab) = &req.lab {
        picked.draft = lab.decided(&crate::lab::Decided {
            req: &request,
            candidates: &candidates,
            workers: &workers,
            decision: &decision,
            took,
        });
    }
    Ok(Ok(Some(picked)))
}

/// The body for `worker`: the client's bytes, plus `data_parallel_rank`
/// when the worker entry stands for one rank (`--dp-aware`).
pub(crate) fn body_for(worker: &Worker, body: &Bytes) -> Bytes {
    match worker.dp_rank {
        Some(rank) => crate::extract::with_fields(body, &format!("\"data_parallel_rank\":{rank}")),
        None => body.clone(),
    }
}

/// The client headers a worker gets, as sglang-router 0.3.2 forwards them
/// (found by running it against a worker that records what it receives):
/// credentials, the correlation and W3C trace-context headers, its
/// routing-key header, and the body's content type. Nothing else a client
/// sent reaches a worker: not its cookies, its own `X-` headers, its user
/// agent, nor any hop-by-hop header.
const FORWARDED: [HeaderName; 6] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    HeaderName::from_static("x-correlation-id"),
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
    HeaderName::from_static("x-smg-routing-key"),
];

/// The client's headers for the worker ([`FORWARDED`]), and the request id
/// as `x-request-id`.
pub fn upstream_headers(client: &HeaderMap, request_id: &str) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(FORWARDED.len() + 1);
    for name in &FORWARDED {
        for value in client.get_all(name) {
            out.append(name.clone(), value.clone());
        }
    }
    if let Ok(id) = HeaderValue::from_str(request_id) {
        out.insert(HeaderName::from_static("x-request-id"), id);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Candidate, Decision, Outcome, PolicyInfo, WorkerInfo};

    /// A policy that names a worker it was not offered.
    struct Stray(PolicyInfo);

    impl Policy for Stray {
        fn info(&self) -> &PolicyInfo {
            &self.0
        }
        fn workers_changed(&self, _: &[WorkerInfo]) {}
        fn select(&self, _: &RouteRequest<'_>, _: &[Candidate]) -> Result<Decision, SelectError> {
            Ok(Decision {
                worker: 999,
                fallback: None,
                cached_tokens: None,
            })
        }
        fn on_complete(&self, _: &Outcome) {}
        fn tick(&self, _: u64) {}
    }

    /// Issue 15: `pick` panicked on a policy implementation that returned a
    /// worker outside the candidates.
    #[tokio::test]
    async fn a_pick_that_is_not_a_candidate_is_routed_by_the_fallback() {
        let registry = Registry::new(None, true);
        let worker = registry.add("http://127.0.0.1:1").unwrap();
        let headers = HeaderMap::new();
        let req = generate(&headers, 0);
        let stray = Stray(PolicyInfo {
            name: "stray".into(),
            needs_text: false,
            wants_feedback: false,
            tick_interval: None,
            instances: crate::policy::Instances::Shared,
            reads: crate::policy::Reads::default(),
        });
        let picked = pick(&registry, &stray, Role::Regular, &req, &[])
            .await
            .unwrap();
        assert_eq!(picked.map(|p| p.id), Some(worker.id));
    }

    /// A `/generate` request, number `seq`, with a minute to go.
    fn generate(headers: &HeaderMap, seq: u64) -> Forward<'_> {
        Forward {
            route: Route::Generate,
            path_and_query: "/generate",
            headers,
            body: Bytes::from_static(b"{}"),
            request_id: "r",
            seq,
            model: "",
            text: "",
            tokens: None,
            prompt_tokens: None,
            routing_key: None,
            stream: false,
            max_new_tokens: None,
            deadline: tokio::time::Instant::now() + std::time::Duration::from_secs(60),
            trace: None,
            lab: None,
        }
    }

    /// What a [`Recorder`] was told.
    type Outcomes = Arc<std::sync::Mutex<Vec<Outcome>>>;

    /// A policy that wants feedback and keeps every outcome, picking the
    /// smallest worker id.
    struct Recorder(Outcomes, PolicyInfo);

    impl Recorder {
        /// A recorder behind its own seam, as loaded for a request, and
        /// what it will be told.
        fn loaded() -> (Loaded, Outcomes) {
            let outcomes = Outcomes::default();
            let seam: crate::policy::Seam =
                Arc::new(arc_swap::ArcSwap::from_pointee(Recorder::boxed(&outcomes)));
            (Loaded::from(&seam), outcomes)
        }

        fn boxed(outcomes: &Outcomes) -> Box<dyn Policy> {
            Box::new(Recorder(
                outcomes.clone(),
                PolicyInfo {
                    name: "recorder".into(),
                    needs_text: false,
                    wants_feedback: true,
                    tick_interval: None,
                    instances: crate::policy::Instances::Shared,
                    reads: crate::policy::Reads::default(),
                },
            ))
        }
    }

    /// Each outcome's worker and status, in order.
    fn statuses(outcomes: &Outcomes) -> Vec<(u32, u16)> {
        let outcomes = outcomes.lock().unwrap();
        outcomes.iter().map(|o| (o.worker, o.status)).collect()
    }

    impl Policy for Recorder {
        fn info(&self) -> &PolicyInfo {
            &self.1
        }
        fn workers_changed(&self, _: &[WorkerInfo]) {}
        fn select(&self, _: &RouteRequest<'_>, c: &[Candidate]) -> Result<Decision, SelectError> {
            let worker = c
                .iter()
                .map(|c| c.id)
                .min()
                .ok_or(SelectError::NoCandidates)?;
            Ok(Decision {
                worker,
                fallback: None,
                cached_tokens: None,
            })
        }
        fn on_complete(&self, outcome: &Outcome) {
            self.0.lock().unwrap().push(outcome.clone());
        }
        fn tick(&self, _: u64) {}
    }

    /// Issue 15: a request routed by the old instance reported its outcome
    /// to it after a reload had swapped in the new one.
    #[test]
    fn outcomes_after_a_reload_go_to_the_instance_serving_then() {
        let (old, new) = (Outcomes::default(), Outcomes::default());
        let seam: crate::policy::Seam =
            Arc::new(arc_swap::ArcSwap::from_pointee(Recorder::boxed(&old)));
        let routed = Loaded::from(&seam);
        seam.store(Arc::new(Recorder::boxed(&new)));
        routed.report(&Outcome::default());
        assert!(old.lock().unwrap().is_empty());
        assert_eq!(new.lock().unwrap().len(), 1);
    }

    /// A worker on loopback whose `/generate` answers 200 with a body that
    /// never ends: one chunk, then nothing.
    async fn endless_worker() -> String {
        use axum::body::Body;
        use futures_util::StreamExt;
        let app = axum::Router::new().route(
            "/generate",
            axum::routing::post(|| async {
                let chunks = futures_util::stream::once(async {
                    Ok::<_, std::io::Error>(Bytes::from_static(b"data: 1\n\n"))
                })
                .chain(futures_util::stream::pending());
                Body::from_stream(chunks)
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    /// Issue 15: `on-complete` was reported for the final attempt only (a
    /// worker that could not be reached was never reported), and a stream
    /// the client abandoned was reported as a 200.
    #[tokio::test]
    async fn every_attempt_is_reported_and_an_abandoned_stream_is_not_a_200() {
        use futures_util::StreamExt;
        let served_by = endless_worker().await;
        let args = crate::config::RouterArgs {
            retry_initial_backoff_ms: Some(1),
            ..Default::default()
        };
        let config = Config::load(&args).unwrap();
        let registry = Registry::new(None, true);
        // The smallest id, so picked first: nothing listens there.
        let unreachable = registry.add("http://127.0.0.1:1").unwrap();
        let serving = registry.add(&served_by).unwrap();
        let upstream =
            crate::upstream::Upstream::new(&Default::default(), config.connect_timeout).unwrap();
        let (policy, outcomes) = Recorder::loaded();
        let headers = HeaderMap::new();
        let req = generate(&headers, 7);
        let response = forward_to_worker(&config, &upstream, &registry, policy, req)
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            statuses(&outcomes),
            [(unreachable.id, 0)],
            "the failed attempt is reported at once, as not reached"
        );
        let mut body = response.into_body().into_data_stream();
        assert_eq!(body.next().await.unwrap().unwrap(), "data: 1\n\n");
        assert_eq!(serving.load(), 1);
        drop(body);
        assert_eq!(serving.load(), 0);
        assert_eq!(
            statuses(&outcomes),
            [(unreachable.id, 0), (serving.id, respond::CLIENT_GONE)],
            "the stream whose client went away is not reported as served"
        );
        // Contract 0.2's fields: the attempt, why it failed, and the time
        // to the first body byte (only the served attempt had one).
        let outcomes = outcomes.lock().unwrap();
        let seen: Vec<_> = outcomes
            .iter()
            .map(|o| (o.attempt, o.error, o.ttft_us.is_some()))
            .collect();
        assert_eq!(
            seen,
            [
                (1, Some(AttemptError::Connect), false),
                (2, Some(AttemptError::ClientAbort), true)
            ]
        );
        assert!(outcomes[1].ttft_us <= Some(outcomes[1].latency_us));
    }

    /// A client that goes away while the router waits for the worker's
    /// headers: the worker's count comes back and the outcome says so.
    #[tokio::test]
    async fn a_client_gone_before_the_headers_is_reported_as_gone() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (accepted, connected) = tokio::sync::oneshot::channel();
        // Accepts, then never answers.
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            accepted.send(socket).unwrap();
        });
        let config = Config::load(&Default::default()).unwrap();
        let registry = Registry::new(None, true);
        let worker = registry.add(&url).unwrap();
        let upstream =
            crate::upstream::Upstream::new(&Default::default(), config.connect_timeout).unwrap();
        let (policy, outcomes) = Recorder::loaded();
        let request = tokio::spawn(async move {
            let headers = HeaderMap::new();
            let req = generate(&headers, 1);
            forward_to_worker(&config, &upstream, &registry, policy, req)
                .await
                .map(drop)
        });
        let _held_open = connected.await.unwrap();
        assert_eq!(worker.load(), 1);
        request.abort();
        assert!(request.await.unwrap_err().is_cancelled());
        assert_eq!(worker.load(), 0);
        assert_eq!(statuses(&outcomes), [(worker.id, respond::CLIENT_GONE)]);
        let outcome = outcomes.lock().unwrap()[0].clone();
        assert_eq!(outcome.error, Some(AttemptError::ClientAbort));
        assert_eq!(outcome.ttft_us, None);
    }

    /// Issue 16: workers got every client header, cookies and arbitrary
    /// `X-` headers included; sglang-router forwards a fixed set.
    #[test]
    fn workers_get_the_headers_sglang_router_forwards_and_no_others() {
        let mut client = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer t"),
            ("content-type", "application/json"),
            ("x-correlation-id", "c"),
            ("traceparent", "00-abc-def-01"),
            ("tracestate", "v=1"),
            ("x-smg-routing-key", "k"),
            ("x-request-id", "client's"),
            ("cookie", "session=1"),
            ("x-custom", "1"),
            ("user-agent", "ua"),
            ("baggage", "k=v"),
            ("x-routing-key", "k2"),
            ("connection", "keep-alive, x-hop"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
        ] {
            client.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let sent = upstream_headers(&client, "id-1");
        let mut names: Vec<_> = sent.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "authorization",
                "content-type",
                "traceparent",
                "tracestate",
                "x-correlation-id",
                "x-request-id",
                "x-smg-routing-key"
            ]
        );
        assert_eq!(sent["x-request-id"], "id-1", "the router's request id");
    }
}
