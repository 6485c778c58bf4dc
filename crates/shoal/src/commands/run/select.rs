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
            let failed =
                (0..selected.table.len()).filter(|&test| record.contains(selected.table.nodeid(test)));
            selected.last_failed_status = Some(last_failed_status(record, failed.count(), " first", 0));
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
/// so in pytest's words; returns how many tests it deselected.
fn only_last_failed(selected: &mut Selected, record: &LastFailed) -> u64 {
    let table = &selected.table;
    let failed_tests: Vec<usize> =
        (0..table.len()).filter(|&test| record.contains(table.nodeid(test))).collect();
    let failed = failed_tests.len();
    if failed == 0 {
        selected.last_failed_status = Some(last_failed_status(record, 0, "", 0));
        return 0;
    }
    let failing_files: HashSet<u32> = failed_tests.iter().map(|&test| table.item(test).module).collect();
    let skipped_files = table.module_count() - failing_files.len();
    let deselected = (0..table.len())
        .filter(|&test| {
            failing_files.contains(&table.item(test).module) && !record.contains(table.nodeid(test))
        })
        .count();
    selected.last_failed_status = Some(last_failed_status(record, failed, "", skipped_files));
    let (failed_only, _) = table.retain(|test| record.contains(table.nodeid(test)));
    selected.whole_collection = Some(std::mem::replace(&mut selected.table, failed_only));
    deselected as u64
}
