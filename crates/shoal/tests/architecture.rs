//! The shape of the code, checked: modules of `crates/shoal` form layers (no
//! import cycle), and no function or file grows past what a reader can hold.
//!
//! Dependencies are read from the source text: every `crate::a::b` path
//! (in `use` lines and in code, comments and tests left out) is an edge to
//! the longest module it names. Between modules that are not nested in one
//! another, an edge counts between the two children of their nearest common
//! ancestor: `commands::run::drive` using `report::json` is `commands` using
//! `report`; `commands::run::drive` using `commands::run::select` is `drive`
//! using `select`. A parent and its own children may use each other (a
//! child implements its parent's trait). Those edges must form no cycle.
//!
//! Sizes: no function outside tests over [`MAX_FUNCTION_LINES`] lines, in
//! the Rust crates or the Python plugin, and no file whose code (tests left
//! out) is over [`MAX_FILE_LINES`] lines unless its module doc says why, in a
//! line starting with `Size:`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FUNCTION_LINES: usize = 80;
const MAX_FILE_LINES: usize = 600;

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("crates/").to_owned()
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("a source directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The module path of a source file under `src`: `lib.rs` is `[]`,
/// `report/mod.rs` and `report.rs` are `["report"]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("a file under src");
    let mut parts: Vec<String> =
        relative.iter().map(|part| part.to_string_lossy().trim_end_matches(".rs").to_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// Source text without comments, string and character literals (each
/// replaced by a space, newlines kept so line numbers hold).
fn code_only(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    let mut index = 0;
    let blank = |text: &[u8], out: &mut String| {
        for &byte in text {
            out.push(if byte == b'\n' { '\n' } else { ' ' });
        }
    };
    while index < bytes.len() {
        let rest = &bytes[index..];
        let end = if rest.starts_with(b"//") {
            rest.iter().position(|&byte| byte == b'\n').unwrap_or(rest.len())
        } else if rest.starts_with(b"/*") {
            rest.windows(2).position(|pair| pair == b"*/").map_or(rest.len(), |at| at + 2)
        } else if rest.starts_with(b"r\"") || rest.starts_with(b"r#") || rest.starts_with(b"br\"") {
            let open = rest.iter().position(|&byte| byte == b'"').unwrap_or(0);
            let hashes = rest[..open].iter().filter(|&&byte| byte == b'#').count();
            let closing: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
            rest[open + 1..]
                .windows(closing.len())
                .position(|window| window == closing.as_slice())
                .map_or(rest.len(), |at| open + 1 + at + closing.len())
        } else if rest[0] == b'"' {
            let mut at = 1;
            while at < rest.len() && rest[at] != b'"' {
                at += if rest[at] == b'\\' { 2 } else { 1 };
            }
            (at + 1).min(rest.len())
        } else if rest[0] == b'\'' && rest.len() > 2 && (rest[1] == b'\\' || rest[2] == b'\'') {
            // A character literal ('{', '\n'), not a lifetime ('a).
            let from = if rest[1] == b'\\' { 3 } else { 2 };
            rest[from..].iter().position(|&byte| byte == b'\'').map_or(rest.len(), |at| from + at + 1)
        } else {
            let character = source[index..].chars().next().expect("a character");
            out.push(character);
            index += character.len_utf8();
            continue;
        };
        blank(&rest[..end], &mut out);
        index += end;
    }
    out
}

/// The code of a file without its `#[cfg(test)]` modules.
fn without_tests(code: &str) -> String {
    let mut kept = String::new();
    let mut lines = code.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" {
            // The item that follows: up to its closing brace (or `;`).
            let mut depth = 0i32;
            let mut opened = false;
            for line in lines.by_ref() {
                depth += line.matches('{').count() as i32 - line.matches('}').count() as i32;
                opened |= line.contains('{');
                kept.push('\n');
                if (opened && depth <= 0) || (!opened && line.trim_end().ends_with(';')) {
                    break;
                }
            }
            kept.push('\n');
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    kept
}

struct Module {
    path: Vec<String>,
    /// Code without comments, literals and tests.
    code: String,
}

fn modules(src: &Path) -> Vec<Module> {
    rust_files(src)
        .into_iter()
        .map(|file| {
            let source = std::fs::read_to_string(&file).expect("a readable source file");
            Module { path: module_of(src, &file), code: without_tests(&code_only(&source)) }
        })
        .collect()
}

/// The modules each module uses, by the longest module path its `crate::`
/// paths name.
fn dependencies(modules: &[Module]) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let known: BTreeSet<Vec<String>> = modules.iter().map(|module| module.path.clone()).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for module in modules {
        let targets = edges.entry(module.path.clone()).or_default();
        for (at, _) in module.code.match_indices("crate::") {
            let before = module.code[..at].chars().next_back();
            if before.is_some_and(|character| character.is_alphanumeric() || character == '_') {
                continue;
            }
            let segments: Vec<String> = module.code[at + "crate::".len()..]
                .split("::")
                .map(|segment| {
                    segment
                        .chars()
                        .take_while(|character| character.is_alphanumeric() || *character == '_')
                        .collect()
                })
                .take_while(|segment: &String| !segment.is_empty())
                .collect();
            let target = (0..=segments.len())
                .rev()
                .map(|length| segments[..length].to_vec())
                .find(|prefix| known.contains(prefix))
                .unwrap_or_default();
            if target != module.path {
                targets.insert(target);
            }
        }
    }
    edges
}

/// The edge `from → to` as an edge between siblings, or `None` when one
/// module contains the other.
fn between_siblings(from: &[String], to: &[String]) -> Option<(Vec<String>, Vec<String>)> {
    let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    if common == from.len() || common == to.len() {
        return None;
    }
    Some((from[..=common].to_vec(), to[..=common].to_vec()))
}

/// A cycle in `graph`, if there is one, as the modules along it.
fn find_cycle(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<Vec<String>>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        marks: &mut BTreeMap<Vec<String>, Mark>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = stack.iter().position(|entry| entry == node).expect("on the stack");
                let mut cycle = stack[start..].to_vec();
                cycle.push(node.clone());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.clone(), Mark::Open);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        marks.insert(node.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph.keys().find_map(|node| visit(node, graph, &mut marks, &mut Vec::new()))
}

fn name(path: &[String]) -> String {
    if path.is_empty() { "crate".to_owned() } else { path.join("::") }
}

#[test]
fn the_modules_of_shoal_form_layers_without_cycles() {
    let src = crates_dir().join("shoal").join("src");
    let modules = modules(&src);
    let mut siblings: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    // For each edge between siblings, one module-level edge that made it.
    type Edge = (Vec<String>, Vec<String>);
    let mut witnesses: BTreeMap<Edge, Edge> = BTreeMap::new();
    for (from, targets) in dependencies(&modules) {
        for to in targets {
            if let Some((a, b)) = between_siblings(&from, &to) {
                siblings.entry(a.clone()).or_default().insert(b.clone());
                witnesses.entry((a, b)).or_insert((from.clone(), to));
            }
        }
    }
    if let Some(cycle) = find_cycle(&siblings) {
        let steps: Vec<String> = cycle
            .windows(2)
            .map(|pair| {
                let (from, to) = &witnesses[&(pair[0].clone(), pair[1].clone())];
                format!("{} → {} (e.g. {} uses {})", name(&pair[0]), name(&pair[1]), name(from), name(to))
            })
            .collect();
        panic!("import cycle between modules of crates/shoal:\n  {}", steps.join("\n  "));
    }
}

/// Functions of `code` longer than the limit, as `(name, first line, lines)`.
fn long_rust_functions(code: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut long = Vec::new();
    for (number, line) in lines.iter().enumerate() {
        let Some(at) = line.find("fn ") else { continue };
        let head = &line[..at];
        let is_item = head.split_whitespace().all(|word| {
            matches!(word, "pub" | "pub(crate)" | "pub(super)" | "const" | "async" | "unsafe" | "extern")
                || word.starts_with("pub(")
        });
        if !is_item {
            continue;
        }
        let name: String = line[at + 3..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        // The body: from the first `{` after the signature to its match; a
        // declaration without a body ends with `;` first.
        let mut depth = 0i32;
        let mut opened = false;
        for (offset, body_line) in lines[number..].iter().enumerate() {
            for character in body_line.chars() {
                match character {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    ';' if !opened => break,
                    _ => {}
                }
            }
            if !opened && body_line.contains(';') {
                break;
            }
            if opened && depth == 0 {
                let length = offset + 1;
                if length > MAX_FUNCTION_LINES {
                    long.push((name.clone(), number + 1, length));
                }
                break;
            }
        }
    }
    long
}

/// Files of modules declared under `#[cfg(test)]` (`mod sample;` after
/// the attribute): test code, like `tests/` and `tests.rs`.
fn test_only_files(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut test_only = BTreeSet::new();
    for file in files {
        let source = std::fs::read_to_string(file).expect("a readable source file");
        let lines: Vec<&str> = source.lines().collect();
        for pair in lines.windows(2) {
            let declared = pair[1].trim().trim_start_matches("pub(crate) ").trim_start_matches("pub ");
            if pair[0].trim() != "#[cfg(test)]" || !declared.starts_with("mod ") || !declared.ends_with(';') {
                continue;
            }
            let name = declared.trim_start_matches("mod ").trim_end_matches(';');
            let directory = match file.file_name().and_then(|name| name.to_str()) {
                Some("mod.rs" | "lib.rs" | "main.rs") => file.parent().expect("a directory").to_owned(),
                _ => file.with_extension(""),
            };
            test_only.insert(directory.join(format!("{name}.rs")));
        }
    }
    test_only
}

#[test]
fn no_function_or_file_outgrows_a_reader() {
    let mut problems = Vec::new();
    let crates = crates_dir();
    let files = rust_files(&crates);
    let test_only = test_only_files(&files);
    for file in files {
        let relative = file.strip_prefix(&crates).expect("under crates/").display().to_string();
        if relative.contains("/tests/") || relative.ends_with("/tests.rs") || test_only.contains(&file) {
            continue;
        }
        let source = std::fs::read_to_string(&file).expect("a readable source file");
        let code = without_tests(&code_only(&source));
        for (name, line, length) in long_rust_functions(&code) {
            problems
                .push(format!("{relative}:{line}: fn {name} is {length} lines (limit {MAX_FUNCTION_LINES})"));
        }
        let code_lines = code.trim_end().lines().count();
        let says_why = source
            .lines()
            .take_while(|line| line.starts_with("//!"))
            .any(|line| line.trim_start_matches("//!").trim_start().starts_with("Size:"));
        if code_lines > MAX_FILE_LINES && !says_why {
            problems.push(format!(
                "{relative}: {code_lines} lines of code (limit {MAX_FILE_LINES} unless its module doc has a `Size:` line)"
            ));
        }
    }
    problems.extend(long_python_functions(&crates.join("shoal").join("python")));
    assert!(problems.is_empty(), "too long:\n  {}", problems.join("\n  "));
}

/// The plugin's functions over the limit, and files over theirs, read with
/// Python's own parser.
fn long_python_functions(dir: &Path) -> Vec<String> {
    let script = format!(
        r#"
import ast, pathlib, sys
root = pathlib.Path(sys.argv[1])
for path in sorted(root.rglob("*.py")):
    source = path.read_text()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > {MAX_FUNCTION_LINES}:
                print(f"{{path.relative_to(root.parent)}}:{{node.lineno}}: def {{node.name}} is {{length}} lines (limit {MAX_FUNCTION_LINES})")
    doc = ast.get_docstring(tree) or ""
    lines = len(source.rstrip().splitlines())
    if lines > {MAX_FILE_LINES} and not any(line.startswith("Size:") for line in doc.splitlines()):
        print(f"{{path.relative_to(root.parent)}}: {{lines}} lines (limit {MAX_FILE_LINES} unless its docstring has a `Size:` line)")
"#
    );
    let python = std::env::var("SHOAL_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let output = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(dir)
        .output()
        .unwrap_or_else(|error| panic!("running {python} to read the plugin's functions: {error}"));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect()
}

#[test]
fn the_checks_see_what_they_check() {
    // A cycle is found, and named.
    let path = |text: &str| text.split("::").map(str::to_owned).collect::<Vec<_>>();
    let graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> =
        [(path("a"), [path("b")].into()), (path("b"), [path("c")].into()), (path("c"), [path("a")].into())]
            .into();
    assert_eq!(find_cycle(&graph), Some(vec![path("a"), path("b"), path("c"), path("a")]));
    // Nested modules are no edge; cousins are an edge between siblings.
    assert_eq!(between_siblings(&path("report::json"), &path("report")), None);
    assert_eq!(
        between_siblings(&path("commands::run::drive"), &path("report::json")),
        Some((path("commands"), path("report")))
    );
    // Comments and strings are not code; a `{` in a string is no brace.
    let code = code_only("// crate::x\nlet a = \"{crate::y\"; let b = '{'; fn f<'a>() {}\n");
    assert!(!code.contains("crate::"), "{code}");
    assert_eq!(code.matches('{').count(), 1, "{code}");
    // A long function is found with its line; tests are left out.
    let long = format!("fn short() {{}}\nfn long() {{\n{}}}\n", "    x();\n".repeat(90));
    assert_eq!(long_rust_functions(&long), vec![("long".to_owned(), 2, 92)]);
    let with_tests = without_tests(&format!("fn a() {{}}\n#[cfg(test)]\nmod tests {{\n{long}}}\n"));
    assert!(long_rust_functions(&with_tests).is_empty());
}
