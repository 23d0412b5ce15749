//! cache_aware: the same scripted sequences through the native library and
//! through cache_aware.wasm must give the same picks, and those picks must
//! show the algorithm's properties.

use cache_aware::CacheAware;
use wasm_router::config::{Limits, Role};
use wasm_router::policy::{self, Policy, PolicyEngine, PolicySource, WasmPolicy, WorkerInfo};
use wasm_router_policy::Policy as _;

use crate::fixtures::{engine, generous_limits};

/// One step of a script.
enum Step<'a> {
    /// Select with this text over these (id, load) candidates.
    Select(&'a str, &'a [(u32, u32)]),
    /// The fleet is now these worker ids.
    Workers(&'a [u32]),
    /// Evict.
    Tick,
    /// A fresh instance replaces this one, as a hot reload does.
    Reload,
}

/// Runs scripts on the native library, mirroring the router's calls.
struct Native(CacheAware, String);

impl Native {
    fn new(config: &str) -> Self {
        Native(CacheAware::init(config).unwrap().0, config.to_string())
    }

    fn run(&mut self, step: &Step<'_>) -> Option<u32> {
        match step {
            Step::Select(text, cands) => {
                let req = wasm_router_policy::Request::new(text, None);
                let cands: wasm_router_policy::Candidates<'_> = cands
                    .iter()
                    .map(|&(id, load)| wasm_router_policy::Candidate::idle(id, load))
                    .collect();
                Some(self.0.select(&req, &cands).unwrap())
            }
            Step::Workers(ids) => {
                let workers = ids
                    .iter()
                    .map(|&id| wasm_router_policy::WorkerInfo {
                        id,
                        url: String::new(),
                        model: String::new(),
                        role: wasm_router_policy::Role::Regular,
                        dp_rank: None,
                    })
                    .collect();
                self.0.workers_changed(workers);
                None
            }
            Step::Tick => {
                self.0.tick(0);
                None
            }
            Step::Reload => {
                // The SDK's native index is the thread's, as the router's is
                // the engine's: a fresh instance finds it.
                self.0 = CacheAware::init(&self.1).unwrap().0;
                None
            }
        }
    }
}

/// Runs scripts on cache_aware.wasm through the router's engine.
struct Wasm(WasmPolicy, String, PolicyEngine);

impl Wasm {
    fn new(config: &str) -> Self {
        let engine = engine();
        Wasm(load(&engine, config), config.to_string(), engine)
    }

    fn run(&mut self, step: &Step<'_>) -> Option<u32> {
        match step {
            Step::Select(text, cands) => {
                let cands: Vec<_> = cands
                    .iter()
                    .map(|&(id, load)| policy::Candidate::idle(id, load))
                    .collect();
                let decision = self
                    .0
                    .select(&crate::fixtures::request(text, None), &cands)
                    .unwrap();
                assert_eq!(decision.fallback, None, "the component decided");
                Some(decision.worker)
            }
            Step::Workers(ids) => {
                let workers: Vec<_> = ids
                    .iter()
                    .map(|&id| WorkerInfo {
                        id,
                        url: String::new(),
                        model: String::new(),
                        role: Role::Regular,
                        dp_rank: None,
                        ..Default::default()
                    })
                    .collect();
                self.0.workers_changed(&workers);
                None
            }
            Step::Tick => {
                self.0.tick(0);
                None
            }
            Step::Reload => {
                // As the router reloads: a new instance on the same engine,
                // which keeps the policy's index.
                self.0 = load(&self.2, &self.1);
                None
            }
        }
    }
}

fn load(engine: &PolicyEngine, config: &str) -> WasmPolicy {
    WasmPolicy::load(
        engine,
        PolicySource::Builtin("cache_aware"),
        config,
        generous_limits(),
    )
    .unwrap()
}

/// Run `script` both ways; assert equal picks and return them.
fn picks(config: &str, script: &[Step<'_>]) -> Vec<u32> {
    let mut native = Native::new(config);
    let mut wasm = Wasm::new(config);
    let native_picks: Vec<u32> = script.iter().filter_map(|s| native.run(s)).collect();
    let wasm_picks: Vec<u32> = script.iter().filter_map(|s| wasm.run(s)).collect();
    assert_eq!(native_picks, wasm_picks, "native and Wasm disagree");
    native_picks
}

const IDLE3: &[(u32, u32)] = &[(1, 0), (2, 0), (3, 0)];
const SYS_A: &str = "You are a meticulous assistant for questions about the solar system. Q: ";
const SYS_B: &str = "Eres un asistente que responde preguntas de cocina en español. P: ";

#[test]
fn the_component_declares_what_it_needs() {
    let p = load(&engine(), "{}");
    assert_eq!(p.info().name, "cache_aware");
    assert!(p.info().needs_text);
    assert_eq!(p.info().instances, policy::Instances::PerThread);
    assert_eq!(
        p.info().tick_interval,
        Some(std::time::Duration::from_secs(60))
    );
}

#[test]
fn a_shared_prefix_sticks_and_a_different_one_goes_elsewhere() {
    let a =
        |q: &'static str| Step::Select(Box::leak(format!("{SYS_A}{q}").into_boxed_str()), IDLE3);
    let b =
        |q: &'static str| Step::Select(Box::leak(format!("{SYS_B}{q}").into_boxed_str()), IDLE3);
    let p = picks(
        "{}",
        &[
            a("Mars?"),
            a("Venus?"),
            b("¿Paella?"),
            a("Pluto?"),
            b("¿Tortilla?"),
        ],
    );
    assert_eq!(p[0], p[1]);
    assert_eq!(p[0], p[3]);
    assert_ne!(p[0], p[2]);
    assert_eq!(p[2], p[4]);
}

#[test]
fn imbalance_overrides_affinity() {
    let text = "a long shared system prompt followed by a question";
    let p = picks(
        "{}",
        &[
            Step::Select(text, &[(1, 0), (2, 1)]),
            Step::Select(text, &[(1, 100), (2, 10)]),
            Step::Select(text, &[(1, 10), (2, 100)]),
        ],
    );
    assert_eq!(p, vec![1, 2, 1]);
}

#[test]
fn eviction_forgets() {
    let config = r#"{"max_tree_size": 30}"#;
    let old = "an old prompt of more than thirty characters";
    let p = picks(
        config,
        &[
            Step::Select(old, &[(1, 0), (2, 1)]),
            // Remembered: affinity beats a one-request load gap.
            Step::Select(old, &[(1, 1), (2, 0)]),
            Step::Tick,
            // Forgotten: the less loaded worker wins.
            Step::Select(old, &[(1, 1), (2, 0)]),
        ],
    );
    assert_eq!(p, vec![1, 1, 2]);
}

#[test]
fn a_removed_worker_is_never_returned() {
    let text = "a prompt that worker 1 has cached";
    let p = picks(
        "{}",
        &[
            Step::Select(text, &[(1, 0), (2, 1)]),
            Step::Workers(&[2, 3]),
            Step::Select(text, &[(2, 5), (3, 0)]),
            Step::Select(text, &[(2, 0), (3, 5)]),
        ],
    );
    assert_eq!(p[0], 1);
    assert!(!p[1..].contains(&1));
}

#[test]
fn a_reload_keeps_the_picks() {
    let texts = [
        "first family of prompts: alpha",
        "second family: beta",
        "third family: gamma",
    ];
    let mut script: Vec<Step<'_>> = texts.iter().map(|t| Step::Select(t, IDLE3)).collect();
    script.push(Step::Reload);
    script.extend(texts.iter().map(|t| Step::Select(t, IDLE3)));
    let p = picks("{}", &script);
    assert_eq!(p[..3], p[3..], "same workers after the reload");
    let mut distinct = p[..3].to_vec();
    distinct.sort();
    assert_eq!(
        distinct,
        vec![1, 2, 3],
        "three prefixes spread over three idle workers"
    );
}

#[test]
fn a_bad_config_refuses_to_load_and_says_which_setting() {
    let err = WasmPolicy::load(
        &engine(),
        PolicySource::Builtin("cache_aware"),
        r#"{"cache_threshold": 7}"#,
        Limits::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("cache_threshold"), "{err}");
}

#[test]
fn replicas_numbering_the_fleet_differently_send_new_prompts_to_the_same_urls() {
    // Two routers told the same four workers in different orders, with
    // different ids, as replicas started apart may be. Empty trees and
    // idle workers tie; the tie-break must pick by URL, not by id.
    let urls = [
        "http://10.0.0.1:8000",
        "http://10.0.0.2:8000",
        "http://10.0.0.3:8000",
        "http://10.0.0.4:8000",
    ];
    let fleet = |ids: [u32; 4], order: [usize; 4]| -> Vec<WorkerInfo> {
        ids.iter()
            .zip(order)
            .map(|(&id, i)| WorkerInfo {
                id,
                url: urls[i].to_string(),
                model: String::new(),
                role: Role::Regular,
                dp_rank: None,
                ..Default::default()
            })
            .collect()
    };
    let one = fleet([0, 1, 2, 3], [0, 1, 2, 3]);
    let two = fleet([7, 6, 5, 4], [0, 1, 2, 3]);
    let mut replicas = [(load(&engine(), "{}"), one), (load(&engine(), "{}"), two)];
    let mut picked: Vec<Vec<&str>> = vec![Vec::new(), Vec::new()];
    for (r, (policy, workers)) in replicas.iter_mut().enumerate() {
        policy.workers_changed(workers);
        for i in 0..12_u8 {
            // Each prompt starts with its own letter: nothing in either
            // tree matches its start.
            let c = char::from(b'a' + i);
            let text = format!("{c}{c}{c}{c} is the topic of this system prompt. Q: hello");
            let cands: Vec<_> = workers
                .iter()
                .map(|w| policy::Candidate::idle(w.id, 0))
                .collect();
            let id = policy
                .select(&crate::fixtures::request(&text, None), &cands)
                .unwrap()
                .worker;
            let url = workers.iter().find(|w| w.id == id).unwrap().url.as_str();
            picked[r].push(urls.iter().find(|u| **u == url).unwrap());
        }
    }
    assert_eq!(picked[0], picked[1], "both replicas pick the same URLs");
    let mut used = picked[0].clone();
    used.sort();
    used.dedup();
    assert_eq!(used.len(), 4, "new prompts spread: {:?}", picked[0]);
}
