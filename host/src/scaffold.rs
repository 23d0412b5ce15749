//! `router policy new`: a working policy project from the templates in
//! `examples/templates/`, so a user starts from something that builds.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

/// Languages a policy can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Rust, with the wasm-router-policy SDK.
    Rust,
    /// AssemblyScript (not yet scaffolded).
    Assemblyscript,
}

/// `router policy new` flags.
#[derive(Debug, Clone, Args)]
pub struct NewArgs {
    /// Name of the policy (and of its directory and crate).
    pub name: String,
    /// Language.
    #[arg(long, value_enum, default_value = "rust")]
    pub lang: Lang,
    /// Directory to create the project in.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// The SDK crate (policies/sdk of a wasm-router checkout); defaults to
    /// the checkout this router was built from.
    #[arg(long)]
    pub sdk_path: Option<PathBuf>,
}

const RUST_CARGO: &str = include_str!("../../examples/templates/rust/Cargo.toml.tmpl");
const RUST_LIB: &str = include_str!("../../examples/templates/rust/lib.rs.tmpl");

/// Create the project; returns its directory.
pub fn create(args: &NewArgs) -> anyhow::Result<PathBuf> {
    let name = &args.name;
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    anyhow::ensure!(
        valid,
        "policy name {name:?}: use lowercase letters, digits, '_' or '-', starting with a letter"
    );
    if args.lang == Lang::Assemblyscript {
        anyhow::bail!(
            "AssemblyScript projects cannot be scaffolded yet (issue 6); use --lang rust"
        );
    }
    let sdk = match &args.sdk_path {
        Some(path) => path.clone(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/sdk"),
    };
    let sdk = sdk.canonicalize().map_err(|e| {
        anyhow::anyhow!(
            "the policy SDK is not at {} ({e}): pass --sdk-path CHECKOUT/policies/sdk",
            sdk.display()
        )
    })?;
    let root = args.dir.join(name);
    anyhow::ensure!(!root.exists(), "{} already exists", root.display());
    std::fs::create_dir_all(root.join("src"))?;
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{lib}}", &name.replace('-', "_"))
            .replace("{{sdk}}", &sdk.display().to_string())
    };
    std::fs::write(root.join("Cargo.toml"), fill(RUST_CARGO))?;
    std::fs::write(root.join("src/lib.rs"), fill(RUST_LIB))?;
    Ok(root)
}
