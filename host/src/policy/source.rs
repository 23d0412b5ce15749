//! Where a policy component comes from ([`PolicySource`]: built in, or a
//! file) and the first check on its bytes.

use std::borrow::Cow;
use std::path::PathBuf;

use super::{LoadError, builtin};

/// Where a policy component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// Embedded in the binary, by name.
    Builtin(&'static str),
    /// A `.wasm` file.
    File(PathBuf),
}

impl PolicySource {
    /// A built-in name (`cache_aware`, `round_robin`) or a path to a file.
    pub fn parse(spec: &str) -> Result<Self, LoadError> {
        if let Some(name) = builtin::names().into_iter().find(|n| *n == spec) {
            return Ok(PolicySource::Builtin(name));
        }
        let path = PathBuf::from(spec);
        if path.exists() || spec.ends_with(".wasm") || spec.contains('/') {
            return Ok(PolicySource::File(path));
        }
        Err(LoadError::Unknown(spec.to_string()))
    }

    /// The component's bytes.
    pub fn read(&self) -> Result<Cow<'static, [u8]>, LoadError> {
        match self {
            PolicySource::Builtin(name) => Ok(Cow::Borrowed(
                builtin::get(name).expect("built-in names resolve"),
            )),
            PolicySource::File(path) => {
                std::fs::read(path)
                    .map(Cow::Owned)
                    .map_err(|source| LoadError::Read {
                        path: path.clone(),
                        source,
                    })
            }
        }
    }

    /// How the user named it: `cache_aware (built-in)` or the path.
    pub fn label(&self) -> String {
        match self {
            PolicySource::Builtin(name) => format!("{name} (built-in)"),
            PolicySource::File(path) => path.display().to_string(),
        }
    }
}

/// Tell a component from a core module from anything else by the header.
pub(super) fn check_header(bytes: &[u8], name: &str) -> Result<(), LoadError> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Err(LoadError::CoreModule(name.to_string())),
        Some([0, b'a', b's', b'm', ..]) => Ok(()),
        _ => Err(LoadError::NotWasm(name.to_string())),
    }
}
