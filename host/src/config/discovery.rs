//! Kubernetes service discovery's settings, as sglang-router 0.3.2 names
//! them: `--service-discovery`, `--selector`, `--prefill-selector`,
//! `--decode-selector`, `--service-discovery-port`,
//! `--service-discovery-namespace`.

use super::{ConfigError, RouterArgs, defaults as d, invalid};

/// A label selector: pods whose labels hold every pair match.
pub type Selector = std::collections::BTreeMap<String, String>;

/// Where discovery looks for workers, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// Regular workers' pods (not in PD mode).
    pub selector: Selector,
    /// PD mode: prefill workers' pods.
    pub prefill_selector: Selector,
    /// PD mode: decode workers' pods.
    pub decode_selector: Selector,
    /// The port a discovered pod serves on (`http://<pod IP>:<port>`).
    pub port: u16,
    /// The one namespace watched; `None`: all (a ClusterRole is needed).
    pub namespace: Option<String>,
}

/// The pod annotation that gives a prefill pod's bootstrap port, as
/// sglang-router reads it.
pub const BOOTSTRAP_PORT_ANNOTATION: &str = "sglang.ai/bootstrap-port";

/// `key=value ...` of `setting` as a selector.
fn selector(setting: &'static str, pairs: &[String]) -> Result<Selector, ConfigError> {
    let mut out = Selector::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Err(invalid(
                setting,
                format!("{pair:?} is not key=value (e.g. app=sglang-worker)"),
            ));
        };
        out.insert(key.to_string(), value.to_string());
    }
    Ok(out)
}

/// Discovery's settings, when `--service-discovery` is on. In PD mode
/// (`--pd-disaggregation`) the prefill and decode selectors find the pods
/// and `--selector` is not used; otherwise `--selector` does.
pub(super) fn discovery(s: &RouterArgs) -> Result<Option<Discovery>, ConfigError> {
    let found = Discovery {
        selector: selector("--selector", &s.selector)?,
        prefill_selector: selector("--prefill-selector", &s.prefill_selector)?,
        decode_selector: selector("--decode-selector", &s.decode_selector)?,
        port: s
            .service_discovery_port
            .unwrap_or(d::SERVICE_DISCOVERY_PORT),
        namespace: s.service_discovery_namespace.clone(),
    };
    if !s.service_discovery {
        let given = [
            ("--selector", !found.selector.is_empty()),
            ("--prefill-selector", !found.prefill_selector.is_empty()),
            ("--decode-selector", !found.decode_selector.is_empty()),
            ("--service-discovery-namespace", found.namespace.is_some()),
            (
                "--service-discovery-port",
                s.service_discovery_port
                    .is_some_and(|p| p != d::SERVICE_DISCOVERY_PORT),
            ),
        ];
        if let Some((setting, _)) = given.iter().find(|(_, given)| *given) {
            return Err(invalid(setting, "needs --service-discovery"));
        }
        return Ok(None);
    }
    if s.pd_disaggregation {
        if found.prefill_selector.is_empty() || found.decode_selector.is_empty() {
            return Err(invalid(
                "--prefill-selector/--decode-selector",
                "PD mode's service discovery needs both, e.g. --prefill-selector app=prefill --decode-selector app=decode",
            ));
        }
        if !found.selector.is_empty() {
            return Err(invalid(
                "--selector",
                "in PD mode pods are found by --prefill-selector and --decode-selector",
            ));
        }
    } else {
        if found.selector.is_empty() {
            return Err(invalid(
                "--selector",
                "service discovery needs the worker pods' labels, e.g. --selector app=sglang-worker",
            ));
        }
        if !found.prefill_selector.is_empty() || !found.decode_selector.is_empty() {
            return Err(invalid(
                "--prefill-selector/--decode-selector",
                "need --pd-disaggregation",
            ));
        }
    }
    if found.namespace.as_deref() == Some("") {
        return Err(invalid(
            "--service-discovery-namespace",
            "empty; leave it out to watch every namespace",
        ));
    }
    Ok(Some(found))
}
