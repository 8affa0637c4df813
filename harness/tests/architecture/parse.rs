//! What one file says about imports: the paths it names (in `use` trees and in
//! code), the names its `use`s bind (what a re-export is followed through), and
//! which of its children are test modules. Items under `#[cfg(test)]` (inline
//! test modules, test-only imports) are skipped, and so are the files of
//! `#[cfg(test)] mod name;` (the caller drops them).

use std::collections::BTreeSet;

/// A path as written, in the module it was written in (inline modules nest it).
#[derive(Debug, Clone)]
pub struct Written {
    /// The segments, `crate`, `self` and `super` included.
    pub segs: Vec<String>,
    /// The module it was written in, relative to the file's module.
    pub inner: Vec<String>,
}

/// A name a `use` binds.
#[derive(Debug, Clone)]
pub struct Bind {
    /// The name (`*` for a glob, `_` for a trait imported for its methods).
    pub name: String,
    /// What it binds.
    pub path: Written,
    /// Whether the `use` is `pub` (any `pub(…)` too): a re-export, which others may name.
    public: bool,
}

impl Bind {
    /// Whether the file itself relies on the import: a private `use` is there for the file's
    /// own code (rustc warns of unused ones); a re-export only if the file names it too.
    pub fn used_by(&self, p: &Parsed) -> bool {
        !self.public || p.used.contains(&self.name)
    }
}

/// One file's imports.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Every `a::b` path in code (the caller keeps those that lead into the tree).
    pub paths: Vec<Written>,
    /// The names `use` binds, with what they bind (a glob binds `*`), in every `use` tree.
    pub binds: Vec<Bind>,
    /// Every identifier that heads a path or stands alone in code (outside `use` trees).
    pub used: BTreeSet<String>,
    /// Modules declared `#[cfg(test)] mod name;`.
    pub test_children: BTreeSet<String>,
    /// Modules declared `mod name;` at the file's top level (test modules aside).
    pub declared: BTreeSet<String>,
    /// Inline modules (`mod name { … }`, test modules aside), relative to the file's module.
    pub inline: BTreeSet<Vec<String>>,
}

struct Parser<'t> {
    t: &'t [String],
    i: usize,
    /// Inline modules open at this point, with the brace depth each was opened at.
    inner: Vec<(String, usize)>,
    depth: usize,
    /// Whether the `use` being read is `pub`.
    public: bool,
    out: Parsed,
}

/// Parses a file's tokens.
pub fn parse(t: &[String]) -> Parsed {
    let mut p = Parser { t, i: 0, inner: Vec::new(), depth: 0, public: false, out: Parsed::default() };
    while p.i < t.len() {
        p.step();
    }
    p.out
}

impl Parser<'_> {
    fn at(&self, k: usize) -> &str {
        self.t.get(self.i + k).map_or("", String::as_str)
    }

    fn inner(&self) -> Vec<String> {
        self.inner.iter().map(|(n, _)| n.clone()).collect()
    }

    fn step(&mut self) {
        match self.at(0) {
            "#" => self.attribute(),
            "{" => {
                self.depth += 1;
                self.i += 1;
            }
            "}" => {
                self.depth = self.depth.saturating_sub(1);
                if self.inner.last().is_some_and(|(_, d)| *d == self.depth) {
                    self.inner.pop();
                }
                self.i += 1;
            }
            "use" => self.use_statement(),
            "mod" if self.at(2) == ";" => {
                if self.inner.is_empty() {
                    self.out.declared.insert(self.at(1).to_string());
                }
                self.i += 3;
            }
            "mod" if self.at(2) == "{" => {
                let mut path = self.inner();
                path.push(self.at(1).to_string());
                self.out.inline.insert(path);
                self.inner.push((self.at(1).to_string(), self.depth));
                self.depth += 1;
                self.i += 3;
            }
            _ => self.code_path(),
        }
    }

    /// An attribute; `#[cfg(test)]` skips the item it is on.
    fn attribute(&mut self) {
        let start = self.i;
        self.i += if self.at(1) == "!" { 2 } else { 1 };
        let close = self.matching(self.i);
        let test = self.t[start..close].join(" ").ends_with("[ cfg ( test ) ]");
        self.i = close;
        if test {
            self.skip_item();
        }
    }

    /// Past the bracket that closes the one at `open`.
    fn matching(&self, open: usize) -> usize {
        let mut depth = 0i32;
        for (k, tok) in self.t[open..].iter().enumerate() {
            match tok.as_str() {
                "(" | "[" | "{" => depth += 1,
                ")" | "]" | "}" => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                return open + k + 1;
            }
        }
        self.t.len()
    }

    /// Skips one item (after any further attributes), noting `mod name;` as a test module.
    fn skip_item(&mut self) {
        while self.at(0) == "#" {
            self.i = self.matching(self.i + 1);
        }
        let head: Vec<&str> = (0..6).map(|k| self.at(k)).collect();
        if let Some(m) = head.iter().position(|w| *w == "mod").filter(|&m| head.get(m + 2) == Some(&";")) {
            self.out.test_children.insert(head[m + 1].to_string());
        }
        while self.i < self.t.len() {
            match self.at(0) {
                ";" => break,
                "}" => return, // the end of the block the item was in
                "(" | "[" | "{" => {
                    let brace = self.at(0) == "{";
                    self.i = self.matching(self.i);
                    if brace {
                        return;
                    }
                }
                _ => self.i += 1,
            }
        }
        self.i += 1;
    }

    /// `use` and its tree, up to the `;`.
    fn use_statement(&mut self) {
        let before = |k: usize| self.i.checked_sub(k).map_or("", |j| self.t[j].as_str());
        self.public = before(1) == "pub" || before(1) == ")" && (2..8).any(|k| before(k) == "pub" && before(k - 1) == "(");
        self.i += 1;
        if self.at(0) == "::" {
            self.i += 1; // `use ::extern_crate::…`: another crate
            while self.i < self.t.len() && self.at(0) != ";" {
                self.i += 1;
            }
            return;
        }
        self.tree(Vec::new());
        self.i += 1;
    }

    /// One use tree with `prefix` before it.
    fn tree(&mut self, mut prefix: Vec<String>) {
        loop {
            match self.at(0) {
                "{" => {
                    self.i += 1;
                    while !matches!(self.at(0), "}" | "") {
                        self.tree(prefix.clone());
                        if self.at(0) == "," {
                            self.i += 1;
                        }
                    }
                    self.i += 1;
                    return;
                }
                "*" => {
                    self.i += 1;
                    return self.bind("*".into(), prefix);
                }
                seg => {
                    let seg = seg.to_string();
                    self.i += 1;
                    if self.at(0) == "::" {
                        self.i += 1;
                        prefix.push(seg);
                        continue;
                    }
                    let name = if self.at(0) == "as" {
                        self.t[self.i + 1].clone()
                    } else if seg == "self" {
                        prefix.last().cloned().unwrap_or_default()
                    } else {
                        seg.clone()
                    };
                    if self.at(0) == "as" {
                        self.i += 2;
                    }
                    if seg != "self" {
                        prefix.push(seg);
                    }
                    return self.bind(name, prefix);
                }
            }
        }
    }

    fn bind(&mut self, name: String, segs: Vec<String>) {
        self.out.binds.push(Bind { name, path: Written { segs, inner: self.inner() }, public: self.public });
    }

    /// A path in code: `head::seg::…` not itself after `::`.
    fn code_path(&mut self) {
        let head = self.at(0).to_string();
        let after_sep = self.i > 0 && self.t[self.i - 1] == "::";
        self.i += 1;
        if !after_sep {
            self.out.used.insert(head.clone());
        }
        if after_sep || self.at(0) != "::" || !head.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$') {
            return;
        }
        let mut segs = vec![head];
        while self.at(0) == "::" && self.at(1).chars().next().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            segs.push(self.at(1).to_string());
            self.i += 2;
        }
        self.out.paths.push(Written { segs, inner: self.inner() });
    }
}
