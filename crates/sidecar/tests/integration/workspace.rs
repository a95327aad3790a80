//! The workspace's shape, checked: no dead relative link in the docs (files and `#anchors`),
//! no import cycle between the modules of any crate, no dependency loop between crates
//! (dev-dependencies included).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" && name != "node_modules" {
                files(&path, ext, out);
            }
        } else if name.ends_with(ext) {
            out.push(path);
        }
    }
}

/// GitHub's anchor for a heading: lowercase, spaces to `-`, punctuation but `-` and `_`
/// dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors a Markdown file's headings give (outside code fences).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// The targets of a Markdown file's inline links (outside code fences and code spans).
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Code spans may hold `](` that is not a link.
        let prose: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = prose.as_str();
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            if let Some(end) = rest.find(')') {
                out.push(rest[..end].to_owned());
                rest = &rest[end..];
            }
        }
    }
    out
}

#[test]
fn no_relative_link_in_the_docs_is_dead() {
    let root = Path::new(WORKSPACE);
    let mut docs = Vec::new();
    files(root, ".md", &mut docs);
    assert!(docs.len() >= 10, "found {docs:?}");
    let mut dead = Vec::new();
    let mut checked = 0;
    for doc in &docs {
        let text = std::fs::read_to_string(doc).expect("markdown");
        for link in links(&text) {
            let link = link.split_whitespace().next().unwrap_or_default();
            if link.is_empty() || link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = link.split_once('#').unwrap_or((link, ""));
            let target = if path.is_empty() {
                doc.clone()
            } else {
                doc.parent().expect("dir").join(path)
            };
            let name = doc.strip_prefix(root).unwrap_or(doc).display().to_string();
            if !target.exists() {
                dead.push(format!("{name}: {link} (no such file)"));
                continue;
            }
            if !anchor.is_empty() && target.extension().is_some_and(|e| e == "md") {
                let text = std::fs::read_to_string(&target).expect("markdown");
                if !anchors(&text).contains(anchor) {
                    dead.push(format!("{name}: {link} (no such heading)"));
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} relative links found");
    assert!(dead.is_empty(), "dead links:\n{}", dead.join("\n"));
}

/// A crate's modules by path (`["runtime", "check"]`), each with its source text (test
/// modules left out).
fn modules(src: &Path) -> BTreeMap<Vec<String>, String> {
    let mut sources = Vec::new();
    files(src, ".rs", &mut sources);
    let mut out = BTreeMap::new();
    for file in sources {
        let rel = file.strip_prefix(src).expect("under src");
        let mut path: Vec<String> = rel
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if path
            .iter()
            .any(|p| p == "tests" || p == "examples" || p == "bin")
        {
            continue;
        }
        if matches!(
            path.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            path.pop();
        }
        let text = std::fs::read_to_string(&file).expect("source");
        // Code only: comments and an inline `mod tests` are not imports.
        let code: String = text
            .split("#[cfg(test)]\nmod tests {")
            .next()
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        out.insert(path, code);
    }
    out
}

/// Edges between sibling modules: `a::b` naming `a::c::d` is an edge `a::b` → `a::c`.
fn sibling_edges(modules: &BTreeMap<Vec<String>, String>) -> BTreeSet<(Vec<String>, Vec<String>)> {
    let mut edges = BTreeSet::new();
    for (from, code) in modules {
        let mut named: Vec<Vec<String>> = Vec::new();
        for (prefix, base) in [
            ("crate::", Vec::new()),
            ("super::", {
                let mut p = from.clone();
                p.pop();
                p
            }),
        ] {
            for (i, _) in code.match_indices(prefix) {
                let before = code[..i].chars().last();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                let mut path = base.clone();
                for segment in code[i + prefix.len()..].split("::") {
                    let name: String = segment
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if name.is_empty() {
                        break;
                    }
                    path.push(name);
                    if !segment.chars().all(|c| c.is_alphanumeric() || c == '_') {
                        break;
                    }
                }
                // The longest prefix that is a module.
                while !path.is_empty() && !modules.contains_key(&path) {
                    path.pop();
                }
                named.push(path);
            }
        }
        for to in named {
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if from.len() > common && to.len() > common {
                edges.insert((from[..=common].to_vec(), to[..=common].to_vec()));
            }
        }
    }
    edges
}

fn cycle<N: Ord + Clone + std::fmt::Debug>(edges: &BTreeSet<(N, N)>) -> Option<Vec<N>> {
    fn visit<N: Ord + Clone>(
        node: &N,
        edges: &BTreeSet<(N, N)>,
        state: &mut BTreeMap<N, bool>,
        stack: &mut Vec<N>,
    ) -> Option<Vec<N>> {
        state.insert(node.clone(), true);
        stack.push(node.clone());
        for (_, to) in edges.iter().filter(|(from, _)| from == node) {
            match state.get(to) {
                Some(true) => {
                    let start = stack.iter().position(|n| n == to).unwrap_or(0);
                    let mut found = stack[start..].to_vec();
                    found.push(to.clone());
                    return Some(found);
                }
                Some(false) => {}
                None => {
                    if let Some(found) = visit(to, edges, state, stack) {
                        return Some(found);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.clone(), false);
        None
    }
    let mut state = BTreeMap::new();
    for (from, _) in edges {
        if !state.contains_key(from)
            && let Some(found) = visit(from, edges, &mut state, &mut Vec::new())
        {
            return Some(found);
        }
    }
    None
}

fn source_dirs() -> Vec<PathBuf> {
    let root = Path::new(WORKSPACE);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .expect("crates/")
        .flatten()
        .map(|e| e.path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    dirs.push(root.join("services/src"));
    dirs.sort();
    dirs
}

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    let mut found = Vec::new();
    for src in source_dirs() {
        let modules = modules(&src);
        let edges = sibling_edges(&modules);
        if let Some(cycle) = cycle(&edges) {
            found.push(format!("{}: {cycle:?}", src.display()));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let modules: BTreeMap<Vec<String>, String> = [
        (vec!["a".to_owned()], "use crate::b::Thing;".to_owned()),
        (vec!["b".to_owned()], "fn f() { crate::a::g() }".to_owned()),
        (vec!["c".to_owned()], "use crate::a;".to_owned()),
    ]
    .into_iter()
    .collect();
    let edges = sibling_edges(&modules);
    assert!(cycle(&edges).is_some(), "{edges:?}");
}

/// Each package's name and the workspace packages it depends on (any kind).
fn packages() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(WORKSPACE);
    let workspace = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    // Workspace dependencies that are paths: name → package name (the same here).
    let local: BTreeSet<String> = workspace
        .lines()
        .filter(|l| l.contains("path = "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    let mut manifests = Vec::new();
    files(root, "Cargo.toml", &mut manifests);
    let mut out = BTreeMap::new();
    for manifest in manifests {
        let text = std::fs::read_to_string(&manifest).expect("manifest");
        let mut name = None;
        let mut section = String::new();
        let mut deps = BTreeSet::new();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                section = line.to_owned();
                continue;
            }
            let key = line
                .split(['=', '.', ' '])
                .next()
                .unwrap_or_default()
                .to_owned();
            if section == "[package]" && key == "name" {
                name = line.split('"').nth(1).map(str::to_owned);
            }
            if section.ends_with("dependencies]")
                && !section.starts_with("[workspace")
                && (line.contains("path = ")
                    || (local.contains(&key) && line.contains("workspace")))
            {
                deps.insert(key);
            }
        }
        if let Some(name) = name {
            out.insert(name, deps);
        }
    }
    out
}

#[test]
fn no_crates_depend_on_each_other_in_a_loop() {
    let packages = packages();
    assert!(packages.contains_key("jwt-authz") && packages.contains_key("jwt-authz-core"));
    let edges: BTreeSet<(String, String)> = packages
        .iter()
        .flat_map(|(from, deps)| deps.iter().map(move |to| (from.clone(), to.clone())))
        .collect();
    assert!(
        edges.contains(&("jwt-authz".to_owned(), "jwt-authz-core".to_owned())),
        "{edges:?}"
    );
    assert_eq!(cycle(&edges), None);
    // The issuer mints with the pure crates, never the sidecar.
    assert!(
        !packages["issuer"].contains("jwt-authz"),
        "{:?}",
        packages["issuer"]
    );
}
