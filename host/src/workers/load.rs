//! The load monitor: each worker's own `/get_load` answer is read, so that
//! policies see load the router did not send (other replicas' requests,
//! queued work). A candidate's load is then the higher of the router's
//! in-flight count and the worker's report. While the router forwards
//! requests, the workers are read every [`busy_interval`] (100 ms for a
//! few workers, longer for hundreds, at most [`ASK_AT_ONCE`] asked at
//! once): a worker's queue moves in the time of a prefill, and behind
//! several replicas this is the only way a replica learns what the others
//! sent. Idle, every `--worker-load-check-interval` seconds.
//!
//! Two answer shapes are read: `{"load": N}`, and SGLang's list per
//! data-parallel rank, `[{"dp_rank": R, "num_reqs": N, "num_waiting_reqs": W}]`
//! (N, which SGLang counts running and waiting requests in, of the entry
//! of rank R, or summed over ranks for a worker that is not expanded by
//! rank; W of them waiting). A worker without `/get_load` (vLLM) is read
//! from its Prometheus `/metrics`: `vllm:num_requests_running` plus
//! `vllm:num_requests_waiting`, W the latter ([`from_vllm_metrics`]); which
//! of the two a worker answers is remembered, so each round asks it once.
//! A worker that answers neither has no report.
//!
//! SGLang's entries also carry `num_tokens`, the tokens its requests hold in
//! the KV cache (queued prompts included); with the cache's size,
//! `max_total_num_tokens` of `/get_server_info` (asked once, the first time
//! a worker reports tokens), policies see each worker's KV usage.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::Registry;

/// How long one `/get_load` may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The shortest time between two rounds of reads, while requests flow.
pub const BUSY_INTERVAL_MIN: Duration = Duration::from_millis(100);

/// What each worker adds to the busy interval, so that a router in front of
/// hundreds of workers asks them less often (500 ms for 100, 5 s for 1,000).
const BUSY_INTERVAL_PER_WORKER: Duration = Duration::from_millis(5);

/// Workers asked at once.
pub const ASK_AT_ONCE: usize = 32;

/// The time between rounds while requests flow, for `workers` workers, at
/// most `idle`.
pub fn busy_interval(workers: usize, idle: Duration) -> Duration {
    let per_worker =
        BUSY_INTERVAL_PER_WORKER.saturating_mul(u32::try_from(workers).unwrap_or(u32::MAX));
    per_worker.max(BUSY_INTERVAL_MIN).min(idle)
}

#[derive(Debug, Deserialize)]
struct RankLoad {
    dp_rank: Option<u32>,
    #[serde(default)]
    num_reqs: u64,
    #[serde(default)]
    num_waiting_reqs: u64,
    num_tokens: Option<u64>,
}

/// What a `/get_load` answer says of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Requests running and waiting.
    pub load: u32,
    /// Of those, the waiting ones, when the answer is SGLang's list (a
    /// `{"load": N}` answer does not say).
    pub queued: Option<u32>,
    /// The tokens they hold in the KV cache, when every entry read says.
    pub kv_tokens: Option<u32>,
}

fn saturate(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// What a `/get_load` answer reports for the entry at `dp_rank` (the whole
/// worker when `None`), read once for both figures.
pub fn reported(answer: &Value, dp_rank: Option<u32>) -> Option<Report> {
    if let Some(n) = answer.get("load").and_then(Value::as_u64) {
        return Some(Report {
            load: saturate(n),
            queued: None,
            kv_tokens: None,
        });
    }
    let ranks: Vec<RankLoad> = serde_json::from_value(answer.clone()).ok()?;
    let ours = || {
        ranks
            .iter()
            .filter(|r| dp_rank.is_none() || r.dp_rank == dp_rank)
    };
    Some(Report {
        load: saturate(ours().map(|r| r.num_reqs).sum()),
        queued: Some(saturate(ours().map(|r| r.num_waiting_reqs).sum())),
        kv_tokens: ours()
            .map(|r| r.num_tokens)
            .sum::<Option<u64>>()
            .filter(|_| ours().next().is_some())
            .map(saturate),
    })
}

#[derive(Debug, Deserialize)]
struct Capacity {
    max_total_num_tokens: Option<u64>,
    dp_size: Option<u64>,
}

/// The KV cache size of the entry at `dp_rank` of the worker at `url`:
/// `max_total_num_tokens` (per rank), times `dp_size` for an entry that is
/// the whole worker. `None` when it does not say.
async fn capacity(client: &reqwest::Client, url: &str, dp_rank: Option<u32>) -> Option<u32> {
    let info: Capacity = super::server_info(client, url, TIMEOUT).await?;
    let ranks = match dp_rank {
        Some(_) => 1,
        None => info.dp_size.unwrap_or(1).max(1),
    };
    Some(saturate(info.max_total_num_tokens?.saturating_mul(ranks)))
}

/// Read every worker's `/get_load`: every [`busy_interval`] while the
/// router forwards requests, every `idle` otherwise, forever (the task is
/// aborted at shutdown).
pub async fn run(registry: Arc<Registry>, client: reqwest::Client, idle: Duration) {
    let mut endpoints = HashMap::new();
    loop {
        let round = tokio::time::Instant::now();
        let forwarded = registry.forwarded();
        let urls = registry.urls();
        endpoints.retain(|url, _| urls.contains(url));
        read_round(&registry, &client, &urls, &mut endpoints).await;
        // Until the next round: the busy interval if requests were
        // forwarded meanwhile (looked at in busy steps), else `idle`.
        let step = busy_interval(urls.len(), idle);
        let mut next = round + step;
        loop {
            tokio::time::sleep_until(next).await;
            if registry.forwarded() != forwarded || round.elapsed() >= idle {
                break;
            }
            next += step;
        }
    }
}

/// What a worker reports its load on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// `/get_load` (SGLang, or `{"load": N}`).
    GetLoad,
    /// Prometheus `/metrics` with vLLM's gauges.
    VllmMetrics,
}

/// A worker's answer.
enum Answer {
    GetLoad(Value),
    Vllm(Report),
}

/// Ask the worker at `url` for its load on `known` (the endpoint it
/// answered last), else on both in turn; the answer and where it came.
async fn ask_load(
    client: reqwest::Client,
    url: String,
    known: Option<Endpoint>,
) -> Option<(Answer, Endpoint)> {
    let order = match known {
        Some(Endpoint::VllmMetrics) => [Endpoint::VllmMetrics, Endpoint::GetLoad],
        _ => [Endpoint::GetLoad, Endpoint::VllmMetrics],
    };
    for endpoint in order {
        let answer = match endpoint {
            Endpoint::GetLoad => super::get_json(&client, &url, "/get_load", TIMEOUT)
                .await
                .map(Answer::GetLoad),
            Endpoint::VllmMetrics => vllm_metrics(&client, &url).await.map(Answer::Vllm),
        };
        if let Some(answer) = answer {
            return Some((answer, endpoint));
        }
    }
    None
}

/// The load in the worker's `/metrics`, if they are vLLM's.
async fn vllm_metrics(client: &reqwest::Client, url: &str) -> Option<Report> {
    let response = client
        .get(format!("{url}/metrics"))
        .timeout(TIMEOUT)
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?;
    from_vllm_metrics(&response.text().await.ok()?)
}

/// vLLM's requests running and waiting in Prometheus text (summed over
/// their label sets: a server may serve several models); `None` when the
/// text has neither gauge.
pub fn from_vllm_metrics(text: &str) -> Option<Report> {
    let (mut running, mut waiting, mut seen) = (0.0f64, 0.0f64, false);
    for line in text.lines() {
        let Some((name, value)) = line.split_once([' ', '{']) else {
            continue;
        };
        let slot = match name {
            "vllm:num_requests_running" => &mut running,
            "vllm:num_requests_waiting" => &mut waiting,
            _ => continue,
        };
        // `name{labels} value [timestamp]` or `name value [timestamp]`.
        let value = match line.as_bytes().get(name.len()) {
            Some(b'{') => value.split_once('}').map_or("", |(_, v)| v),
            _ => value,
        };
        let number = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok());
        if let Some(n) = number.filter(|n| n.is_finite() && *n >= 0.0) {
            *slot += n;
            seen = true;
        }
    }
    let count = |n: f64| saturate(n as u64);
    seen.then(|| Report {
        load: count(running + waiting),
        queued: Some(count(waiting)),
        kv_tokens: None,
    })
}

/// One round: every worker asked, at most [`ASK_AT_ONCE`] at a time, on
/// the endpoint it answered last (`endpoints`), its report recorded; a
/// worker that reports KV tokens asked its cache size once.
async fn read_round(
    registry: &Registry,
    client: &reqwest::Client,
    urls: &[String],
    endpoints: &mut HashMap<String, Endpoint>,
) {
    use futures_util::StreamExt;
    let asks: Vec<(String, Option<Endpoint>)> = urls
        .iter()
        .map(|url| (url.clone(), endpoints.get(url).copied()))
        .collect();
    let answers: Vec<Option<(Answer, Endpoint)>> = futures_util::stream::iter(asks)
        .map(|(url, known)| ask_load(client.clone(), url, known))
        .buffered(ASK_AT_ONCE)
        .collect()
        .await;
    let mut unsized_workers = Vec::new();
    for (url, answer) in urls.iter().zip(answers) {
        if let Some((_, endpoint)) = &answer {
            endpoints.insert(url.clone(), *endpoint);
        }
        for worker in registry.all_at(url) {
            let report = match &answer {
                Some((Answer::GetLoad(value), _)) => reported(value, worker.dp_rank),
                Some((Answer::Vllm(report), _)) => Some(*report),
                None => None,
            };
            if report.is_some_and(|r| r.kv_tokens.is_some()) && worker.kv_capacity().is_none() {
                unsized_workers.push(worker.clone());
            }
            worker.set_reported(report);
        }
    }
    // Once per worker (until it answers): its cache does not change size.
    let learned = unsized_workers
        .iter()
        .map(|w| capacity(client, &w.url, w.dp_rank));
    let sizes = futures_util::future::join_all(learned).await;
    for (worker, size) in unsized_workers.iter().zip(sizes) {
        if let Some(tokens) = size {
            worker.set_kv_capacity(tokens);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(answer: &Value, dp_rank: Option<u32>) -> Option<u32> {
        reported(answer, dp_rank).map(|r| r.load)
    }

    #[test]
    fn the_busy_interval_grows_with_the_fleet_up_to_the_idle_one() {
        let idle = Duration::from_secs(10);
        assert_eq!(busy_interval(4, idle), BUSY_INTERVAL_MIN);
        assert_eq!(busy_interval(100, idle), Duration::from_millis(500));
        assert_eq!(busy_interval(1000, idle), Duration::from_secs(5));
        assert_eq!(busy_interval(10_000, idle), idle);
        assert_eq!(
            busy_interval(4, Duration::from_millis(50)),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn vllms_gauges_are_read_from_its_prometheus_text() {
        let text = "# HELP vllm:num_requests_running Number of requests in model execution batches.\n\
            # TYPE vllm:num_requests_running gauge\n\
            vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 3.0\n\
            vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 2.0\n\
            vllm:num_requests_waiting{engine=\"1\",model_name=\"m\"} 1.0\n\
            vllm:num_requests_waiting_by_reason{reason=\"x\"} 9.0\n\
            vllm:gpu_cache_usage_perc 0.5\n";
        let report = from_vllm_metrics(text).unwrap();
        assert_eq!((report.load, report.queued), (6, Some(3)));
        assert_eq!(from_vllm_metrics("sim_requests_total 4\n"), None);
        let bare = from_vllm_metrics("vllm:num_requests_running 2 1700000000\n").unwrap();
        assert_eq!(
            (bare.load, bare.queued),
            (2, Some(0)),
            "a timestamp is not the value"
        );
    }

    #[test]
    fn both_answer_shapes_are_read() {
        assert_eq!(load(&json!({"load": 7}), None), Some(7));
        assert_eq!(load(&json!({"load": 7}), Some(1)), Some(7));
        assert_eq!(reported(&json!({"load": 7}), None).unwrap().queued, None);
        let ranks = json!([
            {"dp_rank": 0, "num_reqs": 3, "num_waiting_reqs": 1, "num_tokens": 99},
            {"dp_rank": 1, "num_reqs": 5, "num_waiting_reqs": 0},
        ]);
        // SGLang's num_reqs counts the waiting ones already.
        assert_eq!(load(&ranks, Some(0)), Some(3));
        assert_eq!(load(&ranks, Some(1)), Some(5));
        assert_eq!(load(&ranks, None), Some(8));
        let queued = |rank| reported(&ranks, rank).unwrap().queued;
        assert_eq!(
            (queued(Some(0)), queued(Some(1)), queued(None)),
            (Some(1), Some(0), Some(1))
        );
        assert_eq!(load(&json!({"status": "ok"}), None), None);
        let tokens = |answer: &Value, rank| reported(answer, rank).and_then(|r| r.kv_tokens);
        assert_eq!(tokens(&ranks, Some(0)), Some(99));
        assert_eq!(
            tokens(&ranks, Some(1)),
            None,
            "rank 1 does not say how many tokens"
        );
        assert_eq!(tokens(&ranks, None), None, "not every rank says");
        let both = json!([
            {"dp_rank": 0, "num_reqs": 1, "num_waiting_reqs": 0, "num_tokens": 10},
            {"dp_rank": 1, "num_reqs": 1, "num_waiting_reqs": 0, "num_tokens": 32},
        ]);
        assert_eq!(tokens(&both, None), Some(42));
        assert_eq!(tokens(&both, Some(2)), None, "no entry for rank 2");
        assert_eq!(tokens(&json!({"load": 7}), None), None);
        assert_eq!(load(&json!("busy"), None), None);
    }
}
