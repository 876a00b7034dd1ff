//! The crate's layering, checked from its sources (`cargo test -p embedded-registry
//! --test structure`): `hooks → domains → model → module`, with `lib.rs`, `main.rs`,
//! `converge` and `cli` as the edges above the hooks.
//!
//! Every `crate::…` path (in `use` items, grouped `use crate::{…}` items and inline
//! paths), every `super::…` path that leaves its top-level module and every
//! `embedded_registry::…` path of `main.rs` is an edge between two top-level modules.
//! The test fails when
//! (a) a file outside `lib.rs`, `main.rs`, `converge/` and `cli/` names `hooks`,
//! (b) a module imports one of a higher layer (`model` a domain or a hook, a domain a
//!     hook, `module` anything), or
//! (c) the top-level modules import each other in a circle.
//!
//! Unit-test modules (`#[cfg(test)] mod tests { … }`, the last item of a file) are not
//! production code and are left out: a hook's test may run the converge's jq.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layer of each top-level module: a module may import its own layer or lower.
fn layer(top: &str) -> Option<u8> {
    Some(match top {
        // Leaves: they import nothing from the crate.
        "module" | "untrusted" => 0,
        "model" => 1,
        "cache_only" | "clock" | "distribution" | "health" | "pki" | "rotation" | "secrets"
        | "storage" | "switch" | "upstream" | "warm" => 2,
        "hooks" => 3,
        "converge" | "cli" | "lib" | "main" => 4,
        _ => return None,
    })
}

/// Where `hooks` may be imported from.
const HOOK_IMPORTERS: [&str; 4] = ["lib", "main", "converge", "cli"];

/// The sources, as (module path, text without its unit-test module).
fn sources(root: &Path) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    let mut bound = 10_000;
    while let Some(dir) = dirs.pop() {
        bound -= 1;
        assert!(bound > 0, "too many directories under {}", root.display());
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let rel = p.strip_prefix(root).unwrap();
                let mut path: Vec<String> = rel
                    .with_extension("")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if path.last().is_some_and(|l| l == "mod") {
                    path.pop();
                }
                let text = std::fs::read_to_string(&p).unwrap();
                let text = match text.find("#[cfg(test)]\nmod tests {") {
                    Some(i) => text[..i].to_string(),
                    None => text,
                };
                out.push((path, text));
            }
        }
    }
    out
}

/// The top-level module a file belongs to (`lib` and `main` for the crate roots).
fn top_of(path: &[String]) -> String {
    path.first().cloned().unwrap_or_else(|| "lib".into())
}

/// The first segment of every item of a `{…}` group (depth-aware).
fn group_heads(group: &str) -> Vec<String> {
    let (mut depth, mut item, mut heads) = (0, String::new(), Vec::new());
    for ch in group.chars() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                heads.push(std::mem::take(&mut item));
                continue;
            }
            _ => {}
        }
        item.push(ch);
    }
    heads.push(item);
    heads
        .iter()
        .filter_map(|i| {
            let head: String = i
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (!head.is_empty()).then_some(head)
        })
        .collect()
}

/// The top-level modules a file's text names.
fn imports(path: &[String], text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for prefix in ["crate::", "embedded_registry::"] {
        if prefix == "embedded_registry::" && path != ["main"] {
            continue;
        }
        for (i, _) in text.match_indices(prefix) {
            let before = text[..i].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &text[i + prefix.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find("};").unwrap_or(group.len());
                out.extend(group_heads(&group[..end]));
            } else {
                out.insert(ident(rest));
            }
        }
    }
    // `super::` chains: resolved against the file's own module path.
    for (i, _) in text.match_indices("super::") {
        let before = text[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let mut rest = &text[i..];
        let mut up = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            rest = r;
            up += 1;
        }
        if up >= path.len() {
            // Leaves the top-level module: the next segment is a top-level module.
            out.insert(ident(rest));
        }
    }
    out.retain(|m| layer(m).is_some());
    out
}

/// The graph of top-level modules: importer → imported, with the files of each edge.
fn graph(root: &Path) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut g: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (path, text) in sources(root) {
        let top = top_of(&path);
        let file = if path.is_empty() {
            "lib.rs".to_string()
        } else {
            path.join("/")
        };
        let node = g.entry(top.clone()).or_default();
        for m in imports(&path, &text) {
            if m != top {
                node.entry(m).or_default().insert(file.clone());
            }
        }
    }
    g
}

/// Every rule broken, one line each.
fn violations(root: &Path) -> Vec<String> {
    let g = graph(root);
    let mut out = Vec::new();
    for (from, tos) in &g {
        let Some(from_layer) = layer(from) else {
            out.push(format!(
                "{from}: a top-level module the layering does not know; give it a layer in tests/structure.rs"
            ));
            continue;
        };
        for (to, files) in tos {
            let files = files.iter().cloned().collect::<Vec<_>>().join(", ");
            if to == "hooks" && !HOOK_IMPORTERS.contains(&from.as_str()) {
                out.push(format!(
                    "{from} imports hooks ({files}): only lib.rs, main.rs, converge and cli may"
                ));
            } else if layer(to).unwrap() > from_layer {
                out.push(format!(
                    "{from} (layer {from_layer}) imports {to} (layer {}) in {files}: layers point down (hooks → domains → model → module)",
                    layer(to).unwrap()
                ));
            }
        }
    }
    // Cycles: a depth-first search over the top-level graph.
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(n.to_string());
            out.push(format!("import circle: {}", cycle.join(" → ")));
            return;
        }
        if !done.insert(n.to_string()) {
            return;
        }
        stack.push(n.to_string());
        for to in g
            .get(n)
            .map(|t| t.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            visit(&to, g, stack, done, out);
        }
        stack.pop();
    }
    let mut done = BTreeSet::new();
    for n in g.keys() {
        visit(n, &g, &mut Vec::new(), &mut done, &mut out);
    }
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn the_layering_holds() {
    let v = violations(&src());
    assert!(v.is_empty(), "layering broken:\n{}", v.join("\n"));
}

/// The check sees what it must: the real tree has edges of every kind it rules on, so
/// an empty result above is not a parser that found nothing.
#[test]
fn the_check_sees_the_crate() {
    let g = graph(&src());
    let edge = |a: &str, b: &str| g.get(a).is_some_and(|t| t.contains_key(b));
    assert!(edge("hooks", "switch"), "{g:?}");
    assert!(edge("switch", "model"), "{g:?}");
    assert!(edge("model", "module"), "{g:?}");
    assert!(edge("main", "cli"), "{g:?}");
}

/// A tree that breaks each rule is reported once per rule.
#[test]
fn a_broken_tree_is_reported() {
    let dir = std::env::temp_dir().join(format!("structure-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let write = |p: &str, t: &str| {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, t).unwrap();
    };
    write(
        "lib.rs",
        "pub mod hooks;\npub mod model;\npub mod switch;\n",
    );
    write("model/mod.rs", "use crate::hooks::x;\n");
    write("switch/mod.rs", "use crate::{model::{a, b}, pki};\n");
    write("pki/mod.rs", "fn f() { crate::switch::g(); }\n");
    write(
        "hooks/mod.rs",
        "use crate::model::y;\n#[cfg(test)]\nmod tests {\n    use crate::converge::jq;\n}\n",
    );
    let v = violations(&dir);
    let g = graph(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        v.iter().any(|l| l.starts_with("model imports hooks")),
        "{v:?}"
    );
    assert!(
        v.iter()
            .any(|l| l.starts_with("import circle:") && l.contains("pki") && l.contains("switch")),
        "{v:?}"
    );
    assert!(
        !g["hooks"].contains_key("converge"),
        "tests are left out: {g:?}"
    );
    assert!(g["switch"].contains_key("pki"), "grouped use: {g:?}");
}
