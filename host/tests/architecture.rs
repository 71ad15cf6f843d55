//! The shape of the code, checked so that it stays readable: the library's
//! modules depend on each other one way (no cycle between top-level modules
//! of `host/src`, and `error` depends on nothing else of the crate), and no
//! product function grows past [`MAX_FUNCTION_LINES`].
//!
//! Both read the sources as text, outside comments and strings. A
//! dependency is a `crate::module` path (or `super::module` from a
//! top-level module), unit tests included: a test reaching up the layers
//! is a cycle to a reader too. Function lengths leave out the trailing
//! `#[cfg(test)]` module, where this crate keeps its unit tests.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The longest a product function may be, in lines from its `fn` to its
/// closing brace.
const MAX_FUNCTION_LINES: usize = 80;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the host crate is in the workspace")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without its trailing unit test module, comments and string
/// contents: the product code.
fn product_code(source: &str) -> String {
    let source = match source.find("#[cfg(test)]\nmod tests") {
        Some(at) => &source[..at],
        None => source,
    };
    code(source)
}

/// The source without comments and string contents: what it depends on.
fn code(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_string = false;
                    out.push('"');
                }
                '\n' => out.push('\n'),
                _ => {}
            }
            continue;
        }
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut last = ' ';
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                    }
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '"' => {
                in_string = true;
                out.push('"');
            }
            // A char literal such as '"' or '{' (a lifetime has no closing quote
            // two or three characters on).
            '\'' => {
                let ahead: String = chars.clone().take(3).collect();
                let literal_len = if ahead.starts_with('\\') {
                    ahead.find('\'').filter(|&i| i > 1)
                } else {
                    ahead.chars().nth(1).filter(|&c| c == '\'').map(|_| 1)
                };
                match literal_len {
                    Some(n) => {
                        for _ in 0..=n {
                            chars.next();
                        }
                        out.push_str("' '");
                    }
                    None => out.push('\''),
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The top-level module a file of `host/src` belongs to (`None` for the
/// crate root and for the binary's own files).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main" | "cli")).then(|| name.to_owned())
}

/// The first path segments following `prefix` in `code`: `a` for
/// `crate::a::b`, and `a`, `c` for a group `crate::{a::b, c}`.
fn paths_after<'a>(code: &'a str, prefix: &'a str) -> Vec<&'a str> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        match rest.strip_prefix('{') {
            Some(group) => out.extend(group_heads(group)),
            None => out.extend(ident_at(rest)),
        }
    }
    out
}

/// The identifier `text` starts with, if any.
fn ident_at(text: &str) -> Option<&str> {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    (end > 0).then(|| &text[..end])
}

/// The first identifier of each item of a `{…}` group (opening brace
/// already taken), nested groups skipped.
fn group_heads(group: &str) -> Vec<&str> {
    let mut heads = Vec::new();
    let (mut depth, mut item_start) = (0usize, true);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if item_start && depth == 0 && !c.is_whitespace() => {
                item_start = false;
                heads.extend(ident_at(&group[i..]));
            }
            _ => {}
        }
    }
    heads
}

/// The modules of `host/src` and the ones each depends on.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = workspace().join("host/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let code = code(&fs::read_to_string(file).expect("a readable source"));
        // `super::` names the crate root only in a top-level module's own file.
        let depth = file
            .strip_prefix(&src)
            .expect("under src")
            .components()
            .count();
        let top_level = depth == 1 || file.ends_with(format!("{module}/mod.rs"));
        let mut targets: Vec<&str> = paths_after(&code, "crate::");
        if top_level {
            targets.extend(paths_after(&code, "super::"));
        }
        for target in targets {
            if target != module && modules.contains(target) {
                graph
                    .get_mut(&module)
                    .expect("every module has an entry")
                    .insert(target.to_owned());
            }
        }
    }
    graph
}

/// The graph's strongly connected groups of more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        groups: Vec<Vec<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, node: &'g str) {
            let n = self.index.len();
            self.index.insert(node, n);
            self.low.insert(node, n);
            self.stack.push(node);
            self.on_stack.insert(node);
            for next in &self.graph[node] {
                let next = next.as_str();
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[node].min(self.low[next]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(next) {
                    let low = self.low[node].min(self.index[next]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut group = Vec::new();
                while let Some(member) = self.stack.pop() {
                    self.on_stack.remove(member);
                    group.push(member.to_owned());
                    if member == node {
                        break;
                    }
                }
                if group.len() > 1 {
                    group.sort();
                    self.groups.push(group);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        groups: Vec::new(),
    };
    for node in graph.keys() {
        if !walk.index.contains_key(node.as_str()) {
            walk.visit(node);
        }
    }
    walk.groups.sort();
    walk.groups
}

fn describe(graph: &BTreeMap<String, BTreeSet<String>>) -> String {
    graph
        .iter()
        .map(|(module, deps)| {
            let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
            format!("  {module} -> {}\n", deps.join(", "))
        })
        .collect()
}

#[test]
fn modules_depend_on_each_other_one_way() {
    let graph = module_graph();
    assert!(
        graph.len() > 10 && graph.contains_key("error") && graph.contains_key("host"),
        "the sources were not found where expected:\n{}",
        describe(&graph)
    );
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "modules depend on each other in a cycle: {found:?}; the graph:\n{}",
        describe(&graph)
    );
}

#[test]
fn error_depends_on_nothing_else_of_the_crate() {
    let graph = module_graph();
    let outgoing = &graph["error"];
    assert!(
        outgoing.is_empty(),
        "`error` must be a leaf, but depends on: {outgoing:?}"
    );
}

/// Every function of product code with its length in lines, as
/// `path::name`.
fn function_lengths() -> Vec<(String, usize)> {
    let root = workspace();
    let mut files = Vec::new();
    for dir in [
        "host/src",
        "plugin-sdk/src",
        "plugin-sdk/macros/src",
        "bench/src",
        "proto/src",
    ] {
        if root.join(dir).is_dir() {
            rust_files(&root.join(dir), &mut files);
        }
    }
    let mut out = Vec::new();
    for file in files {
        let code = product_code(&fs::read_to_string(&file).expect("a readable source"));
        let path = file
            .strip_prefix(&root)
            .expect("under the workspace")
            .display()
            .to_string();
        for (name, lines) in functions(&code) {
            out.push((format!("{path}::{name}"), lines));
        }
    }
    out
}

/// The functions in `code` (comments and strings already blanked) and the
/// lines each spans, its signature included.
fn functions(code: &str) -> Vec<(String, usize)> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    for (at, _) in code.match_indices("fn ") {
        if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
            continue;
        }
        let rest = &code[at + 3..];
        let name_end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if name_end == 0 {
            continue;
        }
        let Some(open) = body_start(rest) else {
            continue;
        };
        let mut depth = 0usize;
        let mut close = None;
        for (i, b) in rest.bytes().enumerate().skip(open) {
            match b {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(close) = close else { continue };
        let lines = rest[..close].matches('\n').count() + 1;
        out.push((rest[..name_end].to_owned(), lines));
    }
    out
}

/// Where a function's body opens in `rest` (its signature on): the first
/// `{` outside brackets, unless a `;` outside brackets comes first (a
/// declaration in a trait or an `extern` block has no body). Brackets
/// count, because a return type such as `[T; 16]` holds a `;`.
fn body_start(rest: &str) -> Option<usize> {
    let mut nesting = 0usize;
    for (i, b) in rest.bytes().enumerate() {
        match b {
            b'(' | b'[' => nesting += 1,
            b')' | b']' => nesting = nesting.saturating_sub(1),
            b'{' if nesting == 0 => return Some(i),
            b';' if nesting == 0 => return None,
            _ => {}
        }
    }
    None
}

#[test]
fn no_product_function_is_long() {
    let lengths = function_lengths();
    assert!(
        lengths.len() > 500,
        "only {} functions found: the sources were not where expected",
        lengths.len()
    );
    let long: Vec<String> = lengths
        .iter()
        .filter(|(_, lines)| *lines > MAX_FUNCTION_LINES)
        .map(|(name, lines)| format!("{name} ({lines} lines)"))
        .collect();
    assert!(
        long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines (split them by step): {long:?}"
    );
}

#[test]
fn the_reader_sees_code_not_comments_or_strings() {
    let code = product_code(
        "use crate::a; // crate::b\n/* crate::c */ let s = \"crate::d {\"; let c = '{';\n\
         fn f<'x>() { crate::e::g() }\n#[cfg(test)]\nmod tests { use crate::f; }\n",
    );
    let deps = paths_after(&code, "crate::");
    assert_eq!(deps, ["a", "e"]);
    let grouped = paths_after("use crate::{x::y, z, w::{q, r}};", "crate::");
    assert_eq!(grouped, ["x", "z", "w"]);
    assert_eq!(functions(&code), [("f".to_owned(), 1)]);
    let array = "fn g() -> [u8; 2] {\n    [0; 2]\n}\ntrait T { fn h(&self); }\n";
    assert_eq!(functions(array), [("g".to_owned(), 3)]);
}
