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

/// What a `/get_load` answer says of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Requests running and waiting.
    pub load: u32,
    /// Of those, the waiting ones, when the answer is SGLang's list (a
    /// `{"load": N}` answer does not say).
    pub queued: Option<u32>,
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
        });
    }
    let ranks: Vec<RankLoad> = serde_json::from_value(answer.clone()).ok()?;
    let ours = || {
        ranks
            .iter()
            .filter(|r| dp_rank.is_none() || r.dp_rank == dp_rank)
    };
    Some(Report {
        load: saturate(ours().map(|r| r.num_reqs + r.num_waiting_reqs).sum()),
        queued: Some(saturate(ours().map(|r| r.num_waiting_reqs).sum())),
    })
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
                worker.set_reported(answer.as_ref().and_then(|a| reported(a, worker.dp_rank)));
            }
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
    fn both_answer_shapes_are_read() {
        assert_eq!(load(&json!({"load": 7}), None), Some(7));
        assert_eq!(load(&json!({"load": 7}), Some(1)), Some(7));
        assert_eq!(reported(&json!({"load": 7}), None).unwrap().queued, None);
        let ranks = json!([
            {"dp_rank": 0, "num_reqs": 3, "num_waiting_reqs": 1, "num_tokens": 99},
            {"dp_rank": 1, "num_reqs": 5, "num_waiting_reqs": 0},
        ]);
        assert_eq!(load(&ranks, Some(0)), Some(4));
        assert_eq!(load(&ranks, Some(1)), Some(5));
        assert_eq!(load(&ranks, None), Some(9));
        let queued = |rank| reported(&ranks, rank).unwrap().queued;
        assert_eq!(
            (queued(Some(0)), queued(Some(1)), queued(None)),
            (Some(1), Some(0), Some(1))
        );
        assert_eq!(load(&json!({"status": "ok"}), None), None);
        assert_eq!(load(&json!("busy"), None), None);
    }
}
