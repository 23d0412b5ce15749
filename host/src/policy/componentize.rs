//! `router policy componentize`: wrap a core module that follows the
//! canonical ABI of the policy contract into a component the router loads.
//!
//! A module whose bindings wit-bindgen generated exports the contract's
//! spelling of its functions: C's also carries the contract in a
//! `component-type` custom section and is encoded as it is; Go's does not,
//! so the contract is embedded, with UTF-8 strings. Its WASI preview 1
//! imports (wasi-libc, Go's runtime) are adapted to the preview 2 the
//! router gives policies, with wasmtime's reactor adapter (what `wasm-tools
//! component new --adapt` does).
//!
//! A module from the AssemblyScript glue (`policies/sdk-assemblyscript`)
//! carries nothing; four steps, all in-process with the wasm-tools crates:
//! 1. Tell the contract from the signature of the module's `select`: 0.2.0
//!    (`wit/policy.wit`) lends the request and candidates as two handles,
//!    0.1.0 (`wit/0.1.0/policy.wit`, the glue before 0.2) passes eleven
//!    values.
//! 2. Rename exports to the contract's spelling: AssemblyScript cannot
//!    export a `-` or an interface path, so the glue exports
//!    `on_complete` and `cabi_post_on_complete`, which become
//!    `wasm-router:policy/policy@0.2.0#on-complete` and
//!    `cabi_post_wasm-router:policy/policy@0.2.0#on-complete` (0.1.0:
//!    `on-complete`, `cabi_post_on-complete`).
//! 3. Embed that contract (compiled into the router) with UTF-16 strings,
//!    the native string encoding of AssemblyScript.
//! 4. Encode the component (`wasm-tools component new`, as a library).

use std::collections::HashMap;

use wasm_encoder::{ExportKind, ExportSection, Module, RawSection};
use wasmparser::{CompositeInnerType, Encoding, ExternalKind, Parser, Payload, TypeRef};
use wit_component::{ComponentEncoder, StringEncoding};
use wit_parser::{Resolve, WorldItem};

/// A contract a core module can follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contract {
    V0_1,
    V0_2,
}

impl Contract {
    /// The contract whose `select` takes `params` core parameters.
    fn of_select(params: usize) -> Option<Self> {
        match params {
            2 => Some(Contract::V0_2),
            11 => Some(Contract::V0_1),
            _ => None,
        }
    }

    fn wit(self) -> &'static str {
        match self {
            Contract::V0_1 => include_str!("../../../wit/0.1.0/policy.wit"),
            Contract::V0_2 => include_str!("../../../wit/policy.wit"),
        }
    }

    fn world(self) -> &'static str {
        match self {
            Contract::V0_1 => "policy",
            Contract::V0_2 => "routing-policy",
        }
    }
}

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
        "the module does not implement policy contract 0.2.0 (wit/policy.wit) or 0.1.0: {0:#}; export the functions of the contract (AssemblyScript: re-export \"wasm-router-policy/assembly/exports\"; C: link the `routing_policy_component_type.o` that `router policy bindings --lang c` writes)"
    )]
    Contract(anyhow::Error),
}

/// Turn a core module's bytes into a policy component's bytes.
pub fn componentize(core: &[u8]) -> Result<Vec<u8>, ComponentizeError> {
    // The contract to embed, with its string encoding, and whether the
    // exports need the contract's spelling.
    let (contract, encoding, rename) = match what_it_carries(core)? {
        Carries::Contract => return encode(core),
        // wit-bindgen's Go bindings: UTF-8 strings, the contract's names.
        Carries::Spelling => (Contract::V0_2, StringEncoding::UTF8, false),
        Carries::Nothing => (contract_of(core)?, StringEncoding::UTF16, true),
    };
    let mut resolve = Resolve::default();
    let package = resolve
        .push_str("policy.wit", contract.wit())
        .expect("the router's own contract parses");
    let world = resolve
        .select_world(&[package], Some(contract.world()))
        .expect("the contract defines its world");
    let mut module = if rename {
        rename_exports(core, &core_spellings(&resolve, world))?
    } else {
        core.to_vec()
    };
    wit_component::embed_component_metadata(&mut module, &resolve, world, encoding)
        .map_err(ComponentizeError::Contract)?;
    encode(&module)
}

/// `wasm-tools component new --adapt`: the module with its embedded
/// contract, WASI preview 1 adapted if it imports it.
fn encode(module: &[u8]) -> Result<Vec<u8>, ComponentizeError> {
    use wasi_preview1_component_adapter_provider::{
        WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    };
    ComponentEncoder::default()
        .validate(true)
        .module(module)
        .and_then(|encoder| {
            encoder.adapter(
                WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )
        })
        .and_then(|mut encoder| encoder.encode())
        .map_err(ComponentizeError::Contract)
}

/// What a core module carries of the contract.
enum Carries {
    /// The contract itself, in a `component-type` custom section (what
    /// wit-bindgen's C bindings embed): nothing to rename or embed.
    Contract,
    /// The contract's spelling of its exports
    /// (`wasm-router:policy/policy@0.2.0#select`, as wit-bindgen's Go
    /// bindings export them), the contract not embedded.
    Spelling,
    /// Neither (the AssemblyScript glue).
    Nothing,
}

fn what_it_carries(core: &[u8]) -> Result<Carries, ComponentizeError> {
    let mut spelled = false;
    for payload in Parser::new(0).parse_all(core) {
        match payload.map_err(|e| ComponentizeError::Invalid(e.to_string()))? {
            Payload::Version {
                encoding: Encoding::Component,
                ..
            } => return Err(ComponentizeError::AlreadyComponent),
            Payload::CustomSection(section) if section.name().starts_with("component-type") => {
                return Ok(Carries::Contract);
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(|e| ComponentizeError::Invalid(e.to_string()))?;
                    spelled |= export.name == "wasm-router:policy/policy@0.2.0#select";
                }
            }
            _ => {}
        }
    }
    Ok(if spelled {
        Carries::Spelling
    } else {
        Carries::Nothing
    })
}

/// The contract of a core module, from the number of parameters of its
/// `select` export.
fn contract_of(core: &[u8]) -> Result<Contract, ComponentizeError> {
    let invalid = |e: wasmparser::BinaryReaderError| ComponentizeError::Invalid(e.to_string());
    let mut params = Vec::new();
    let mut functions = Vec::new();
    let mut select = None;
    for payload in Parser::new(0).parse_all(core) {
        match payload.map_err(invalid)? {
            Payload::Version {
                encoding: Encoding::Component,
                ..
            } => {
                return Err(ComponentizeError::AlreadyComponent);
            }
            Payload::TypeSection(reader) => {
                for group in reader {
                    for ty in group.map_err(invalid)?.into_types() {
                        params.push(match &ty.composite_type.inner {
                            CompositeInnerType::Func(f) => f.params().len(),
                            _ => usize::MAX,
                        });
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    if let TypeRef::Func(ty) | TypeRef::FuncExact(ty) = import.map_err(invalid)?.ty
                    {
                        functions.push(ty);
                    }
                }
            }
            Payload::FunctionSection(reader) => {
                for ty in reader {
                    functions.push(ty.map_err(invalid)?);
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(invalid)?;
                    if export.name == "select" && export.kind == ExternalKind::Func {
                        select = Some(export.index);
                    }
                }
            }
            _ => {}
        }
    }
    let select = select.ok_or_else(|| {
        ComponentizeError::Contract(anyhow::anyhow!("it exports no function `select`"))
    })?;
    let arity = functions
        .get(select as usize)
        .and_then(|ty| params.get(*ty as usize))
        .copied()
        .unwrap_or(usize::MAX);
    Contract::of_select(arity).ok_or_else(|| {
        ComponentizeError::Contract(anyhow::anyhow!(
            "its `select` takes {arity} parameters, where 0.2.0 takes 2 (the request and candidates handles) and 0.1.0 takes 11"
        ))
    })
}

/// For each function the world exports, its name with `-` (as the glue
/// writes it after swapping `_` back) and its name in a core module.
fn core_spellings(resolve: &Resolve, world: wit_parser::WorldId) -> HashMap<String, String> {
    let mut spellings = HashMap::new();
    for (key, item) in &resolve.worlds[world].exports {
        match item {
            WorldItem::Function(f) => {
                spellings.insert(f.name.clone(), f.name.clone());
            }
            WorldItem::Interface { id, .. } => {
                let interface = resolve.name_world_key(key);
                for name in resolve.interfaces[*id].functions.keys() {
                    spellings.insert(name.clone(), format!("{interface}#{name}"));
                }
            }
            WorldItem::Type { .. } => {}
        }
    }
    spellings
}

/// The contract's spelling of an export written with `_` for `-` and
/// without its interface, if it names a contract function or its
/// post-return and is spelled otherwise.
fn contract_spelling(name: &str, spellings: &HashMap<String, String>) -> Option<String> {
    let (prefix, base) = match name.strip_prefix("cabi_post_") {
        Some(base) => ("cabi_post_", base),
        None => ("", name),
    };
    let core = spellings.get(&base.replace('_', "-"))?;
    (core != base).then(|| format!("{prefix}{core}"))
}

/// Copy the module section by section, rewriting only the export section.
fn rename_exports(
    core: &[u8],
    spellings: &HashMap<String, String>,
) -> Result<Vec<u8>, ComponentizeError> {
    let invalid = |e: wasmparser::BinaryReaderError| ComponentizeError::Invalid(e.to_string());
    let mut out = Module::new();
    for payload in Parser::new(0).parse_all(core) {
        let payload = payload.map_err(invalid)?;
        match &payload {
            Payload::ExportSection(reader) => {
                let mut exports = ExportSection::new();
                let mut renamed = HashMap::new();
                for export in reader.clone() {
                    let export = export.map_err(invalid)?;
                    let name = contract_spelling(export.name, spellings)
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

    fn spellings(contract: Contract) -> HashMap<String, String> {
        let mut resolve = Resolve::default();
        let package = resolve.push_str("policy.wit", contract.wit()).unwrap();
        let world = resolve
            .select_world(&[package], Some(contract.world()))
            .unwrap();
        core_spellings(&resolve, world)
    }

    #[test]
    fn underscores_become_the_contracts_spelling() {
        let v2 = spellings(Contract::V0_2);
        assert_eq!(
            contract_spelling("contract_version", &v2).as_deref(),
            Some("wasm-router:policy/policy@0.2.0#contract-version")
        );
        assert_eq!(
            contract_spelling("cabi_post_select", &v2).as_deref(),
            Some("cabi_post_wasm-router:policy/policy@0.2.0#select")
        );
        let v1 = spellings(Contract::V0_1);
        assert_eq!(
            contract_spelling("cabi_post_on_complete", &v1).as_deref(),
            Some("cabi_post_on-complete")
        );
        assert_eq!(contract_spelling("init", &v1), None, "already right");
        for names in [&v1, &v2] {
            assert_eq!(contract_spelling("cabi_realloc", names), None);
            assert_eq!(contract_spelling("my_helper", names), None);
        }
    }

    #[test]
    fn the_contract_is_told_by_selects_parameters() {
        assert_eq!(Contract::of_select(2), Some(Contract::V0_2));
        assert_eq!(Contract::of_select(11), Some(Contract::V0_1));
        assert_eq!(Contract::of_select(3), None);
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
        assert!(error.contains("exports no function `select`"), "{error}");
        assert!(
            error.contains("wasm-router-policy/assembly/exports"),
            "{error}"
        );
    }
}
