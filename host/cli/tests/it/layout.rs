//! The library's layout, read from its sources (host/src):
//! - its module graph has no cycles: each top-level module may use modules
//!   below it, never one that uses it back; the same inside `policy/`;
//! - `config` is a leaf: the settings import no other module of the router;
//! - no source file outside tests passes [`MAX_LINES`] lines.
//!
//! An edge is a path `crate::NAME` outside a comment, each name in `use
//! crate::{...}` (over several lines too), and inside `policy/`,
//! `crate::policy::NAME` or a top-level file's `super::NAME`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The longest a file of the library may be, tests left out (STYLE.md: one
/// job a file, a few hundred lines).
const MAX_LINES: usize = 600;

/// The router library's sources (host/src), not this crate's.
fn library() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../src")
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        if path.is_dir() {
            todo.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found
}

/// `text` without its comments (`//` to the end of a line).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| line.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first names after each `prefix` in `code`: `a` for `prefix a::b`,
/// `a` and `b` for `prefix {a::x, b}` (the group may span lines).
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices(prefix) {
        let rest = &code[at + prefix.len()..];
        let found: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => {
                let mut depth = 1;
                let end = group
                    .char_indices()
                    .find(|&(_, c)| {
                        depth += match c {
                            '{' => 1,
                            '}' => -1,
                            _ => 0,
                        };
                        depth == 0
                    })
                    .map_or(group.len(), |(i, _)| i);
                let mut top = Vec::new();
                let mut depth = 0;
                let mut start = 0;
                for (i, c) in group[..end].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            top.push(&group[start..i]);
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
                top.push(&group[start..end]);
                top.into_iter()
                    .map(|n| n.trim().split("::").next().unwrap().trim())
                    .collect()
            }
            None => vec![
                rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                    .next()
                    .unwrap(),
            ],
        };
        names.extend(
            found
                .into_iter()
                .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                .map(String::from),
        );
    }
    names
}

/// The modules of `dir` (its files and folders, by first path component)
/// -> the sibling modules their files name, by the `prefixes` (a file
/// directly in `dir` also by `super::`).
fn module_graph(dir: &Path, prefix: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in sources(dir) {
        let relative = path.strip_prefix(dir).unwrap();
        let first = relative.components().next().unwrap();
        let module = first.as_os_str().to_str().unwrap().trim_end_matches(".rs");
        if matches!(module, "lib" | "main" | "mod") {
            continue;
        }
        let text = code(&std::fs::read_to_string(&path).unwrap());
        let mut names = names_after(&text, prefix);
        let top_level_file = relative.components().count() == 1
            || relative.file_name().is_some_and(|n| n == "mod.rs")
                && relative.components().count() == 2;
        if prefix != "crate::" && top_level_file {
            names.extend(names_after(&text, "super::"));
        }
        let uses = graph.entry(module.to_string()).or_default();
        uses.extend(names.into_iter().filter(|n| n != module));
    }
    // Only siblings are edges (`super::` also reaches the parent's items).
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for uses in graph.values_mut() {
        uses.retain(|n| modules.contains(n));
    }
    graph
}

/// One cycle in `graph`, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(graph, next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(graph, node, &mut Vec::new(), &mut done))
}

#[test]
fn the_library_has_no_import_cycles() {
    let graph = module_graph(&library(), "crate::");
    assert!(graph.len() > 10, "modules found: {graph:?}");
    assert!(
        graph["server"].contains("proxy"),
        "edges are found: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_policy_module_has_no_import_cycles() {
    let graph = module_graph(&library().join("policy"), "crate::policy::");
    assert!(
        graph["wasm"].contains("instance"),
        "edges are found: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle in policy/: {}", cycle.join(" -> "));
    }
}

#[test]
fn config_is_a_leaf() {
    let graph = module_graph(&library(), "crate::");
    let uses = &graph["config"];
    assert!(
        uses.is_empty(),
        "config imports {uses:?}: the settings' types live in config, and the modules they configure take them from there"
    );
}

#[test]
fn no_source_file_passes_the_line_limit() {
    let mut long = Vec::new();
    for path in sources(&library()) {
        let relative = path.strip_prefix(library()).unwrap().to_owned();
        if relative.file_name().is_some_and(|n| n == "tests.rs")
            || relative.components().any(|c| c.as_os_str() == "tests")
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines = text
            .lines()
            .take_while(|line| *line != "#[cfg(test)]")
            .count();
        if lines > MAX_LINES {
            long.push(format!("{} ({lines} lines)", relative.display()));
        }
    }
    assert!(
        long.is_empty(),
        "past {MAX_LINES} lines, split by job: {long:?}"
    );
}

#[test]
fn edges_are_read_from_groups_over_several_lines() {
    let code = "use crate::{\n    workers::WorkerSpec,\n    tls::{self, ClientTls},\n    Config,\n};\nlet x = crate::events::follow();";
    let names = names_after(code, "crate::");
    assert_eq!(names, ["events", "tls", "workers"].map(String::from).into());
}

#[test]
fn a_cycle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(find_cycle(&graph).unwrap().join(" -> "), "a -> b -> c -> a");
}
