//! The integration tests: one binary, one module per area.

mod assemblyscript;
mod builtins;
mod cache_aware;
mod chaos;
mod cli;
mod contract;
mod discovery;
mod engine;
mod examples;
mod fixtures;
mod hostile;
mod instances;
mod jwt;
mod kv_events;
mod layout;
mod mock;
mod pd;
mod prometheus;
mod proxy;
mod reload;
mod round_robin;
mod sim;
mod soak;
mod timeouts;
mod tls;
mod tokenize;
