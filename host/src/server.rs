//! The HTTP layer: [`app`] builds the routes over an [`AppState`]; [`start`]
//! wires config, policy, workers, background tasks and the listener. Handlers
//! stay short; forwarding lives in [`crate::proxy`], admin in [`crate::admin`],
//! the state they share in [`crate::state`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::json;
use tokio::task::JoinHandle;

use crate::config::{Config, PolicySlot};
use crate::errors::ApiError;
use crate::policy::reload::PolicyManager;
use crate::policy::{Policy, PolicyEngine, Role, Route, watch};
use crate::proxy::pd;
use crate::proxy::{self, Forward};
use crate::state::{AppState, RequestId};
use crate::upstream;
use crate::workers::{Registry, WorkerSpec, health};
use crate::{admin, extract, metrics as m};

/// All routes.
pub fn app(state: Arc<AppState>) -> Router {
    let guarded = Router::new()
        .route("/generate", post(|s, r| inference(s, Route::Generate, r)))
        .route(
            "/v1/completions",
            post(|s, r| inference(s, Route::Completions, r)),
        )
        .route(
            "/v1/chat/completions",
            post(|s, r| inference(s, Route::ChatCompletions, r)),
        )
        .route(
            "/v1/embeddings",
            post(|s, r| inference(s, Route::Embeddings, r)),
        )
        .route("/v1/models", get(to_one_worker))
        .route("/get_server_info", get(to_one_worker))
        .route("/get_model_info", get(to_one_worker))
        .route("/health_generate", any(to_one_worker))
        .route("/get_loads", get(admin::get_loads))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    Router::new()
        .merge(guarded)
        .merge(admin::routes(state.clone()))
        .route("/health", get(|| async { "ok" }))
        .route("/liveness", get(|| async { "ok" }))
        .route("/readiness", get(readiness))
        .fallback(|req: Request| async move {
            ApiError::NotFound(format!(
                "no route for {} {}",
                req.method(),
                req.uri().path()
            ))
        })
        .layer(middleware::from_fn_with_state(state.clone(), request_id))
        .with_state(state)
}

async fn request_id(State(s): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let id = s
        .config
        .request_id_headers
        .iter()
        .find_map(|h| req.headers().get(h.as_str())?.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:032x}", fastrand::u128(..)));
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

async fn require_api_key(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(key) = &s.config.api_key else {
        return next.run(req).await;
    };
    match admin::bearer(&req) {
        Some(p) if admin::constant_time_eq(p.as_bytes(), key.as_bytes()) => next.run(req).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

/// Ready once a request can be served: a healthy worker, or in PD mode a
/// healthy prefill and a healthy decode worker.
async fn readiness(State(s): State<Arc<AppState>>) -> Response {
    let workers = s.registry.all();
    let healthy_with = |role: Role| {
        workers
            .iter()
            .filter(|w| w.role == role && w.is_healthy())
            .count()
    };
    let (healthy, ready) = match s.config.pd {
        None => {
            let n = healthy_with(Role::Regular);
            (n, n > 0)
        }
        Some(_) => {
            let (p, d) = (healthy_with(Role::Prefill), healthy_with(Role::Decode));
            (p + d, p > 0 && d > 0)
        }
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({"ready": ready, "healthy_workers": healthy})),
    )
        .into_response()
}

/// Read the body once, bounded by `--max-payload-size`.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        let mut too_large = false;
        while let Some(c) = cause {
            too_large |= c.is::<http_body_util::LengthLimitError>();
            cause = c.source();
        }
        if too_large {
            ApiError::PayloadTooLarge(limit)
        } else {
            ApiError::BadRequest(format!("unreadable body: {e}"))
        }
    })
}

async fn inference(State(s): State<Arc<AppState>>, route: Route, req: Request) -> Response {
    let started = Instant::now();
    let result = forward(&s, route, req).await;
    let resp = result.unwrap_or_else(|e| {
        metrics::counter!(m::ERRORS, "route" => route.label(), "code" => e.status().as_str().to_owned()).increment(1);
        e.into_response()
    });
    let handles = m::for_route(route);
    if resp.status() == StatusCode::OK {
        handles.ok.increment(1);
    } else {
        let status = resp.status().as_str().to_owned();
        metrics::counter!(m::REQUESTS, "route" => route.label(), "status" => status).increment(1);
    }
    handles.duration.record(started.elapsed());
    resp
}

async fn forward(s: &AppState, route: Route, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let body = read_body(body, s.config.max_payload_size).await?;
    let policy = s.policy.load_full();
    let prefill_policy = s.prefill_policies.as_ref().map(|m| m.active().load_full());
    let peek = extract::peek(&body)?;
    let needs_text =
        policy.info().needs_text || prefill_policy.as_ref().is_some_and(|p| p.info().needs_text);
    let text = if needs_text {
        peek.routing_text()?
    } else {
        String::new()
    };
    let model = peek.model.as_deref().unwrap_or("");
    let slot = match &s.admission {
        Some(a) => Some(a.admit().await?),
        None => None,
    };
    let routing_key = ["x-routing-key", "x-smg-routing-key"]
        .iter()
        .find_map(|h| parts.headers.get(*h)?.to_str().ok());
    let request_id = parts
        .extensions
        .get::<RequestId>()
        .map_or("", |r| r.0.as_str());
    let forward = Forward {
        route,
        path_and_query: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        headers: &parts.headers,
        body: body.clone(),
        request_id,
        seq: s.seq.fetch_add(1, Ordering::Relaxed),
        model,
        text: &text,
        routing_key,
    };
    match prefill_policy {
        None => proxy::forward(&s.config, &s.upstream, &s.registry, policy, forward, slot).await,
        Some(prefill) => {
            let policies = pd::PdPolicies {
                prefill,
                decode: policy,
            };
            pd::forward(
                &s.config,
                &s.upstream,
                &s.registry,
                policies,
                forward,
                &peek,
                slot,
            )
            .await
        }
    }
}

/// Informational routes: the least-loaded healthy worker answers.
async fn to_one_worker(State(s): State<Arc<AppState>>, req: Request) -> Result<Response, ApiError> {
    let worker = s.registry.least_loaded().ok_or(ApiError::NoHealthyWorker)?;
    let (parts, body) = req.into_parts();
    let body = read_body(body, s.config.max_payload_size).await?;
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let method = if parts.method == Method::POST {
        Method::POST
    } else {
        Method::GET
    };
    let _in_flight = worker.start_request();
    let url = format!("{}{path}", worker.url);
    let call = async {
        let resp = s
            .upstream
            .send(method, &url, HeaderMap::new(), body)
            .await?;
        Ok::<_, upstream::UpstreamError>(resp.relay().await)
    };
    match tokio::time::timeout(s.config.request_timeout, call).await {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) => {
            tracing::warn!(worker = %worker.url, "worker unreachable: {e}");
            Err(ApiError::UpstreamConnect(
                "the worker did not answer".into(),
            ))
        }
        Err(_elapsed) => Err(ApiError::UpstreamTimeout),
    }
}

/// A running router: its addresses, and how to stop it.
pub struct Running {
    /// Where it serves HTTP.
    pub addr: SocketAddr,
    /// Where it serves Prometheus metrics.
    pub metrics_addr: SocketAddr,
    /// Shared state (for tests and the embedding Python package).
    pub state: Arc<AppState>,
    shutdown: tokio::sync::watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    background: Vec<JoinHandle<()>>,
    _watches: Vec<watch::FileWatch>,
}

impl Running {
    /// Stop accepting connections, let in-flight requests finish (up to the
    /// grace period), then stop background tasks.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.send_replace(true);
        let finished = tokio::time::timeout(self.state.config.shutdown_grace, self.server).await;
        for task in self.background {
            task.abort();
        }
        match finished {
            Ok(joined) => Ok(joined??),
            Err(_) => {
                tracing::warn!("grace period over with requests still in flight");
                Ok(())
            }
        }
    }
}

/// Start the router: load the policy, register workers, start health
/// checks, ticks and metrics, and listen.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let handle = m::install();
    let metrics_listener = tokio::net::TcpListener::bind(config.prometheus)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen for metrics on {}: {e} (set --prometheus-port)",
                config.prometheus
            )
        })?;
    let metrics_addr = metrics_listener.local_addr()?;
    let registry = Arc::new(Registry::new(config.breaker, config.health.is_none()));
    let policies = Arc::new(start_policy(&config, registry.clone(), PolicySlot::Main).await?);
    let prefill_policies = match config.pd {
        Some(_) => Some(Arc::new(
            start_policy(&config, registry.clone(), PolicySlot::Prefill).await?,
        )),
        None => None,
    };
    let state = Arc::new(AppState::new(
        config,
        registry.clone(),
        policies,
        prefill_policies,
    )?);
    let mut watches = Vec::new();
    for (slot, manager) in [(PolicySlot::Main, Some(&state.policies))]
        .into_iter()
        .chain([(PolicySlot::Prefill, state.prefill_policies.as_ref())])
    {
        let files = state.config.watched_files(slot);
        if let Some(manager) = manager
            && state.config.watch
            && !files.is_empty()
        {
            watches.push(watch::watch(&files, manager.clone())?);
        }
    }
    let seams: Vec<_> = state.managers().iter().map(|(_, m)| m.active()).collect();
    registry.on_change(move |workers| {
        for seam in &seams {
            seam.load().workers_changed(workers);
        }
    });
    let mut background = vec![tokio::spawn(async move {
        if let Err(e) = m::serve_on(metrics_listener, handle).await {
            tracing::error!("metrics endpoint stopped: {e}");
        }
    })];
    let specs: Vec<WorkerSpec> = match &state.config.pd {
        Some(pd) => pd.workers.clone(),
        None => state
            .config
            .worker_urls
            .iter()
            .map(|url| WorkerSpec::regular(url))
            .collect(),
    };
    for spec in specs {
        health::enroll(
            &registry,
            &state.client,
            spec,
            state.config.dp_aware,
            state.config.health.as_ref(),
        )
        .await?;
    }
    if let Some(every) = state.config.worker_load_check_interval {
        background.push(tokio::spawn(crate::workers::load::run(
            registry.clone(),
            state.client.clone(),
            every,
        )));
    }
    if let Some(h) = state.config.health.clone() {
        background.push(tokio::spawn(health::run(
            registry.clone(),
            state.client.clone(),
            h,
        )));
    }
    for (_, manager) in state.managers() {
        background.push(tokio::spawn(tick(manager.active())));
    }
    let listener = tokio::net::TcpListener::bind(state.config.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {}: {e} (set --host/--port)",
                state.config.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let (shutdown, stop) = tokio::sync::watch::channel(false);
    let server = serve(
        listener,
        app(state.clone()),
        state.config.tls.as_ref(),
        stop,
    )?;
    tracing::info!(%addr, policy = %state.policy.load().info().name, "router listening");
    Ok(Running {
        addr,
        metrics_addr,
        state,
        shutdown,
        server,
        background,
        _watches: watches,
    })
}

/// Serve `app` on `listener`, over TLS if configured, until `stop` turns
/// true; then stop accepting and let open requests finish.
///
/// One serving thread per core, each with its own single-threaded runtime
/// accepting from the same listening socket: a client connection, its
/// requests and the worker connections they use ([`Upstream`]) stay on one
/// thread, so serving a request wakes no other thread. On one shared
/// runtime those wake-ups cost more CPU than everything else the router
/// does per request (BENCHMARKS.md). Background work (health checks,
/// metrics, reloads) stays on the caller's runtime.
fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<&crate::tls::ServerTls>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<std::io::Result<()>>> {
    let listener = listener.into_std()?;
    let tls = tls.map(|t| t.rustls_config()).transpose()?.map(Arc::new);
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut finished = Vec::with_capacity(threads);
    for n in 0..threads {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shard = serve_one(
            listener.try_clone()?,
            app.clone(),
            tls.clone(),
            stop.clone(),
        );
        let (done, finish) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("serve-{n}"))
            .spawn(move || {
                let _unheard = done.send(runtime.block_on(shard));
            })?;
        finished.push(finish);
    }
    Ok(tokio::spawn(async move {
        for finish in finished {
            finish
                .await
                .map_err(|_| std::io::Error::other("a serving thread panicked"))??;
        }
        Ok(())
    }))
}

/// One serving thread's accept loop; see [`serve`].
async fn serve_one(
    listener: std::net::TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let stopped = async move {
        let _changed = stop.wait_for(|&stop| stop).await;
    };
    let Some(tls) = tls else {
        return axum::serve(
            tokio::net::TcpListener::from_std(listener)?,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stopped)
        .await;
    };
    let config = axum_server::tls_rustls::RustlsConfig::from_config(tls);
    let server = axum_server::from_tcp_rustls(listener, config)?;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        stopped.await;
        stopper.graceful_shutdown(None);
    });
    server.handle(handle).serve(app.into_make_service()).await
}

async fn start_policy(
    config: &Config,
    registry: Arc<Registry>,
    slot: PolicySlot,
) -> anyhow::Result<PolicyManager> {
    let engine = PolicyEngine::new(config.policy_cache_dir.clone())?;
    let wanted = config.wanted_policy(slot);
    let limits = config.policy_limits;
    let workers = Box::new(move || registry.infos());
    // Compiling takes tens of milliseconds: keep it off the async workers.
    tokio::task::spawn_blocking(move || PolicyManager::start(engine, limits, wanted, workers))
        .await?
}

/// Call the active policy's `tick` at the interval it asked for.
async fn tick(policy: Arc<ArcSwap<Box<dyn Policy>>>) {
    loop {
        let every = policy.load().info().tick_interval;
        let Some(every) = every else {
            // Policies without ticks: look again later, in case of a reload.
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            continue;
        };
        tokio::time::sleep(every).await;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let current = policy.load_full();
        if let Err(e) = tokio::task::spawn_blocking(move || current.tick(now_ms)).await {
            tracing::error!("policy tick task failed: {e}");
        }
    }
}
