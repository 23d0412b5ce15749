//! Kubernetes service discovery (`--service-discovery`): worker pods are
//! listed, then watched from the list's resourceVersion (kube's watcher:
//! a `410 Gone` or a broken stream lists again, with backoff), and kept in
//! the one worker registry beside the workers given by flags and `POST
//! /workers` ([`crate::config::Source`] tells them apart).
//!
//! A pod is a worker while it matches its selector, is Running and Ready
//! and has an IP ([`pods::worker_of`]); when it stops being one (not ready,
//! deleted, relabelled) its workers are removed from the registry: no new
//! request goes there, and the requests in flight finish. A list after a
//! gap removes the pods it no longer has. While the API server cannot be
//! reached the workers found so far keep serving; the router logs it once
//! and shows it in `wasm_router_discovery_api_up`.
//!
//! The client is configured as kube does by default: in a pod from its
//! service account, else from `KUBECONFIG` or `~/.kube/config`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

use crate::config::{Discovery, HealthConfig, Role, Selector, WorkerSpec};
use crate::metrics as m;
use crate::policy::WorkerId;
use crate::workers::{Registry, health};

pub mod pods;

use pods::Rule;

/// What discovery registers workers with: the same as `POST /workers`.
#[derive(Debug, Clone)]
pub struct Enroll {
    /// The one registry.
    pub registry: Arc<Registry>,
    /// The client health checks and model discovery use.
    pub client: reqwest::Client,
    /// `--dp-aware`: one entry per data-parallel rank.
    pub dp_aware: bool,
    /// Health checks of new workers.
    pub health: Option<HealthConfig>,
}

/// Service discovery could not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "service discovery cannot configure its Kubernetes client: {0} (run the router in a pod with a service account, or point KUBECONFIG at a kubeconfig)"
)]
pub struct NoClient(#[from] kube::Error);

/// Start discovery with the client configured from the environment: one
/// task per selector (two in PD mode), which the caller aborts at
/// shutdown.
pub async fn start(
    settings: &Discovery,
    kv_events: bool,
    enroll: Enroll,
) -> Result<Vec<tokio::task::JoinHandle<()>>, NoClient> {
    let client = Client::try_default().await?;
    Ok(start_with(client, settings, kv_events, enroll))
}

/// [`start`] with a given client.
pub fn start_with(
    client: Client,
    settings: &Discovery,
    kv_events: bool,
    enroll: Enroll,
) -> Vec<tokio::task::JoinHandle<()>> {
    let api: Api<Pod> = match &settings.namespace {
        Some(namespace) => Api::namespaced(client, namespace),
        None => Api::all(client),
    };
    let rule = |role, selector: &Selector| Rule {
        role,
        selector: selector.clone(),
        port: settings.port,
        kv_events,
    };
    let rules = if settings.selector.is_empty() {
        vec![
            rule(Role::Prefill, &settings.prefill_selector),
            rule(Role::Decode, &settings.decode_selector),
        ]
    } else {
        vec![rule(Role::Regular, &settings.selector)]
    };
    rules
        .into_iter()
        .map(|rule| tokio::spawn(follow(api.clone(), rule, enroll.clone())))
        .collect()
}

/// `key=value,key=value`: a selector as the API takes it.
fn label_selector(selector: &Selector) -> String {
    let pairs: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}

/// Follow the pods of one rule until the task is aborted.
async fn follow(api: Api<Pod>, rule: Rule, enroll: Enroll) {
    let config = watcher::Config::default().labels(&label_selector(&rule.selector));
    let mut events = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    tracing::info!(role = rule.role.label(), selector = %label_selector(&rule.selector), "service discovery watches pods");
    let mut pods = Pods::new(rule, enroll);
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                pods.reached();
                pods.apply(event).await;
            }
            Err(error) => pods.unreachable(&error),
        }
    }
}

/// A pod that is a worker now.
#[derive(Debug)]
struct Known {
    spec: WorkerSpec,
    ids: Vec<WorkerId>,
}

/// The pods of one rule that are workers, and the watch's state.
struct Pods {
    rule: Rule,
    enroll: Enroll,
    known: HashMap<String, Known>,
    /// Between a list's start and its end: the pods it has given.
    listed: Option<HashSet<String>>,
    up: bool,
}

impl Pods {
    fn new(rule: Rule, enroll: Enroll) -> Self {
        let pods = Pods {
            rule,
            enroll,
            known: HashMap::new(),
            listed: None,
            up: true,
        };
        pods.gauge(m::DISCOVERY_API_UP).set(1.0);
        pods.gauge(m::DISCOVERY_WORKERS).set(0.0);
        pods
    }

    fn gauge(&self, name: &'static str) -> metrics::Gauge {
        metrics::gauge!(name, "role" => self.rule.role.label())
    }

    fn reached(&mut self) {
        if !self.up {
            self.up = true;
            self.gauge(m::DISCOVERY_API_UP).set(1.0);
            tracing::info!(
                role = self.rule.role.label(),
                "service discovery reaches the Kubernetes API again"
            );
        }
    }

    fn unreachable(&mut self, error: &watcher::Error) {
        metrics::counter!(m::DISCOVERY_ERRORS, "role" => self.rule.role.label()).increment(1);
        if self.up {
            self.up = false;
            self.gauge(m::DISCOVERY_API_UP).set(0.0);
            tracing::warn!(
                role = self.rule.role.label(),
                workers = self.known.len(),
                "service discovery cannot list or watch pods ({error}); the workers found so far keep serving, and it retries"
            );
        } else {
            tracing::debug!(
                role = self.rule.role.label(),
                "service discovery still fails: {error}"
            );
        }
    }

    async fn apply(&mut self, event: Event<Pod>) {
        match event {
            Event::Init => self.listed = Some(HashSet::new()),
            Event::InitApply(pod) => {
                if let Some(listed) = &mut self.listed {
                    listed.insert(pods::key(&pod));
                }
                self.update(&pod).await;
            }
            Event::InitDone => {
                if let Some(listed) = self.listed.take() {
                    let gone: Vec<String> = self
                        .known
                        .keys()
                        .filter(|k| !listed.contains(*k))
                        .cloned()
                        .collect();
                    for key in gone {
                        self.forget(&key, "not in the new list");
                    }
                }
            }
            Event::Apply(pod) => self.update(&pod).await,
            Event::Delete(pod) => self.forget(&pods::key(&pod), "deleted"),
        }
        self.gauge(m::DISCOVERY_WORKERS)
            .set(self.known.len() as f64);
    }

    /// Make the registry agree with what `pod` is now.
    async fn update(&mut self, pod: &Pod) {
        let key = pods::key(pod);
        let spec = match pods::worker_of(pod, &self.rule) {
            Ok(Some(spec)) => spec,
            Ok(None) => return self.forget(&key, "not ready, or no longer matching"),
            Err(error) => {
                tracing::warn!("{error}; the pod is not used");
                return self.forget(&key, "unusable annotations");
            }
        };
        if self.known.get(&key).is_some_and(|k| k.spec == spec) {
            return;
        }
        self.forget(&key, "changed");
        let e = &self.enroll;
        match health::enroll(
            &e.registry,
            &e.client,
            spec.clone(),
            e.dp_aware,
            e.health.as_ref(),
        )
        .await
        {
            Ok(workers) => {
                tracing::info!(pod = %key, url = %spec.url, role = self.rule.role.label(), "pod discovered");
                let ids = workers.iter().map(|w| w.id).collect();
                self.known.insert(key, Known { spec, ids });
            }
            Err(error) => tracing::warn!(pod = %key, "pod not added: {error}"),
        }
    }

    /// Remove `key`'s workers, if it has any: their requests in flight
    /// finish, no new request goes there.
    fn forget(&mut self, key: &str, why: &str) {
        if let Some(known) = self.known.remove(key) {
            for id in known.ids {
                self.enroll.registry.remove(id);
            }
            tracing::info!(pod = %key, url = %known.spec.url, "pod's worker removed ({why}); its requests in flight finish");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selector_goes_to_the_api_as_comma_separated_pairs() {
        let selector: Selector = [("app", "sglang"), ("tier", "gpu")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(label_selector(&selector), "app=sglang,tier=gpu");
    }
}
