//! `router policy new`: a working policy project from the templates in
//! `examples/templates/`, so a user starts from something that builds.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

/// Languages a policy can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Rust, with the wasm-router-policy SDK crate.
    Rust,
    /// AssemblyScript, with the glue package in policies/sdk-assemblyscript.
    Assemblyscript,
}

impl Lang {
    /// The SDK inside a wasm-router checkout.
    fn sdk_in_checkout(self) -> &'static str {
        match self {
            Lang::Rust => "policies/sdk",
            Lang::Assemblyscript => "policies/sdk-assemblyscript",
        }
    }

    /// The project's files: path, template, executable.
    fn files(self) -> &'static [(&'static str, &'static str, bool)] {
        match self {
            Lang::Rust => &[
                ("Cargo.toml", RUST_CARGO, false),
                ("src/lib.rs", RUST_LIB, false),
            ],
            Lang::Assemblyscript => &[
                ("package.json", AS_PACKAGE, false),
                ("asconfig.json", AS_CONFIG, false),
                ("assembly/index.ts", AS_INDEX, false),
                ("build.sh", AS_BUILD, true),
                (".gitignore", AS_GITIGNORE, false),
            ],
        }
    }

    /// What to tell the user once the project exists.
    pub fn next_step(self) -> &'static str {
        match self {
            Lang::Rust => "build it with `cargo build --release --target wasm32-wasip2` there",
            Lang::Assemblyscript => {
                "build it with `./build.sh` there (needs npm and this router on PATH)"
            }
        }
    }
}

/// `router policy new` flags.
#[derive(Debug, Clone, Args)]
pub struct NewArgs {
    /// Name of the policy (and of its directory and package).
    pub name: String,
    /// Language.
    #[arg(long, value_enum, default_value = "rust")]
    pub lang: Lang,
    /// Directory to create the project in.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// The SDK (policies/sdk or policies/sdk-assemblyscript of a wasm-router
    /// checkout); defaults to the checkout this router was built from.
    #[arg(long)]
    pub sdk_path: Option<PathBuf>,
}

const RUST_CARGO: &str = include_str!("../../../examples/templates/rust/Cargo.toml.tmpl");
const RUST_LIB: &str = include_str!("../../../examples/templates/rust/lib.rs.tmpl");
const AS_PACKAGE: &str =
    include_str!("../../../examples/templates/assemblyscript/package.json.tmpl");
const AS_CONFIG: &str =
    include_str!("../../../examples/templates/assemblyscript/asconfig.json.tmpl");
const AS_INDEX: &str = include_str!("../../../examples/templates/assemblyscript/index.ts.tmpl");
const AS_BUILD: &str = include_str!("../../../examples/templates/assemblyscript/build.sh.tmpl");
const AS_GITIGNORE: &str =
    include_str!("../../../examples/templates/assemblyscript/gitignore.tmpl");

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
    let in_checkout = args.lang.sdk_in_checkout();
    let sdk = match &args.sdk_path {
        Some(path) => path.clone(),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(in_checkout),
    };
    let sdk = sdk.canonicalize().map_err(|e| {
        anyhow::anyhow!(
            "the policy SDK is not at {} ({e}): pass --sdk-path CHECKOUT/{in_checkout}",
            sdk.display()
        )
    })?;
    let root = args.dir.join(name);
    anyhow::ensure!(!root.exists(), "{} already exists", root.display());
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{lib}}", &name.replace('-', "_"))
            .replace("{{sdk}}", &sdk.display().to_string())
    };
    for (path, template, executable) in args.lang.files() {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("template paths are relative"))?;
        std::fs::write(&path, fill(template))?;
        if *executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    Ok(root)
}
