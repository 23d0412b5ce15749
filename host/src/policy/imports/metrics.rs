//! `metrics`: the counters, gauges and histograms a policy declares,
//! under [`METRIC_PREFIX`], bounded in number and label values.

use std::collections::HashMap;

use super::log::clean;
use super::{Host, lock};
use crate::policy::bindings::v2::wasm_router::policy::metrics as wit_metrics;

/// Metrics one policy may declare.
pub const MAX_METRICS: usize = 32;
/// Values one metric's label may take; later ones are recorded as `other`.
pub const MAX_LABEL_VALUES: usize = 64;
/// Prefix of every policy metric's name.
pub const METRIC_PREFIX: &str = "wasm_router_policy_";
/// Names the router's own metrics use under [`METRIC_PREFIX`].
const RESERVED: [&str; 4] = [
    "decision_seconds",
    "reloads_total",
    "faults_total",
    "log_lines_suppressed_total",
];

/// A metric a policy declared.
#[derive(Debug)]
pub(super) struct Declared {
    name: String,
    kind: wit_metrics::Kind,
    label: Option<String>,
    pub(super) values: HashMap<String, Handle>,
}

/// A recorded metric's handle, kept per instance so that recording takes
/// no lock.
#[derive(Debug, Clone)]
pub(super) enum Handle {
    Counter(metrics::Counter),
    Gauge(metrics::Gauge),
    Histogram(metrics::Histogram),
}

impl Handle {
    fn record(&self, value: f64) {
        match self {
            // A counter only grows: negative or non-finite values are dropped.
            Handle::Counter(c) if value.is_finite() && value >= 0.0 => c.increment(value as u64),
            Handle::Counter(_) => {}
            Handle::Gauge(g) => g.set(value),
            Handle::Histogram(h) => h.record(value),
        }
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Declared {
    /// The handle for `value` of the label, made on first use; past
    /// [`MAX_LABEL_VALUES`] values, the `other` one.
    fn handle(&mut self, policy: &str, value: &str) -> Handle {
        let value = match &self.label {
            None => "",
            Some(_) if self.values.contains_key(value) => value,
            Some(_) if self.values.len() < MAX_LABEL_VALUES => value,
            Some(_) => "other",
        };
        if let Some(handle) = self.values.get(value) {
            return handle.clone();
        }
        let name = format!("{METRIC_PREFIX}{}", self.name);
        let mut labels = vec![metrics::Label::new("policy", policy.to_string())];
        if let Some(key) = &self.label {
            labels.push(metrics::Label::new(key.clone(), clean(value, 128)));
        }
        let handle = match self.kind {
            wit_metrics::Kind::Counter => Handle::Counter(metrics::counter!(name, labels)),
            wit_metrics::Kind::Gauge => Handle::Gauge(metrics::gauge!(name, labels)),
            wit_metrics::Kind::Histogram => Handle::Histogram(metrics::histogram!(name, labels)),
        };
        self.values.insert(value.to_string(), handle.clone());
        handle
    }
}

impl wit_metrics::Host for Host {
    fn declare(
        &mut self,
        name: String,
        kind: wit_metrics::Kind,
        help: String,
        label: Option<String>,
    ) -> Result<u32, String> {
        if !valid_name(&name) || RESERVED.contains(&name.as_str()) {
            return Err(format!(
                "metric name {name:?}: use 1 to 64 lower-case letters, digits and `_`, starting with a letter, other than {}",
                RESERVED.join(", ")
            ));
        }
        if let Some(key) = &label
            && (!valid_name(key) || key == "policy")
        {
            return Err(format!(
                "label {key:?}: use 1 to 64 lower-case letters, digits and `_`, other than `policy`"
            ));
        }
        let mut declared = lock(&self.policy.metrics);
        if let Some(at) = declared.iter().position(|d| d.name == name) {
            let d = &declared[at];
            if d.kind != kind || d.label != label {
                return Err(format!(
                    "metric {name:?} is already declared as a {:?} with label {:?}",
                    d.kind, d.label
                ));
            }
            return Ok(at as u32);
        }
        if declared.len() >= MAX_METRICS {
            return Err(format!(
                "a policy may declare at most {MAX_METRICS} metrics"
            ));
        }
        let full = format!("{METRIC_PREFIX}{name}");
        let help = clean(&help, 256);
        match kind {
            wit_metrics::Kind::Counter => metrics::describe_counter!(full, help),
            wit_metrics::Kind::Gauge => metrics::describe_gauge!(full, help),
            wit_metrics::Kind::Histogram => metrics::describe_histogram!(full, help),
        }
        declared.push(Declared {
            name,
            kind,
            label,
            values: HashMap::new(),
        });
        Ok((declared.len() - 1) as u32)
    }

    fn record(&mut self, metric: u32, label_value: String, value: f64) {
        let cached = self.metrics.get(&metric);
        if let Some(handle) = cached.and_then(|m| m.get(label_value.as_str())) {
            return handle.record(value);
        }
        let handle = {
            let mut declared = lock(&self.policy.metrics);
            let Some(d) = declared.get_mut(metric as usize) else {
                return;
            };
            d.handle(&self.policy.key, &label_value)
        };
        handle.record(value);
        // Bounded like the registry: at most every declared value per metric.
        if self.cached_metrics < MAX_METRICS * (MAX_LABEL_VALUES + 1) {
            self.metrics
                .entry(metric)
                .or_default()
                .insert(label_value, handle);
            self.cached_metrics += 1;
        }
    }
}
