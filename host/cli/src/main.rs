//! The `router` binary: the allocator, and the command line in
//! [`wasm_router_cli::run`].

use std::process::ExitCode;

// glibc malloc contends on its arena locks under the proxy's many small
// allocations; mimalloc does not (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    ExitCode::from(wasm_router_cli::run::entry(std::env::args_os()))
}
