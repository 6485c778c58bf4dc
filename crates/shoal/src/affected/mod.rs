//! `shoal run --affected`: which tests a change can affect.
//!
//! Workers record which code blocks of the project each test ran
//! (`python/shoal_affected.py`); after the run shoal fingerprints those
//! blocks ([`source`]) and keeps, per test, its outcome and its
//! dependencies in a [`store::Store`]. Next time a test runs when anything
//! it depended on changed (a function it ran, the module-level code of a
//! file it ran or that was imported at collection, its own module, a
//! conftest above it, the interpreter, the installed packages, pytest's
//! configuration or arguments, the declared inputs and variables), when it
//! failed last time, is new, or is marked `no_cache`; every other test
//! reports its stored outcome, marked cached.
//!
//! This module decides ([`verdict`]) and records ([`record`]); the run's
//! phase in `commands/run` wires it in.

pub mod context;
pub mod record;
pub mod source;
pub mod store;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use self::context::{Context, environment_hash};
pub use self::record::{Ran, Shards, update};
use self::source::SourceFile;
use self::store::{Dependency, Part, Store, TestEntry};
use crate::results::Outcome;

/// The files of this run's project, read and fingerprinted once each (at
/// the decision, so what is recorded after the run is what the decision
/// saw).
pub struct Snapshot {
    rootdir: PathBuf,
    files: HashMap<String, Option<SourceFile>>,
}

impl Snapshot {
    pub fn new(rootdir: &Path) -> Self {
        Self { rootdir: rootdir.to_owned(), files: HashMap::new() }
    }

    /// A file by rootdir-relative path (`None`: gone or unreadable).
    fn file(&mut self, path: &str) -> Option<&SourceFile> {
        let rootdir = &self.rootdir;
        self.files
            .entry(path.to_owned())
            .or_insert_with(|| {
                std::fs::read_to_string(rootdir.join(path)).ok().map(|text| source::parse(&text))
            })
            .as_ref()
    }

    /// The current hash of a part of a file.
    pub fn hash(&mut self, file: &str, part: &Part) -> Option<u64> {
        let source = self.file(file)?;
        match part {
            Part::Whole => Some(source.whole),
            Part::ModuleLevel => Some(source.module_level),
            Part::Block(name) => source.block(name),
        }
    }

    /// The part of `file` a code object starting at `line` belongs to.
    pub fn part_at(&mut self, file: &str, line: u32, code_name: &str) -> Option<Part> {
        let source = self.file(file)?;
        Some(source.block_at(line, code_name).map_or(Part::ModuleLevel, |name| Part::Block(name.to_owned())))
    }

    /// The conftest.py files pytest loads for a test in `test_file`: from
    /// the rootdir down to the test's directory (rootdir-relative).
    pub fn conftests(&self, test_file: &str) -> Vec<String> {
        let mut directories: Vec<&str> = vec![""];
        let mut end = 0;
        while let Some(slash) = test_file[end..].find('/') {
            end += slash;
            directories.push(&test_file[..end]);
            end += 1;
        }
        directories
            .into_iter()
            .map(|directory| {
                if directory.is_empty() {
                    "conftest.py".to_owned()
                } else {
                    format!("{directory}/conftest.py")
                }
            })
            .filter(|conftest| self.rootdir.join(conftest).is_file())
            .collect()
    }
}

/// Why a test runs under `--affected`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// No usable store (the notice said why).
    NoStore,
    /// The store has no entry for it.
    New,
    /// It did not pass last time (failures are never cached).
    NotPassed(Outcome),
    /// It is marked `no_cache`.
    NoCacheMarker,
    /// The interpreter or the installed packages changed.
    Environment,
    /// A context item changed (`pytest arguments`, ...).
    Context(String),
    /// Module-level code of a file imported at collection changed.
    Imported(String),
    /// A function run at collection (or at an import) changed.
    ImportedBlock(Dependency),
    /// A file part it depended on changed or is gone.
    Changed(Dependency),
    /// A conftest.py appeared above it.
    NewConftest(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoStore => write!(formatter, "there is no usable record of past runs"),
            Self::New => write!(formatter, "it has no record: it is new or never ran under --affected"),
            Self::NotPassed(outcome) => {
                write!(formatter, "it was {} last time, and failures are never cached", outcome.as_str())
            }
            Self::NoCacheMarker => write!(formatter, "it is marked no_cache"),
            Self::Environment => write!(formatter, "the interpreter or the installed packages changed"),
            Self::Context(name) => write!(formatter, "{name} changed"),
            Self::Imported(file) => {
                write!(formatter, "{file}: its module-level code (run at collection, for every test) changed")
            }
            Self::ImportedBlock(dependency) => match &dependency.part {
                Part::Block(name) => write!(
                    formatter,
                    "{}: function {name}, run at collection or at an import (for every test), changed",
                    dependency.file
                ),
                _ => write!(
                    formatter,
                    "{}: code run at collection or at an import (for every test) changed",
                    dependency.file
                ),
            },
            Self::Changed(dependency) => match &dependency.part {
                Part::Whole => write!(formatter, "{} changed", dependency.file),
                Part::ModuleLevel => write!(formatter, "{}: module-level code changed", dependency.file),
                Part::Block(name) => write!(formatter, "{}: function {name} changed", dependency.file),
            },
            Self::NewConftest(file) => write!(formatter, "{file} is new"),
        }
    }
}

/// What happens to one test.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict<'a> {
    Run(Reason),
    Cached(&'a TestEntry),
}

/// Why every test runs, if something they all depend on changed.
pub fn global_reason(store: &Store, context: &Context, snapshot: &mut Snapshot) -> Option<Reason> {
    if store.environment != context.environment {
        return Some(Reason::Environment);
    }
    let names = store.context.keys().chain(context.items.keys());
    if let Some(name) = names.into_iter().find(|name| store.context.get(*name) != context.items.get(*name)) {
        return Some(Reason::Context(name.clone()));
    }
    if let Some((file, _)) =
        store.imported.iter().find(|(file, hash)| snapshot.hash(file, &Part::ModuleLevel) != Some(**hash))
    {
        return Some(Reason::Imported(file.clone()));
    }
    store
        .imported_blocks
        .iter()
        .find(|dependency| snapshot.hash(&dependency.file, &dependency.part) != Some(dependency.hash))
        .map(|dependency| Reason::ImportedBlock(dependency.clone()))
}

/// One test's verdict, the store being usable and no [`global_reason`].
pub fn verdict<'a>(
    store: &'a Store,
    nodeid: &str,
    test_file: &str,
    no_cache: bool,
    snapshot: &mut Snapshot,
) -> Verdict<'a> {
    if no_cache {
        return Verdict::Run(Reason::NoCacheMarker);
    }
    let Some(entry) = store.tests.get(nodeid) else { return Verdict::Run(Reason::New) };
    if !record::cacheable(entry.outcome) || entry.dependencies.is_empty() {
        return Verdict::Run(Reason::NotPassed(entry.outcome));
    }
    for dependency in store.dependencies_of(entry) {
        if snapshot.hash(&dependency.file, &dependency.part) != Some(dependency.hash) {
            return Verdict::Run(Reason::Changed(dependency.clone()));
        }
    }
    for conftest in snapshot.conftests(test_file) {
        let known = store.dependencies_of(entry).any(|dependency| dependency.file == conftest);
        if !known {
            return Verdict::Run(Reason::NewConftest(conftest));
        }
    }
    Verdict::Cached(entry)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A project on disk with a store recorded from it.
    fn project() -> (tempfile::TempDir, Store, Context) {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path();
        std::fs::create_dir_all(root.join("tests")).unwrap();
        std::fs::write(
            root.join("calc.py"),
            "LIMIT = 1\n\ndef add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n",
        )
        .unwrap();
        std::fs::write(
            root.join("tests/test_calc.py"),
            "from calc import add\n\ndef test_add():\n    assert add(1, 2) == 3\n",
        )
        .unwrap();
        let context = Context { environment: 1, items: BTreeMap::from([("pytest arguments".to_owned(), 2)]) };
        let mut store = Store::new("/r", 1, context.items.clone());
        let mut snapshot = Snapshot::new(root);
        let shards = Shards::from_lines(
            "{\"imported\": [\"calc.py\", \"tests/test_calc.py\"]}\n\
             {\"nodeid\": \"tests/test_calc.py::test_add\", \"blocks\": [[\"calc.py\", 3, \"add\"], [\"tests/test_calc.py\", 3, \"test_add\"]]}\n\
             {\"nodeid\": \"tests/test_calc.py::test_cut\", \"blo",
        );
        let record = crate::results::TestRecord::new(Outcome::Passed);
        let ran = [Ran {
            nodeid: "tests/test_calc.py::test_add",
            test_file: "tests/test_calc.py",
            record: &record,
            no_cache: false,
        }];
        update(&mut store, &shards, &ran, &["tests/test_calc.py"].into(), &mut snapshot);
        (directory, store, context)
    }

    fn verdict_now(root: &Path, store: &Store, context: &Context) -> Result<String, Option<Reason>> {
        let mut snapshot = Snapshot::new(root);
        if let Some(reason) = global_reason(store, context, &mut snapshot) {
            return Err(Some(reason));
        }
        match verdict(store, "tests/test_calc.py::test_add", "tests/test_calc.py", false, &mut snapshot) {
            Verdict::Cached(entry) => Ok(entry.outcome.as_str().to_owned()),
            Verdict::Run(reason) => Err(Some(reason)),
        }
    }

    #[test]
    fn an_unchanged_project_replays_and_an_edit_elsewhere_keeps_it_cached() {
        let (directory, store, context) = project();
        let root = directory.path();
        assert_eq!(verdict_now(root, &store, &context), Ok("passed".to_owned()));
        std::fs::write(
            root.join("calc.py"),
            "LIMIT = 1\n\n# note\ndef add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return b - a\n",
        )
        .unwrap();
        assert_eq!(verdict_now(root, &store, &context), Ok("passed".to_owned()), "sub was not run by it");
    }

    #[test]
    fn an_edit_to_a_function_it_ran_or_to_module_level_code_runs_it() {
        let (directory, store, context) = project();
        let root = directory.path();
        std::fs::write(root.join("calc.py"), "LIMIT = 1\n\ndef add(a, b):\n    return a - b\n").unwrap();
        assert_eq!(
            verdict_now(root, &store, &context).unwrap_err().unwrap().to_string(),
            "calc.py: function add changed"
        );
        std::fs::write(root.join("calc.py"), "LIMIT = 2\n\ndef add(a, b):\n    return a + b\n").unwrap();
        assert_eq!(
            verdict_now(root, &store, &context).unwrap_err(),
            Some(Reason::Imported("calc.py".to_owned()))
        );
    }

    #[test]
    fn a_function_run_at_collection_runs_every_test_when_it_changes() {
        let (directory, mut store, context) = project();
        let root = directory.path();
        let mut snapshot = Snapshot::new(root);
        let shards = Shards::from_lines(
            "{\"imported\": [], \"blocks\": [[\"calc.py\", 6, \"sub\"], [\"tests/test_calc.py\", 3, \"test_add\"]]}\n",
        );
        update(&mut store, &shards, &[], &["tests/test_calc.py"].into(), &mut snapshot);
        let parts: Vec<(&str, &Part)> = store
            .imported_blocks
            .iter()
            .map(|dependency| (dependency.file.as_str(), &dependency.part))
            .collect();
        assert_eq!(
            parts,
            [("calc.py", &Part::Block("sub".to_owned()))],
            "a test module's own code is its tests'"
        );
        assert_eq!(verdict_now(root, &store, &context), Ok("passed".to_owned()));
        std::fs::write(
            root.join("calc.py"),
            "LIMIT = 1\n\ndef add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return b - a\n",
        )
        .unwrap();
        assert_eq!(
            verdict_now(root, &store, &context).unwrap_err().unwrap().to_string(),
            "calc.py: function sub, run at collection or at an import (for every test), changed"
        );
    }

    #[test]
    fn a_module_with_collected_doctests_counts_for_every_test_and_a_test_module_for_its_own() {
        let (directory, mut store, _) = project();
        let mut snapshot = Snapshot::new(directory.path());
        let shards = Shards::from_lines("{\"imported\": [\"calc.py\", \"tests/test_calc.py\"]}\n");
        update(&mut store, &shards, &[], &["calc.py", "tests/test_calc.py"].into(), &mut snapshot);
        assert_eq!(store.imported.keys().collect::<Vec<_>>(), ["calc.py"]);
    }

    #[test]
    fn context_environment_and_new_conftests_run_it() {
        let (directory, store, context) = project();
        let root = directory.path();
        let other = Context { environment: 9, ..context.clone() };
        assert_eq!(verdict_now(root, &store, &other), Err(Some(Reason::Environment)));
        let mut arguments = context.clone();
        arguments.items.insert("pytest arguments".to_owned(), 3);
        assert_eq!(
            verdict_now(root, &store, &arguments),
            Err(Some(Reason::Context("pytest arguments".to_owned())))
        );
        std::fs::write(root.join("tests/conftest.py"), "import pytest\n").unwrap();
        assert_eq!(
            verdict_now(root, &store, &context),
            Err(Some(Reason::NewConftest("tests/conftest.py".to_owned())))
        );
    }

    #[test]
    fn a_failure_a_new_test_and_no_cache_always_run() {
        let (directory, mut store, _) = project();
        let mut snapshot = Snapshot::new(directory.path());
        assert_eq!(
            verdict(&store, "tests/test_calc.py::test_add", "tests/test_calc.py", true, &mut snapshot),
            Verdict::Run(Reason::NoCacheMarker)
        );
        assert_eq!(
            verdict(&store, "tests/test_calc.py::test_new", "tests/test_calc.py", false, &mut snapshot),
            Verdict::Run(Reason::New)
        );
        let failed = crate::results::TestRecord::new(Outcome::Failed);
        let ran = [Ran {
            nodeid: "tests/test_calc.py::test_add",
            test_file: "tests/test_calc.py",
            record: &failed,
            no_cache: false,
        }];
        update(&mut store, &Shards::default(), &ran, &["tests/test_calc.py"].into(), &mut snapshot);
        assert_eq!(
            verdict(&store, "tests/test_calc.py::test_add", "tests/test_calc.py", false, &mut snapshot),
            Verdict::Run(Reason::NotPassed(Outcome::Failed))
        );
        assert!(store.dependencies.is_empty(), "unreferenced dependencies are dropped");
    }
}
