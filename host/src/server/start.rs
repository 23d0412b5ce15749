//! Starting and stopping a router: load the policies, register the workers,
//! start health checks, ticks and metrics, and serve on one thread per core.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use axum::Router;
use tokio::task::JoinHandle;

use super::app;
use crate::config::{Config, PolicySlot, WorkerSpec};
use crate::metrics as m;
use crate::policy::imports::KvView;
use crate::policy::reload::{self, PolicyManager};
use crate::policy::{Policy, PolicyEngine, WorkerInfo, watch};
use crate::state::AppState;
use crate::tokenizer::Tokenizer;
use crate::workers::{Registry, health};

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
    /// The serving threads' runtimes.
    serving: Vec<tokio::runtime::Handle>,
    background: Vec<JoinHandle<()>>,
    _watches: Vec<watch::FileWatch>,
}

impl Running {
    /// Tasks alive on the serving threads: one per open client connection
    /// and per open worker connection, and those of requests in flight. A
    /// count that does not come back down when clients and workers are gone
    /// is a leak.
    pub fn serving_tasks(&self) -> usize {
        self.serving
            .iter()
            .map(|h| h.metrics().num_alive_tasks())
            .sum()
    }

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

/// Raise the process's open-file limit to its hard limit, as nginx's
/// `worker_rlimit_nofile` and Go's runtime do: each open stream takes two
/// descriptors (client and worker), so a soft limit of 1,024 would refuse
/// connections at some 500 streams. The limit now.
pub fn raise_file_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0 && {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) == 0
        }
    };
    if raised {
        Ok(limit.rlim_cur)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Start the router: load the policy, register workers, start health
/// checks, ticks and metrics, and listen.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    match raise_file_limit() {
        Ok(open_files) => tracing::debug!(open_files, "open-file limit"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
    let handle = m::install(config.duration_buckets.as_deref());
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
    let kv = KvView {
        index: config.kv_events.then(Arc::default),
        tokenizer: match &config.tokenizer {
            Some(path) => Some(Arc::new(Tokenizer::load(path, config.tokenizer_cache)?)),
            None => None,
        },
    };
    let policies =
        Arc::new(start_policy(&config, registry.clone(), PolicySlot::Main, kv.clone()).await?);
    let prefill_policies = match config.pd {
        Some(_) => Some(Arc::new(
            start_policy(&config, registry.clone(), PolicySlot::Prefill, kv.clone()).await?,
        )),
        None => None,
    };
    let shadows = {
        let (config, kv, registry) = (config.clone(), kv.clone(), registry.clone());
        tokio::task::spawn_blocking(move || {
            crate::lab::Shadows::start(&config, &kv, || workers_of(&registry))
        })
        .await??
    };
    let state = Arc::new(AppState::new(
        config,
        registry.clone(),
        policies,
        prefill_policies,
        kv,
        shadows,
    )?);
    let mut watches = Vec::new();
    for (slot, manager) in [(PolicySlot::Main, Some(&state.policies))]
        .into_iter()
        .chain([(PolicySlot::Prefill, state.prefill_policies.as_ref())])
    {
        let files = reload::watched_files(&state.config, slot);
        if let Some(manager) = manager
            && state.config.watch
            && !files.is_empty()
        {
            watches.push(watch::watch(&files, manager.clone())?);
        }
    }
    let shadows = state.shadows.as_ref().map_or(&[][..], |s| s.all());
    for shadow in shadows {
        if let Ok(crate::policy::PolicySource::File(path)) =
            crate::policy::PolicySource::parse(&shadow.name)
            && state.config.watch
        {
            watches.push(watch::watch(&[path], shadow.manager.clone())?);
        }
    }
    let shadow_seams = shadows.iter().map(|s| s.manager.active());
    let seams: Vec<_> = state
        .managers()
        .iter()
        .map(|(_, m)| m.active())
        .chain(shadow_seams)
        .collect();
    registry.on_change(move |workers| {
        for seam in &seams {
            seam.load().workers_changed(workers);
        }
    });
    let worker_series = {
        let (registry, cap) = (state.registry.clone(), state.config.worker_series);
        move |out: &mut String| {
            let workers = registry.all();
            let names: Vec<String> = workers.iter().map(|w| w.name()).collect();
            let series: Vec<m::WorkerSeries<'_>> = workers
                .iter()
                .zip(&names)
                .map(|(w, name)| m::WorkerSeries {
                    name,
                    in_flight: w.load(),
                    healthy: w.is_healthy(),
                    breaker: w.breaker.state().code(),
                })
                .collect();
            m::render_workers(out, &series, cap);
        }
    };
    let mut background = vec![tokio::spawn(async move {
        if let Err(e) = m::serve_on(metrics_listener, handle, worker_series).await {
            tracing::error!("metrics endpoint stopped: {e}");
        }
    })];
    let specs: Vec<WorkerSpec> = match &state.config.pd {
        Some(pd) => pd.workers.clone(),
        None => state.config.workers.clone(),
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
    if let Some(discovery) = &state.config.discovery {
        let enroll = crate::discovery::Enroll {
            registry: registry.clone(),
            client: state.client.clone(),
            dp_aware: state.config.dp_aware,
            health: state.config.health.clone(),
        };
        let kv_events = state.config.kv_events;
        background.extend(crate::discovery::start(discovery, kv_events, enroll).await?);
    }
    if state
        .config
        .queue
        .is_some_and(|q| q.refill_per_sec.is_some())
    {
        let state = state.clone();
        background.push(tokio::spawn(async move {
            if let Some(admission) = &state.admission {
                admission.refill().await;
            }
        }));
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
    if let Some(subscriptions) = state.kv_events.clone() {
        background.push(tokio::spawn(crate::events::follow_workers(
            Arc::downgrade(&registry),
            state.client.clone(),
            subscriptions,
        )));
    }
    let shadow_managers = shadows.iter().map(|s| &s.manager);
    for manager in state
        .managers()
        .into_iter()
        .map(|(_, m)| m)
        .chain(shadow_managers)
    {
        background.push(tokio::spawn(tick(manager.active())));
        background.push(tokio::spawn(checkpoint(manager.active())));
    }
    if let Some(verifier) = state.jwt.clone() {
        background.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(crate::jwt::REFRESH_EVERY);
            loop {
                every.tick().await;
                // A failure is logged, and the keys held keep serving.
                verifier.refresh().await.ok();
            }
        }));
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
    let (server, serving) = serve(
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
        serving,
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
    tls: Option<&crate::config::ServerTls>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(JoinHandle<std::io::Result<()>>, Vec<tokio::runtime::Handle>)> {
    let listener = listener.into_std()?;
    let tls = tls.map(|t| t.rustls_config()).transpose()?.map(Arc::new);
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut finished = Vec::with_capacity(threads);
    let mut handles = Vec::with_capacity(threads);
    for n in 0..threads {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        handles.push(runtime.handle().clone());
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
    let server = tokio::spawn(async move {
        for finish in finished {
            finish
                .await
                .map_err(|_| std::io::Error::other("a serving thread panicked"))??;
        }
        Ok(())
    });
    Ok((server, handles))
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
    // TCP_NODELAY on every client connection: without it a stream's first
    // chunk after the headers waits for the client's delayed ACK (40 ms
    // on Linux) whenever the worker answers within that time (Nagle).
    let Some(tls) = tls else {
        use axum::serve::ListenerExt;
        let listener = tokio::net::TcpListener::from_std(listener)?.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("a client connection keeps Nagle's algorithm: {e}");
            }
        });
        return axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stopped)
        .await;
    };
    let config = axum_server::tls_rustls::RustlsConfig::from_config(tls);
    let server = axum_server::from_tcp_rustls(listener, config)?
        .map(|tls| tls.acceptor(axum_server::accept::NoDelayAcceptor::new()));
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        stopped.await;
        stopper.graceful_shutdown(None);
    });
    // With the peer's address, which the admin routes' loopback rule reads.
    server
        .handle(handle)
        .serve(app.into_make_service_with_connect_info::<SocketAddr>())
        .await
}

async fn start_policy(
    config: &Config,
    registry: Arc<Registry>,
    slot: PolicySlot,
    kv: KvView,
) -> anyhow::Result<PolicyManager> {
    let engine = PolicyEngine::new(config.policy_cache_dir.clone())?.with_kv(kv);
    let wanted = reload::wanted_source(config, slot);
    let limits = config.policy_limits;
    let workers = workers_of(&registry);
    // Compiling takes tens of milliseconds: keep it off the async workers.
    tokio::task::spawn_blocking(move || PolicyManager::start(engine, limits, wanted, workers))
        .await?
}

/// The registry's workers, as a policy manager reads them.
fn workers_of(registry: &Arc<Registry>) -> reload::WorkersSource {
    let registry = registry.clone();
    Box::new(move |f: &mut dyn FnMut(&[WorkerInfo])| registry.with_infos(f))
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

/// Checkpoint the active policy's private state every
/// [`CHECKPOINT_INTERVAL`](crate::policy::CHECKPOINT_INTERVAL), for the
/// instance rebuilt after a fault.
async fn checkpoint(policy: Arc<ArcSwap<Box<dyn Policy>>>) {
    let mut every = tokio::time::interval(crate::policy::CHECKPOINT_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let current = policy.load_full();
        if let Err(e) = tokio::task::spawn_blocking(move || current.checkpoint()).await {
            tracing::error!("policy checkpoint task failed: {e}");
        }
    }
}
