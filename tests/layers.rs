//! The host's structure, as docs/architecture.md draws it: each folder of
//! host/src is a layer (commands, runtime, guest, imports, ops, config, top
//! to bottom), a module uses only its own layer and those below, and the
//! only cycle among modules is the imports layer's hub (`GuestState` and
//! the interfaces it holds a part of, justified in imports/mod.rs).

use crate::support::repo_root;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const LAYERS: [&str; 6] = ["commands", "runtime", "guest", "imports", "ops", "config"];

/// Each module (`layer::name`; a folder module's files count as the
/// folder's) and the modules its code (tests left out) names as
/// `crate::layer::name`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = repo_root().join("host/src");
    let mut graph = BTreeMap::new();
    for layer in LAYERS {
        walk(&src.join(layer), &mut |path| {
            let rel = path.strip_prefix(&src).unwrap().with_extension("");
            let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            let module = match parts.as_slice() {
                [layer, name, ..] if name != "mod" => format!("{layer}::{name}"),
                [layer, ..] => layer.clone(),
                [] => unreachable!(),
            };
            let text = std::fs::read_to_string(path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            let used = graph.entry(module.clone()).or_insert_with(BTreeSet::new);
            for (at, _) in code.match_indices("crate::") {
                let path: String = code[at + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let mut names = path.split("::").filter(|s| !s.is_empty());
                if let (Some(layer), Some(name)) = (names.next(), names.next()) {
                    let target = format!("{layer}::{name}");
                    if target != module && LAYERS.contains(&layer) {
                        used.insert(target);
                    }
                }
            }
        });
    }
    graph
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, f);
        } else if path.extension().is_some_and(|e| e == "rs") {
            f(&path);
        }
    }
}

fn layer(module: &str) -> usize {
    let name = module.split("::").next().unwrap();
    LAYERS.iter().position(|l| *l == name).unwrap()
}

#[test]
fn every_import_points_down_a_layer_or_within_one() {
    let graph = imports();
    assert!(graph.len() > 30, "the modules were found: {:?}", graph.keys());
    let upward: Vec<String> = graph
        .iter()
        .flat_map(|(from, to)| to.iter().filter(|t| layer(t) < layer(from)).map(move |t| format!("{from} -> {t}")))
        .collect();
    assert!(upward.is_empty(), "imports that point up a layer:\n{}", upward.join("\n"));
}

#[test]
fn the_only_cycle_is_the_imports_hub() {
    let graph = imports();
    // A module is in a cycle when it reaches itself; its cycle is the set
    // of modules it reaches that reach it back.
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = vec![from];
        while let Some(m) = todo.pop() {
            for next in graph.get(m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next);
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> = graph.keys().map(|m| (m, reach(m))).collect();
    let mut cycles = BTreeSet::new();
    for (m, r) in &reached {
        if r.contains(*m) {
            let cycle: BTreeSet<&String> = r.iter().filter(|o| reached[o].contains(*m)).collect();
            cycles.insert(cycle.into_iter().cloned().collect::<Vec<_>>());
        }
    }
    let others: Vec<&Vec<String>> = cycles
        .iter()
        .filter(|c| !(c.contains(&"imports::state".to_string()) && c.iter().all(|m| m.starts_with("imports::"))))
        .collect();
    assert!(others.is_empty(), "cycles besides the imports hub: {others:?}");
}
