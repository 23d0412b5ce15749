//! The load monitor: every `--worker-load-check-interval` seconds, each
//! worker's own `/get_load` answer is read, so that policies see load the
//! router did not send (other routers, queued work). A candidate's load is
//! then the higher of the router's in-flight count and the worker's report.
//!
//! Two answer shapes are read: `{"load": N}`, and SGLang's list per
//! data-parallel rank, `[{"dp_rank": R, "num_reqs": N, "num_waiting_reqs": W}]`
//! (N + W for the entry of rank R, or summed over ranks for a worker that is
//! not expanded by rank). A worker that does not answer has no report.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::Registry;

/// How long one `/get_load` may take.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
struct RankLoad {
    dp_rank: Option<u32>,
    #[serde(default)]
    num_reqs: u64,
    #[serde(default)]
    num_waiting_reqs: u64,
}

/// The load a `/get_load` answer reports for the entry at `dp_rank` (the
/// whole worker when `None`).
pub fn reported(answer: &Value, dp_rank: Option<u32>) -> Option<u32> {
    let total = if let Some(n) = answer.get("load").and_then(Value::as_u64) {
        n
    } else {
        let ranks: Vec<RankLoad> = serde_json::from_value(answer.clone()).ok()?;
        ranks
            .iter()
            .filter(|r| dp_rank.is_none() || r.dp_rank == dp_rank)
            .map(|r| r.num_reqs + r.num_waiting_reqs)
            .sum()
    };
    Some(u32::try_from(total).unwrap_or(u32::MAX))
}

/// The requests waiting in the queue of the entry at `dp_rank`, when the
/// answer is SGLang's list (a `{"load": N}` answer does not say).
pub fn reported_queued(answer: &Value, dp_rank: Option<u32>) -> Option<u32> {
    let ranks: Vec<RankLoad> = serde_json::from_value(answer.clone()).ok()?;
    let waiting: u64 = ranks
        .iter()
        .filter(|r| dp_rank.is_none() || r.dp_rank == dp_rank)
        .map(|r| r.num_waiting_reqs)
        .sum();
    Some(u32::try_from(waiting).unwrap_or(u32::MAX))
}

/// Read every worker's `/get_load` every `interval`, forever (the task is
/// aborted at shutdown).
pub async fn run(registry: Arc<Registry>, client: reqwest::Client, interval: Duration) {
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let urls = registry.urls();
        let asks = urls.iter().map(|url| {
            let ask = client
                .get(format!("{url}/get_load"))
                .timeout(TIMEOUT)
                .send();
            async move {
                match ask.await {
                    Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                    _ => None,
                }
            }
        });
        let answers = futures_util::future::join_all(asks).await;
        for (url, answer) in urls.iter().zip(answers) {
            for worker in registry.all_at(url) {
                let load = answer.as_ref().and_then(|a| reported(a, worker.dp_rank));
                let queued = answer
                    .as_ref()
                    .and_then(|a| reported_queued(a, worker.dp_rank));
                worker.set_reported_load(load, queued);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_answer_shapes_are_read() {
        assert_eq!(reported(&json!({"load": 7}), None), Some(7));
        assert_eq!(reported(&json!({"load": 7}), Some(1)), Some(7));
        let ranks = json!([
            {"dp_rank": 0, "num_reqs": 3, "num_waiting_reqs": 1, "num_tokens": 99},
            {"dp_rank": 1, "num_reqs": 5, "num_waiting_reqs": 0},
        ]);
        assert_eq!(reported(&ranks, Some(0)), Some(4));
        assert_eq!(reported(&ranks, Some(1)), Some(5));
        assert_eq!(reported(&ranks, None), Some(9));
        assert_eq!(reported(&json!({"status": "ok"}), None), None);
        assert_eq!(reported(&json!("busy"), None), None);
    }
}
