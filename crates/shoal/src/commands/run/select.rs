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
}

/// Narrows `collected` by `--lf` and `--shard`.
pub(super) fn select(
    settings: &RunSettings,
    collected: TestTable,
    last_failed: Option<&LastFailed>,
    history: &History,
) -> Result<Selected, ShoalError> {
    let mut selected = Selected { table: collected, whole_collection: None, left_out: 0, shard: None };
    if settings.last_failed != LastFailedMode::Off && last_failed.is_none() {
        crate::output::warn("--lf/--ff need pytest's cache plugin, which is off here; running everything");
    }
    if settings.last_failed == LastFailedMode::Only
        && let Some(record) = last_failed
    {
        selected.left_out += only_last_failed(&mut selected, record);
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

/// `--lf`: keeps the tests that failed last time, as pytest does, and says
/// so in pytest's words; returns how many tests it deselected.
fn only_last_failed(selected: &mut Selected, record: &LastFailed) -> u64 {
    let table = &selected.table;
    let failed_tests: Vec<usize> =
        (0..table.len()).filter(|&test| record.contains(table.nodeid(test))).collect();
    let failed = failed_tests.len();
    if failed == 0 {
        crate::output::notice("run-last-failure: no previously failed tests, not deselecting items.");
        return 0;
    }
    let failing_files: HashSet<u32> = failed_tests.iter().map(|&test| table.item(test).module).collect();
    let skipped_files = table.module_count() - failing_files.len();
    let deselected = (0..table.len())
        .filter(|&test| {
            failing_files.contains(&table.item(test).module) && !record.contains(table.nodeid(test))
        })
        .count();
    let files = if skipped_files > 0 {
        format!(" (skipped {skipped_files} file{})", if skipped_files == 1 { "" } else { "s" })
    } else {
        String::new()
    };
    crate::output::notice(&format!(
        "run-last-failure: rerun previous {failed} failure{}{files}",
        if failed == 1 { "" } else { "s" }
    ));
    let (failed_only, _) = table.retain(|test| record.contains(table.nodeid(test)));
    selected.whole_collection = Some(std::mem::replace(&mut selected.table, failed_only));
    deselected as u64
}
