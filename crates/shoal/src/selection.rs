//! Test selection: turning selection files and positional paths into the
//! ordered, deduplicated list of arguments shoal hands to pytest.
//!
//! This module owns the selection file format, the order and deduplication
//! rules for combining selection sources, and the check that every selected
//! path exists. It never talks to Python: node ids are opaque keys, and the
//! only thing looked at inside one is the path before its first `::`.
//!
//! # Selection file format
//!
//! A selection file is UTF-8 text with one entry a line. An entry is a path
//! (file or directory) or a pytest node id such as `tests/test_io.py::test_read`
//! or `tests/test_io.py::TestRead::test_bytes[param]`; parameters may contain
//! anything, including spaces, `::`, `#` and non-ASCII text.
//!
//! - Leading and trailing whitespace is trimmed.
//! - Blank lines and lines whose first non-whitespace character is `#` are
//!   comments.
//! - A trailing comment starts at a `#` that follows whitespace and lies
//!   outside `[...]` brackets, so `tests/unit  # fast ones` selects
//!   `tests/unit` while `t.py::test[a #b]` keeps its `#`.
//! - CRLF line ends and a UTF-8 byte order mark at the start are accepted.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The pytest arguments selected for a run, in the order pytest receives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// The selected entries, ordered and deduplicated (see [`Selection::resolve`]).
    pub entries: Vec<SelectionEntry>,
}

/// One selected path or node id and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectionEntry {
    /// The argument passed to pytest, as written (after trimming, for file entries).
    pub argument: String,
    /// Where the argument came from, for error messages and reporting.
    pub origin: EntryOrigin,
}

/// Where a [`SelectionEntry`] was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryOrigin {
    /// A positional argument on shoal's command line.
    CommandLine,
    /// A line of a selection file.
    File {
        /// The selection file, as the user named it.
        path: PathBuf,
        /// The 1-based line number within that file.
        line: usize,
    },
}

/// Why a selection could not be resolved.
///
/// Every message names the place the user has to edit: the selection file
/// and 1-based line, or the command-line argument. The CLI reports these as
/// pytest usage errors (exit code 4).
#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    /// A selection file does not exist or cannot be read.
    #[error("selection file {}: {source}", path.display())]
    ReadFile {
        /// The selection file, as the user named it.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// A line of a selection file is not valid UTF-8 (the first such line is reported).
    #[error("{}:{line}: not valid UTF-8", path.display())]
    InvalidUtf8 {
        /// The selection file, as the user named it.
        path: PathBuf,
        /// The 1-based number of the first line that is not valid UTF-8.
        line: usize,
    },
    /// A selection file entry names a path that does not exist.
    #[error("{}:{line}: {entry}: no such file or directory", path.display())]
    FileEntryNotFound {
        /// The selection file, as the user named it.
        path: PathBuf,
        /// The 1-based line of the entry.
        line: usize,
        /// The entry as written (path or node id).
        entry: String,
    },
    /// A positional command-line argument names a path that does not exist.
    #[error("{entry}: no such file or directory")]
    CommandLineEntryNotFound {
        /// The argument as given on the command line (path or node id).
        entry: String,
    },
}

impl Selection {
    /// Reads every selection file (in the given order) and combines their
    /// entries with the positional arguments into one selection.
    ///
    /// Order: positional arguments come first, in command-line order, then
    /// each selection file's entries in file order, files in the order given.
    /// Putting the command line first means what the user typed for this run
    /// leads, and the selection files extend it.
    ///
    /// An entry named more than once (the same text after trimming, treating
    /// a leading `./` as absent, so `./tests` and `tests` are the same) is kept
    /// once, at its first position and with its first origin.
    ///
    /// Relative paths — selection files and the path part of every entry (the
    /// text before the first `::`, or the whole entry) — are taken relative to
    /// `base_dir`, the directory pytest will run in, the way pytest reads its
    /// arguments; entry paths are not relative to the selection file. The
    /// first problem found is returned, checking sources in the order above.
    pub fn resolve(
        positional: &[String],
        selection_files: &[PathBuf],
        base_dir: &Path,
    ) -> Result<Selection, SelectionError> {
        let mut builder = SelectionBuilder::default();
        for argument in positional {
            builder.push(
                SelectionEntry { argument: argument.clone(), origin: EntryOrigin::CommandLine },
                base_dir,
            )?;
        }
        for file in selection_files {
            let text = read_selection_file(file, base_dir)?;
            for entry in parse_selection_text(&text, file) {
                builder.push(entry, base_dir)?;
            }
        }
        Ok(builder.finish())
    }

    /// The pytest arguments, in order.
    pub fn arguments(&self) -> Vec<String> {
        self.entries.iter().map(|entry| entry.argument.clone()).collect()
    }

    /// Whether nothing was selected (pytest would then use its own defaults).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Parses the text of one selection file into its entries, in file order.
///
/// `file` is only recorded in each entry's origin; nothing is read from the
/// filesystem, so paths are neither checked nor resolved. Duplicates are kept
/// here: deduplication happens across all sources in [`Selection::resolve`].
pub fn parse_selection_text(text: &str, file: &Path) -> Vec<SelectionEntry> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // `lines` splits on `\n` and drops a `\r` before it, so CRLF files work
    // and line numbers match what an editor shows.
    text.lines()
        .enumerate()
        .filter_map(|(index, line)| {
            entry_text(line).map(|argument| SelectionEntry {
                argument: argument.to_owned(),
                origin: EntryOrigin::File { path: file.to_path_buf(), line: index + 1 },
            })
        })
        .collect()
}

/// The entry on one line, or `None` for a blank or comment line.
fn entry_text(line: &str) -> Option<&str> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    Some(strip_trailing_comment(line).trim_end())
}

/// Cuts a trailing comment: a `#` after whitespace and outside brackets.
///
/// Brackets are counted rather than matched against a node id grammar so
/// that parameters holding nested brackets (`test[[1, 2]]`) still protect
/// their `#`. A parameter with unbalanced brackets can defeat this; such an
/// entry is still read correctly as long as it carries no trailing comment.
fn strip_trailing_comment(line: &str) -> &str {
    let mut bracket_depth = 0_usize;
    let mut after_whitespace = false;
    for (index, character) in line.char_indices() {
        match character {
            '[' => bracket_depth += 1,
            // Saturating so a stray `]` cannot hide a later comment.
            ']' => bracket_depth = bracket_depth.saturating_sub(1),
            '#' if bracket_depth == 0 && after_whitespace => return &line[..index],
            _ => {}
        }
        after_whitespace = character.is_whitespace();
    }
    line
}

/// Reads a selection file as UTF-8, reporting the first line that is not.
fn read_selection_file(file: &Path, base_dir: &Path) -> Result<String, SelectionError> {
    let bytes = fs::read(base_dir.join(file))
        .map_err(|source| SelectionError::ReadFile { path: file.to_path_buf(), source })?;
    String::from_utf8(bytes).map_err(|error| {
        // The first invalid byte sits at `valid_up_to`; a `\n` byte is never
        // part of a multi-byte sequence, so counting newlines before it gives
        // the first line that is not valid UTF-8.
        let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&byte| byte == b'\n').count() + 1;
        SelectionError::InvalidUtf8 { path: file.to_path_buf(), line }
    })
}

/// Collects entries in order, dropping repeats and checking paths exist.
#[derive(Default)]
struct SelectionBuilder {
    entries: Vec<SelectionEntry>,
    seen: HashSet<String>,
}

impl SelectionBuilder {
    /// Appends `entry` unless an equivalent entry came earlier.
    fn push(&mut self, entry: SelectionEntry, base_dir: &Path) -> Result<(), SelectionError> {
        if self.seen.contains(dedup_key(&entry.argument)) {
            return Ok(());
        }
        check_exists(&entry, base_dir)?;
        self.seen.insert(dedup_key(&entry.argument).to_owned());
        self.entries.push(entry);
        Ok(())
    }

    fn finish(self) -> Selection {
        Selection { entries: self.entries }
    }
}

/// The text two entries share when they name the same thing.
fn dedup_key(argument: &str) -> &str {
    let mut key = argument.trim();
    // `././tests` is as much `tests` as `./tests` is.
    while let Some(rest) = key.strip_prefix("./") {
        key = rest;
    }
    if key.is_empty() && !argument.trim().is_empty() {
        // `./` alone is the current directory, the same as `.`.
        "."
    } else {
        key
    }
}

/// Fails unless the path part of `entry` exists as a file or directory.
fn check_exists(entry: &SelectionEntry, base_dir: &Path) -> Result<(), SelectionError> {
    let path_part = entry.argument.split_once("::").map_or(entry.argument.as_str(), |(path, _)| path);
    // `join` keeps an absolute path as is. `exists` treats any error
    // (including permission denied) as missing, as pytest's own check does.
    if base_dir.join(path_part).exists() {
        return Ok(());
    }
    Err(match &entry.origin {
        EntryOrigin::CommandLine => {
            SelectionError::CommandLineEntryNotFound { entry: entry.argument.clone() }
        }
        EntryOrigin::File { path, line } => SelectionError::FileEntryNotFound {
            path: path.clone(),
            line: *line,
            entry: entry.argument.clone(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    /// Parses `text` as the selection file `sel.txt`, returning (argument, line) pairs.
    fn parsed(text: &str) -> Vec<(String, usize)> {
        parse_selection_text(text, Path::new("sel.txt"))
            .into_iter()
            .map(|entry| match entry.origin {
                EntryOrigin::File { path, line } => {
                    assert_eq!(path, Path::new("sel.txt"));
                    (entry.argument, line)
                }
                EntryOrigin::CommandLine => panic!("file entry marked as command line"),
            })
            .collect()
    }

    fn arguments_of(text: &str) -> Vec<String> {
        parsed(text).into_iter().map(|(argument, _)| argument).collect()
    }

    /// A project directory holding the given files (directories made as needed).
    fn project(files: &[&str]) -> TempDir {
        let directory = TempDir::new().unwrap();
        for file in files {
            let path = directory.path().join(file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, "").unwrap();
        }
        directory
    }

    fn write_selection(project: &TempDir, name: &str, contents: &[u8]) -> PathBuf {
        let path = project.path().join(name);
        fs::write(&path, contents).unwrap();
        path
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    #[test]
    fn comments_and_blank_lines_are_skipped_but_counted() {
        let text = "# header\n\ntests/unit\n   \n\t# indented comment\ntests/test_io.py\n";
        assert_eq!(parsed(text), vec![("tests/unit".to_owned(), 3), ("tests/test_io.py".to_owned(), 6)]);
    }

    #[test]
    fn surrounding_whitespace_is_trimmed() {
        assert_eq!(
            arguments_of("   tests/unit \t\n\ttests/a.py::test_x  "),
            strings(&["tests/unit", "tests/a.py::test_x"])
        );
    }

    #[test]
    fn trailing_comment_after_whitespace_is_removed() {
        assert_eq!(
            arguments_of("tests/unit  # fast ones\ntests/b.py\t# tab before\ntests/c.py #\n"),
            strings(&["tests/unit", "tests/b.py", "tests/c.py"])
        );
    }

    #[test]
    fn hash_without_whitespace_before_it_is_kept() {
        assert_eq!(
            arguments_of("tests/issue#12.py\nt.py::test_a#b # comment\n"),
            strings(&["tests/issue#12.py", "t.py::test_a#b"])
        );
    }

    #[test]
    fn hash_inside_brackets_is_kept() {
        assert_eq!(
            arguments_of(concat!(
                "t.py::test[a #b]\n",
                "t.py::test[a #b]  # but this is a comment\n",
                "t.py::test[[1, #2] #3]\n",
                "t.py::test[x] y] # stray bracket does not hide the comment\n",
            )),
            strings(&["t.py::test[a #b]", "t.py::test[a #b]", "t.py::test[[1, #2] #3]", "t.py::test[x] y]",])
        );
    }

    #[test]
    fn crlf_line_ends_are_accepted() {
        assert_eq!(
            parsed("# comment\r\ntests/unit\r\n\r\nt.py::test[a b]  # c\r\n"),
            vec![("tests/unit".to_owned(), 2), ("t.py::test[a b]".to_owned(), 4)]
        );
    }

    #[test]
    fn byte_order_mark_at_start_is_ignored() {
        assert_eq!(
            parsed("\u{feff}tests/unit\ntests/b.py\n"),
            vec![("tests/unit".to_owned(), 1), ("tests/b.py".to_owned(), 2)]
        );
        // A comment on the first line must still be recognised behind a BOM.
        assert!(parsed("\u{feff}# only a comment\n").is_empty());
    }

    #[test]
    fn node_ids_are_kept_verbatim() {
        let text = concat!(
            "tests/a.py::test_x[with spaces inside]\n",
            "tests/a.py::TestClass::test_y[a::b::c]\n",
            "tests/a.py::test_z[héllo-世界-🙂]\n",
            "tests/a.py::test_w[  padded  ]  # comment\n",
        );
        assert_eq!(
            arguments_of(text),
            strings(&[
                "tests/a.py::test_x[with spaces inside]",
                "tests/a.py::TestClass::test_y[a::b::c]",
                "tests/a.py::test_z[héllo-世界-🙂]",
                "tests/a.py::test_w[  padded  ]",
            ])
        );
    }

    #[test]
    fn parse_keeps_duplicates_for_resolve_to_handle() {
        assert_eq!(arguments_of("tests\n./tests\ntests\n"), strings(&["tests", "./tests", "tests"]));
    }

    #[test]
    fn positional_arguments_come_first_then_files_in_order() {
        let project = project(&["tests/a.py", "tests/b.py", "tests/c.py", "tests/d.py"]);
        let first = write_selection(&project, "first.txt", b"tests/b.py\ntests/c.py\n");
        let second = write_selection(&project, "second.txt", b"tests/d.py\n");
        let selection =
            Selection::resolve(&strings(&["tests/a.py"]), &[first.clone(), second.clone()], project.path())
                .unwrap();
        assert_eq!(selection.arguments(), strings(&["tests/a.py", "tests/b.py", "tests/c.py", "tests/d.py"]));
        assert_eq!(selection.entries[0].origin, EntryOrigin::CommandLine);
        assert_eq!(selection.entries[2].origin, EntryOrigin::File { path: first, line: 2 });
        assert_eq!(selection.entries[3].origin, EntryOrigin::File { path: second, line: 1 });
    }

    #[test]
    fn duplicates_across_sources_keep_their_first_position() {
        let project = project(&["tests/a.py", "tests/b.py", "tests/unit/c.py"]);
        let first = write_selection(
            &project,
            "first.txt",
            b"tests/b.py\n./tests/a.py\ntests/unit\ntests/b.py::test_x\n",
        );
        let second = write_selection(
            &project,
            "second.txt",
            b"./tests/unit\n  tests/b.py  # again\n./tests/b.py::test_x\ntests/b.py::test_y\n",
        );
        let selection = Selection::resolve(
            &strings(&["tests/a.py", "././tests/a.py"]),
            &[first.clone(), second.clone()],
            project.path(),
        )
        .unwrap();
        assert_eq!(
            selection.arguments(),
            strings(&["tests/a.py", "tests/b.py", "tests/unit", "tests/b.py::test_x", "tests/b.py::test_y",])
        );
        // The surviving copy keeps the origin of its first appearance.
        assert_eq!(selection.entries[0].origin, EntryOrigin::CommandLine);
        assert_eq!(selection.entries[2].origin, EntryOrigin::File { path: first, line: 3 });
        assert_eq!(selection.entries[4].origin, EntryOrigin::File { path: second, line: 4 });
    }

    #[test]
    fn dot_slash_first_keeps_its_spelling() {
        let project = project(&["tests/a.py"]);
        let selection =
            Selection::resolve(&strings(&["./tests", "tests", "./", "."]), &[], project.path()).unwrap();
        assert_eq!(selection.arguments(), strings(&["./tests", "./"]));
    }

    #[test]
    fn existence_check_uses_the_path_before_the_first_double_colon() {
        let project = project(&["tests/a.py"]);
        let selection = write_selection(
            &project,
            "sel.txt",
            "tests/a.py::TestX::test_y[missing/dir::also # not a path]\ntests\n".as_bytes(),
        );
        let resolved = Selection::resolve(&[], &[selection], project.path()).unwrap();
        assert_eq!(
            resolved.arguments(),
            strings(&["tests/a.py::TestX::test_y[missing/dir::also # not a path]", "tests"])
        );
    }

    #[test]
    fn absolute_paths_are_accepted() {
        let project = project(&["tests/a.py"]);
        let absolute = project.path().join("tests/a.py");
        let absolute = absolute.to_str().unwrap().to_owned();
        let node_id = format!("{absolute}::test_x");
        let selection = write_selection(&project, "sel.txt", format!("{node_id}\n").as_bytes());
        // The base directory is elsewhere, so only an absolute path can pass.
        let elsewhere = TempDir::new().unwrap();
        let resolved =
            Selection::resolve(std::slice::from_ref(&absolute), &[selection], elsewhere.path()).unwrap();
        assert_eq!(resolved.arguments(), vec![absolute, node_id]);
    }

    #[test]
    fn relative_selection_file_is_read_from_base_dir() {
        let project = project(&["tests/a.py"]);
        write_selection(&project, "sel.txt", b"tests/a.py\n");
        let resolved = Selection::resolve(&[], &[PathBuf::from("sel.txt")], project.path()).unwrap();
        assert_eq!(resolved.arguments(), strings(&["tests/a.py"]));
    }

    #[test]
    fn empty_inputs_give_an_empty_selection() {
        let project = project(&[]);
        let selection = write_selection(&project, "sel.txt", b"\xef\xbb\xbf# nothing yet\r\n\r\n");
        let resolved = Selection::resolve(&[], &[selection], project.path()).unwrap();
        assert!(resolved.is_empty());
        assert!(resolved.arguments().is_empty());
        assert!(!Selection::resolve(&strings(&["."]), &[], project.path()).unwrap().is_empty());
    }

    #[test]
    fn missing_selection_file_is_reported() {
        let project = project(&[]);
        let missing = project.path().join("absent.txt");
        let io_error = fs::read(&missing).unwrap_err();
        let error = Selection::resolve(&[], std::slice::from_ref(&missing), project.path()).unwrap_err();
        assert!(matches!(error, SelectionError::ReadFile { .. }));
        assert_eq!(error.to_string(), format!("selection file {}: {io_error}", missing.display()));
    }

    #[test]
    fn unreadable_selection_file_is_reported() {
        // A directory exists but cannot be read as a file.
        let project = project(&["tests/a.py"]);
        let directory = project.path().join("tests");
        let io_error = fs::read(&directory).unwrap_err();
        let error = Selection::resolve(&[], std::slice::from_ref(&directory), project.path()).unwrap_err();
        assert_eq!(error.to_string(), format!("selection file {}: {io_error}", directory.display()));
    }

    #[test]
    fn first_non_utf8_line_is_reported_by_number() {
        let project = project(&["tests/a.py"]);
        let selection = write_selection(
            &project,
            "sel.txt",
            b"tests/a.py\r\n# caf\xc3\xa9 is fine\r\nt.py::test[\xff\xfe]\r\nbad \xff again\r\n",
        );
        let error = Selection::resolve(&[], std::slice::from_ref(&selection), project.path()).unwrap_err();
        assert!(matches!(error, SelectionError::InvalidUtf8 { line: 3, .. }));
        assert_eq!(error.to_string(), format!("{}:3: not valid UTF-8", selection.display()));
    }

    #[test]
    fn non_utf8_first_line_after_byte_order_mark_is_line_one() {
        let project = project(&[]);
        let selection = write_selection(&project, "sel.txt", b"\xef\xbb\xbftests/\xc3(\n");
        let error = Selection::resolve(&[], std::slice::from_ref(&selection), project.path()).unwrap_err();
        assert_eq!(error.to_string(), format!("{}:1: not valid UTF-8", selection.display()));
    }

    #[test]
    fn missing_file_entry_names_file_and_line() {
        let project = project(&["tests/a.py"]);
        let selection = write_selection(
            &project,
            "sel.txt",
            b"# comment\ntests/a.py\n\ntests/gone.py::test_x[p q]  # removed?\n",
        );
        let error = Selection::resolve(&[], std::slice::from_ref(&selection), project.path()).unwrap_err();
        assert!(matches!(error, SelectionError::FileEntryNotFound { line: 4, .. }));
        assert_eq!(
            error.to_string(),
            format!("{}:4: tests/gone.py::test_x[p q]: no such file or directory", selection.display())
        );
    }

    #[test]
    fn missing_file_entry_error_uses_the_name_the_user_gave() {
        let project = project(&[]);
        write_selection(&project, "sel.txt", b"tests/gone\n");
        let error = Selection::resolve(&[], &[PathBuf::from("sel.txt")], project.path()).unwrap_err();
        assert_eq!(error.to_string(), "sel.txt:1: tests/gone: no such file or directory");
    }

    #[test]
    fn missing_positional_argument_is_reported_as_command_line() {
        let project = project(&["tests/a.py"]);
        let error =
            Selection::resolve(&strings(&["tests/a.py", "tests/nope.py::test_x"]), &[], project.path())
                .unwrap_err();
        assert!(matches!(error, SelectionError::CommandLineEntryNotFound { .. }));
        assert_eq!(error.to_string(), "tests/nope.py::test_x: no such file or directory");
    }

    #[test]
    fn duplicate_of_a_checked_entry_is_not_checked_again() {
        // Dropped duplicates never reach the existence check, so the first
        // error is the genuinely missing entry on line 3.
        let project = project(&["tests/a.py"]);
        let selection = write_selection(&project, "sel.txt", b"./tests/a.py\ntests/a.py\nmissing\n");
        let error = Selection::resolve(&strings(&["tests/a.py"]), &[selection], project.path()).unwrap_err();
        assert!(matches!(error, SelectionError::FileEntryNotFound { line: 3, .. }));
    }
}
