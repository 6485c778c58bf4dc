//! A Python file as `--affected` fingerprints it: its code blocks (each
//! `def`, with its decorators, named by its place: `Class.method`,
//! `outer.inner`), its module-level code (every line in no `def`: imports,
//! constants, class bodies) and the whole file, each hashed after
//! normalising (blank lines, comment lines and trailing spaces do not
//! count; a line inside a multi-line string always counts).
//!
//! Blocks are found from indentation and a small scanner of strings and
//! brackets, not a full parser. What matters is that every line counts in
//! some fingerprint a test depends on: a test that ran anything in a file
//! also depends on that file's module-level code, so a line this reading
//! puts in the wrong place can only make more tests run, never fewer.

use std::collections::BTreeMap;

use crate::python::fnv1a64;

/// One `def`: lines `first..=last` (1-based, decorators included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// `Class.method`, `function`, `outer.inner`.
    pub name: String,
    pub first: u32,
    pub last: u32,
}

/// A file's fingerprints.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceFile {
    pub blocks: Vec<Block>,
    /// Each block name's hash (a name defined twice hashes both).
    block_hashes: BTreeMap<String, u64>,
    /// The lines in no block.
    pub module_level: u64,
    /// Every line.
    pub whole: u64,
}

/// How a line reads once scanned.
struct Line<'a> {
    text: &'a str,
    /// Blank or a comment, outside any string: it does not count.
    ignored: bool,
    /// Starts a statement (not inside brackets, a string or after `\`).
    statement: bool,
}

/// The scanner's state between lines.
#[derive(Default)]
struct Scanner {
    /// The quote of the triple-quoted string the line starts in.
    triple: Option<char>,
    brackets: u32,
    continued: bool,
}

impl Scanner {
    fn line<'a>(&mut self, text: &'a str) -> Line<'a> {
        let in_string = self.triple.is_some();
        let statement = !in_string && self.brackets == 0 && !self.continued;
        let trimmed = text.trim();
        let ignored = !in_string && (trimmed.is_empty() || trimmed.starts_with('#'));
        self.scan(text);
        Line { text: text.trim_end(), ignored, statement }
    }

    /// Follows strings, brackets and comments to the end of the line.
    fn scan(&mut self, text: &str) {
        let chars: Vec<char> = text.chars().collect();
        let mut index = 0;
        while index < chars.len() {
            let character = chars[index];
            if let Some(quote) = self.triple {
                if character == '\\' {
                    index += 2;
                    continue;
                }
                if chars[index..].starts_with(&[quote, quote, quote]) {
                    self.triple = None;
                    index += 3;
                    continue;
                }
                index += 1;
                continue;
            }
            match character {
                '#' => break,
                '"' | '\'' if chars[index..].starts_with(&[character, character, character]) => {
                    self.triple = Some(character);
                    index += 3;
                    continue;
                }
                '"' | '\'' => index = end_of_string(&chars, index),
                '(' | '[' | '{' => self.brackets += 1,
                ')' | ']' | '}' => self.brackets = self.brackets.saturating_sub(1),
                _ => {}
            }
            index += 1;
        }
        self.continued = self.triple.is_none() && text.trim_end().ends_with('\\');
    }
}

/// The index of the quote closing the one-line string opened at `start`
/// (or the line's end).
fn end_of_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut index = start + 1;
    while index < chars.len() {
        match chars[index] {
            '\\' => index += 1,
            character if character == quote => return index,
            _ => {}
        }
        index += 1;
    }
    index
}

/// A `def`, `async def` or `class` statement's kind and name.
fn definition(statement: &str) -> Option<(bool, &str)> {
    let statement = statement.strip_prefix("async ").map_or(statement, str::trim_start);
    let (is_function, rest) = if let Some(rest) = statement.strip_prefix("def ") {
        (true, rest)
    } else {
        (false, statement.strip_prefix("class ")?)
    };
    let rest = rest.trim_start();
    let end = rest.find(|character: char| !(character.is_alphanumeric() || character == '_'))?;
    (end > 0).then(|| (is_function, &rest[..end]))
}

/// An open `def` or `class` while reading.
struct Open {
    name: String,
    indent: usize,
    first: u32,
    is_function: bool,
}

/// Reads a file's blocks and fingerprints.
pub fn parse(text: &str) -> SourceFile {
    let mut scanner = Scanner::default();
    let lines: Vec<Line<'_>> = text.lines().map(|line| scanner.line(line)).collect();
    let mut blocks = Vec::new();
    let mut open: Vec<Open> = Vec::new();
    let mut decorated_from: Option<u32> = None;
    let mut last_counted = 0u32;
    for (index, line) in lines.iter().enumerate() {
        let number = index as u32 + 1;
        if line.ignored {
            continue;
        }
        if line.statement {
            let indent = line.text.len() - line.text.trim_start().len();
            while open.last().is_some_and(|top| top.indent >= indent) {
                close(open.pop().expect("checked"), &open, last_counted, &mut blocks);
            }
            let statement = line.text.trim_start();
            if statement.starts_with('@') {
                decorated_from.get_or_insert(number);
            } else {
                if let Some((is_function, name)) = definition(statement) {
                    let first = decorated_from.unwrap_or(number);
                    open.push(Open { name: name.to_owned(), indent, first, is_function });
                }
                decorated_from = None;
            }
        }
        last_counted = number;
    }
    while let Some(top) = open.pop() {
        close(top, &open, last_counted, &mut blocks);
    }
    blocks.sort_by_key(|block| block.first);
    fingerprint(&lines, blocks)
}

/// Ends an open definition at `last`: a `def` becomes a block.
fn close(definition: Open, outer: &[Open], last: u32, blocks: &mut Vec<Block>) {
    if !definition.is_function {
        return;
    }
    let mut name: Vec<&str> = outer.iter().map(|open| open.name.as_str()).collect();
    name.push(&definition.name);
    blocks.push(Block { name: name.join("."), first: definition.first, last: last.max(definition.first) });
}

fn fingerprint(lines: &[Line<'_>], blocks: Vec<Block>) -> SourceFile {
    let counted = |first: u32, last: u32| -> String {
        let mut text = String::new();
        for line in &lines[(first - 1) as usize..(last as usize).min(lines.len())] {
            if !line.ignored {
                text.push_str(line.text);
                text.push('\n');
            }
        }
        text
    };
    let mut in_block = vec![false; lines.len()];
    let mut by_name: BTreeMap<String, String> = BTreeMap::new();
    for block in &blocks {
        by_name.entry(block.name.clone()).or_default().push_str(&counted(block.first, block.last));
        for line in block.first..=block.last {
            in_block[(line - 1) as usize] = true;
        }
    }
    let mut module_level = String::new();
    let mut whole = String::new();
    for (line, inside) in lines.iter().zip(&in_block) {
        if line.ignored {
            continue;
        }
        whole.push_str(line.text);
        whole.push('\n');
        if !inside {
            module_level.push_str(line.text);
            module_level.push('\n');
        }
    }
    SourceFile {
        block_hashes: by_name.into_iter().map(|(name, text)| (name, fnv1a64(text.as_bytes()))).collect(),
        blocks,
        module_level: fnv1a64(module_level.as_bytes()),
        whole: fnv1a64(whole.as_bytes()),
    }
}

impl SourceFile {
    /// The hash of the block(s) named `name`, if the file has one.
    pub fn block(&self, name: &str) -> Option<u64> {
        self.block_hashes.get(name).copied()
    }

    /// The block a code object that starts at `line` belongs to: the
    /// function starting there, else the innermost one around it (a lambda,
    /// a comprehension); `None` for module-level code (a module, a class
    /// body).
    pub fn block_at(&self, line: u32, code_name: &str) -> Option<&str> {
        if code_name == "<module>" {
            return None;
        }
        if let Some(block) = self.blocks.iter().find(|block| block.first == line) {
            return Some(&block.name);
        }
        self.blocks
            .iter()
            .filter(|block| block.first <= line && line <= block.last)
            .min_by_key(|block| block.last - block.first)
            .map(|block| block.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = r#"import os

LIMIT = 3


@decorate(
    1,
)
def first(x):
    # a comment
    return x + LIMIT


class Shape:
    sides = 4

    def area(self):
        text = """
def not_a_function():
# not a comment
"""
        return [y for y in range(3)]

    async def later(self):
        pass
"#;

    #[test]
    fn blocks_are_named_by_place_and_span_their_decorators() {
        let file = parse(SOURCE);
        let names: Vec<(&str, u32, u32)> =
            file.blocks.iter().map(|block| (block.name.as_str(), block.first, block.last)).collect();
        assert_eq!(names, [("first", 6, 11), ("Shape.area", 17, 22), ("Shape.later", 24, 25)]);
        assert_eq!(file.block_at(6, "first"), Some("first"));
        assert_eq!(file.block_at(22, "<listcomp>"), Some("Shape.area"));
        assert_eq!(file.block_at(14, "Shape"), None);
        assert_eq!(file.block_at(1, "<module>"), None);
    }

    #[test]
    fn comments_blank_lines_and_trailing_spaces_change_nothing() {
        let original = parse(SOURCE);
        let edited = SOURCE
            .replace("    # a comment\n", "")
            .replace("LIMIT = 3\n", "LIMIT = 3   \n# new comment\n\n")
            .replace("import os\n", "import os  \n\n\n");
        assert_eq!(parse(&edited), SourceFile { blocks: parse(&edited).blocks, ..original });
    }

    #[test]
    fn a_body_edit_changes_its_block_only_and_a_constant_the_module_level() {
        let original = parse(SOURCE);
        let body = parse(&SOURCE.replace("return x + LIMIT", "return x - LIMIT"));
        assert_ne!(body.block("first"), original.block("first"));
        assert_eq!(body.block("Shape.area"), original.block("Shape.area"));
        assert_eq!(body.module_level, original.module_level);
        assert_ne!(body.whole, original.whole);
        let constant = parse(&SOURCE.replace("LIMIT = 3", "LIMIT = 4"));
        assert_eq!(constant.block("first"), original.block("first"));
        assert_ne!(constant.module_level, original.module_level);
        let class_attribute = parse(&SOURCE.replace("sides = 4", "sides = 5"));
        assert_ne!(class_attribute.module_level, original.module_level);
    }

    #[test]
    fn lines_inside_strings_always_count() {
        let original = parse(SOURCE);
        let edited = parse(&SOURCE.replace("# not a comment", "# changed"));
        assert_ne!(edited.block("Shape.area"), original.block("Shape.area"));
        assert_eq!(edited.blocks, original.blocks, "a def inside a string is no block");
    }

    #[test]
    fn moving_a_function_keeps_its_hash() {
        let moved = "def b():\n    return 2\n\n\ndef a():\n    return 1\n";
        let original = "def a():\n    return 1\n\ndef b():\n    return 2\n";
        assert_eq!(parse(moved).block("a"), parse(original).block("a"));
        assert_eq!(parse("def a():\n    return 1\n").block("missing"), None);
    }
}
