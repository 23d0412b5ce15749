//! `router replay`: a request stream through a simulated fleet, in process
//! and on a simulated clock, once per policy, so that a new policy can be
//! judged on recorded traffic before it serves.
//!
//! The fleet is `router sim-worker`'s model, event by event: a prefix KV
//! cache of chained blocks ([`PrefixCache`]), a bounded running batch with
//! a FIFO queue, prefill of the uncached tokens (one request at a time
//! with `--serial-prefill`), and decode slower the larger the batch. The
//! routers are the real policies (built-ins or `.wasm` files), each
//! replica with its own instance and host state, told what a live router
//! is told: its own requests in flight and prefill ahead, and the workers'
//! own counts every `--load-interval-ms`.
//!
//! Traces: the router's decision records (`--decision-log`), and the
//! Mooncake format of public production traces (`timestamp` in ms,
//! `input_length`, `output_length`, `hash_ids` of `--block-tokens`-token
//! blocks). A policy that reads text sees each block as 16 characters
//! derived from its key, so prefixes are shared exactly as the blocks are.
//! A policy that matches KV pages sees tokens drawn from each block's key,
//! and an index of KV pages that the simulated caches feed as the
//! workers' events would (at once: no event delay). Policies draw their
//! randomness from `--seed`: a run repeats.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::sim::cache::{CHARS_PER_TOKEN, PrefixCache};
use std::sync::Arc;

use wasm_router::config::Limits;
use wasm_router::index::{Medium, Precise, StoredPages};
use wasm_router::lab::DecisionRecord;
use wasm_router::policy::imports::KvView;
use wasm_router::policy::{
    Candidate, Outcome, Policy, PolicyEngine, PolicySource, PrefillWork, Route, RouteRequest,
    WasmPolicy, WorkerInfo,
};

/// `router replay`'s flags.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// The request stream: decision records or a Mooncake-format trace
    /// (JSON lines).
    #[arg(long)]
    pub trace: PathBuf,
    /// A policy to replay it through: a built-in name or a .wasm file
    /// (repeatable: one row each).
    #[arg(long = "policy", required = true)]
    pub policies: Vec<String>,
    /// The JSON config passed to each policy's `init`.
    #[arg(long, default_value = "{}")]
    pub config: String,
    /// Simulated workers.
    #[arg(long, default_value_t = 8)]
    pub workers: u32,
    /// Router replicas taking the requests in turn, each with its own
    /// policy instance and indexes.
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Each worker's KV cache, in tokens.
    #[arg(long, default_value_t = 200_000)]
    pub capacity_tokens: usize,
    /// Prefill cost per uncached prompt token, in microseconds.
    #[arg(long, default_value_t = 100)]
    pub prefill_us_per_token: u64,
    /// Decode cost per output token with one request running, in
    /// microseconds.
    #[arg(long, default_value_t = 5_000)]
    pub decode_us_per_token: u64,
    /// Extra decode cost per additional running request, as a fraction.
    #[arg(long, default_value_t = 0.05)]
    pub batch_slowdown: f64,
    /// Pieces a streamed answer comes in (`sim-worker --stream-pieces`):
    /// the first right after prefill, the rest decoded.
    #[arg(long, default_value_t = 4)]
    pub stream_pieces: u32,
    /// Requests running at once per worker; more wait in a FIFO queue.
    #[arg(long, default_value_t = 16)]
    pub max_running: usize,
    /// Prefill one request at a time per worker (`sim-worker
    /// --serial-prefill`).
    #[arg(long)]
    pub serial_prefill: bool,
    /// How often routers learn the workers' own counts, in ms of simulated
    /// time (the router's `--worker-load-check-interval`).
    #[arg(long, default_value_t = 10_000)]
    pub load_interval_ms: u64,
    /// Divide the trace's times by this.
    #[arg(long, default_value_t = 1.0)]
    pub speedup: f64,
    /// Tokens per Mooncake `hash_ids` block (decision records say theirs).
    #[arg(long, default_value_t = 512)]
    pub block_tokens: u32,
    /// Seed of the randomness each policy is given (replica r's is SEED +
    /// r): the same trace, flags and seed give the same table.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replay only the first N requests.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print JSON rather than a table.
    #[arg(long)]
    pub json: bool,
}

/// One request of a trace, as the fleet sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Arrival, in microseconds from the trace's start.
    pub at_us: u64,
    /// Chained block keys of its prompt.
    pub blocks: Vec<u64>,
    /// Tokens per block.
    pub block_tokens: u32,
    /// Prompt tokens.
    pub input_tokens: u32,
    /// Tokens to generate.
    pub output_tokens: u32,
}

/// A Mooncake trace's line.
#[derive(Debug, Deserialize)]
struct MooncakeLine {
    timestamp: f64,
    input_length: u32,
    output_length: u32,
    hash_ids: Vec<u64>,
}

/// Read a trace (the format is told by each line's fields), in arrival
/// order, times divided by `speedup`.
pub fn read_trace(path: &std::path::Path, args: &ReplayArgs) -> anyhow::Result<Vec<Request>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read the trace {}", path.display()))?;
    let mut out = Vec::new();
    let mut first_ms = None;
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
        let (ms, request) = if value.get("hash_ids").is_some() {
            let m: MooncakeLine = serde_json::from_value(value)
                .with_context(|| format!("{}:{}: not a Mooncake line", path.display(), n + 1))?;
            let request = Request {
                at_us: 0,
                blocks: m.hash_ids,
                block_tokens: args.block_tokens.max(1),
                input_tokens: m.input_length,
                output_tokens: m.output_length.max(1),
            };
            (m.timestamp, request)
        } else if value.get("blocks").is_some() {
            let r: DecisionRecord = serde_json::from_value(value)
                .with_context(|| format!("{}:{}: not a decision record", path.display(), n + 1))?;
            let block_tokens = (r.block_bytes as usize / CHARS_PER_TOKEN).max(1) as u32;
            let input = r
                .prompt_tokens
                .unwrap_or((r.prompt_bytes as usize).div_ceil(CHARS_PER_TOKEN) as u32);
            let output = r
                .outcome
                .completion_tokens
                .or(r.max_new_tokens)
                .unwrap_or(16);
            let request = Request {
                at_us: 0,
                blocks: r.blocks,
                block_tokens,
                input_tokens: input.max(1),
                output_tokens: output.max(1),
            };
            (r.time_ms as f64, request)
        } else {
            anyhow::bail!(
                "{}:{}: neither a decision record (blocks) nor a Mooncake line (hash_ids)",
                path.display(),
                n + 1
            );
        };
        let first = *first_ms.get_or_insert(ms);
        let at_us = ((ms - first).max(0.0) * 1000.0 / args.speedup.max(1e-9)) as u64;
        out.push(Request { at_us, ..request });
        if args.limit.is_some_and(|limit| out.len() >= limit) {
            break;
        }
    }
    out.sort_by_key(|r| r.at_us);
    Ok(out)
}

/// One policy's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The policy as given.
    pub policy: String,
    /// Requests replayed.
    pub requests: usize,
    /// Prompt tokens served from the workers' caches, over all prompt
    /// tokens.
    pub hit_rate: f64,
    /// Time to first token, median, in ms.
    pub ttft_p50_ms: f64,
    /// Its 99th percentile.
    pub ttft_p99_ms: f64,
    /// From the first arrival to the last answer's end, in seconds.
    pub makespan_s: f64,
    /// Requests each worker served.
    pub per_worker: Vec<u32>,
    /// Decisions the native fallback made (the policy faulted or
    /// declined): replay is deterministic while this is 0.
    pub fallbacks: u64,
}

/// `router replay`: one row per policy; the table (or JSON) on stdout,
/// the speed on stderr.
pub fn run(args: &ReplayArgs) -> anyhow::Result<()> {
    if args.workers == 0 {
        anyhow::bail!("--workers 0: a fleet needs at least one worker");
    }
    let trace = read_trace(&args.trace, args)?;
    let engine = PolicyEngine::new(crate::cache_dir(false))?;
    let mut rows = Vec::new();
    for policy in &args.policies {
        let started = Instant::now();
        let row = replay(&engine, policy, &trace, args)?;
        let wall = started.elapsed();
        eprintln!(
            "{policy}: {} requests in {:.2} s of wall time ({:.0} simulated requests/s)",
            trace.len(),
            wall.as_secs_f64(),
            trace.len() as f64 / wall.as_secs_f64().max(1e-9)
        );
        rows.push(row);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", table(&rows));
    }
    Ok(())
}

/// The rows as a table.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<28} {:>8} {:>9} {:>12} {:>12} {:>11} {:>9}  requests per worker\n",
        "policy", "requests", "hit rate", "TTFT p50 ms", "TTFT p99 ms", "makespan s", "fallbacks"
    );
    for r in rows {
        let per_worker: Vec<String> = r.per_worker.iter().map(u32::to_string).collect();
        out.push_str(&format!(
            "{:<28} {:>8} {:>9.3} {:>12.1} {:>12.1} {:>11.2} {:>9}  {}\n",
            r.policy,
            r.requests,
            r.hit_rate,
            r.ttft_p50_ms,
            r.ttft_p99_ms,
            r.makespan_s,
            r.fallbacks,
            per_worker.join(" ")
        ));
    }
    out
}

/// What happens next in the simulation, at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// Request i arrives at its router.
    Arrive(usize),
    /// Request i's prefill ends: its first token.
    Prefilled(usize),
    /// Request i's answer ends.
    Decoded(usize),
    /// The routers read the workers' counts.
    LoadRead,
    /// Replica r's policy ticks.
    Tick(usize),
}

/// A simulated worker.
struct SimWorker {
    cache: PrefixCache,
    running: usize,
    /// Waiting for a running slot.
    waiting: VecDeque<usize>,
    /// With a slot, waiting for the prefill engine (serial prefill).
    prefill_queue: VecDeque<usize>,
    prefilling: bool,
}

/// A router replica: its policy and what it knows.
struct Replica {
    policy: WasmPolicy,
    in_flight: Vec<u32>,
    ahead: Vec<PrefillWork>,
}

/// A request's progress.
#[derive(Default, Clone)]
struct Progress {
    replica: usize,
    worker: u32,
    /// Its prefill tokens as its router estimated them.
    estimate: u32,
    cached: u32,
    first_token_us: u64,
}

/// The simulation's state for one policy.
struct Fleet<'a> {
    args: &'a ReplayArgs,
    trace: &'a [Request],
    workers: Vec<SimWorker>,
    replicas: Vec<Replica>,
    /// The KV index the workers' caches feed, when a policy matches KV
    /// pages.
    kv: Option<Arc<Precise>>,
    progress: Vec<Progress>,
    /// Each worker's running + waiting, and waiting, as last read.
    reported: Vec<(u32, u32)>,
    events: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    now: u64,
    /// When the last answer ended.
    end: u64,
    /// Decisions the fallback made.
    fallbacks: u64,
}

/// Replay `trace` through `policy`.
pub fn replay(
    engine: &PolicyEngine,
    policy: &str,
    trace: &[Request],
    args: &ReplayArgs,
) -> anyhow::Result<Row> {
    let infos: Vec<WorkerInfo> = (0..args.workers)
        .map(|id| WorkerInfo {
            id,
            url: format!("sim://worker-{id}"),
            ..WorkerInfo::default()
        })
        .collect();
    // The workers' KV events, as every replica follows them: one index of
    // what the simulated caches hold, for policies that match KV pages.
    let kv = Arc::new(Precise::default());
    let mut reads_kv = false;
    let mut replicas = Vec::with_capacity(args.replicas.max(1));
    for replica in 0..args.replicas.max(1) {
        // Each replica its own host state: its own prefix index.
        let engine = engine.clone().with_kv(KvView {
            index: Some(kv.clone()),
            tokenizer: None,
        });
        let source = PolicySource::parse(policy)?;
        // No request waits on a replayed decision: a deadline that a busy
        // machine cannot trip (which would make the run depend on it), yet
        // still ends a policy that loops.
        let limits = Limits {
            instances: Some(1),
            call_deadline: Duration::from_secs(1),
            random_seed: Some(args.seed.wrapping_add(replica as u64)),
            ..Limits::default()
        };
        let loaded = WasmPolicy::load(&engine, source, &args.config, limits)?;
        reads_kv |= loaded.info().reads.kv_matches;
        loaded.workers_changed(&infos);
        replicas.push(Replica {
            policy: loaded,
            in_flight: vec![0; infos.len()],
            ahead: vec![PrefillWork::default(); infos.len()],
        });
    }
    let mut fleet = Fleet {
        args,
        trace,
        workers: (0..args.workers)
            .map(|_| SimWorker {
                cache: PrefixCache::new(
                    trace.first().map_or(16, |r| r.block_tokens as usize),
                    args.capacity_tokens,
                ),
                running: 0,
                waiting: VecDeque::new(),
                prefill_queue: VecDeque::new(),
                prefilling: false,
            })
            .collect(),
        replicas,
        kv: reads_kv.then_some(kv),
        progress: vec![Progress::default(); trace.len()],
        reported: vec![(0, 0); args.workers as usize],
        events: BinaryHeap::new(),
        seq: 0,
        now: 0,
        end: 0,
        fallbacks: 0,
    };
    for (i, r) in trace.iter().enumerate() {
        fleet.at(r.at_us, Event::Arrive(i));
    }
    fleet.at(args.load_interval_ms * 1000, Event::LoadRead);
    for r in 0..fleet.replicas.len() {
        if let Some(every) = fleet.replicas[r].policy.info().tick_interval {
            fleet.at(every.as_micros() as u64, Event::Tick(r));
        }
    }
    let mut done = 0;
    while let Some(Reverse((at, _, event))) = fleet.events.pop() {
        fleet.now = at;
        match event {
            Event::Arrive(i) => fleet.arrive(i),
            Event::Prefilled(i) => fleet.prefilled(i),
            Event::Decoded(i) => {
                fleet.decoded(i);
                fleet.end = at;
                done += 1;
            }
            Event::LoadRead if done < trace.len() => {
                fleet.reported = fleet
                    .workers
                    .iter()
                    .map(|w| ((w.running + w.waiting.len()) as u32, w.waiting.len() as u32))
                    .collect();
                fleet.at(at + args.load_interval_ms.max(1) * 1000, Event::LoadRead);
            }
            Event::Tick(r) if done < trace.len() => {
                let policy = &fleet.replicas[r].policy;
                policy.tick(at / 1000);
                if let Some(every) = policy.info().tick_interval {
                    fleet.at(at + (every.as_micros() as u64).max(1), Event::Tick(r));
                }
            }
            Event::LoadRead | Event::Tick(_) => {}
        }
    }
    Ok(fleet.row(policy))
}

impl Fleet<'_> {
    fn at(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq, event)));
    }

    /// Route request i at its replica and hand it to the worker.
    fn arrive(&mut self, i: usize) {
        let r = i % self.replicas.len();
        let req = &self.trace[i];
        let replica = &self.replicas[r];
        let info = replica.policy.info();
        let text = if info.needs_text {
            synthetic_text(&req.blocks)
        } else {
            String::new()
        };
        let tokens = self.kv.as_ref().map(|_| synthetic_tokens(req));
        let candidates: Vec<Candidate> = (0..self.workers.len())
            .map(|w| {
                let (reported, queued) = self.reported[w];
                Candidate {
                    id: w as u32,
                    load: replica.in_flight[w].max(reported),
                    in_flight: replica.in_flight[w],
                    reported_load: Some(reported),
                    queued: Some(queued),
                    kv_capacity: Some(self.args.capacity_tokens as u32),
                    prefill_ahead: replica.ahead[w],
                    ..Candidate::default()
                }
            })
            .collect();
        let route = RouteRequest {
            id: i as u64,
            route: Route::Generate,
            model: "",
            text: &text,
            tokens: tokens.as_deref(),
            prompt_tokens: None,
            routing_key: None,
            headers: None,
            stream: true,
            max_new_tokens: Some(req.output_tokens),
        };
        let (worker, cached) = match replica.policy.select(&route, &candidates) {
            Ok(decision) => {
                self.fallbacks += u64::from(decision.fallback.is_some());
                (decision.worker, decision.cached_tokens)
            }
            // A policy that declines is routed as the router's fallback would.
            Err(_) => {
                self.fallbacks += 1;
                let least = wasm_router::policy::LeastLoad::default().pick(&candidates);
                (least.unwrap_or(0), None)
            }
        };
        // As the router estimates a pick's prefill: what its KV match did
        // not find.
        let estimate = req.input_tokens.saturating_sub(cached.unwrap_or(0));
        let replica = &mut self.replicas[r];
        replica.in_flight[worker as usize] += 1;
        replica.ahead[worker as usize].requests += 1;
        replica.ahead[worker as usize].tokens += estimate;
        self.progress[i] = Progress {
            replica: r,
            worker,
            estimate,
            ..Progress::default()
        };
        let w = &mut self.workers[worker as usize];
        if w.running < self.args.max_running.max(1) {
            w.running += 1;
            self.admit_to_prefill(i);
        } else {
            w.waiting.push_back(i);
        }
    }

    /// Request i holds a running slot: prefill it now, or after the
    /// prefills ahead of it (serial prefill).
    fn admit_to_prefill(&mut self, i: usize) {
        let w = self.progress[i].worker as usize;
        if self.args.serial_prefill && self.workers[w].prefilling {
            self.workers[w].prefill_queue.push_back(i);
            return;
        }
        self.start_prefill(i);
    }

    fn start_prefill(&mut self, i: usize) {
        let req = &self.trace[i];
        let w = self.progress[i].worker as usize;
        let full = (req.input_tokens / req.block_tokens) as usize;
        let blocks = &req.blocks[..full.min(req.blocks.len())];
        let (lookup, stored, evicted) = self.workers[w]
            .cache
            .process_blocks(blocks, req.input_tokens as usize);
        if let Some(kv) = &self.kv {
            publish(kv, w as u32, req, blocks, &stored, &evicted);
        }
        self.workers[w].prefilling = true;
        let uncached = (lookup.prompt_tokens - lookup.cached_tokens) as u64;
        self.progress[i].cached = lookup.cached_tokens as u32;
        let at = self.now + uncached * self.args.prefill_us_per_token;
        self.at(at, Event::Prefilled(i));
    }

    fn prefilled(&mut self, i: usize) {
        let p = self.progress[i].clone();
        let w = p.worker as usize;
        self.progress[i].first_token_us = self.now;
        let ahead = &mut self.replicas[p.replica].ahead[w];
        ahead.requests -= 1;
        ahead.tokens -= p.estimate;
        let worker = &mut self.workers[w];
        worker.prefilling = false;
        let batch = worker.running.max(1) as f64;
        let per_token =
            self.args.decode_us_per_token as f64 * (1.0 + self.args.batch_slowdown * (batch - 1.0));
        let output = self.trace[i].output_tokens;
        let first_piece = output.div_ceil(self.args.stream_pieces.max(1));
        let decode = (per_token * f64::from(output - first_piece)) as u64;
        if let Some(next) = worker.prefill_queue.pop_front() {
            self.start_prefill(next);
        }
        self.at(self.now + decode, Event::Decoded(i));
    }

    fn decoded(&mut self, i: usize) {
        let p = self.progress[i].clone();
        let w = p.worker as usize;
        let replica = &mut self.replicas[p.replica];
        replica.in_flight[w] -= 1;
        let arrival = self.trace[i].at_us;
        if replica.policy.info().wants_feedback {
            replica.policy.on_complete(&Outcome {
                request_id: i as u64,
                worker: p.worker,
                attempt: 1,
                error: None,
                ttft_us: Some(p.first_token_us - arrival),
                status: 200,
                latency_us: self.now - arrival,
                prompt_tokens: Some(self.trace[i].input_tokens),
                cached_tokens: Some(p.cached),
                completion_tokens: Some(self.trace[i].output_tokens),
            });
        }
        let worker = &mut self.workers[w];
        worker.running -= 1;
        if let Some(next) = worker.waiting.pop_front() {
            worker.running += 1;
            self.admit_to_prefill(next);
        }
    }

    fn row(&self, policy: &str) -> Row {
        let mut ttft: Vec<u64> = self
            .progress
            .iter()
            .zip(self.trace)
            .map(|(p, r)| p.first_token_us - r.at_us)
            .collect();
        ttft.sort_unstable();
        let pct = |q: f64| {
            let at = ((ttft.len() as f64 - 1.0) * q).round() as usize;
            ttft.get(at).map_or(0.0, |&us| us as f64 / 1000.0)
        };
        let prompt: u64 = self.trace.iter().map(|r| u64::from(r.input_tokens)).sum();
        let cached: u64 = self.progress.iter().map(|p| u64::from(p.cached)).sum();
        let mut per_worker = vec![0; self.workers.len()];
        for p in &self.progress {
            per_worker[p.worker as usize] += 1;
        }
        let first = self.trace.first().map_or(0, |r| r.at_us);
        Row {
            policy: policy.to_string(),
            requests: self.trace.len(),
            hit_rate: if prompt == 0 {
                0.0
            } else {
                cached as f64 / prompt as f64
            },
            ttft_p50_ms: pct(0.5),
            ttft_p99_ms: pct(0.99),
            makespan_s: Duration::from_micros(self.end - first).as_secs_f64(),
            per_worker,
            fallbacks: self.fallbacks,
        }
    }
}

/// What worker `w` publishes after caching `blocks` of `req`: a page per
/// block it stored (its tokens [`block_tokens`]), the blocks it evicted.
fn publish(kv: &Precise, w: u32, req: &Request, blocks: &[u64], stored: &[usize], evicted: &[u64]) {
    for &at in stored {
        let tokens = block_tokens(blocks[at], req.block_tokens as usize);
        let pages = StoredPages {
            medium: Medium::Gpu,
            parent: at.checked_sub(1).map(|p| blocks[p]),
            hashes: &blocks[at..=at],
            tokens: &tokens,
            block_size: req.block_tokens,
            seed: 0,
        };
        if let Err(e) = kv.store(w, pages) {
            tracing::debug!("replay: a page was not indexed: {e}");
        }
    }
    if !evicted.is_empty() {
        kv.remove(w, Medium::Gpu, evicted);
    }
}

/// The tokens a KV-matching policy sees for `req`: each block's from its
/// key ([`block_tokens`]), as many as its prompt has.
fn synthetic_tokens(req: &Request) -> Vec<u32> {
    let per_block = req.block_tokens as usize;
    let mut tokens: Vec<u32> = req
        .blocks
        .iter()
        .flat_map(|&key| block_tokens(key, per_block))
        .collect();
    tokens.truncate(req.input_tokens as usize);
    tokens
}

/// `n` token ids drawn from a block's key (splitmix64), so blocks with
/// equal keys have equal tokens and others almost surely differ.
fn block_tokens(key: u64, n: usize) -> Vec<u32> {
    (0..n as u64)
        .map(|j| {
            let mut z = key.wrapping_add(j.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) % 150_000) as u32
        })
        .collect()
}

/// The text a text-reading policy sees for these blocks: 16 characters a
/// block, from its key, so two prompts share a prefix exactly as far as
/// they share blocks.
fn synthetic_text(blocks: &[u64]) -> String {
    let mut text = String::with_capacity(blocks.len() * 16);
    for key in blocks {
        text.push_str(&format!("{key:016x}"));
    }
    text
}
