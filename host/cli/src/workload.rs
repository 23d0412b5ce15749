//! Workloads for the demo and benchmarks, after SGLang's bench_serving
//! "generated-shared-prefix" dataset: groups of prompts sharing a long system
//! prompt, each with its own question. Variants skew group popularity (Zipf)
//! or grow a conversation turn by turn. Seeded, and bounded in count and time.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

/// The shape of a workload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// Every group equally popular.
    SharedPrefix,
    /// Group `k` (from 1) drawn with weight `1 / k^s`.
    Zipf(f64),
    /// Each group is a conversation: its prompt grows with every turn.
    MultiTurn,
}

/// A workload's size and shape.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Shape.
    pub shape: Shape,
    /// Groups (system prompts, or conversations).
    pub groups: usize,
    /// Prompts per group (turns, for multi-turn).
    pub prompts_per_group: usize,
    /// Characters of each system prompt.
    pub system_chars: usize,
    /// Characters of each question.
    pub question_chars: usize,
    /// Tokens to generate per request.
    pub output_tokens: usize,
    /// Seed of the generator.
    pub seed: u64,
}

/// Lowercase pseudo-words from a seeded generator.
fn words(rng: &mut fastrand::Rng, chars: usize) -> String {
    let mut out = String::with_capacity(chars + 10);
    while out.len() < chars {
        let len = rng.usize(2..9);
        out.extend((0..len).map(|_| rng.lowercase()));
        out.push(' ');
    }
    out.truncate(chars);
    out
}

impl Spec {
    /// The prompts, in the order they are sent.
    pub fn prompts(&self) -> Vec<String> {
        let mut rng = fastrand::Rng::with_seed(self.seed);
        let systems: Vec<String> = (0..self.groups)
            .map(|_| words(&mut rng, self.system_chars))
            .collect();
        let total = self.groups * self.prompts_per_group;
        match self.shape {
            Shape::SharedPrefix => {
                let mut out: Vec<String> = (0..total)
                    .map(|i| {
                        format!(
                            "{}{}",
                            systems[i % self.groups],
                            words(&mut rng, self.question_chars)
                        )
                    })
                    .collect();
                rng.shuffle(&mut out);
                out
            }
            Shape::Zipf(s) => {
                let weights: Vec<f64> = (1..=self.groups)
                    .map(|k| 1.0 / (k as f64).powf(s))
                    .collect();
                let sum: f64 = weights.iter().sum();
                (0..total)
                    .map(|_| {
                        let mut x = rng.f64() * sum;
                        let group = weights.iter().position(|w| {
                            x -= w;
                            x <= 0.0
                        });
                        let group = group.unwrap_or(self.groups - 1);
                        format!("{}{}", systems[group], words(&mut rng, self.question_chars))
                    })
                    .collect()
            }
            Shape::MultiTurn => {
                let mut histories = systems;
                let mut out = Vec::with_capacity(total);
                for _turn in 0..self.prompts_per_group {
                    for history in histories.iter_mut() {
                        history.push_str(&words(&mut rng, self.question_chars));
                        out.push(history.clone());
                        // The simulated answer joins the conversation.
                        history.push_str(&words(&mut rng, self.question_chars));
                    }
                }
                out
            }
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Requests that got a complete 200 response.
    pub ok: usize,
    /// Requests that failed (status, connection, or cut stream).
    pub failed: usize,
    /// Time to first byte of each successful request.
    pub ttft: Vec<Duration>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Report {
    /// The `q` quantile (0..=1) of time to first token, in milliseconds.
    pub fn ttft_ms(&self, q: f64) -> f64 {
        if self.ttft.is_empty() {
            return 0.0;
        }
        let mut sorted = self.ttft.clone();
        sorted.sort();
        let i = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[i].as_secs_f64() * 1e3
    }

    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Send `prompts` to `/generate` as streams, `concurrency` at a time,
/// stopping early at `deadline`. Request `i` goes to `base_urls[i % n]`: the
/// router replicas behind an L4 balancer, alternating. `progress(done)`
/// after each.
pub async fn drive(
    client: &reqwest::Client,
    base_urls: &[String],
    prompts: &[String],
    output_tokens: usize,
    concurrency: usize,
    deadline: Duration,
    progress: impl Fn(usize),
) -> Report {
    let started = Instant::now();
    let urls: Vec<String> = base_urls.iter().map(|b| format!("{b}/generate")).collect();
    let requests = prompts.iter().enumerate().map(|(i, prompt)| {
        let body = serde_json::json!({
            "text": prompt,
            "stream": true,
            "sampling_params": {"max_new_tokens": output_tokens},
        });
        let request = client.post(&urls[i % urls.len()]).json(&body);
        async move {
            if started.elapsed() > deadline {
                return None;
            }
            let sent = Instant::now();
            let resp = request.send().await.ok()?;
            if !resp.status().is_success() {
                return Some(Err(()));
            }
            let mut body = resp.bytes_stream();
            let mut ttft = None;
            let mut whole = Vec::new();
            while let Some(chunk) = body.next().await {
                let Ok(chunk) = chunk else {
                    return Some(Err(()));
                };
                ttft.get_or_insert_with(|| sent.elapsed());
                whole.extend_from_slice(&chunk);
            }
            let done = whole.ends_with(b"data: [DONE]\n\n");
            Some(ttft.filter(|_| done).ok_or(()))
        }
    });
    let mut report = Report::default();
    let mut results = futures_util::stream::iter(requests).buffer_unordered(concurrency.max(1));
    let mut done = 0;
    while let Some(result) = results.next().await {
        match result {
            Some(Ok(ttft)) => {
                report.ok += 1;
                report.ttft.push(ttft);
            }
            Some(Err(())) => report.failed += 1,
            None => {}
        }
        done += 1;
        progress(done);
    }
    report.elapsed = started.elapsed();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(shape: Shape) -> Spec {
        Spec {
            shape,
            groups: 4,
            prompts_per_group: 5,
            system_chars: 100,
            question_chars: 20,
            output_tokens: 4,
            seed: 7,
        }
    }

    #[test]
    fn shared_prefix_groups_share_their_system_prompt() {
        let prompts = spec(Shape::SharedPrefix).prompts();
        assert_eq!(prompts.len(), 20);
        let mut systems: Vec<&str> = prompts.iter().map(|p| &p[..100]).collect();
        systems.sort();
        systems.dedup();
        assert_eq!(systems.len(), 4);
        assert_eq!(prompts, spec(Shape::SharedPrefix).prompts(), "seeded");
    }

    #[test]
    fn zipf_favours_the_first_group() {
        let mut s = spec(Shape::Zipf(1.5));
        s.prompts_per_group = 100;
        let prompts = s.prompts();
        let first = &prompts.iter().map(|p| &p[..100]).collect::<Vec<_>>();
        let count = |sys: &str| first.iter().filter(|p| **p == sys).count();
        let most = first.iter().map(|p| count(p)).max().unwrap();
        assert!(
            most > 400 / 4,
            "the most popular group gets more than a fair share"
        );
    }

    #[test]
    fn multi_turn_prompts_grow_with_each_turn() {
        let prompts = spec(Shape::MultiTurn).prompts();
        // Conversation 0's turns are at 0, 4, 8, ...
        assert!(prompts[4].starts_with(&prompts[0]));
        assert!(prompts[8].starts_with(&prompts[4]));
        assert!(prompts[8].len() > prompts[4].len());
    }
}
