//! After the run: the workers' files (one per worker process, one JSON line
//! per test; a line cut short by a crash is skipped) folded into the store.
//! A test that ran to a cacheable outcome gets its dependencies
//! fingerprinted; a failure keeps only its outcome (it runs next time); a
//! test that did not run keeps its old entry.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::Deserialize;

use super::Snapshot;
use super::store::{Dependency, Part, Store, TestEntry};
use crate::results::{Outcome, TestRecord};

/// Outcomes a later run may replay.
pub fn cacheable(outcome: Outcome) -> bool {
    matches!(outcome, Outcome::Passed | Outcome::Skipped | Outcome::Xfailed | Outcome::Xpassed)
}

/// What the workers recorded.
#[derive(Debug, Default)]
pub struct Shards {
    /// Per node id: `(file, first line, code name)` of each code object run.
    tests: HashMap<String, BTreeSet<(String, u32, String)>>,
    /// Project files imported before the first test, in any worker.
    imported: BTreeSet<String>,
    /// Code objects run while they were (at collection, or by a test that
    /// imported a module first): what their module-level code called.
    imported_blocks: BTreeSet<(String, u32, String)>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ShardLine {
    Test {
        nodeid: String,
        blocks: Vec<(String, u32, String)>,
    },
    Imported {
        imported: Vec<String>,
        #[serde(default)]
        blocks: Vec<(String, u32, String)>,
    },
}

impl Shards {
    /// Reads every worker's file in `directory` (none: nothing recorded).
    pub fn read(directory: &Path) -> Self {
        let mut shards = Self::default();
        let Ok(entries) = std::fs::read_dir(directory) else { return shards };
        for entry in entries.flatten() {
            if let Ok(text) = std::fs::read_to_string(entry.path()) {
                shards.add_lines(&text);
            }
        }
        shards
    }

    /// Shards from one file's text.
    #[cfg(test)]
    pub fn from_lines(text: &str) -> Self {
        let mut shards = Self::default();
        shards.add_lines(text);
        shards
    }

    fn add_lines(&mut self, text: &str) {
        for line in text.lines() {
            match serde_json::from_str::<ShardLine>(line) {
                // A rerun's attempts add up.
                Ok(ShardLine::Test { nodeid, blocks }) => {
                    self.tests.entry(nodeid).or_default().extend(blocks)
                }
                Ok(ShardLine::Imported { imported, blocks }) => {
                    self.imported.extend(imported);
                    self.imported_blocks.extend(blocks);
                }
                Err(_) => {}
            }
        }
    }
}

/// A test that ran this time.
pub struct Ran<'a> {
    pub nodeid: &'a str,
    pub test_file: &'a str,
    pub record: &'a TestRecord,
    pub no_cache: bool,
}

/// Folds this run into `store`, whose context is this run's.
/// `test_files` are the files of the run's tests: what a test module ran
/// at collection counts for its own tests (as their whole file), not for
/// every test (see [`own_tests_only`]).
pub fn update(
    store: &mut Store,
    shards: &Shards,
    ran: &[Ran<'_>],
    test_files: &BTreeSet<&str>,
    snapshot: &mut Snapshot,
) {
    let every_tests = |file: &str| !own_tests_only(file, test_files);
    let imported: BTreeSet<String> =
        store.imported.keys().cloned().chain(shards.imported.iter().cloned()).collect();
    store.imported = imported
        .into_iter()
        .filter(|file| every_tests(file))
        .filter_map(|file| snapshot.hash(&file, &Part::ModuleLevel).map(|hash| (file, hash)))
        .collect();
    let mut imported_blocks: BTreeSet<(String, Part)> = std::mem::take(&mut store.imported_blocks)
        .into_iter()
        .map(|dependency| (dependency.file, dependency.part))
        .collect();
    for (file, line, name) in &shards.imported_blocks {
        if let Some(part) = snapshot.part_at(file, *line, name) {
            imported_blocks.insert((file.clone(), part));
        }
    }
    store.imported_blocks = imported_blocks
        .into_iter()
        .filter(|(file, _)| every_tests(file))
        .filter_map(|(file, part)| snapshot.hash(&file, &part).map(|hash| Dependency { file, part, hash }))
        .collect();
    let mut tests: BTreeMap<String, (TestEntry, Vec<Dependency>)> = std::mem::take(&mut store.tests)
        .into_iter()
        .map(|(nodeid, entry)| {
            let dependencies = store.dependencies_of(&entry).cloned().collect();
            (nodeid, (entry, dependencies))
        })
        .collect();
    for test in ran {
        let outcome = test.record.outcome;
        if outcome == Outcome::NotRun {
            continue;
        }
        let recorded = shards.tests.get(test.nodeid);
        let dependencies = match recorded {
            _ if !cacheable(outcome) || test.no_cache => Some(Vec::new()),
            Some(blocks) => dependencies(blocks, test.test_file, snapshot),
            // Nothing recorded (its worker died before writing it).
            None => None,
        };
        let Some(dependencies) = dependencies else {
            tests.remove(test.nodeid);
            continue;
        };
        let entry = TestEntry {
            outcome,
            duration: test.record.duration,
            skip_reason: test.record.skip_reason().map(str::to_owned),
            dependencies: Vec::new(),
        };
        tests.insert(test.nodeid.to_owned(), (entry, dependencies));
    }
    intern(store, tests);
}

/// Whether what a file ran at collection counts for its own tests only (as
/// its whole file): a conftest, or a test module by pytest's default names
/// (`test_*.py`, `*_test.py`). Any other project file, a module whose
/// doctests are collected too, counts for every test: other tests import
/// it.
fn own_tests_only(file: &str, test_files: &BTreeSet<&str>) -> bool {
    let name = file.rsplit('/').next().unwrap_or(file);
    name == "conftest.py"
        || (test_files.contains(file) && (name.starts_with("test_") || name.ends_with("_test.py")))
}

/// A test's dependencies: the parts of files it ran, its module and its
/// conftests (`None` if a file cannot be read).
fn dependencies(
    blocks: &BTreeSet<(String, u32, String)>,
    test_file: &str,
    snapshot: &mut Snapshot,
) -> Option<Vec<Dependency>> {
    let mut parts: BTreeSet<(String, Part)> = BTreeSet::new();
    for (file, line, name) in blocks {
        let part = snapshot.part_at(file, *line, name)?;
        // Anything run in a file depends on its module-level code too.
        parts.insert((file.clone(), Part::ModuleLevel));
        parts.insert((file.clone(), part));
    }
    parts.insert((test_file.to_owned(), Part::Whole));
    for conftest in snapshot.conftests(test_file) {
        parts.insert((conftest, Part::Whole));
    }
    parts
        .into_iter()
        .map(|(file, part)| snapshot.hash(&file, &part).map(|hash| Dependency { file, part, hash }))
        .collect()
}

/// Stores the entries with their dependencies interned afresh (what no
/// test refers to any more is dropped).
fn intern(store: &mut Store, tests: BTreeMap<String, (TestEntry, Vec<Dependency>)>) {
    let mut indexes: HashMap<Dependency, u32> = HashMap::new();
    store.dependencies.clear();
    for (nodeid, (mut entry, dependencies)) in tests {
        entry.dependencies = dependencies
            .into_iter()
            .map(|dependency| {
                *indexes.entry(dependency.clone()).or_insert_with(|| {
                    store.dependencies.push(dependency);
                    (store.dependencies.len() - 1) as u32
                })
            })
            .collect();
        store.tests.insert(nodeid, entry);
    }
}
