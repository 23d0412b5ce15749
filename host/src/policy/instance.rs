//! One instance of a policy component: which contract it speaks, its store
//! in the sandbox, how it starts (instantiate, `init`), its calls through
//! either contract's bindings, and how its failures are named.

use wasmtime::Store;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, InstancePre};

use super::bindings::{v1, v2};
use super::engine::PolicyEngine;
use super::imports::PolicyHost;
use super::sandbox::{MemoryLimitHit, StoreState};
use super::{
    Candidate, LoadError, Outcome, PolicyFault, PolicyInfo, Reads, RouteRequest, WorkerInfo,
};
use crate::config::Limits;

/// The export that names a 0.2 policy (`0.2.0` is its contract version).
const V2_EXPORT: &str = "wasm-router:policy/policy@";

/// A component, pre-linked against the contract it speaks.
#[derive(Clone)]
pub(super) enum Pre {
    /// `wit/0.1.0/policy.wit`.
    V1(v1::PolicyPre<StoreState>),
    /// `wit/policy.wit`, with what its imports say it reads (what it
    /// declares in `init`, if it does, overrides that).
    V2(v2::RoutingPolicyPre<StoreState>, Reads),
}

/// The import interfaces whose functions [`Reads`] looks for, without
/// their version.
const TYPES_IMPORT: &str = "wasm-router:policy/types@";
const PREFIX_INDEX_IMPORT: &str = "wasm-router:policy/prefix-index@";

/// What `component` reads that the router prepares per call, as far as its
/// imports tell: whether it imports `request.header` and
/// `prefix-index.match-kv`. A declaration (`needs.declare`) overrides it.
fn reads(engine: &PolicyEngine, component: &Component) -> Reads {
    let engine = engine.engine();
    let ty = component.component_type();
    let imports = |interface: &str, function: &str| {
        ty.imports(engine).any(|(name, item)| {
            name.starts_with(interface)
                && match item.ty {
                    ComponentItem::ComponentInstance(instance) => {
                        instance.exports(engine).any(|(f, _)| f == function)
                    }
                    _ => false,
                }
        })
    };
    Reads {
        headers: imports(TYPES_IMPORT, "[method]request.header"),
        kv_matches: imports(PREFIX_INDEX_IMPORT, "match-kv"),
        declared: false,
    }
}

impl Pre {
    /// Tell which contract `component` speaks from its exports, check the
    /// version it declares, and pre-link it.
    pub(super) fn new(
        engine: &PolicyEngine,
        component: &Component,
        pre: InstancePre<StoreState>,
        host: &std::sync::Arc<PolicyHost>,
        name: &str,
        limits: Limits,
    ) -> Result<Pre, LoadError> {
        let exports: Vec<String> = component
            .component_type()
            .exports(engine.engine())
            .map(|(n, _)| n.to_string())
            .collect();
        let exports_mismatch = |version: &str, e: wasmtime::Error| LoadError::Exports {
            name: name.to_string(),
            version: version.to_string(),
            reason: format!("{e:#}"),
        };
        if let Some(version) = exports.iter().find_map(|n| n.strip_prefix(V2_EXPORT)) {
            if version != "0.2.0" {
                return Err(LoadError::ContractVersion {
                    name: name.to_string(),
                    found: version.to_string(),
                });
            }
            let pre = v2::RoutingPolicyPre::new(pre).map_err(|e| exports_mismatch(version, e))?;
            let mut store = new_store(engine, name, limits, host);
            let _awake = engine.arm(&mut store, limits.maintenance_deadline);
            let instance = guarded(|| pre.instantiate(&mut store)).map_err(start_fault(name))?;
            let found = guarded(|| {
                instance
                    .wasm_router_policy_policy()
                    .call_contract_version(&mut store)
            })
            .map_err(start_fault(name))?;
            return match found.as_str() {
                "0.2.0" => Ok(Pre::V2(pre, reads(engine, component))),
                _ => Err(LoadError::ContractVersion {
                    name: name.to_string(),
                    found,
                }),
            };
        }
        if !exports.iter().any(|n| n == "contract-version") {
            return Err(LoadError::NotAPolicy {
                name: name.to_string(),
                exports: exports.join(", "),
            });
        }
        // Call `contract-version` before the typed bindings, which would
        // fail with a less helpful type error for another version.
        let mut store = new_store(engine, name, limits, host);
        let _awake = engine.arm(&mut store, limits.maintenance_deadline);
        let instance = pre.instantiate(&mut store).map_err(start_fault(name))?;
        let func = instance
            .get_typed_func::<(), (String,)>(&mut store, "contract-version")
            .map_err(|e| exports_mismatch("0.1.0", e))?;
        let (found,) = func.call(&mut store, ()).map_err(start_fault(name))?;
        if found != "0.1.0" {
            return Err(LoadError::ContractVersion {
                name: name.to_string(),
                found,
            });
        }
        let pre = v1::PolicyPre::new(pre).map_err(|e| exports_mismatch("0.1.0", e))?;
        Ok(Pre::V1(pre))
    }

    /// The contract version it speaks.
    pub(super) fn version(&self) -> &'static str {
        match self {
            Pre::V1(_) => "0.1.0",
            Pre::V2(..) => "0.2.0",
        }
    }
}

fn start_fault(name: &str) -> impl Fn(wasmtime::Error) -> LoadError + '_ {
    move |e| LoadError::StartFault {
        name: name.to_string(),
        fault: classify(&e),
    }
}

/// An instance's exports, through its contract's bindings.
enum Exports {
    V1(v1::Policy),
    V2(v2::RoutingPolicy),
}

/// A running instance.
pub(super) struct Live {
    pub(super) store: Store<StoreState>,
    exports: Exports,
}

pub(super) fn new_store(
    engine: &PolicyEngine,
    name: &str,
    limits: Limits,
    host: &std::sync::Arc<PolicyHost>,
) -> Store<StoreState> {
    let mut store = Store::new(
        engine.engine(),
        StoreState::new(name, &limits, host.clone()),
    );
    store.limiter(|state| &mut state.limits);
    store
}

/// wasmtime's words (an untyped error) for a call that returned with a
/// borrowed handle left; `host/cli/tests/it/languages.rs` keeps them true.
const BORROW_LEFT: &str = "borrow handles still remain at the end of the call";

/// Name a call's failure.
pub(super) fn classify(error: &wasmtime::Error) -> PolicyFault {
    if error.chain().any(|e| e.is::<MemoryLimitHit>()) {
        return PolicyFault::PolicyMemoryLimit;
    }
    if error.chain().any(|e| e.to_string().contains(BORROW_LEFT)) {
        return PolicyFault::BorrowLeft;
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => PolicyFault::PolicyDeadline,
        _ => PolicyFault::PolicyTrap(cap_message(format!("{error:#}"))),
    }
}

impl Live {
    /// Instantiate and `init`: the start of every instance, first or rebuilt.
    pub(super) fn start(
        pre: &Pre,
        engine: &PolicyEngine,
        host: &std::sync::Arc<PolicyHost>,
        name: &str,
        config: &str,
        limits: Limits,
    ) -> Result<(Live, PolicyInfo), LoadError> {
        let mut store = new_store(engine, name, limits, host);
        let _awake = engine.arm(&mut store, limits.maintenance_deadline);
        let refused = |message| LoadError::InitRefused {
            name: name.to_string(),
            message: cap_message(message),
        };
        let (exports, info) = match pre {
            Pre::V1(pre) => {
                let policy = guarded(|| pre.instantiate(&mut store)).map_err(start_fault(name))?;
                let info = guarded(|| policy.call_init(&mut store, config))
                    .map_err(start_fault(name))?
                    .map_err(refused)?;
                (Exports::V1(policy), info.into())
            }
            Pre::V2(pre, reads) => {
                let policy = guarded(|| pre.instantiate(&mut store)).map_err(start_fault(name))?;
                let declared = guarded(|| {
                    policy
                        .wasm_router_policy_policy()
                        .call_init(&mut store, config)
                })
                .map_err(start_fault(name))?
                .map_err(refused)?;
                let reads = store.data_mut().host.end_init().unwrap_or(*reads);
                let info = PolicyInfo {
                    reads,
                    ..declared.into()
                };
                (Exports::V2(policy), info)
            }
        };
        Ok((Live { store, exports }, info))
    }

    /// Call `workers-changed`.
    pub(super) fn workers_changed(&mut self, workers: &[WorkerInfo]) -> wasmtime::Result<()> {
        self.store.data_mut().host.know_workers(workers);
        let store = &mut self.store;
        guarded(|| match &self.exports {
            Exports::V1(p) => {
                let list: Vec<v1::WorkerInfo> = workers.iter().map(Into::into).collect();
                p.call_workers_changed(store, &list)
            }
            Exports::V2(p) => {
                let list: Vec<_> = workers.iter().map(Into::into).collect();
                p.wasm_router_policy_policy()
                    .call_workers_changed(store, &list)
            }
        })
    }

    /// Call `select`: the pick, and the prompt tokens it holds in its KV
    /// cache when the policy asked `prefix-index.match-kv`.
    pub(super) fn select(
        &mut self,
        req: &RouteRequest<'_>,
        candidates: &[Candidate],
    ) -> wasmtime::Result<Result<(u32, Option<u32>), String>> {
        let store = &mut self.store;
        let answer = guarded(|| match &self.exports {
            Exports::V1(p) => {
                let request = v1::Request::from(req);
                let offered: Vec<v1::Candidate> = candidates.iter().map(Into::into).collect();
                p.call_select(&mut *store, &request, &offered)
            }
            Exports::V2(p) => {
                let (request, offered) = store.data_mut().host.lend(req, candidates);
                p.wasm_router_policy_policy()
                    .call_select(&mut *store, request, offered)
            }
        })?;
        let host = &store.data().host;
        Ok(answer.map(|id| (id, host.cached_tokens(id))))
    }

    /// Call `on-complete`.
    pub(super) fn on_complete(&mut self, outcome: &Outcome) -> wasmtime::Result<()> {
        let store = &mut self.store;
        guarded(|| match &self.exports {
            Exports::V1(p) => p.call_on_complete(store, outcome.into()),
            Exports::V2(p) => p
                .wasm_router_policy_policy()
                .call_on_complete(store, outcome.into()),
        })
    }

    /// Call `tick`.
    pub(super) fn tick(&mut self, now_ms: u64) -> wasmtime::Result<()> {
        let store = &mut self.store;
        guarded(|| match &self.exports {
            Exports::V1(p) => p.call_tick(store, now_ms),
            Exports::V2(p) => p.wasm_router_policy_policy().call_tick(store, now_ms),
        })
    }

    /// Call `snapshot`.
    pub(super) fn snapshot(&mut self) -> wasmtime::Result<Vec<u8>> {
        let store = &mut self.store;
        guarded(|| match &self.exports {
            Exports::V1(p) => p.call_snapshot(store),
            Exports::V2(p) => p.wasm_router_policy_policy().call_snapshot(store),
        })
    }

    /// Call `restore`.
    pub(super) fn restore(&mut self, state: &[u8]) -> wasmtime::Result<Result<(), String>> {
        let store = &mut self.store;
        guarded(|| match &self.exports {
            Exports::V1(p) => p.call_restore(store, state),
            Exports::V2(p) => p.wasm_router_policy_policy().call_restore(store, state),
        })
    }
}

/// Run a guest call, turning a panic in a host function it called (a WASI
/// call that cannot run on this thread, say) into an error: the caller then
/// treats it as a fault and drops the store, and the router thread lives on.
pub(super) fn guarded<R>(call: impl FnOnce() -> wasmtime::Result<R>) -> wasmtime::Result<R> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        Err(wasmtime::Error::msg(format!(
            "a host call made by the policy panicked: {message}"
        )))
    })
}

/// A policy's messages (refusals, trap reports) reach clients and logs; past
/// this many bytes they are cut (a guest may return megabytes).
pub const MAX_POLICY_MESSAGE: usize = 1024;

/// Cut a policy's message (or a trap report) to [`MAX_POLICY_MESSAGE`]
/// bytes, on a character boundary, saying how long it was.
pub(super) fn cap_message(mut message: String) -> String {
    if message.len() <= MAX_POLICY_MESSAGE {
        return message;
    }
    let full = message.len();
    message.truncate(message.floor_char_boundary(MAX_POLICY_MESSAGE));
    message.push_str(&format!("... (cut from {full} bytes)"));
    message
}
