//! What a pod is to the router: a worker, or nothing. Pure functions of
//! the pod, the selector and the settings, so that every rule is tested
//! without an API server.

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use crate::config::{
    BOOTSTRAP_PORT_ANNOTATION, ConfigError, Role, Selector, Source, WorkerEntry, WorkerSpec,
    validate_worker_entry,
};

/// A pod's weight (1 to 1000), for policies that weigh workers.
pub const WEIGHT_ANNOTATION: &str = "wasm-router.io/weight";
/// A pod's labels for policies (`key=value,key=value`), as a worker
/// entry's `labels`: what `candidates.label(key)` reads. The pod's own
/// Kubernetes labels are not passed on (they name deployments, not
/// routing attributes).
pub const LABELS_ANNOTATION: &str = "wasm-router.io/labels";
/// Where a pod publishes its KV cache events, as its own
/// `--kv-events-config` (JSON): for a worker whose `/get_server_info` does
/// not say (vLLM).
pub const KV_EVENTS_ANNOTATION: &str = "wasm-router.io/kv-events-config";

/// `namespace/name` of a pod.
pub fn key(pod: &Pod) -> String {
    let meta = &pod.metadata;
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// Whether the pod's labels hold every pair of `selector` (an empty
/// selector matches nothing). The API server filters too; this check
/// keeps a pod whose labels changed out even when a server does not.
pub fn matches(pod: &Pod, selector: &Selector) -> bool {
    let labels = pod.metadata.labels.as_ref();
    !selector.is_empty()
        && labels.is_some_and(|l| selector.iter().all(|(k, v)| l.get(k) == Some(v)))
}

/// Whether the pod may serve: Running, its condition Ready true, not being
/// deleted, with an IP.
pub fn serving(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    let ready = status.conditions.as_ref().is_some_and(|conditions| {
        conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    });
    ready
        && status.phase.as_deref() == Some("Running")
        && status.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty())
        && pod.metadata.deletion_timestamp.is_none()
}

/// Which pods are workers of one role, and how they are reached.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The role of the pods it matches.
    pub role: Role,
    /// Their labels.
    pub selector: Selector,
    /// The port they serve on.
    pub port: u16,
    /// Whether the router follows KV events (`--kv-events`): without, a
    /// pod's KV events annotation is not used.
    pub kv_events: bool,
}

/// The worker `pod` stands for under `rule`; `Ok(None)` when it does not
/// (yet) serve; an error when an annotation of ours is unusable (the pod
/// is then left out, and the error says which).
pub fn worker_of(pod: &Pod, rule: &Rule) -> Result<Option<WorkerSpec>, ConfigError> {
    if !matches(pod, &rule.selector) || !serving(pod) {
        return Ok(None);
    }
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .unwrap_or_default();
    let host = match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => ip.to_string(),
    };
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let annotation = |name: &str| annotations.get(name).map(String::as_str);
    let bad = |name: &'static str, why: String| ConfigError::Invalid {
        setting: name,
        reason: format!("pod {}: {why}", key(pod)),
    };
    let weight = annotation(WEIGHT_ANNOTATION)
        .map(|w| {
            w.trim()
                .parse::<u32>()
                .map_err(|_| bad(WEIGHT_ANNOTATION, format!("{w:?} is not a whole number")))
        })
        .transpose()?;
    let mut labels = crate::config::Labels::new();
    for pair in annotation(LABELS_ANNOTATION)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| bad(LABELS_ANNOTATION, format!("{pair:?} is not key=value")))?;
        labels.insert(k.trim().to_string(), v.trim().to_string());
    }
    let kv_events_config = annotation(KV_EVENTS_ANNOTATION)
        .filter(|_| rule.kv_events)
        .map(|c| {
            serde_json::from_str::<Value>(c)
                .map_err(|e| bad(KV_EVENTS_ANNOTATION, format!("not JSON: {e}")))
        })
        .transpose()?;
    let entry = WorkerEntry {
        url: format!("http://{host}:{}", rule.port),
        weight,
        labels,
        kv_events_config,
    };
    let spec =
        validate_worker_entry(&entry, rule.kv_events).map_err(|e| bad("pod", e.to_string()))?;
    let bootstrap_port = match rule.role {
        Role::Prefill => annotation(BOOTSTRAP_PORT_ANNOTATION).and_then(|p| p.trim().parse().ok()),
        _ => None,
    };
    Ok(Some(WorkerSpec {
        role: rule.role,
        bootstrap_port,
        source: Source::Pod(key(pod)),
        ..spec
    }))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    fn selector(pairs: &[(&str, &str)]) -> Selector {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A pod `name` labelled `app=worker`, Running and Ready at `ip`.
    fn pod(name: &str, ip: &str, annotations: &[(&str, &str)]) -> Pod {
        let map = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ml".into()),
                labels: map(&[("app", "worker"), ("tier", "gpu")]),
                annotations: map(annotations),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn rule(role: Role, pairs: &[(&str, &str)]) -> Rule {
        Rule {
            role,
            selector: selector(pairs),
            port: 30000,
            kv_events: true,
        }
    }

    fn worker(pod: &Pod, role: Role) -> Option<WorkerSpec> {
        worker_of(pod, &rule(role, &[("app", "worker")])).unwrap()
    }

    #[test]
    fn a_ready_running_matching_pod_is_a_worker_at_its_ip_and_the_port() {
        let spec = worker(&pod("w-0", "10.0.0.7", &[]), Role::Regular).unwrap();
        assert_eq!(spec.url, "http://10.0.0.7:30000");
        assert_eq!(spec.source, Source::Pod("ml/w-0".into()));
        assert_eq!((spec.weight, spec.labels.len()), (1, 0));
        let v6 = worker(&pod("w-1", "fd00::7", &[]), Role::Regular).unwrap();
        assert_eq!(v6.url, "http://[fd00::7]:30000");
    }

    #[test]
    fn a_pod_that_is_not_ready_running_or_matching_is_no_worker() {
        let ready = pod("w-0", "10.0.0.7", &[]);
        let mut unready = ready.clone();
        unready
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()[0]
            .status = "False".into();
        assert!(worker(&unready, Role::Regular).is_none());
        let mut pending = ready.clone();
        pending.status.as_mut().unwrap().phase = Some("Pending".into());
        assert!(worker(&pending, Role::Regular).is_none());
        let mut leaving = ready.clone();
        leaving.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert!(worker(&leaving, Role::Regular).is_none());
        let mut no_ip = ready.clone();
        no_ip.status.as_mut().unwrap().pod_ip = None;
        assert!(worker(&no_ip, Role::Regular).is_none());
        // Every pair of the selector must match; an empty one matches none.
        let both = rule(Role::Regular, &[("app", "worker"), ("tier", "cpu")]);
        assert!(worker_of(&ready, &both).unwrap().is_none());
        assert!(
            worker_of(&ready, &rule(Role::Regular, &[]))
                .unwrap()
                .is_none()
        );
        assert!(worker(&ready, Role::Regular).is_some());
    }

    #[test]
    fn annotations_give_weight_labels_kv_events_and_a_prefill_bootstrap_port() {
        let annotated = pod(
            "p-0",
            "10.0.0.8",
            &[
                (WEIGHT_ANNOTATION, "4"),
                (LABELS_ANNOTATION, "zone=a, gpu=h100"),
                (
                    KV_EVENTS_ANNOTATION,
                    r#"{"publisher":"zmq","endpoint":"tcp://*:5557"}"#,
                ),
                (BOOTSTRAP_PORT_ANNOTATION, "8998"),
            ],
        );
        let spec = worker(&annotated, Role::Prefill).unwrap();
        assert_eq!((spec.weight, spec.bootstrap_port), (4, Some(8998)));
        assert_eq!(spec.labels.get("gpu").map(String::as_str), Some("h100"));
        assert_eq!(spec.labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(spec.kv_events_config.unwrap()["endpoint"], "tcp://*:5557");
        // Only a prefill pod has a bootstrap port.
        let decode = worker(&annotated, Role::Decode).unwrap();
        assert_eq!((decode.role, decode.bootstrap_port), (Role::Decode, None));
        // A router that follows no KV events leaves the annotation be.
        let without = Rule {
            kv_events: false,
            ..rule(Role::Regular, &[("app", "worker")])
        };
        let spec = worker_of(&annotated, &without).unwrap().unwrap();
        assert_eq!(spec.kv_events_config, None);
    }

    #[test]
    fn an_unusable_annotation_names_the_pod_and_the_annotation() {
        for (name, value) in [
            (WEIGHT_ANNOTATION, "heavy"),
            (WEIGHT_ANNOTATION, "5000"),
            (LABELS_ANNOTATION, "zone"),
            (KV_EVENTS_ANNOTATION, "{not json"),
        ] {
            let error = worker_of(
                &pod("w-9", "10.0.0.9", &[(name, value)]),
                &rule(Role::Regular, &[("app", "worker")]),
            )
            .unwrap_err()
            .to_string();
            assert!(error.contains("ml/w-9"), "{error}");
        }
    }
}
