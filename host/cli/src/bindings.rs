//! `router policy bindings --lang c|go DIR`: what a C or Go policy
//! compiles against, written by the router itself so that a user needs no
//! `cargo install` of wit-bindgen: the contract's bindings (generated here
//! by wit-bindgen's C or Go generator) and the language's SDK
//! (`policies/sdk-c`, `policies/sdk-go`) over them. For Go, also the module
//! the bindings import, `go.bytecodealliance.org/pkg`, which only the Go
//! module proxy serves: written beside them from the generator crate's own
//! copy (see build.rs) and named by a `replace` in go.mod.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

/// Languages whose bindings the router writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BindingsLang {
    /// C (wasi-libc): routing_policy.{h,c}, its component-type object, and
    /// the SDK, wasm_router_policy.{h,c}; borrowed handles dropped by the
    /// bindings.
    C,
    /// Go (GOOS=wasip1): a module `wit_component` with the bindings, the
    /// SDK (package `wasmrouter` and the export glue) and go-pkg/.
    Go,
}

/// `router policy bindings` flags.
#[derive(Debug, Clone, Args)]
pub struct BindingsArgs {
    /// Language.
    #[arg(long, value_enum)]
    pub lang: BindingsLang,
    /// Directory to write them to (created if missing).
    pub dir: PathBuf,
}

const CONTRACT: &str = include_str!("../../../wit/policy.wit");
const SDK_C_HEADER: &str = include_str!("../../../policies/sdk-c/wasm_router_policy.h");
const SDK_C_SOURCE: &str = include_str!("../../../policies/sdk-c/wasm_router_policy.c");
const SDK_GO: &str = include_str!("../../../policies/sdk-go/wasmrouter/wasmrouter.go");
const SDK_GO_EXPORTS: &str =
    include_str!("../../../policies/sdk-go/export_wasm_router_policy_policy/policy.go");

include!(concat!(env!("OUT_DIR"), "/go_pkg.rs"));

/// Write the bindings and SDK for `args.lang` into `args.dir`; the files
/// written.
pub fn write(args: &BindingsArgs) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (name, contents) in files(args.lang)? {
        let path = args.dir.join(&name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The files for `lang`, by path.
fn files(lang: BindingsLang) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve.push_str("policy.wit", CONTRACT)?;
    let world = resolve.select_world(&[package], Some("routing-policy"))?;
    let mut generator = match lang {
        BindingsLang::C => wit_bindgen_c::Opts {
            autodrop_borrows: wit_bindgen_c::Enabled::Yes,
            ..Default::default()
        }
        .build(),
        BindingsLang::Go => wit_bindgen_go::Opts::default().build(),
    };
    let mut generated = wit_bindgen_core::Files::default();
    generator.generate(&mut resolve, world, &mut generated)?;
    let mut files: Vec<(String, Vec<u8>)> = generated
        .iter()
        .map(|(name, bytes)| (name.to_string(), bytes.to_vec()))
        .collect();
    match lang {
        BindingsLang::C => {
            files.push(("wasm_router_policy.h".into(), SDK_C_HEADER.into()));
            files.push(("wasm_router_policy.c".into(), SDK_C_SOURCE.into()));
        }
        BindingsLang::Go => {
            for (name, contents) in &mut files {
                if name == "go.mod" {
                    contents
                        .extend_from_slice(b"\nreplace go.bytecodealliance.org/pkg => ./go-pkg\n");
                }
            }
            files.push(("wasmrouter/wasmrouter.go".into(), SDK_GO.into()));
            files.push((
                "export_wasm_router_policy_policy/policy.go".into(),
                SDK_GO_EXPORTS.into(),
            ));
            for (path, contents) in GO_PKG {
                files.push((format!("go-pkg/{path}"), contents.as_bytes().to_vec()));
            }
        }
    }
    Ok(files)
}
