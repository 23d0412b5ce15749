//! The Rust SDK for wasm-router routing policies.
//!
//! A policy is a WebAssembly component that the router loads at run time and
//! asks, for every request, which worker should serve it. This crate hides the
//! component plumbing (generated from `wit/policy.wit`, contract 0.2.0, by
//! wit-bindgen) behind
//! one trait, [`Policy`], whose optional parts have sensible defaults, and one
//! macro, [`export_policy!`], that turns your type into the component's exports.
//!
//! ```
//! use wasm_router_policy::{Candidates, Policy, PolicyInfo, Request, export_policy};
//!
//! /// Sends every request to the candidate with the fewest requests in flight.
//! struct LeastLoad;
//!
//! impl Policy for LeastLoad {
//!     fn init(_config: &str) -> Result<(Self, PolicyInfo), String> {
//!         Ok((LeastLoad, PolicyInfo::new("least_load")))
//!     }
//!
//!     fn select(&mut self, _req: &Request<'_>, candidates: &Candidates<'_>) -> Result<u32, String> {
//!         candidates
//!             .iter()
//!             .min_by_key(|c| c.load)
//!             .map(|c| c.id)
//!             .ok_or_else(|| "no candidates".to_string())
//!     }
//! }
//!
//! export_policy!(LeastLoad);
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --release` (crate type
//! `cdylib`): the output `.wasm` is a component that `router --policy FILE`
//! loads. On other targets the macro exports nothing, so the same crate can be
//! unit-tested natively.
#![deny(missing_docs)]

#[doc(hidden)]
pub mod glue;
pub mod rng;

/// Bindings generated from `wit/policy.wit`. Policy authors use the re-exports
/// at the crate root instead.
#[doc(hidden)]
#[allow(missing_docs, clippy::too_many_arguments)] // generated ABI glue
pub mod bindings {
    wit_bindgen::generate!({
        world: "routing-policy",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_routing_policy",
        default_bindings_module: "wasm_router_policy::bindings",
    });
}

pub mod affinity;
mod candidates;
pub mod prefix_index;
mod request;
pub mod tie_break;

/// What a policy reads that the router prepares per request, declared in
/// [`Policy::init`] with `needs::declare(needs::Reads::HEADERS)`. A Rust
/// build imports only the functions a policy calls, and the router reads
/// the same from the imports of a policy that does not declare; declaring
/// is for toolchains whose bindings import every function.
pub use bindings::wasm_router::policy::needs;
pub use bindings::wasm_router::policy::types::{
    ErrorKind, Instances, Outcome, PolicyInfo, PrefillWork, Role, Route, WorkerInfo,
};
/// The host's imports: structured logs, metrics and the host-held key-value
/// store (see `wit/policy.wit`); the prefix index is [`prefix_index`].
pub use bindings::wasm_router::policy::{log, metrics, state};
pub use candidates::{Candidate, Candidates};
pub use request::Request;
pub use rng::Rng;
pub use tie_break::TieBreak;

/// The contract version this SDK implements: the package version of
/// `wit/policy.wit`. The router refuses policies built for one it does not
/// speak.
pub const CONTRACT_VERSION: &str = "0.2.0";

impl PolicyInfo {
    /// Info for a policy that needs neither the request text, nor feedback,
    /// nor ticks, and runs as one shared instance. Set the fields you need
    /// on the returned value.
    pub fn new(name: &str) -> Self {
        PolicyInfo {
            name: name.to_string(),
            needs_text: false,
            wants_feedback: false,
            tick_interval_ms: 0,
            instances: Instances::Shared,
        }
    }
}

/// A routing policy. Only [`Policy::init`] and [`Policy::select`] are required;
/// the router calls the others only if `init` asked for them (feedback, ticks)
/// or around hot reloads (snapshot, restore).
///
/// One value of the type lives in each instance of the component, and calls
/// on an instance never overlap. With [`Instances::PerThread`] the router
/// runs several instances: keep anything they must share in [`state`].
pub trait Policy: Sized + 'static {
    /// Build the policy from its JSON configuration (router flags plus the
    /// `[policy]` table of the router's TOML config; `{}` when there is none).
    /// An `Err` refuses the load with that message: say what to fix.
    fn init(config: &str) -> Result<(Self, PolicyInfo), String>;

    /// Pick one of `candidates` (never empty) by its `id`. An `Err` is
    /// answered to the client as a 503 carrying the message.
    fn select(&mut self, req: &Request<'_>, candidates: &Candidates<'_>) -> Result<u32, String>;

    /// The full list of workers, at start and after each change. Forget state
    /// kept for workers that are gone.
    fn workers_changed(&mut self, _workers: Vec<WorkerInfo>) {}

    /// How an attempt ended; called only if `PolicyInfo::wants_feedback`.
    fn on_complete(&mut self, _outcome: Outcome) {}

    /// Periodic housekeeping; called every `PolicyInfo::tick_interval_ms`.
    fn tick(&mut self, _now_ms: u64) {}

    /// State to hand over to the next version of the policy on hot reload.
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Take over state from [`Policy::snapshot`], possibly written by an older
    /// build. An `Err` makes the router keep this fresh instance as it is.
    fn restore(&mut self, _state: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

/// Export a [`Policy`] implementation as the component's functions.
///
/// Use it once, at the root of a `cdylib` crate. It expands to nothing on
/// targets other than `wasm32`, so native unit tests link without clashes.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::bindings::exports::wasm_router::policy::policy::Guest;
            use $crate::bindings::wasm_router::policy::types::{
                Candidates as HostCandidates, Request as HostRequest,
            };

            struct Export;

            impl Guest for Export {
                fn contract_version() -> String {
                    $crate::CONTRACT_VERSION.to_string()
                }
                fn init(config: String) -> Result<$crate::PolicyInfo, String> {
                    $crate::glue::init::<$policy>(&config)
                }
                fn workers_changed(workers: Vec<$crate::WorkerInfo>) {
                    $crate::glue::with::<$policy, _>((), |p| p.workers_changed(workers))
                }
                fn select(req: &HostRequest, candidates: &HostCandidates) -> Result<u32, String> {
                    let req = $crate::Request::lent(req);
                    let candidates = $crate::Candidates::lent(candidates);
                    $crate::glue::with::<$policy, _>(
                        Err($crate::glue::NOT_INITIALISED.into()),
                        |p| p.select(&req, &candidates),
                    )
                }
                fn on_complete(outcome: $crate::Outcome) {
                    $crate::glue::with::<$policy, _>((), |p| p.on_complete(outcome))
                }
                fn tick(now_ms: u64) {
                    $crate::glue::with::<$policy, _>((), |p| p.tick(now_ms))
                }
                fn snapshot() -> Vec<u8> {
                    $crate::glue::with::<$policy, _>(Vec::new(), |p| p.snapshot())
                }
                fn restore(state: Vec<u8>) -> Result<(), String> {
                    $crate::glue::with::<$policy, _>(
                        Err($crate::glue::NOT_INITIALISED.into()),
                        |p| p.restore(&state),
                    )
                }
            }

    $crate::bindings::__export_routing_policy!(Export with_types_in $crate::bindings);
        };
    };
}
