//! `router policy componentize`: wrap a core module that follows the
//! canonical ABI of `wit/0.1.0/policy.wit` (as the AssemblyScript glue in
//! `policies/sdk-assemblyscript` does) into a component the router loads.
//!
//! Three steps, all in-process with the wasm-tools crates:
//! 1. Rename exports spelled with `_` where the contract uses `-`
//!    (`contract_version` -> `contract-version`, `cabi_post_on_complete` ->
//!    `cabi_post_on-complete`): AssemblyScript cannot export a `-`.
//! 2. Embed the contract (`wit/0.1.0/policy.wit`, compiled into the router) with
//!    UTF-16 strings, the native string encoding of AssemblyScript.
//! 3. Encode the component (`wasm-tools component new`, as a library).

use std::collections::HashMap;

use wasm_encoder::{ExportKind, ExportSection, Module, RawSection};
use wasmparser::{Encoding, ExternalKind, Parser, Payload};
use wit_component::{ComponentEncoder, StringEncoding};
use wit_parser::Resolve;

/// Contract 0.1.0, the version the AssemblyScript glue follows.
const CONTRACT_WIT: &str = include_str!("../../../wit/0.1.0/policy.wit");

/// Why a core module could not be made a component.
#[derive(Debug, thiserror::Error)]
pub enum ComponentizeError {
    /// The input is already a component.
    #[error(
        "the input is already a component: load it as it is, or check it with `router policy check`"
    )]
    AlreadyComponent,
    /// The input is not valid WebAssembly.
    #[error("the input is not a valid WebAssembly module: {0}")]
    Invalid(String),
    /// The module does not match the contract.
    #[error(
        "the module does not implement policy contract 0.1.0 (wit/0.1.0/policy.wit): {0:#}; export the functions of the contract (AssemblyScript: re-export \"wasm-router-policy/assembly/exports\")"
    )]
    Contract(anyhow::Error),
}

/// Turn a core module's bytes into a policy component's bytes.
pub fn componentize(core: &[u8]) -> Result<Vec<u8>, ComponentizeError> {
    let mut resolve = Resolve::default();
    let package = resolve
        .push_str("wit/policy.wit", CONTRACT_WIT)
        .expect("the router's own contract parses");
    let world = resolve
        .select_world(&[package], Some("policy"))
        .expect("the contract defines world `policy`");
    let contract_names: Vec<String> = resolve.worlds[world]
        .exports
        .keys()
        .map(|key| resolve.name_world_key(key))
        .collect();

    let mut module = rename_exports(core, &contract_names)?;
    wit_component::embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF16)
        .map_err(ComponentizeError::Contract)?;
    ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .and_then(|mut encoder| encoder.encode())
        .map_err(ComponentizeError::Contract)
}

/// The contract's spelling of an export written with `_` for `-`, if it
/// names a contract function or its post-return.
fn contract_spelling(name: &str, contract_names: &[String]) -> Option<String> {
    let (prefix, base) = match name.strip_prefix("cabi_post_") {
        Some(base) => ("cabi_post_", base),
        None => ("", name),
    };
    let dashed = base.replace('_', "-");
    contract_names
        .iter()
        .any(|n| *n == dashed && dashed != base)
        .then(|| format!("{prefix}{dashed}"))
}

/// Copy the module section by section, rewriting only the export section.
fn rename_exports(core: &[u8], contract_names: &[String]) -> Result<Vec<u8>, ComponentizeError> {
    let invalid = |e: wasmparser::BinaryReaderError| ComponentizeError::Invalid(e.to_string());
    let mut out = Module::new();
    for payload in Parser::new(0).parse_all(core) {
        let payload = payload.map_err(invalid)?;
        match &payload {
            Payload::Version { encoding, .. } => {
                if *encoding == Encoding::Component {
                    return Err(ComponentizeError::AlreadyComponent);
                }
            }
            Payload::ExportSection(reader) => {
                let mut exports = ExportSection::new();
                let mut renamed = HashMap::new();
                for export in reader.clone() {
                    let export = export.map_err(invalid)?;
                    let name = contract_spelling(export.name, contract_names)
                        .unwrap_or_else(|| export.name.to_string());
                    if let Some(first) = renamed.insert(name.clone(), export.name) {
                        return Err(ComponentizeError::Invalid(format!(
                            "exports `{first}` and `{}` both stand for `{name}`",
                            export.name
                        )));
                    }
                    exports.export(&name, export_kind(export.kind), export.index);
                }
                out.section(&exports);
            }
            other => {
                if let Some((id, range)) = other.as_section() {
                    out.section(&RawSection {
                        id,
                        data: &core[range],
                    });
                }
            }
        }
    }
    Ok(out.finish())
}

fn export_kind(kind: ExternalKind) -> ExportKind {
    match kind {
        ExternalKind::Func | ExternalKind::FuncExact => ExportKind::Func,
        ExternalKind::Table => ExportKind::Table,
        ExternalKind::Memory => ExportKind::Memory,
        ExternalKind::Global => ExportKind::Global,
        ExternalKind::Tag => ExportKind::Tag,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["contract-version", "init", "on-complete"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn underscores_become_the_contracts_dashes() {
        let names = names();
        assert_eq!(
            contract_spelling("contract_version", &names).as_deref(),
            Some("contract-version")
        );
        assert_eq!(
            contract_spelling("cabi_post_on_complete", &names).as_deref(),
            Some("cabi_post_on-complete")
        );
        assert_eq!(contract_spelling("init", &names), None, "already right");
        assert_eq!(contract_spelling("cabi_realloc", &names), None);
        assert_eq!(contract_spelling("my_helper", &names), None);
    }

    #[test]
    fn a_component_or_garbage_is_refused() {
        assert!(matches!(
            componentize(b"\0asm\x0d\0\x01\0"),
            Err(ComponentizeError::AlreadyComponent)
        ));
        assert!(matches!(
            componentize(b"not wasm"),
            Err(ComponentizeError::Invalid(_))
        ));
    }

    #[test]
    fn a_module_without_the_contract_is_refused_with_the_fix() {
        let empty_module = Module::new().finish();
        let error = componentize(&empty_module).unwrap_err().to_string();
        assert!(
            error.contains("wasm-router-policy/assembly/exports"),
            "{error}"
        );
    }
}
