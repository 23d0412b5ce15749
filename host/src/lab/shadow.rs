//! Shadow policies: each asked every request's question after the live
//! policy decided, with the same request and candidates, on its own thread
//! fed by a bounded queue (a full queue drops the question and counts it),
//! so a slow, looping or faulting shadow never touches a live answer. Its
//! answer is compared with the live pick and never acted on: agreement,
//! the prefix each pick holds in the router's indexes, and its picks per
//! worker go to `/metrics` and the decision records.
//!
//! Each shadow is loaded by its own [`PolicyManager`] (hot-reloaded like
//! the live policy) on an engine with its own host state: a shadow's
//! `prefix-index` inserts never reach the live policy's index, even for
//! the same file. `POST /policies/promote` makes one live through the live
//! manager's build-check-swap ([`PolicyManager::promote`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::record::ShadowAnswer;
use crate::config::Config;
use crate::index::Precise;
use crate::metrics as m;
use crate::policy::reload::{PolicyManager, Wanted, WorkersSource};
use crate::policy::{
    Candidate, Decision, Policy, PolicyEngine, PolicyInfo, Route, RouteRequest, SelectError,
    WorkerId,
};
use crate::workers::Worker;

/// Questions waiting for one shadow at most.
pub const QUEUE: usize = 1024;

/// The shadow policies of a router.
pub struct Shadows {
    list: Vec<Arc<Shadow>>,
}

/// One shadow policy.
pub struct Shadow {
    /// As given to `--shadow-policy`.
    pub name: String,
    /// Loads and reloads it.
    pub manager: Arc<PolicyManager>,
    to: SyncSender<Arc<Question>>,
    /// Promoted to live: no longer asked.
    retired: AtomicBool,
    stats: Stats,
    /// The KV index, where matched prefixes are looked up when requests
    /// carry tokens.
    kv: Option<Arc<Precise>>,
}

/// A shadow's counts since start (`GET /policies`).
#[derive(Debug, Default)]
struct Stats {
    asked: AtomicU64,
    agreed: AtomicU64,
    dropped: AtomicU64,
    faults: AtomicU64,
    matched: AtomicU64,
    live_matched: AtomicU64,
}

/// What `GET /policies` says of a shadow.
#[derive(Debug, Serialize)]
pub struct ShadowStatus {
    /// As given to `--shadow-policy`.
    pub shadow: String,
    /// What is loaded and how reloads went.
    pub policy: crate::policy::reload::PolicyStatus,
    /// Questions it answered (faults included).
    pub asked: u64,
    /// Of those, picks equal to the live policy's.
    pub agreed: u64,
    /// Questions dropped because it was behind.
    pub dropped: u64,
    /// Questions it faulted on.
    pub faults: u64,
    /// Prefix its picks held, summed (see [`ShadowAnswer::matched`]).
    pub matched: u64,
    /// The same for the live picks of those requests.
    pub live_matched: u64,
}

/// One request's question, owned so that it outlives the request.
pub struct Question {
    id: u64,
    route: Route,
    model: String,
    text: String,
    tokens: Option<Vec<u32>>,
    prompt_tokens: Option<u32>,
    routing_key: Option<String>,
    stream: bool,
    max_new_tokens: Option<u32>,
    candidates: Vec<Candidate>,
    workers: Vec<Arc<Worker>>,
    live: WorkerId,
    live_policy: Arc<Box<dyn Policy>>,
    answers: Option<Arc<Mutex<Vec<ShadowAnswer>>>>,
}

impl Shadows {
    /// Load every `--shadow-policy` (off the async workers: compiling takes
    /// time), each reading the KV index `kv`, and start their threads.
    pub fn start(
        config: &Config,
        kv: &crate::policy::imports::KvView,
        workers: impl Fn() -> WorkersSource,
    ) -> anyhow::Result<Option<Self>> {
        if config.shadows.is_empty() {
            return Ok(None);
        }
        let mut list = Vec::with_capacity(config.shadows.len());
        for name in &config.shadows {
            let engine = PolicyEngine::new(config.policy_cache_dir.clone())?.with_kv(kv.clone());
            let wanted = Wanted {
                policy: name.clone(),
                config: config.policy_config.clone(),
            };
            // Off the request path, on a thread that yields to serving
            // ones: ten times the live call's deadline, so a shadow
            // starved of CPU is not taken for a slow one.
            let live = config.policy_limits;
            let limits = crate::config::Limits {
                instances: Some(1),
                call_deadline: (live.call_deadline * 10).min(live.maintenance_deadline),
                ..live
            };
            let manager = PolicyManager::start(
                engine,
                limits,
                Box::new(move || Ok(wanted.clone())),
                workers(),
            )
            .map_err(|e| anyhow::anyhow!("shadow policy {name}: {e}"))?;
            let (to, questions) = std::sync::mpsc::sync_channel(QUEUE);
            let shadow = Arc::new(Shadow {
                name: name.clone(),
                manager: Arc::new(manager),
                to,
                retired: AtomicBool::new(false),
                stats: Stats::default(),
                kv: kv.index.clone(),
            });
            let answering = Arc::downgrade(&shadow);
            std::thread::Builder::new()
                .name(format!("shadow-{}", list.len()))
                .spawn(move || answer_all(questions, answering))?;
            list.push(shadow);
        }
        Ok(Some(Shadows { list }))
    }

    /// The shadows, retired ones included.
    pub fn all(&self) -> &[Arc<Shadow>] {
        &self.list
    }

    /// The shadow given as `name` (or whose policy declared that name).
    pub fn find(&self, name: &str) -> Option<&Arc<Shadow>> {
        self.list
            .iter()
            .find(|s| s.name == name || s.manager.current().info().name == name)
    }

    /// Whether some shadow still asked wants what `wants` tests.
    pub fn any_wants(&self, wants: fn(&PolicyInfo) -> bool) -> bool {
        self.asked()
            .any(|s| wants(s.manager.active().load().info()))
    }

    fn asked(&self) -> impl Iterator<Item = &Arc<Shadow>> {
        self.list
            .iter()
            .filter(|s| !s.retired.load(Ordering::Relaxed))
    }

    /// Ask every shadow `req` over `candidates` (which are `workers`),
    /// which the live policy answered with `live`; answers go to `answers`
    /// too, when given. Never waits; how many shadows will answer (those
    /// whose queue took the question).
    pub fn ask(
        &self,
        req: &RouteRequest<'_>,
        candidates: &[Candidate],
        workers: &[Arc<Worker>],
        live: WorkerId,
        live_policy: &Arc<Box<dyn Policy>>,
        answers: Option<Arc<Mutex<Vec<ShadowAnswer>>>>,
    ) -> usize {
        let question = Arc::new(Question {
            id: req.id,
            route: req.route,
            model: req.model.to_owned(),
            text: req.text.to_owned(),
            tokens: req.tokens.map(<[u32]>::to_vec),
            prompt_tokens: req.prompt_tokens,
            routing_key: req.routing_key.map(str::to_owned),
            stream: req.stream,
            max_new_tokens: req.max_new_tokens,
            candidates: candidates.to_vec(),
            workers: workers.to_vec(),
            live,
            live_policy: live_policy.clone(),
            answers,
        });
        let mut asked = 0;
        for shadow in self.asked() {
            match shadow.to.try_send(question.clone()) {
                Ok(()) => asked += 1,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    shadow.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(m::SHADOW_DROPPED, "shadow" => shadow.name.clone())
                        .increment(1);
                }
            }
        }
        asked
    }
}

impl Shadow {
    /// Stop asking it: it was promoted to live.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    /// What it loaded and how it has answered.
    pub fn status(&self) -> ShadowStatus {
        let s = &self.stats;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ShadowStatus {
            shadow: self.name.clone(),
            policy: self.manager.status(),
            asked: n(&s.asked),
            agreed: n(&s.agreed),
            dropped: n(&s.dropped),
            faults: n(&s.faults),
            matched: n(&s.matched),
            live_matched: n(&s.live_matched),
        }
    }

    /// Answer `q`, count the answer, and add it to the request's record.
    fn answer(&self, q: &Question, counters: &mut Counters) {
        let req = RouteRequest {
            id: q.id,
            route: q.route,
            model: &q.model,
            text: &q.text,
            tokens: q.tokens.as_deref(),
            prompt_tokens: q.prompt_tokens,
            routing_key: q.routing_key.as_deref(),
            headers: None,
            stream: q.stream,
            max_new_tokens: q.max_new_tokens,
        };
        let policy = self.manager.active().load_full();
        let pick = match policy.select(&req, &q.candidates) {
            Ok(Decision {
                fallback: Some(fault),
                ..
            }) => Err(fault.kind()),
            Ok(Decision { worker, .. }) => Ok(worker),
            Err(SelectError::Busy) => Err("busy"),
            Err(SelectError::Declined(_)) => Err("declined"),
            Err(SelectError::NoCandidates) => Err("no_candidates"),
        };
        let s = &self.stats;
        s.asked.fetch_add(1, Ordering::Relaxed);
        let answer = match pick {
            Err(fault) => {
                s.faults.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(m::SHADOW_FAULTS, "shadow" => self.name.clone(), "kind" => fault)
                    .increment(1);
                ShadowAnswer {
                    fault: Some(fault.to_string()),
                    ..ShadowAnswer::default()
                }
            }
            Ok(pick) => {
                let agreed = pick == q.live;
                let (matched, live_matched) = (
                    self.matched(q, pick, &policy),
                    self.matched(q, q.live, &policy),
                );
                s.agreed.fetch_add(u64::from(agreed), Ordering::Relaxed);
                s.matched.fetch_add(matched, Ordering::Relaxed);
                s.live_matched.fetch_add(live_matched, Ordering::Relaxed);
                let url = q.workers.iter().find(|w| w.id == pick).map(|w| &w.url);
                counters.count(&self.name, agreed, matched, live_matched);
                counters.picked(&self.name, pick, url.map_or("", |u| u.as_str()));
                ShadowAnswer {
                    pick: url.cloned(),
                    agreed,
                    matched,
                    live_matched,
                    ..ShadowAnswer::default()
                }
            }
        };
        if let Some(answers) = &q.answers {
            let answer = ShadowAnswer {
                shadow: self.name.clone(),
                ..answer
            };
            answers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(answer);
        }
    }

    /// The prefix of `q`'s prompt `worker` holds: tokens in the KV index
    /// when the request was tokenized, else characters in the live
    /// policy's prefix index (the shadow's own when the live one keeps
    /// none), else 0.
    fn matched(&self, q: &Question, worker: WorkerId, shadow: &Arc<Box<dyn Policy>>) -> u64 {
        if let (Some(tokens), Some(kv)) = (&q.tokens, &self.kv) {
            return kv
                .matched(tokens, &[worker])
                .first()
                .map_or(0, |m| u64::from(m.gpu));
        }
        if q.text.is_empty() {
            return 0;
        }
        let index = [&q.live_policy, shadow]
            .into_iter()
            .filter(|p| p.info().needs_text)
            .find_map(|p| p.prefix_index());
        index.map_or(0, |index| {
            index.prefix_match(&q.text, &[worker]).matched_chars
        })
    }
}

/// A shadow's metric handles, looked up once: a question's counts then
/// take no registry lookup and no label copies.
#[derive(Default)]
struct Counters {
    /// Agreed, disagreed, matched, live matched; made on first use.
    answers: Option<[metrics::Counter; 4]>,
    /// Picks, by worker.
    picks: HashMap<WorkerId, metrics::Counter>,
}

impl Counters {
    fn count(&mut self, shadow: &str, agreed: bool, matched: u64, live_matched: u64) {
        let [yes, no, mine, live] = self.answers.get_or_insert_with(|| {
            let name = shadow.to_owned();
            [
                metrics::counter!(m::SHADOW_DECISIONS, "shadow" => name.clone(), "agreed" => "true"),
                metrics::counter!(m::SHADOW_DECISIONS, "shadow" => name.clone(), "agreed" => "false"),
                metrics::counter!(m::SHADOW_MATCHED, "shadow" => name.clone()),
                metrics::counter!(m::SHADOW_LIVE_MATCHED, "shadow" => name),
            ]
        });
        if agreed { yes } else { no }.increment(1);
        mine.increment(matched);
        live.increment(live_matched);
    }

    fn picked(&mut self, shadow: &str, worker: WorkerId, url: &str) {
        self.picks
            .entry(worker)
            .or_insert_with(|| {
                metrics::counter!(m::SHADOW_PICKS, "shadow" => shadow.to_owned(), "worker" => url.to_owned())
            })
            .increment(1);
    }
}

/// A shadow's thread: answer questions until the shadow is gone.
fn answer_all(questions: Receiver<Arc<Question>>, shadow: std::sync::Weak<Shadow>) {
    lower_priority();
    let answer = |(shadow, counters): &mut (std::sync::Weak<Shadow>, Counters),
                  question: Arc<Question>| {
        if let Some(shadow) = shadow.upgrade() {
            shadow.answer(&question, counters);
        }
    };
    let mut state = (shadow, Counters::default());
    super::take_in_batches(&questions, &mut state, answer, |_| false);
}

/// Give this thread the lowest CPU priority (Linux nice 19, which is per
/// thread): on a machine whose cores are all serving, a shadow that loops
/// to its deadline takes what the serving threads leave.
fn lower_priority() {
    // SAFETY: setpriority only reads its arguments; `who` 0 is the calling
    // thread on Linux.
    let failed = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } != 0;
    if failed {
        tracing::debug!(
            "a shadow thread keeps its priority: {}",
            std::io::Error::last_os_error()
        );
    }
}
