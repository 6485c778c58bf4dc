//! The first phase after collection: which of the collected tests this run
//! runs. `--lf` keeps last time's failures (as pytest does: files without a
//! failure are skipped whole, the other tests of files with one are
//! deselected); `--shard K/N` keeps this machine's part of a partition made
//! from the durations history. Both leave the whole collection aside: a
//! replacement worker's collection is checked against it.

use std::collections::HashSet;

use crate::errors::ShoalError;
use crate::history::History;
use crate::lastfailed::LastFailed;
use crate::results::ShardInfo;
use crate::settings::{LastFailedMode, RunSettings};
use crate::table::TestTable;

/// The tests this run runs.
pub(super) struct Selected {
    /// The selected tests, in collection order.
    pub(super) table: TestTable,
    /// The whole collection when `--lf` or `--shard` runs part of it.
    pub(super) whole_collection: Option<TestTable>,
    /// Tests `--lf` and `--shard` left out: pytest counts them as deselected.
    pub(super) left_out: u64,
    /// The shard this run is, with `--shard`.
    pub(super) shard: Option<ShardInfo>,
    /// What `--lf` or `--ff` did, as pytest's header says it
    /// (`run-last-failure: rerun previous 2 failures`).
    pub(super) last_failed_status: Option<String>,
}

/// Narrows `collected` by `--lf` and `--shard`.
pub(super) fn select(
    settings: &RunSettings,
    collected: TestTable,
    last_failed: Option<&LastFailed>,
    history: &History,
) -> Result<Selected, ShoalError> {
    let mut selected = Selected {
        table: collected,
        whole_collection: None,
        left_out: 0,
        shard: None,
        last_failed_status: None,
    };
    if settings.last_failed != LastFailedMode::Off && last_failed.is_none() {
        crate::output::warn("--lf/--ff need pytest's cache plugin, which is off here; running everything");
    }
    match (settings.last_failed, last_failed) {
        (LastFailedMode::Only, Some(record)) => selected.left_out += only_last_failed(&mut selected, record),
        (LastFailedMode::First, Some(record)) => {
            let failed = failed_count(&selected.table, record);
            selected.last_failed_status = Some(last_failed_status(record, failed, " first", 0));
        }
        _ => {}
    }
    if let Some(request) = &settings.shard {
        let narrowed = crate::shard::narrow(
            request,
            &mut selected.table,
            &mut selected.whole_collection,
            history,
            &settings.serial_markers,
        )?;
        selected.left_out += narrowed.left_out as u64;
        selected.shard = Some(narrowed.info);
    }
    Ok(selected)
}

/// How many of the tests failed last time.
fn failed_count(table: &TestTable, record: &LastFailed) -> usize {
    (0..table.len()).filter(|&test| record.contains(table.nodeid(test))).count()
}

/// pytest's `run-last-failure:` line (its `LFPlugin._report_status`), given
/// how many selected tests failed last time; `suffix` is ` first` for `--ff`.
fn last_failed_status(record: &LastFailed, failed: usize, suffix: &str, skipped_files: usize) -> String {
    let status = if record.is_empty() {
        "no previously failed tests, not deselecting items.".to_owned()
    } else if failed == 0 {
        format!("{} known failures not in selected tests", record.len())
    } else {
        let mut status =
            format!("rerun previous {failed} failure{}{suffix}", if failed == 1 { "" } else { "s" });
        if skipped_files > 0 {
            status.push_str(&format!(
                " (skipped {skipped_files} file{})",
                if skipped_files == 1 { "" } else { "s" }
            ));
        }
        status
    };
    format!("run-last-failure: {status}")
}

/// `--lf`: keeps the tests that failed last time, as pytest does, and says
/// so in pytest's words; returns how many tests it deselected (see
/// [`LastFailedCollection`] for the ones pytest never collects).
fn only_last_failed(selected: &mut Selected, record: &LastFailed) -> u64 {
    let table = &selected.table;
    let failed = |test| record.contains(table.nodeid(test));
    let failed_count = failed_count(table, record);
    if failed_count == 0 {
        selected.last_failed_status = Some(last_failed_status(record, 0, "", 0));
        return 0;
    }
    let collection = LastFailedCollection::new(table, &failed);
    let deselected = (0..table.len())
        .filter(|&test| !failed(test) && collection.collects(table.item(test), false))
        .count();
    selected.last_failed_status =
        Some(last_failed_status(record, failed_count, "", collection.skipped_files));
    let (failed_only, _) = table.retain(failed);
    selected.whole_collection = Some(std::mem::replace(&mut selected.table, failed_only));
    deselected as u64
}

/// What pytest's `--lf` collects (its `LFPluginCollWrapper` and
/// `LFPluginCollSkipfiles`), which its counts are of: `collected 4 items /
/// 1 deselected` counts only these.
///
/// pytest collects the directories and files holding last time's failures
/// first, at each level. The first file that has a failed test of its own
/// (not in a class) starts the filtering: from then on, a file without a
/// failure is skipped whole, and a file with one keeps only its failed
/// tests, its classes' tests (deselected later) and all its tests when it
/// was named on the command line. Files before that are collected whole.
struct LastFailedCollection {
    /// Per file of the table (by its index), whether its tests are filtered.
    filtered: Vec<bool>,
    /// Per file, whether it is skipped whole.
    skipped: Vec<bool>,
    skipped_files: usize,
}

impl LastFailedCollection {
    fn new(table: &TestTable, failed: &dyn Fn(usize) -> bool) -> Self {
        let files = table.module_count();
        let (mut holds_failure, mut own_failure) = (vec![false; files], vec![false; files]);
        let mut paths: Vec<&str> = vec![""; files];
        for test in 0..table.len() {
            let item = table.item(test);
            let file = item.module as usize;
            paths[file] = item.file.unwrap_or(item.path);
            if failed(test) {
                holds_failure[file] = true;
                own_failure[file] |= item.file_child;
            }
        }
        let failing: HashSet<&str> = paths
            .iter()
            .zip(&holds_failure)
            .filter(|(_, holds)| **holds)
            .flat_map(|(path, _)| prefixes(path))
            .collect();
        let mut first_under: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (file, path) in paths.iter().enumerate() {
            for prefix in prefixes(path) {
                first_under.entry(prefix).or_insert(file);
            }
        }
        // pytest's order: at each level, what holds a failure first, then
        // the collection order.
        let mut order: Vec<usize> = (0..files).collect();
        order.sort_by_cached_key(|&file| {
            prefixes(paths[file])
                .map(|prefix| (!failing.contains(prefix), first_under[prefix]))
                .collect::<Vec<_>>()
        });
        let mut collection =
            Self { filtered: vec![false; files], skipped: vec![false; files], skipped_files: 0 };
        let mut filtering = false;
        for file in order {
            if holds_failure[file] {
                filtering |= own_failure[file];
                collection.filtered[file] = filtering;
            } else if filtering {
                collection.skipped[file] = true;
                collection.skipped_files += 1;
            }
        }
        collection
    }

    /// Whether pytest collects this test, given whether it failed last time.
    fn collects(&self, item: crate::table::Item<'_>, failed: bool) -> bool {
        let file = item.module as usize;
        !self.skipped[file] && (failed || !self.filtered[file] || !item.file_child || item.file_named)
    }
}

/// A relative path's directories and the path itself: `a`, `a/b`, `a/b/c.py`.
fn prefixes(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(|(index, _)| &path[..index]).chain(std::iter::once(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::CollectedItem;

    /// A table of `(node id, file child)`, each test's file the part of its
    /// node id before `::`.
    fn table(tests: &[(&str, bool)]) -> TestTable {
        let mut table = TestTable::default();
        for &(nodeid, file_child) in tests {
            let path = nodeid.split("::").next().expect("a path").to_owned();
            table.push(CollectedItem {
                nodeid: nodeid.to_owned(),
                module: Some(path.clone()),
                path,
                file_child,
                ..CollectedItem::default()
            });
        }
        table
    }

    /// Which tests pytest's `--lf` collects, and how many files it skips.
    fn collected(table: &TestTable, failed: &[&str]) -> (Vec<String>, usize) {
        let failed = |test| failed.contains(&table.nodeid(test));
        let collection = LastFailedCollection::new(table, &failed);
        let kept = (0..table.len()).filter(|&test| collection.collects(table.item(test), failed(test)));
        (kept.map(|test| table.nodeid(test).to_owned()).collect(), collection.skipped_files)
    }

    #[test]
    fn last_failed_collects_what_pytest_collects_in_its_order() {
        // As pytest 9.2 does it on these files (`collected 3 items / 1
        // deselected`, one file skipped): tests/a holds a failure, so it
        // comes first; its class-only failure starts no filtering, so
        // test_a2 is collected; test_b1's own failure starts it, so its
        // passing test is dropped and test_b2, after it, is skipped.
        let table = table(&[
            ("tests/a/test_a1.py::TestK::test_k", false),
            ("tests/a/test_a2.py::test_a2", true),
            ("tests/b/test_b1.py::test_b1", true),
            ("tests/b/test_b1.py::test_b1_ok", true),
            ("tests/b/test_b2.py::test_b2", true),
        ]);
        let failed = ["tests/a/test_a1.py::TestK::test_k", "tests/b/test_b1.py::test_b1"];
        let (kept, skipped) = collected(&table, &failed);
        assert_eq!(
            kept,
            [
                "tests/a/test_a1.py::TestK::test_k",
                "tests/a/test_a2.py::test_a2",
                "tests/b/test_b1.py::test_b1"
            ]
        );
        assert_eq!(skipped, 1);
    }

    #[test]
    fn last_failed_keeps_a_failing_files_class_tests_and_skips_files_after_the_first_own_failure() {
        // A file without failures collected before the failing ones is
        // skipped all the same: failing files are collected first.
        let table = table(&[
            ("test_0.py::test_zero", true),
            ("test_a.py::test_ok", true),
            ("test_a.py::test_bad", true),
            ("test_a.py::TestC::test_c_ok", false),
        ]);
        let (kept, skipped) = collected(&table, &["test_a.py::test_bad"]);
        assert_eq!(kept, ["test_a.py::test_bad", "test_a.py::TestC::test_c_ok"]);
        assert_eq!(skipped, 1);
    }
}
