//! Every way a policy can fail, named. The data plane maps these to HTTP
//! statuses in one place; here they carry what the user should do next.

use std::path::PathBuf;

/// Why a policy could not be loaded. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read policy file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A policy that matches prompts against the workers' KV caches
    /// (`prefix-index.match-kv`) in a router that cannot: it follows no
    /// events, or has no tokenizer to tokenize requests before the call.
    #[error(
        "policy {name} matches prompts against the workers' KV caches (prefix-index.match-kv), but this router {why}: start it with {missing}"
    )]
    KvNotFollowed {
        /// The policy's name.
        name: String,
        /// What the router lacks.
        why: &'static str,
        /// The flags that give it.
        missing: &'static str,
    },
    /// A name that is neither a built-in policy nor an existing file.
    #[error("unknown policy {0:?}: use one of {builtins} or a path to a .wasm file", builtins = super::builtin::names().join(", "))]
    Unknown(String),
    /// Not WebAssembly at all.
    #[error("{0} is not a WebAssembly file (no \\0asm header)")]
    NotWasm(String),
    /// A core module, where a component is needed.
    #[error(
        "{0} is a core WebAssembly module, not a component: build it for wasm32-wasip2, or wrap it with `router policy componentize`"
    )]
    CoreModule(String),
    /// wasmtime refused to compile it.
    #[error("{name} does not compile: {reason}")]
    Compile {
        /// The policy.
        name: String,
        /// wasmtime's message.
        reason: String,
    },
    /// It lacks the exports every policy has.
    #[error(
        "{name} is not a wasm-router policy: it exports neither the interface `wasm-router:policy/policy` nor `contract-version` (exports: {exports}); build it with the policy SDK against wit/policy.wit"
    )]
    NotAPolicy {
        /// The policy.
        name: String,
        /// What it exports instead.
        exports: String,
    },
    /// It imports something the sandbox does not give.
    #[error(
        "{name} imports what the sandbox does not provide: {reason}; policies may import only WASI and the contract's own interfaces (wit/policy.wit)"
    )]
    Imports {
        /// The policy.
        name: String,
        /// wasmtime's message.
        reason: String,
    },
    /// Built against another version of the contract.
    #[error(
        "{name} was built for policy contract {found}, this router speaks {}: rebuild it against wit/policy.wit", super::CONTRACT_VERSIONS.join(" and ")
    )]
    ContractVersion {
        /// The policy.
        name: String,
        /// What it declared.
        found: String,
    },
    /// Declares our version but its exports do not match it.
    #[error("{name} says it speaks contract {version} but its exports do not match: {reason}")]
    Exports {
        /// The policy.
        name: String,
        /// The version it claims.
        version: String,
        /// wasmtime's message.
        reason: String,
    },
    /// `init` returned an error.
    #[error("{name} refused its configuration: {message}")]
    InitRefused {
        /// The policy.
        name: String,
        /// The policy's message.
        message: String,
    },
    /// A trap (or deadline, or memory limit) while starting.
    #[error("{name} faulted while starting: {fault}")]
    StartFault {
        /// The policy.
        name: String,
        /// What happened.
        fault: PolicyFault,
    },
}

/// A fault of a running policy. The request it hit is answered by the native
/// fallback; the fault is counted and logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyFault {
    /// The call ran past its deadline and was interrupted.
    #[error("policy call exceeded its deadline")]
    PolicyDeadline,
    /// The guest tried to grow its memory past the limit.
    #[error("policy exceeded its memory limit")]
    PolicyMemoryLimit,
    /// Any other trap (panic, unreachable, out-of-bounds access).
    #[error("policy trapped: {0}")]
    PolicyTrap(String),
    /// `select` returned an id that is not among the candidates.
    #[error("policy picked worker {0}, which is not a candidate")]
    NotACandidate(u32),
    /// A call returned with a borrowed handle (the request, the
    /// candidates) not dropped: the component model traps it.
    #[error(
        "policy returned from a call still holding a borrowed handle (the request or the candidates): drop both before returning (C: build against `router policy bindings --lang c`, whose bindings drop them for you; by hand: `wasm_router_policy_types_request_drop_borrow` and `..._candidates_drop_borrow`)"
    )]
    BorrowLeft,
    /// The instance is being rebuilt after an earlier fault.
    #[error("policy is restarting after a fault")]
    PolicyRestarting,
}

impl PolicyFault {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PolicyFault::PolicyDeadline => "deadline",
            PolicyFault::PolicyMemoryLimit => "memory_limit",
            PolicyFault::PolicyTrap(_) => "trap",
            PolicyFault::NotACandidate(_) => "not_a_candidate",
            PolicyFault::BorrowLeft => "borrow_left",
            PolicyFault::PolicyRestarting => "restarting",
        }
    }
}

/// Why `select` gave no worker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// There was no candidate to choose from.
    #[error("no healthy worker can take this request")]
    NoCandidates,
    /// The policy answered `err` with this message.
    #[error("routing policy declined the request: {0}")]
    Declined(String),
    /// The policy's only instance is busy with maintenance (`tick`,
    /// `workers-changed`, a reload's `snapshot`): wait for
    /// [`Policy::until_ready`](super::Policy::until_ready), then ask again.
    /// A serving thread never blocks on maintenance.
    #[error("routing policy is busy with maintenance")]
    Busy,
}
