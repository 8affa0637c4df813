//! No file-level import cycle in `harness/src`.
//!
//! The test reads every file of the library and the binary, from `lib.rs` and
//! `main.rs` through their `mod` declarations, and draws an arrow A → B when A
//! names an item defined in B: in a `use` (`crate::`, `super::`, `self::`, a
//! module declared in A, or `nanhunt::` from the binary) or as a path in code
//! (`crate::a::b::item`, `child::item`). A path leads to the deepest module
//! file that exists; when the item there is a `use` (a re-export such as
//! `pub use rows::RowCut`, or a plain import), the arrow follows it to the
//! file that defines the item. `mod x;` itself is no arrow. Test code is left
//! out: items under `#[cfg(test)]` (the inline `mod tests`) and the files of
//! `#[cfg(test)] mod name;` (the `tests.rs` and `amp_tests.rs` files).
//! Every strongly connected set of files is reported with its arrows.

mod parse;
mod tokens;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use parse::{Parsed, Written};

/// Which crate of the package a module is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Crate {
    Lib,
    Bin,
}

/// A module: its crate and its path from the crate's root.
type Module = (Crate, Vec<String>);

/// Arrows: file → file → the names that tie them.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// The package's sources as modules.
struct Tree {
    /// Each module's file (relative to `src`); an inline module maps to its file.
    modules: BTreeMap<Module, String>,
    /// Each file's module and what it says.
    files: BTreeMap<String, (Module, Parsed)>,
}

impl Tree {
    /// Reads the crates rooted at `src/lib.rs` and `src/main.rs` (either may be absent).
    fn read(src: &Path) -> Tree {
        let mut tree = Tree { modules: BTreeMap::new(), files: BTreeMap::new() };
        for (root, krate) in [("lib.rs", Crate::Lib), ("main.rs", Crate::Bin)] {
            if src.join(root).exists() {
                tree.add(src, root.to_string(), (krate, Vec::new()));
            }
        }
        tree
    }

    /// Adds `file` as `module`, then the modules it declares (test modules left out).
    fn add(&mut self, src: &Path, file: String, module: Module) {
        let text = std::fs::read_to_string(src.join(&file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let parsed = parse::parse(&tokens::tokens(&text));
        let stem = file.strip_suffix(".rs").expect("only .rs files are read");
        let owns_dir = ["lib", "main", "mod"].iter().any(|r| stem == *r || stem.ends_with(&format!("/{r}")));
        let dir = if owns_dir { stem.rsplit_once('/').map_or(String::new(), |(d, _)| format!("{d}/")) } else { format!("{stem}/") };
        self.modules.insert(module.clone(), file.clone());
        for inline in &parsed.inline {
            self.modules.insert((module.0, module.1.iter().chain(inline).cloned().collect()), file.clone());
        }
        for name in &parsed.declared {
            let path = (module.0, module.1.iter().chain([name]).cloned().collect());
            let f = if src.join(format!("{dir}{name}.rs")).exists() { format!("{dir}{name}.rs") } else { format!("{dir}{name}/mod.rs") };
            self.add(src, f, path);
        }
        self.files.insert(file, (module, parsed));
    }

    /// The module a path written in `module` starts from, as an absolute path; `None` if it
    /// leads out of the package (another crate, a local name).
    fn absolute(&self, module: &Module, w: &Written) -> Option<Module> {
        let ctx: Vec<String> = module.1.iter().chain(&w.inner).cloned().collect();
        let (head, rest) = w.segs.split_first()?;
        match head.as_str() {
            "crate" | "$crate" => Some((module.0, rest.to_vec())),
            "self" => Some((module.0, ctx.into_iter().chain(rest.iter().cloned()).collect())),
            "super" => {
                let ups = w.segs.iter().take_while(|s| *s == "super").count();
                let base = ctx.len().checked_sub(ups)?;
                Some((module.0, ctx[..base].iter().chain(&w.segs[ups..]).cloned().collect()))
            }
            name if module.0 == Crate::Bin && name == env!("CARGO_PKG_NAME") => Some((Crate::Lib, rest.to_vec())),
            _ => {
                let path: Vec<String> = ctx.into_iter().chain(w.segs.iter().cloned()).collect();
                self.modules.contains_key(&(module.0, path[..path.len() - rest.len()].to_vec())).then_some((module.0, path))
            }
        }
    }

    /// The file that defines what `w` (written in `module`) names, and the item's name (`None`
    /// for a module itself); re-exports and imports are followed (at most `hops` of them).
    fn resolve(&self, module: &Module, w: &Written, hops: usize) -> Option<(String, Option<String>)> {
        let (krate, segs) = self.absolute(module, w)?;
        let k = (0..=segs.len()).rev().find(|&k| self.modules.contains_key(&(krate, segs[..k].to_vec())))?;
        let file = &self.modules[&(krate, segs[..k].to_vec())];
        let Some(name) = segs.get(k) else { return Some((file.clone(), None)) };
        let (file_module, parsed) = &self.files[file];
        let inner = &segs[file_module.1.len()..k];
        match parsed.binds.iter().find(|b| b.name == *name && b.path.inner == inner) {
            Some(b) if hops > 0 => {
                let segs = b.path.segs.iter().chain(&segs[k + 1..]).cloned().collect();
                let (f, _) = self.resolve(file_module, &Written { segs, inner: b.path.inner.clone() }, hops - 1)?;
                Some((f, Some(name.clone())))
            }
            _ => Some((file.clone(), Some(name.clone()))),
        }
    }

    /// A path in code with its head replaced by what a `use` of this file binds it to, if one
    /// does; `None` for a path that starts at a module declared here (`child::item`, see
    /// [`CHILD_PATHS`]) or outside the package.
    fn through_use(parsed: &Parsed, w: &Written) -> Option<Written> {
        let head = w.segs[0].as_str();
        if matches!(head, "crate" | "$crate" | "self" | "super") || head == env!("CARGO_PKG_NAME") {
            return Some(w.clone());
        }
        match parsed.binds.iter().find(|b| b.name == head && b.path.inner == w.inner) {
            Some(b) => Some(Written { segs: b.path.segs.iter().chain(&w.segs[1..]).cloned().collect(), inner: w.inner.clone() }),
            None => CHILD_PATHS.then(|| w.clone()),
        }
    }

    /// The arrows between files: every import the file relies on (a glob imports its module's
    /// items; importing a module alone is no arrow) and every path in code.
    fn graph(&self) -> Graph {
        let mut g = Graph::new();
        for (file, (module, parsed)) in &self.files {
            let out = g.entry(file.clone()).or_default();
            let imports = parsed.binds.iter().filter(|b| b.used_by(parsed)).map(|b| (b.path.clone(), b.name == "*"));
            let code = parsed.paths.iter().filter_map(|w| Some((Self::through_use(parsed, w)?, false)));
            for (w, glob) in imports.chain(code) {
                match self.resolve(module, &w, 16) {
                    Some((to, name)) if to != *file && (name.is_some() || glob) => {
                        out.entry(to).or_default().insert(name.unwrap_or_else(|| "*".into()));
                    }
                    _ => {}
                }
            }
        }
        g
    }
}

/// Whether a path in code that starts at a module the file declares (`rows::ddmin(…)` in
/// `minimize/mod.rs`) is an arrow. It is not: a parent calling into its children while they
/// use the parent's types (`super::Problem`) is how a module and its files work together;
/// what counts is `use` (of `crate::`, `super::`, `self::` or a child) and `crate::`/`super::`
/// paths in code.
const CHILD_PATHS: bool = false;

/// The strongly connected sets of two or more files (Tarjan), each sorted, in file order.
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct State<'g> {
        g: &'g Graph,
        index: BTreeMap<&'g str, (usize, usize)>,
        stack: Vec<&'g str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        let n = s.index.len();
        s.index.insert(v, (n, n));
        s.stack.push(v);
        for w in s.g.get(v).into_iter().flat_map(|e| e.keys()) {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let low = s.index[w.as_str()].1.min(s.index[v].1);
                s.index.get_mut(v).unwrap().1 = low;
            } else if s.stack.contains(&w.as_str()) {
                let low = s.index[w.as_str()].0.min(s.index[v].1);
                s.index.get_mut(v).unwrap().1 = low;
            }
        }
        if s.index[v].0 == s.index[v].1 {
            let at = s.stack.iter().rposition(|x| *x == v).unwrap();
            let mut set: Vec<String> = s.stack.drain(at..).map(str::to_string).collect();
            if set.len() > 1 {
                set.sort();
                s.out.push(set);
            }
        }
    }
    let mut s = State { g, index: BTreeMap::new(), stack: Vec::new(), out: Vec::new() };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out.sort();
    s.out
}

/// Each cycle with the arrows inside it and the names on them.
fn describe(g: &Graph, cycles: &[Vec<String>]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, set) in cycles.iter().enumerate() {
        out.push(format!("cycle {}: {} files", i + 1, set.len()));
        for a in set {
            for (b, names) in g[a].iter().filter(|(b, _)| set.contains(b)) {
                out.push(format!("  {a} -> {b}: {}", names.iter().cloned().collect::<Vec<_>>().join(", ")));
            }
        }
    }
    out
}

#[test]
fn no_file_level_import_cycle_in_the_sources() {
    let tree = Tree::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let g = tree.graph();
    // The graph is read at all: known arrows are there, through a re-export and from the binary.
    assert!(g["search/minimize/mod.rs"].contains_key("search/finding.rs"), "{:?}", g["search/minimize/mod.rs"]);
    let finding = &g["search/finding.rs"];
    assert!(finding.contains_key("run/outcome.rs") && !finding.contains_key("run/mod.rs"), "`crate::run::Outcome` leads through run/mod.rs's re-export: {finding:?}");
    assert!(g["cli/run.rs"].keys().any(|f| f.starts_with("run/")), "the binary names the library's items");
    assert!(!tree.files.contains_key("run/code/tests.rs") && !tree.files.contains_key("run/train/amp_tests.rs"), "test files are left out");
    // The knob's name is a leaf: its list names each definition (`optimizer::Lr`) as a child's path, no arrow.
    assert!(g["scenario/knob/mod.rs"].is_empty(), "{:?}", g["scenario/knob/mod.rs"]);
    let found = cycles(&g);
    let known: Vec<Vec<String>> = KNOWN.iter().map(|set| set.iter().map(|f| f.to_string()).collect()).collect();
    assert!(found == known, "file-level import cycles in harness/src (beyond none but `KNOWN`, which must match exactly):\n{}", describe(&g, &found).join("\n"));
}

/// The cycles still to break, each as its sorted files; the test fails if one grows, shrinks or
/// goes (then take it off this list). None is left: the last, through the knob table, was broken
/// by naming a knob in a leaf (`scenario/knob/mod.rs`) apart from its table (`knob/table.rs`).
const KNOWN: &[&[&str]] = &[];

/// Writes `files` under a new temporary `src` and returns the report of its cycles.
fn cycles_of(files: &[(&str, &str)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let g = Tree::read(dir.path()).graph();
    describe(&g, &cycles(&g))
}

#[test]
fn a_cycle_through_a_re_export_is_found_and_test_code_is_no_arrow() {
    let report = cycles_of(&[
        ("lib.rs", "mod a;\nmod b;\nmod c;\n"),
        // `a` re-exports `Thing`, which `a/inner.rs` defines.
        ("a/mod.rs", "//! Names `crate::b::B` in a doc comment only.\nmod inner;\npub use inner::Thing;\nconst S: &str = \"crate::c::C\";\n#[cfg(test)]\nmod tests { use crate::c::C; }\n#[cfg(test)]\nmod more;\n"),
        ("a/inner.rs", "pub struct Thing;\nfn f() -> super::super::b::B { todo!() }\n"),
        ("a/more.rs", "use crate::c::C;\n"),
        ("b.rs", "use crate::a::Thing;\npub struct B;\n"),
        ("c.rs", "pub struct C;\nfn g() -> crate::a::Thing { crate::a::Thing }\n"),
    ]);
    assert_eq!(
        report,
        ["cycle 1: 2 files", "  a/inner.rs -> b.rs: B", "  b.rs -> a/inner.rs: Thing"],
        "the arrow leads past a/mod.rs to the defining file; a/mod.rs's test module, its test file, comments and strings tie it to nothing"
    );
}

#[test]
fn a_use_tree_with_self_super_and_aliases_is_followed() {
    let report = cycles_of(&[
        ("lib.rs", "pub mod x;\npub use x::y::Why as Alias;\n"),
        ("x/mod.rs", "pub mod y;\nuse self::y::{self as yy, Why};\npub fn f() -> Why { yy::make() }\n"),
        ("x/y.rs", "pub struct Why;\npub fn make() -> Why { Why }\npub fn g() { crate::Alias; super::f(); }\n"),
    ]);
    assert_eq!(
        report,
        ["cycle 1: 2 files", "  x/mod.rs -> x/y.rs: Why, make", "  x/y.rs -> x/mod.rs: f"],
        "`yy::make` is read through its `use`; `crate::Alias` leads to x/y.rs itself (no arrow); `super::f` to x/mod.rs"
    );
}
