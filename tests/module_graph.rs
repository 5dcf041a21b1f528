//! The core's modules import each other without a circle, so that they read bottom-up:
//! leaves (secrets, JSON, URLs, …), HTTP values, parsers, configuration, outputs, the session.
//! Read from the sources: `crate::x` names module `x`, `super::x` a sibling (or the parent
//! module's own items), and the session's root names its children by their bare names.
//! Comments are skipped: a documentation link is not an import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module file under `src/`, by its path from `src/` (`session/calls.rs`), with its
/// text.
fn modules() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let name = path.strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join("src")).unwrap();
                let code: String = std::fs::read_to_string(&path)
                    .unwrap()
                    .lines()
                    .filter(|line| !line.trim_start().starts_with("//"))
                    .collect::<Vec<_>>()
                    .join("\n");
                files.insert(name.to_string_lossy().replace('\\', "/"), code);
            }
        }
    }
    files
}

/// The file of module `name` in directory `dir` (`""` for the crate root), if it is one.
fn file_of(files: &BTreeMap<String, String>, dir: &str, name: &str) -> Option<String> {
    [format!("{dir}{name}.rs"), format!("{dir}{name}/mod.rs")].into_iter().find(|f| files.contains_key(f))
}

/// The first path segments after `prefix::`, a `{…}` group giving each of its items.
fn segments_after<'a>(code: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    let word = |s: &'a str| s.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or("");
    for (at, _) in code.match_indices(&format!("{prefix}::")) {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[at + prefix.len() + 2..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                found.extend(group.split(',').map(|item| word(item.trim())).filter(|w| !w.is_empty()));
            }
            None => found.push(word(rest)),
        }
    }
    found
}

/// Who imports whom, among the module files (the crate root, which only declares and
/// re-exports, left out).
fn imports(files: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, code) in files.iter().filter(|(f, _)| *f != "lib.rs") {
        let dir = file.rsplit_once('/').map_or(String::new(), |(d, _)| format!("{d}/"));
        let mut to = BTreeSet::new();
        for name in segments_after(code, "crate") {
            to.extend(file_of(files, "", name));
        }
        for name in segments_after(code, "super") {
            // A sibling module, else an item of the parent module itself.
            to.insert(file_of(files, &dir, name).unwrap_or_else(|| format!("{dir}mod.rs")));
        }
        if file.ends_with("mod.rs") {
            for child in files.keys().filter_map(|f| f.strip_prefix(&dir)).filter(|f| !f.contains('/')) {
                let child = child.trim_end_matches(".rs");
                if child != "mod" && !segments_after(code, child).is_empty() {
                    to.insert(format!("{dir}{child}.rs"));
                }
            }
        }
        to.remove(file);
        edges.insert(file.clone(), to);
    }
    edges
}

/// A circle through `from`, if there is one.
fn circle(edges: &BTreeMap<String, BTreeSet<String>>, path: &mut Vec<String>, done: &mut BTreeSet<String>) -> bool {
    let Some(at) = path.last().cloned() else { return false };
    for next in edges.get(&at).into_iter().flatten() {
        if path.contains(next) {
            path.push(next.clone());
            return true;
        }
        if done.contains(next) {
            continue;
        }
        path.push(next.clone());
        if circle(edges, path, done) {
            return true;
        }
        path.pop();
    }
    done.insert(at);
    false
}

#[test]
fn the_core_modules_import_each_other_without_a_circle() {
    let files = modules();
    let edges = imports(&files);
    assert!(edges.len() > 30, "the sources were not found: {:?}", edges.keys());
    assert!(edges["session/mod.rs"].contains("session/renewal.rs"), "the reader misses imports");
    assert!(edges["token.rs"].contains("http.rs"), "the reader misses imports");
    let mut done = BTreeSet::new();
    for file in edges.keys() {
        let mut path = vec![file.clone()];
        assert!(!circle(&edges, &mut path, &mut done), "an import circle: {}", path.join(" -> "));
    }
}
