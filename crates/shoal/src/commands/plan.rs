//! `shoal plan --shards N`: collect once, partition the tests as `--shard`
//! would from the durations history, and print each shard's tests and
//! expected time, the imbalance and the lower bound.

use std::path::Path;

use crate::errors::{ShoalError, exit_code};
use crate::history::{History, HistoryPaths};
use crate::settings::CollectSettings;
use crate::shard::partition_table;

/// Prints the plan to `out`; returns the exit code.
pub fn plan(
    settings: &CollectSettings,
    shards: usize,
    durations_path: Option<&Path>,
    serial_markers: &[String],
    out: &mut dyn std::io::Write,
) -> Result<u8, ShoalError> {
    let Some(collection) = crate::pool::collect_only(settings)? else {
        return Ok(exit_code::INTERRUPTED);
    };
    if collection.errors > 0 {
        return Ok(exit_code::INTERRUPTED);
    }
    let table = &collection.table;
    if table.is_empty() {
        crate::output::notice("no tests collected: nothing to plan");
        return Ok(exit_code::NO_TESTS_COLLECTED);
    }
    let paths = HistoryPaths::new(&collection.rootdir, durations_path);
    let history = History::load(&paths);
    let known = table.items().filter(|item| history.durations.contains_key(item.nodeid)).count();
    let partition = partition_table(table, &history, serial_markers, shards);
    let write_error = |error| ShoalError::io("writing the plan", error);
    writeln!(
        out,
        "{} tests over {shards} shard{}; history for {known} of them ({})",
        table.len(),
        if shards == 1 { "" } else { "s" },
        paths.durations.display()
    )
    .map_err(write_error)?;
    for (index, shard) in partition.shards.iter().enumerate() {
        writeln!(
            out,
            "shard {}/{shards}: {:>6} tests  expected {:>8.2}s",
            index + 1,
            shard.tests,
            shard.expected_seconds
        )
        .map_err(write_error)?;
    }
    let (largest, mean, bound) =
        (partition.largest_seconds(), partition.mean_seconds(), partition.lower_bound());
    writeln!(
        out,
        "largest {largest:.2}s, mean {mean:.2}s: imbalance {:.3} (largest / mean)\n\
         lower bound max(total {:.2}s / {shards}, longest test {:.2}s) = {bound:.2}s: largest / bound {:.3}",
        ratio(largest, mean),
        partition.total_seconds,
        partition.longest_test_seconds,
        ratio(largest, bound),
    )
    .map_err(write_error)?;
    Ok(exit_code::OK)
}

/// `a / b`, or 1 when both are 0 (an empty plan is balanced).
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 1.0 }
}
