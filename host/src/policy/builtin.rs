//! The reference policies embedded in the binary, so that `--policy
//! cache_aware` needs no file. `policies/build.sh` rebuilds them from source.

/// Built-in policies: name and component bytes.
const BUILTINS: &[(&str, &[u8])] = &[
    (
        "cache_aware",
        include_bytes!("../../../policies/cache_aware.wasm"),
    ),
    (
        "round_robin",
        include_bytes!("../../../policies/round_robin.wasm"),
    ),
    ("random", include_bytes!("../../../policies/random.wasm")),
    (
        "power_of_two",
        include_bytes!("../../../policies/power_of_two.wasm"),
    ),
    (
        "consistent_hash",
        include_bytes!("../../../policies/consistent_hash.wasm"),
    ),
    ("manual", include_bytes!("../../../policies/manual.wasm")),
    ("bucket", include_bytes!("../../../policies/bucket.wasm")),
    (
        "precise_cache_aware",
        include_bytes!("../../../policies/precise_cache_aware.wasm"),
    ),
];

/// The component bytes of a built-in policy.
pub fn get(name: &str) -> Option<&'static [u8]> {
    BUILTINS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}

/// Names of the built-in policies.
pub fn names() -> Vec<&'static str> {
    BUILTINS.iter().map(|(n, _)| *n).collect()
}
