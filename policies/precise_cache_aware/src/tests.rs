use super::*;
use prefix_index::{KvMatch, script_kv};

fn policy() -> PreciseCacheAware {
    PreciseCacheAware::init("{}").unwrap().0
}

fn on_gpu(tokens: u32) -> KvMatch {
    KvMatch {
        gpu: tokens,
        cpu: tokens,
        disk: tokens,
    }
}

fn loaded(loads: &[(u32, u32)]) -> Candidates<'static> {
    loads
        .iter()
        .map(|&(id, load)| Candidate::idle(id, load))
        .collect()
}

/// A pick with the approximate index emptied first: only the scripted
/// events count.
fn pick(p: &mut PreciseCacheAware, text: &str, candidates: &Candidates<'_>) -> u32 {
    prefix_index::clear();
    p.select(&Request::new(text, None), candidates).unwrap()
}

#[test]
fn the_worker_holding_the_most_of_the_prompt_wins() {
    let mut p = policy();
    script_kv(1000, &[(1, on_gpu(100)), (2, on_gpu(900)), (3, on_gpu(0))]);
    assert_eq!(
        pick(&mut p, "prompt", &loaded(&[(1, 0), (2, 0), (3, 0)])),
        2
    );
    // Host memory is cheaper than computing, dearer than GPU: 900 tokens
    // there cost 180, plus 100 to compute.
    let offloaded = KvMatch {
        gpu: 0,
        cpu: 900,
        disk: 900,
    };
    script_kv(1000, &[(1, on_gpu(700)), (2, offloaded)]);
    assert_eq!(pick(&mut p, "prompt", &loaded(&[(1, 0), (2, 0)])), 2);
    script_kv(1000, &[(1, on_gpu(750)), (2, offloaded)]);
    assert_eq!(pick(&mut p, "prompt", &loaded(&[(1, 0), (2, 0)])), 1);
}

/// Two idle candidates, 1 and 2, with `ahead` (requests, tokens) of this
/// router's prefill and `queued` waiting requests the workers report.
fn ahead(ahead: [(u32, u32); 2], queued: [Option<u32>; 2]) -> Candidates<'static> {
    loaded(&[(1, 0), (2, 0)]).with_prefill_ahead(&ahead, &queued)
}

#[test]
fn the_predicted_time_to_first_token_wins_not_the_cache_alone() {
    // A weight of 1: a token ahead costs as much as one to compute.
    let mut p = PreciseCacheAware::init(r#"{"load_weight": 1.0}"#)
        .unwrap()
        .0;
    // Worker 2 holds 100 tokens more, but 300 tokens of prefill are ahead
    // of the request there: 200 to compute against 100 + 300.
    script_kv(1000, &[(1, on_gpu(800)), (2, on_gpu(900))]);
    assert_eq!(
        pick(&mut p, "prompt", &ahead([(0, 0), (1, 300)], [None, None])),
        1
    );
    // Holding all of it is worth 500 tokens ahead, not 1000.
    script_kv(1000, &[(1, on_gpu(0)), (2, on_gpu(1000))]);
    assert_eq!(
        pick(&mut p, "prompt", &ahead([(0, 0), (1, 500)], [None, None])),
        2
    );
    assert_eq!(
        pick(&mut p, "prompt", &ahead([(0, 0), (1, 1200)], [None, None])),
        1
    );
    // Requests other replicas queued there (the worker reports 3 waiting,
    // this router sent it one) count at the mean of this router's own
    // waiting prefills (1 of 600 tokens): 1000 against 600 + 2 x 600.
    let others =
        |ahead_2: (u32, u32), queued_2| ahead([(0, 0), ahead_2], [Some(0), Some(queued_2)]);
    assert_eq!(pick(&mut p, "prompt", &others((1, 600), 3)), 1);
    // Its own requests are not counted twice: the one waiting is this
    // router's, so 1000 against 600.
    assert_eq!(pick(&mut p, "prompt", &others((1, 600), 1)), 2);
    // Knowing nothing of their size (this router has none waiting), the
    // others are not guessed at.
    assert_eq!(pick(&mut p, "prompt", &others((0, 0), 5)), 2);
}

#[test]
fn by_default_a_token_ahead_weighs_less_than_one_to_compute() {
    let mut p = policy();
    // Worker 2 holds all 1000 tokens: 0.3 x 3000 ahead is less than 1000
    // to compute on worker 1, 0.3 x 4000 is more.
    script_kv(1000, &[(1, on_gpu(0)), (2, on_gpu(1000))]);
    let busy = |tokens| ahead([(0, 0), (2, tokens)], [None, None]);
    assert_eq!(pick(&mut p, "prompt", &busy(3000)), 2);
    assert_eq!(pick(&mut p, "prompt", &busy(4000)), 1);
}

#[test]
fn an_imbalanced_fleet_goes_to_the_least_loaded() {
    let mut p = policy();
    script_kv(1000, &[(1, on_gpu(1000)), (2, on_gpu(0))]);
    assert_eq!(pick(&mut p, "prompt", &loaded(&[(1, 200), (2, 10)])), 2);
}

#[test]
fn what_this_router_sent_counts_with_or_without_events() {
    let mut p = policy();
    let text = "a long shared system prompt, then a question";
    let select = |p: &mut PreciseCacheAware, candidates: &Candidates<'_>| {
        p.select(&Request::new(text, None), candidates).unwrap()
    };
    // Worker 3 publishes no events; this router sent it the text before.
    script_kv(100, &[(1, on_gpu(0)), (2, on_gpu(0))]);
    prefix_index::insert_request(&Request::new(text, None), 3);
    assert_eq!(select(&mut p, &loaded(&[(1, 0), (2, 0), (3, 0)])), 3);
    // Worker 2 does publish, but the text it was just sent is not in its
    // events yet: the next request of the burst follows it there.
    prefix_index::clear();
    prefix_index::insert_request(&Request::new(text, None), 2);
    assert_eq!(select(&mut p, &loaded(&[(1, 0), (2, 1), (3, 0)])), 2);
    // Without tokens (no tokenizer in the router), the least loaded.
    script_kv(0, &[]);
    assert_eq!(pick(&mut p, text, &loaded(&[(1, 1), (2, 0), (3, 1)])), 2);
}

#[test]
fn bad_configs_say_what_to_fix() {
    for (config, why) in [
        (r#"{"load_weight": -1}"#, "load_weight"),
        (r#"{"cpu_cost": "x"}"#, "invalid config"),
        (r#"{"max_tree_size": 0}"#, "max_tree_size"),
    ] {
        let error = PreciseCacheAware::init(config).unwrap_err();
        assert!(error.contains(why), "{why:?} not in {error:?}");
    }
}

#[test]
fn replicas_numbering_the_fleet_differently_send_a_new_prompt_to_the_same_url() {
    let urls = [
        "http://a:8000",
        "http://b:8000",
        "http://c:8000",
        "http://d:8000",
    ];
    let fleet = |ids: [u32; 4]| -> Vec<WorkerInfo> {
        ids.iter()
            .zip(urls)
            .map(|(&id, url)| WorkerInfo {
                id,
                url: url.to_string(),
                model: String::new(),
                role: wasm_router_policy::Role::Regular,
                dp_rank: None,
            })
            .collect()
    };
    let mut used = Vec::new();
    for i in 0..16 {
        // Nothing cached anywhere, every worker idle: a tie.
        let text = format!("{i} is the start of this system prompt");
        let mut by_url = Vec::new();
        for ids in [[0, 1, 2, 3], [9, 7, 5, 3]] {
            let workers = fleet(ids);
            let mut p = policy();
            p.workers_changed(workers.clone());
            script_kv(1000, &ids.map(|id| (id, on_gpu(0))));
            let id = pick(&mut p, &text, &loaded(&ids.map(|id| (id, 0))));
            by_url.push(workers.iter().find(|w| w.id == id).unwrap().url.clone());
        }
        assert_eq!(by_url[0], by_url[1], "{text}");
        used.push(by_url[0].clone());
    }
    used.sort();
    used.dedup();
    assert!(
        used.len() >= 3,
        "new prompts spread over the fleet: {used:?}"
    );
}

#[test]
fn a_new_prompt_over_equal_loads_goes_where_this_router_sent_the_least() {
    let mut p = policy();
    let prompt = "a new system prompt, cached nowhere";
    script_kv(1000, &[(1, on_gpu(0)), (2, on_gpu(0))]);
    let idle = loaded(&[(1, 0), (2, 0)]);
    // Empty index: the tie-break's choice.
    let first = pick(&mut p, prompt, &idle);
    let other = 3 - first;
    // The same worker has been sent other prompts: the other has more room.
    prefix_index::clear();
    prefix_index::insert_request(&Request::new("Unrelated: an earlier prompt", None), first);
    let next = p.select(&Request::new(prompt, None), &idle).unwrap();
    assert_eq!(next, other);
}
