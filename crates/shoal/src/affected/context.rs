//! What every test's key shares: the interpreter and the installed
//! packages, pytest's configuration file and arguments, the files declared
//! in `affected-inputs` and the variables named in `affected-env`. A change
//! to any of them runs every test.

use std::collections::BTreeMap;
use std::path::Path;

use crate::python::fnv1a64;

/// The run's context, hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The interpreter's version and the installed packages.
    pub environment: u64,
    /// Each other part, by the name an explanation gives it.
    pub items: BTreeMap<String, u64>,
}

/// Lists `sys.version` and every distribution's metadata directory
/// (`name-version.dist-info`) and `.pth` file on `sys.path`: a lock of
/// name==version (and editable installs) without importing any package.
const ENVIRONMENT_SCRIPT: &str = "import os, sys
print(sys.version)
print(sys.executable)
for entry in sys.path:
    if os.path.isdir(entry):
        for name in sorted(os.listdir(entry)):
            if name.endswith(('.dist-info', '.egg-info', '.egg-link', '.pth')):
                print(entry, name)
";

/// The hash of the interpreter and its installed packages, asked of the
/// interpreter itself (in `cwd`, with the workers' environment). If it
/// cannot say, a value no store holds: every test runs.
pub fn environment_hash(python: &Path, cwd: &Path) -> u64 {
    let output =
        std::process::Command::new(python).arg("-c").arg(ENVIRONMENT_SCRIPT).current_dir(cwd).output();
    match output {
        Ok(output) if output.status.success() => fnv1a64(&output.stdout),
        _ => fnv1a64(format!("unknown {:?}", std::time::SystemTime::now()).as_bytes()),
    }
}

impl Context {
    /// The context of a run in `rootdir` with pytest's `inifile`, its
    /// `pytest_args` (paths and `--deselect` left out: they choose tests,
    /// they do not change what a test does), the declared `inputs` (glob
    /// patterns, rootdir-relative) and `variables`.
    pub fn gather(
        environment: u64,
        rootdir: &Path,
        inifile: Option<&str>,
        pytest_args: &[String],
        inputs: &[String],
        variables: &[String],
    ) -> Self {
        let mut items = BTreeMap::new();
        let configuration =
            inifile.and_then(|file| std::fs::read(rootdir.join(file)).ok()).unwrap_or_default();
        items.insert("pytest's configuration file".to_owned(), fnv1a64(&configuration));
        let mut arguments = Vec::new();
        let mut iterator = pytest_args.iter();
        while let Some(argument) = iterator.next() {
            if argument == "--deselect" {
                iterator.next();
            } else if argument.starts_with("--deselect=")
                || (!argument.starts_with('-')
                    && rootdir.join(argument.split("::").next().unwrap_or(argument)).exists())
            {
                continue;
            } else {
                arguments.push(argument.as_str());
            }
        }
        items.insert("pytest's arguments".to_owned(), fnv1a64(arguments.join("\0").as_bytes()));
        if !inputs.is_empty() {
            items.insert("a file in affected-inputs".to_owned(), inputs_hash(rootdir, inputs));
        }
        if !variables.is_empty() {
            let values: Vec<String> =
                variables.iter().map(|name| format!("{name}={:?}", std::env::var_os(name))).collect();
            items.insert("a variable in affected-env".to_owned(), fnv1a64(values.join("\0").as_bytes()));
        }
        Self { environment, items }
    }
}

/// The hash of every file matching the patterns: paths and contents.
fn inputs_hash(rootdir: &Path, patterns: &[String]) -> u64 {
    let mut files: Vec<String> = Vec::new();
    for pattern in patterns {
        let pattern = pattern.trim_start_matches("./");
        // Walk only below the pattern's literal directories.
        let literal: Vec<&str> = pattern.split('/').take_while(|part| !part.contains(['*', '?'])).collect();
        let base =
            if literal.len() == pattern.split('/').count() { pattern.to_owned() } else { literal.join("/") };
        walk(rootdir, &base, &mut |relative| {
            if glob_matches(pattern, relative) {
                files.push(relative.to_owned());
            }
        });
    }
    files.sort();
    files.dedup();
    let mut text = Vec::new();
    for file in files {
        text.extend_from_slice(file.as_bytes());
        text.push(0);
        text.extend_from_slice(
            &fnv1a64(&std::fs::read(rootdir.join(&file)).unwrap_or_default()).to_le_bytes(),
        );
    }
    fnv1a64(&text)
}

/// Calls `found` with every file under `rootdir/directory`, rootdir-relative.
fn walk(rootdir: &Path, directory: &str, found: &mut dyn FnMut(&str)) {
    let path = rootdir.join(directory);
    if path.is_file() {
        found(directory);
        return;
    }
    let Ok(entries) = std::fs::read_dir(&path) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let relative = if directory.is_empty() { name } else { format!("{directory}/{name}") };
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            walk(rootdir, &relative, found);
        } else {
            found(&relative);
        }
    }
}

/// A glob over `/`-separated paths: `*` and `?` within a part, `**` for
/// any number of parts.
fn glob_matches(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    parts_match(&pattern, &path)
}

fn parts_match(pattern: &[&str], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(&"**"), _) => {
            parts_match(&pattern[1..], path) || (!path.is_empty() && parts_match(pattern, &path[1..]))
        }
        (Some(part), Some(name)) => {
            part_matches(part.as_bytes(), name.as_bytes()) && parts_match(&pattern[1..], &path[1..])
        }
        _ => false,
    }
}

fn part_matches(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            part_matches(&pattern[1..], name) || (!name.is_empty() && part_matches(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => part_matches(&pattern[1..], &name[1..]),
        (Some(expected), Some(actual)) => expected == actual && part_matches(&pattern[1..], &name[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_within_parts_and_across_them_with_double_stars() {
        assert!(glob_matches("tests/data/**", "tests/data/a/b.json"));
        assert!(glob_matches("tests/data/*.json", "tests/data/b.json"));
        assert!(!glob_matches("tests/data/*.json", "tests/data/a/b.json"));
        assert!(glob_matches("**/*.csv", "x/y/z.csv"));
        assert!(glob_matches("fixtures/data.txt", "fixtures/data.txt"));
        assert!(!glob_matches("fixtures/data?.txt", "fixtures/data.txt"));
    }

    #[test]
    fn a_declared_input_or_an_argument_changes_the_context_and_paths_do_not() {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path();
        std::fs::create_dir_all(root.join("tests/data")).unwrap();
        std::fs::write(root.join("tests/data/a.json"), "1").unwrap();
        let inputs = ["tests/data/**".to_owned()];
        let gather = |arguments: &[&str]| {
            let arguments: Vec<String> = arguments.iter().map(|argument| (*argument).to_owned()).collect();
            Context::gather(1, root, None, &arguments, &inputs, &[])
        };
        let before = gather(&["-p", "no:randomly"]);
        assert_eq!(before, gather(&["-p", "no:randomly", "tests", "--deselect", "tests/x.py::t"]));
        assert_ne!(before, gather(&["-p", "no:cacheprovider"]));
        std::fs::write(root.join("tests/data/a.json"), "2").unwrap();
        assert_ne!(before, gather(&["-p", "no:randomly"]));
    }
}
