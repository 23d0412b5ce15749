//! One instance of a policy component: its store in the sandbox, how it
//! starts (instantiate, `init`), and how its failures are named.

use wasmtime::Store;

use super::bindings::{Bindings, BindingsPre};
use super::engine::{Limits, PolicyEngine};
use super::sandbox::{MemoryLimitHit, StoreState};
use super::wasm::MAX_POLICY_MESSAGE;
use super::{CONTRACT_VERSION, LoadError, PolicyFault, PolicyInfo};

/// A running instance.
pub(super) struct Live {
    pub(super) store: Store<StoreState>,
    pub(super) policy: Bindings,
}

/// Call `contract-version` on a throwaway instance, before the typed
/// bindings (which would fail with a less helpful type error) are built.
pub(super) fn check_contract_version(
    engine: &PolicyEngine,
    pre: &wasmtime::component::InstancePre<StoreState>,
    name: &str,
    limits: Limits,
) -> Result<(), LoadError> {
    let mut store = new_store(engine, name, limits);
    store.set_epoch_deadline(Limits::ticks(limits.maintenance_deadline));
    let start_fault = |e: wasmtime::Error| LoadError::StartFault {
        name: name.to_string(),
        fault: classify(&e),
    };
    let instance = pre.instantiate(&mut store).map_err(start_fault)?;
    let func = instance
        .get_typed_func::<(), (String,)>(&mut store, "contract-version")
        .map_err(|e| LoadError::Exports {
            name: name.to_string(),
            version: CONTRACT_VERSION,
            reason: format!("contract-version: {e:#}"),
        })?;
    let (found,) = func.call(&mut store, ()).map_err(start_fault)?;
    if found != CONTRACT_VERSION {
        return Err(LoadError::ContractVersion {
            name: name.to_string(),
            found,
            expected: CONTRACT_VERSION,
        });
    }
    Ok(())
}

pub(super) fn new_store(engine: &PolicyEngine, name: &str, limits: Limits) -> Store<StoreState> {
    let mut store = Store::new(engine.engine(), StoreState::new(name, limits.memory));
    store.limiter(|state| &mut state.limits);
    store
}

/// Name a call's failure.
pub(super) fn classify(error: &wasmtime::Error) -> PolicyFault {
    if error.chain().any(|e| e.is::<MemoryLimitHit>()) {
        return PolicyFault::PolicyMemoryLimit;
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => PolicyFault::PolicyDeadline,
        _ => PolicyFault::PolicyTrap(cap_message(format!("{error:#}"))),
    }
}

impl Live {
    /// Instantiate and `init`: the start of every instance, first or rebuilt.
    pub(super) fn start(
        pre: &BindingsPre<StoreState>,
        engine: &PolicyEngine,
        name: &str,
        config: &str,
        limits: Limits,
    ) -> Result<(Live, PolicyInfo), LoadError> {
        let mut store = new_store(engine, name, limits);
        store.set_epoch_deadline(Limits::ticks(limits.maintenance_deadline));
        let start_fault = |e: wasmtime::Error| LoadError::StartFault {
            name: name.to_string(),
            fault: classify(&e),
        };
        let policy = guarded(|| pre.instantiate(&mut store)).map_err(start_fault)?;
        let info = guarded(|| policy.call_init(&mut store, config))
            .map_err(start_fault)?
            .map_err(|message| LoadError::InitRefused {
                name: name.to_string(),
                message: cap_message(message),
            })?;
        Ok((Live { store, policy }, info.into()))
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
