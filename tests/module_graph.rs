//! The crate's modules import each other top-down, never in a circle: the
//! graph of `crate::` references between the top-level modules under `src/`
//! is acyclic, and so is the graph of `super::` references between the
//! files of one folder. A new cycle fails here, naming it, so the layering
//! (binary -> roles -> planes -> shared leaves) cannot erode unnoticed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments (line comments, doc comments included).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            // A `//` inside a string literal is rare enough in paths that
            // cutting there loses nothing this test looks for.
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Names that follow `prefix` (`crate::` or `super::`): `prefix name` and,
/// for `prefix{a::x, b}`, each name at the braces' top level.
fn referenced(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        rest = &rest[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if c.is_whitespace() => {}
                    _ if start && depth == 0 => {
                        names.insert(ident_at(&group[j..]).to_string());
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            names.insert(ident_at(rest).to_string());
        }
    }
    names.retain(|n| !n.is_empty() && n != "self" && n != "super");
    names
}

/// A cycle in `g`, as the path around it, if there is one.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(n: &str, g: &Graph, stack: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys().find_map(|n| visit(n, g, &mut Vec::new(), &mut done))
}

/// The tree to read: this crate's `src/`, or another checkout's (to see the
/// test catch a cycle: `MODULE_GRAPH_SRC=../old/src cargo test --test module_graph`).
fn src() -> PathBuf {
    std::env::var_os("MODULE_GRAPH_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

/// The top-level module a file under `src/` belongs to (`None`: the roots).
fn top_module(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.trim_end_matches(".rs").to_string();
    (name != "lib" && name != "main").then_some(name)
}

#[test]
fn top_level_modules_import_each_other_without_a_cycle() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph = Graph::new();
    for f in &files {
        let Some(module) = top_module(f) else { continue };
        let refs = referenced(&code(&std::fs::read_to_string(f).unwrap()), "crate::");
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(refs.into_iter().filter(|r| *r != module));
    }
    assert!(graph.len() > 10, "the walk found the modules: {graph:?}");
    assert!(
        graph["coordinator"].contains("registry"),
        "the reader sees imports: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("modules import each other in a circle: {}", cycle.join(" -> "));
    }
}

#[test]
fn files_of_one_folder_import_each_other_without_a_cycle() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut folders: BTreeMap<PathBuf, Graph> = BTreeMap::new();
    for f in &files {
        let stem = f.file_stem().unwrap().to_str().unwrap();
        // `mod.rs` is its folder's parent, not a sibling of its files.
        if stem == "mod" || stem == "lib" || stem == "main" {
            continue;
        }
        let refs = referenced(&code(&std::fs::read_to_string(f).unwrap()), "super::");
        let folder = f.parent().unwrap().to_path_buf();
        folders
            .entry(folder)
            .or_default()
            .entry(stem.to_string())
            .or_default()
            .extend(refs);
    }
    for (folder, mut graph) in folders {
        // Only edges between sibling files count.
        let siblings: BTreeSet<String> = graph.keys().cloned().collect();
        for refs in graph.values_mut() {
            refs.retain(|r| siblings.contains(r));
        }
        if let Some(cycle) = find_cycle(&graph) {
            panic!(
                "files in {} import each other in a circle: {}",
                folder.display(),
                cycle.join(" -> ")
            );
        }
    }
}

#[test]
fn the_reader_finds_names_in_every_form() {
    let c = code("use crate::{a::X, b, c::{d, e}};\nlet x = crate::f::g();\n// crate::comment\nuse crate::h;");
    let names = referenced(&c, "crate::");
    assert_eq!(names, ["a", "b", "c", "f", "h"].iter().map(|s| s.to_string()).collect());
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&g), Some(vec!["a".into(), "b".into(), "a".into()]));
    g.get_mut("b").unwrap().clear();
    assert_eq!(find_cycle(&g), None);
}
