//! No import circle between files, in any crate of the workspace (ARCHITECTURE.md: "imports
//! point one way"). Each `.rs` file under a crate's `src/` is one node; an edge goes from a file
//! to the file of every module it names through `crate::`, `self::`, `super::` or a child
//! module's name (in `use` trees, in paths anywhere, and in macro arguments), the module being
//! the longest prefix of the path that is a file. A module and its own ancestors are left out:
//! a parent re-exporting its child and the child using its parent is how Rust lays out one
//! module, not a circle. A strongly connected set of two or more files is a circle.
//!
//! Circles known today in crates another change is rewriting are listed in [`KNOWN`]; a new
//! circle, or a known one that grew, fails the test; a known one that is gone is reported so
//! the list can shrink.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use petgraph::graph::{DiGraph, NodeIndex};
use syn::visit::Visit;

/// Circles that exist and are being removed elsewhere: crate, then the files. None today (issue 21
/// removed the last two); the list stays so a refactoring can park one openly.
const KNOWN: &[(&str, &[&str])] = &[];

/// A module path inside one crate, e.g. `["executor", "run"]`; the crate root is `[]`.
type ModPath = Vec<String>;

/// The module a file defines, from where it sits under `src/`.
fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).expect("a file under src/");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    // `main.rs`, `lib.rs` and `bin/<x>.rs` are crate roots.
    if parts.is_empty() && (stem == "lib" || stem == "main")
        || parts.first().is_some_and(|p| p == "bin")
    {
        return Vec::new();
    }
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    parts
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Every path a file names, with the module it is named from (the file's module plus any
/// inline `mod x { … }` around it).
struct Paths {
    module: ModPath,
    found: Vec<(ModPath, Vec<String>)>,
}

impl Paths {
    fn add(&mut self, segments: Vec<String>) {
        if !segments.is_empty() {
            self.found.push((self.module.clone(), segments));
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut s = prefix.clone();
                if n.ident != "self" {
                    s.push(n.ident.to_string());
                }
                self.add(s);
            }
            syn::UseTree::Rename(r) => {
                let mut s = prefix.clone();
                if r.ident != "self" {
                    s.push(r.ident.to_string());
                }
                self.add(s);
            }
            syn::UseTree::Glob(_) => self.add(prefix.clone()),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    /// `a :: b :: c` sequences inside a macro's arguments (`matches!`, `format!`, …).
    fn tokens(&mut self, tokens: proc_macro2::TokenStream) {
        let mut run: Vec<String> = Vec::new();
        let mut colons = 0;
        for tt in tokens {
            match tt {
                proc_macro2::TokenTree::Ident(i) => {
                    if colons != 2 && !run.is_empty() {
                        self.add(std::mem::take(&mut run));
                    }
                    run.push(i.to_string());
                    colons = 0;
                }
                proc_macro2::TokenTree::Punct(p) if p.as_char() == ':' => colons += 1,
                proc_macro2::TokenTree::Group(g) => {
                    self.add(std::mem::take(&mut run));
                    colons = 0;
                    self.tokens(g.stream());
                }
                _ => {
                    self.add(std::mem::take(&mut run));
                    colons = 0;
                }
            }
        }
        self.add(run);
    }
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if m.content.is_some() {
            self.module.push(m.ident.to_string());
            syn::visit::visit_item_mod(self, m);
            self.module.pop();
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let mut prefix = Vec::new();
        if u.leading_colon.is_none() {
            self.use_tree(&mut prefix, &u.tree);
        }
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        if p.leading_colon.is_none() {
            self.add(p.segments.iter().map(|s| s.ident.to_string()).collect());
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.tokens(m.tokens.clone());
        syn::visit::visit_macro(self, m);
    }
}

/// The file a path names, if it names a module of this crate: the longest prefix that is a
/// file's module.
fn resolve(files: &BTreeMap<ModPath, usize>, from: &ModPath, segments: &[String]) -> Option<usize> {
    let (mut base, rest): (ModPath, &[String]) = match segments[0].as_str() {
        "crate" => (Vec::new(), &segments[1..]),
        "self" => (from.clone(), &segments[1..]),
        "super" => {
            let mut base = from.clone();
            let mut rest = segments;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            (base, rest)
        }
        // A child module named without `self::` (2018 paths), or something else entirely.
        _ => {
            let mut child = from.clone();
            child.push(segments[0].clone());
            if !files.contains_key(&child) {
                return None;
            }
            (from.clone(), segments)
        }
    };
    let mut best = files.get(&base).copied();
    for s in rest {
        base.push(s.clone());
        match files.get(&base) {
            Some(&f) => best = Some(f),
            None => break,
        }
    }
    best
}

/// One circle: its files (relative to the crate, sorted) and the edges between them.
struct Circle {
    files: Vec<String>,
    edges: Vec<(String, String)>,
}

/// The circles of one crate.
fn circles(krate: &Path) -> Vec<Circle> {
    let src = krate.join("src");
    let mut list = Vec::new();
    rs_files(&src, &mut list);
    let modules: Vec<ModPath> = list.iter().map(|f| module_of(&src, f)).collect();
    let mut files: BTreeMap<ModPath, usize> = BTreeMap::new();
    for (i, m) in modules.iter().enumerate() {
        // A crate with both `lib.rs` and `main.rs`: the first one listed stands for the root.
        files.entry(m.clone()).or_insert(i);
    }
    let name = |i: usize| {
        list[i]
            .strip_prefix(krate)
            .expect("under the crate")
            .to_string_lossy()
            .into_owned()
    };
    let mut graph: DiGraph<usize, ()> = DiGraph::new();
    for i in 0..list.len() {
        graph.add_node(i);
    }
    for (i, file) in list.iter().enumerate() {
        let text = std::fs::read_to_string(file).expect("readable source");
        let ast = syn::parse_file(&text)
            .unwrap_or_else(|e| panic!("{}: does not parse: {e}", file.display()));
        let mut paths = Paths {
            module: modules[i].clone(),
            found: Vec::new(),
        };
        paths.visit_file(&ast);
        for (from, segments) in paths.found {
            let Some(j) = resolve(&files, &from, &segments) else {
                continue;
            };
            let (a, b) = (&modules[i], &modules[j]);
            // Itself, or one of its own ancestors or descendants.
            if a.starts_with(b) || b.starts_with(a) {
                continue;
            }
            graph.update_edge(NodeIndex::new(i), NodeIndex::new(j), ());
        }
    }
    let mut out = Vec::new();
    for scc in petgraph::algo::tarjan_scc(&graph) {
        if scc.len() < 2 {
            continue;
        }
        let members: BTreeSet<usize> = scc.iter().map(|n| n.index()).collect();
        let mut edges: Vec<(String, String)> = graph
            .raw_edges()
            .iter()
            .map(|e| (e.source().index(), e.target().index()))
            .filter(|(a, b)| members.contains(a) && members.contains(b))
            .map(|(a, b)| (name(a), name(b)))
            .collect();
        edges.sort();
        let mut files: Vec<String> = members.into_iter().map(name).collect();
        files.sort();
        out.push(Circle { files, edges });
    }
    out.sort_by(|a, b| a.files.cmp(&b.files));
    out
}

/// Every crate of the workspace: the root package and each directory with a `Cargo.toml` and a
/// `src/`.
fn crates() -> Vec<(String, PathBuf)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut out = vec![("berth".to_string(), root.clone())];
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("the workspace root")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Cargo.toml").is_file() && p.join("src").is_dir())
        .collect();
    dirs.sort();
    for d in dirs {
        let name = d
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        out.push((name, d));
    }
    out
}

#[test]
fn no_file_level_import_circle_in_any_crate() {
    let mut new = Vec::new();
    let mut seen_known = BTreeSet::new();
    for (name, dir) in crates() {
        for Circle { files, edges } in circles(&dir) {
            let known = KNOWN.iter().position(|(k, f)| {
                *k == name && f.iter().copied().eq(files.iter().map(String::as_str))
            });
            match known {
                Some(k) => {
                    seen_known.insert(k);
                    eprintln!("known circle in {name}: {}", files.join(" ⇄ "));
                }
                None => {
                    let edges: Vec<String> =
                        edges.iter().map(|(a, b)| format!("{a} → {b}")).collect();
                    new.push(format!(
                        "{name}: {}\n    {}",
                        files.join(" ⇄ "),
                        edges.join("\n    ")
                    ));
                }
            }
        }
    }
    for (k, (name, files)) in KNOWN.iter().enumerate() {
        if !seen_known.contains(&k) {
            eprintln!(
                "note: the known circle in {name} ({}) is gone: drop it from KNOWN",
                files.join(" ⇄ ")
            );
        }
    }
    assert!(
        new.is_empty(),
        "import circles between files (the edges are file → file it names):\n{}",
        new.join("\n")
    );
}

#[test]
fn the_check_finds_a_circle_and_ignores_a_parent_and_its_child() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a; mod b; mod c;").unwrap();
    // a ⇄ its child a/x (a module's own layout), b → c through a macro, c → b through `super`.
    std::fs::write(src.join("a/mod.rs"), "mod x; pub use x::X; pub struct A;").unwrap();
    std::fs::write(src.join("a/x.rs"), "use super::A; pub struct X(A);").unwrap();
    std::fs::write(
        src.join("b.rs"),
        "pub struct B; fn f(v: u8) -> bool { matches!(v, crate::c::K) }",
    )
    .unwrap();
    std::fs::write(
        src.join("c.rs"),
        "pub const K: u8 = 1; mod t { use super::super::b::B; }",
    )
    .unwrap();
    let found: Vec<Vec<String>> = circles(dir.path()).into_iter().map(|c| c.files).collect();
    assert_eq!(found, [["src/b.rs", "src/c.rs"]]);
}
