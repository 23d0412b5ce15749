//! `router policy bindings --lang c DIR`: what a C policy compiles against,
//! written by the router itself so that a user needs no `cargo install` of
//! wit-bindgen: the contract's bindings (generated here by wit-bindgen's C
//! generator, with the borrowed handles dropped for the policy) and the C
//! SDK (`policies/sdk-c`) over them.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

/// Languages whose bindings the router writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BindingsLang {
    /// C (wasi-libc): routing_policy.{h,c}, its component-type object, and
    /// the SDK, wasm_router_policy.{h,c}.
    C,
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

/// Write the bindings and SDK for `args.lang` into `args.dir`; the files
/// written.
pub fn write(args: &BindingsArgs) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let mut written = Vec::new();
    for (name, contents) in files(args.lang)? {
        let path = args.dir.join(&name);
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The files for `lang`, by name.
fn files(lang: BindingsLang) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    match lang {
        BindingsLang::C => {
            let mut resolve = wit_parser::Resolve::default();
            let package = resolve.push_str("policy.wit", CONTRACT)?;
            let world = resolve.select_world(&[package], Some("routing-policy"))?;
            let opts = wit_bindgen_c::Opts {
                autodrop_borrows: wit_bindgen_c::Enabled::Yes,
                ..Default::default()
            };
            let mut generated = wit_bindgen_core::Files::default();
            opts.build().generate(&mut resolve, world, &mut generated)?;
            let mut files: Vec<(String, Vec<u8>)> = generated
                .iter()
                .map(|(name, bytes)| (name.to_string(), bytes.to_vec()))
                .collect();
            files.push(("wasm_router_policy.h".into(), SDK_C_HEADER.into()));
            files.push(("wasm_router_policy.c".into(), SDK_C_SOURCE.into()));
            Ok(files)
        }
    }
}
