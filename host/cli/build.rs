//! The Go module the bindings of `router policy bindings --lang go` import
//! (`go.bytecodealliance.org/pkg`, which only the Go module proxy serves):
//! the wit-bindgen-go crate ships it in its sources, so this finds that
//! crate with `cargo metadata` and lists its files for `include_str!`.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("Cargo.toml");
    let output = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let generator = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "wit-bindgen-go")
        .expect("wit-bindgen-go is a dependency");
    let pkg = Path::new(generator["manifest_path"].as_str().unwrap())
        .parent()
        .unwrap()
        .join("src/pkg");
    let mut files = Vec::new();
    collect(&pkg, &mut files);
    files.sort();
    let mut out = String::from(
        "/// The files of `go.bytecodealliance.org/pkg`, by path in the module.\npub const GO_PKG: &[(&str, &str)] = &[\n",
    );
    for file in &files {
        let relative = file.strip_prefix(&pkg).unwrap().display().to_string();
        out.push_str(&format!(
            "    ({relative:?}, include_str!({:?})),\n",
            file.display().to_string()
        ));
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("go_pkg.rs");
    std::fs::write(dest, out).unwrap();
}

/// The module's Go sources, go.mod and LICENSE under `dir`.
fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "go" || e == "s")
            || path
                .file_name()
                .is_some_and(|n| n == "go.mod" || n == "LICENSE")
        {
            files.push(path);
        }
    }
}
