//! `router sim-worker`: a simulated SGLang worker for CPU-only machines.
//!
//! It models what matters for routing: a prefix KV cache ([`cache`]), prefill
//! time proportional to the tokens not found in it, decode time per output
//! token that grows with the running batch, and a bounded running batch with
//! a FIFO queue. It speaks SGLang's `/generate` and OpenAI's completions and
//! chat routes (streaming or not) with their token accounting, so the
//! router's feedback and the benchmarks read cache hits from the workers'
//! own counters. Knobs make it fail, hang or crash for tests. It can play
//! either half of a prefill/decode pair and report data-parallel ranks
//! ([`pd`]).

pub mod cache;
pub mod kube_api;
pub mod kv_events;
pub mod pd;
mod respond;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use clap::Args;
use serde_json::json;
use tokio::sync::Semaphore;

use cache::PrefixCache;
use pd::{Rooms, SimRole};

/// Knobs of a simulated worker.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Model name it reports.
    #[arg(long, default_value = "sim-model")]
    pub model: String,
    /// Tokens per KV cache block.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// KV cache capacity in tokens.
    #[arg(long, default_value_t = 200_000)]
    pub cache_tokens: usize,
    /// Prefill cost per uncached prompt token, in microseconds.
    #[arg(long, default_value_t = 100)]
    pub prefill_us_per_token: u64,
    /// Decode cost per output token with one request running, in microseconds.
    #[arg(long, default_value_t = 5_000)]
    pub decode_us_per_token: u64,
    /// Extra decode cost per additional running request, as a fraction.
    #[arg(long, default_value_t = 0.05)]
    pub batch_slowdown: f64,
    /// Requests running at once; more wait in a FIFO queue.
    #[arg(long, default_value_t = 16)]
    pub max_running: usize,
    /// Prefill one request at a time, in arrival order, as a GPU's compute
    /// is shared: a request's time to first token is then the prefill of
    /// the work queued ahead of it plus its own. Without it, prefills of
    /// running requests overlap freely (only `--max-running` queues).
    #[arg(long)]
    pub serial_prefill: bool,
    /// Output tokens when the request does not say.
    #[arg(long, default_value_t = 16)]
    pub output_tokens: usize,
    /// Server-sent events a streamed answer comes in, its tokens split
    /// evenly (at most one per token).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub stream_pieces: u32,
    /// Multiply all simulated times (0 for instant answers).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Fixed extra latency per request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Share of requests answered with --fail-status (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Answer the first N requests with --fail-status.
    #[arg(long, default_value_t = 0)]
    pub fail_first: usize,
    /// Status of simulated failures.
    #[arg(long, default_value_t = 500)]
    pub fail_status: u16,
    /// Never answer inference requests.
    #[arg(long)]
    pub hang: bool,
    /// Exit the process (or stop serving, in-process) after N requests.
    #[arg(long)]
    pub crash_after: Option<usize>,
    /// Answer inference at once with a fixed body, with no cache, timing or
    /// parsing: an instant upstream for measuring a router's own overhead.
    #[arg(long)]
    pub fixed_response: bool,
    /// Its part: a regular worker, or the prefill or decode half of a PD
    /// pair (both need the router's bootstrap fields; the prefill worker
    /// serves the decode worker's KV pulls on its own port).
    #[arg(long, value_enum, default_value_t = SimRole::Regular)]
    pub role: SimRole,
    /// Data-parallel ranks it reports as `dp_size` in /get_server_info;
    /// requests may name one in `data_parallel_rank`.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub dp_size: u32,
    /// Prefill: how long to wait for the decode worker to pull a request's
    /// KV cache before failing the request, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub bootstrap_timeout_ms: u64,
    /// A Hugging Face tokenizer.json: prompts are cut into pages of its
    /// token ids (with special tokens, as SGLang tokenizes /generate), not
    /// of characters.
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<std::path::PathBuf>,
    /// Publish the cache's KV events on this port (0: any free port), as
    /// SGLang's `--kv-events-config` does, and report it as
    /// `kv_events_config` in /get_server_info. Needs --tokenizer.
    #[arg(long, value_name = "PORT", requires = "tokenizer")]
    pub kv_events_port: Option<u16>,
    /// The events' wire format.
    #[arg(long, value_enum, default_value_t = kv_events::Format::Sglang)]
    pub kv_events_format: kv_events::Format,
}

/// `router sim-worker`: one simulated worker, or `count` alike.
#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    /// Each worker's settings.
    #[command(flatten)]
    pub sim: SimArgs,
    /// Serve this many simulated workers from this process, on consecutive
    /// ports from --port (and --kv-events-port), or on any free ports when
    /// 0; their URLs are printed, one per line.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub count: u16,
}

impl Default for SimArgs {
    fn default() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: SimArgs,
        }
        Wrapper::parse_from(["sim-worker"]).args
    }
}

/// Counters, exported on `/metrics` in Prometheus text.
#[derive(Debug, Default)]
pub struct Counters {
    /// Inference requests received.
    pub requests: AtomicU64,
    /// Prompt tokens processed.
    pub prompt_tokens: AtomicU64,
    /// Prompt tokens found in the cache.
    pub cached_tokens: AtomicU64,
    /// Requests running.
    pub running: AtomicUsize,
    /// Requests waiting for a batch slot.
    pub queued: AtomicUsize,
    /// Prompt tokens of the running requests: what they hold in the KV
    /// cache, as SGLang's `/get_load` counts `num_tokens`.
    pub kv_tokens: AtomicU64,
    /// Requests per data-parallel rank (`--dp-size` entries).
    pub by_rank: Vec<AtomicU64>,
    /// KV pulls served (prefill) or made (decode).
    pub kv_pulls: AtomicU64,
}

/// A simulated worker's state.
#[derive(Debug)]
pub struct Sim {
    args: SimArgs,
    cache: Mutex<PrefixCache>,
    slots: Semaphore,
    /// The prefill engine, taken in arrival order (`--serial-prefill`).
    prefill_engine: tokio::sync::Mutex<()>,
    /// Counters, for `/metrics` and tests.
    pub counters: Counters,
    /// Prefill: rooms waiting for their KV pull.
    rooms: Rooms,
    /// Decode: the client that pulls KV caches.
    client: reqwest::Client,
    stop: tokio::sync::Notify,
    in_process: bool,
    /// `--tokenizer`.
    tokenizer: Option<wasm_router::tokenizer::Tokenizer>,
    /// `--kv-events-port`.
    kv_events: Option<kv_events::Publisher>,
}

/// A running simulated worker.
#[derive(Debug)]
pub struct SimHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state.
    pub sim: Arc<Sim>,
    task: tokio::task::JoinHandle<()>,
}

impl SimHandle {
    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop serving.
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// Start a simulated worker. `in_process`: `--crash-after` stops the server
/// instead of exiting the process.
pub async fn start(args: SimArgs, in_process: bool) -> anyhow::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind((args.host, args.port)).await?;
    let addr = listener.local_addr()?;
    let tokenizer = match &args.tokenizer {
        Some(path) => Some(wasm_router::tokenizer::Tokenizer::load(
            path,
            Default::default(),
        )?),
        None => None,
    };
    let kv_events = match args.kv_events_port {
        Some(port) => {
            Some(kv_events::Publisher::bind(args.host, port, args.kv_events_format).await?)
        }
        None => None,
    };
    let sim = Arc::new(Sim {
        cache: Mutex::new(PrefixCache::new(args.block_size, args.cache_tokens)),
        slots: Semaphore::new(args.max_running.max(1)),
        prefill_engine: tokio::sync::Mutex::new(()),
        counters: Counters {
            by_rank: (0..args.dp_size).map(|_| AtomicU64::new(0)).collect(),
            ..Counters::default()
        },
        rooms: Rooms::default(),
        client: wasm_router::client::client(),
        stop: tokio::sync::Notify::new(),
        in_process,
        tokenizer,
        kv_events,
        args,
    });
    let inference = if sim.args.fixed_response {
        Router::new()
            .route("/generate", post(respond::fixed))
            .route("/v1/completions", post(respond::fixed))
            .route("/v1/chat/completions", post(respond::fixed))
    } else {
        Router::new()
            .route("/generate", post(respond::generate))
            .route("/v1/completions", post(respond::completions))
            .route("/v1/chat/completions", post(respond::chat))
    };
    let app = inference
        .route("/health", get(|| async { "ok" }))
        .route("/health_generate", get(|| async { "ok" }).post(|| async { "ok" }))
        .route("/get_model_info", get(|State(s): State<Arc<Sim>>| async move { axum::Json(json!({"model_path": s.args.model, "is_generation": true})) }))
        .route("/get_server_info", get(server_info))
        .route("/v1/models", get(|State(s): State<Arc<Sim>>| async move { axum::Json(json!({"object": "list", "data": [{"id": s.args.model, "object": "model", "owned_by": "sim"}]})) }))
        .route("/get_load", get(get_load))
        .route("/flush_cache", post(|State(s): State<Arc<Sim>>| async move { s.flush(); "Cache flushed." }))
        .route("/bootstrap/{room}", get(respond::bootstrap))
        .route("/metrics", get(metrics))
        // SGLang takes large prompts; axum's default 2 MB limit would not.
        .layer(axum::extract::DefaultBodyLimit::max(512 << 20))
        .with_state(sim.clone());
    let stopper = sim.clone();
    let task = tokio::spawn(async move {
        // As SGLang's server (uvicorn) does: no Nagle delay on a stream's
        // small chunks.
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("a connection keeps Nagle's algorithm: {e}");
            }
        });
        let serve = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopper.stop.notified().await });
        if let Err(e) = serve.await {
            tracing::error!("simulated worker stopped: {e}");
        }
    });
    Ok(SimHandle { addr, sim, task })
}

impl Sim {
    /// Requests running or queued.
    pub fn load(&self) -> usize {
        self.counters.running.load(Ordering::Relaxed) + self.counters.queued.load(Ordering::Relaxed)
    }

    /// Empty the KV cache.
    pub fn flush(&self) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.flush();
        if let Some(publisher) = &self.kv_events {
            publisher.publish(vec![cache::CacheEvent::Cleared]);
        }
    }

    /// Look a prompt up in the cache and cache it, publishing what changed.
    fn process(&self, text: &str) -> cache::Lookup {
        let Some(tokenizer) = &self.tokenizer else {
            return self
                .cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .process(text);
        };
        // Tokenized before the cache is locked: other requests need not wait.
        let tokens = tokenizer.encode(text, true).unwrap_or_default();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut events = Vec::new();
        let lookup = cache.process_tokens(&tokens, &mut events);
        if let Some(publisher) = &self.kv_events {
            // Under the cache's lock: batches leave in the cache's order.
            publisher.publish(events);
        }
        lookup
    }

    /// Share of prompt tokens served from the cache so far.
    pub fn hit_rate(&self) -> f64 {
        let prompt = self.counters.prompt_tokens.load(Ordering::Relaxed);
        let cached = self.counters.cached_tokens.load(Ordering::Relaxed);
        if prompt == 0 {
            0.0
        } else {
            cached as f64 / prompt as f64
        }
    }

    /// Time to prefill a prompt: its uncached tokens at the configured
    /// rate, plus the fixed extra latency.
    pub fn prefill_time(&self, lookup: cache::Lookup) -> Duration {
        let uncached = (lookup.prompt_tokens - lookup.cached_tokens) as f64;
        self.scaled(uncached * self.args.prefill_us_per_token as f64)
            + Duration::from_millis(self.args.latency_ms)
    }

    fn bootstrap_timeout(&self) -> Duration {
        Duration::from_millis(self.args.bootstrap_timeout_ms)
    }

    fn scaled(&self, micros: f64) -> Duration {
        Duration::from_secs_f64((micros * self.args.time_scale).max(0.0) / 1e6)
    }
}

/// SGLang's answer, one entry per data-parallel rank; the simulator counts
/// for the whole worker, so with `--dp-size` above 1 it answers `{"load"}`
/// (which every rank's entry reads) rather than split its counts.
async fn get_load(State(s): State<Arc<Sim>>) -> axum::Json<serde_json::Value> {
    if s.args.dp_size > 1 {
        return axum::Json(json!({"load": s.load()}));
    }
    let c = &s.counters;
    axum::Json(json!([{
        "dp_rank": 0,
        "num_reqs": s.load(),
        "num_waiting_reqs": c.queued.load(Ordering::Relaxed),
        "num_tokens": c.kv_tokens.load(Ordering::Relaxed),
    }]))
}

async fn server_info(State(s): State<Arc<Sim>>) -> axum::Json<serde_json::Value> {
    axum::Json(json!({
        "model_path": s.args.model,
        "max_running_requests": s.args.max_running,
        "page_size": s.args.block_size,
        "max_total_num_tokens": s.args.cache_tokens,
        "dp_size": s.args.dp_size,
        "simulated": true,
        // As SGLang reports its --kv-events-config: a JSON string.
        "kv_events_config": s.kv_events.as_ref().map(|p| {
            json!({"publisher": "zmq", "endpoint": format!("tcp://*:{}", p.port)}).to_string()
        }),
    }))
}

async fn metrics(State(s): State<Arc<Sim>>) -> String {
    let c = &s.counters;
    let mut ranks = String::from("# TYPE sim_requests_by_rank_total counter\n");
    for (rank, n) in c.by_rank.iter().enumerate() {
        ranks += &format!(
            "sim_requests_by_rank_total{{rank=\"{rank}\"}} {}\n",
            n.load(Ordering::Relaxed)
        );
    }
    ranks
        + &format!(
            "# TYPE sim_requests_total counter\nsim_requests_total {}\n\
         # TYPE sim_prompt_tokens_total counter\nsim_prompt_tokens_total {}\n\
         # TYPE sim_cached_tokens_total counter\nsim_cached_tokens_total {}\n\
         # TYPE sim_running gauge\nsim_running {}\n# TYPE sim_queued gauge\nsim_queued {}\n\
         # TYPE sim_kv_pulls_total counter\nsim_kv_pulls_total {}\n",
            c.requests.load(Ordering::Relaxed),
            c.prompt_tokens.load(Ordering::Relaxed),
            c.cached_tokens.load(Ordering::Relaxed),
            c.running.load(Ordering::Relaxed),
            c.queued.load(Ordering::Relaxed),
            c.kv_pulls.load(Ordering::Relaxed),
        )
}
