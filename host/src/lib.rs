//! wasm-router: a load balancer for LLM inference workers whose routing
//! decision is made by a WebAssembly component loaded at run time.
//!
//! The crate is the router as a library; the `router` binary is the
//! `wasm-router-cli` crate (`host/cli`), which adds its command line and
//! tools. docs/architecture.md walks a request through the modules.
//!
//! The data plane and the policy meet at one seam, [`policy::Policy`]: the
//! proxy hands it request metadata and candidate workers, the policy names
//! one. [`policy::WasmPolicy`] implements it by calling a sandboxed
//! component; [`policy::LeastLoad`] is the native fallback used whenever
//! the component cannot answer.
#![deny(missing_docs)]

pub mod admin;
pub mod admission;
pub mod auth;
pub mod client;
pub mod config;
pub mod discovery;
pub mod errors;
pub mod events;
pub mod extract;
pub mod hold;
pub mod index;
pub mod jwt;
pub mod lab;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod route;
pub mod server;
pub mod state;
pub mod tls;
pub mod tokenizer;
pub mod traces;
pub mod upstream;
pub mod workers;
