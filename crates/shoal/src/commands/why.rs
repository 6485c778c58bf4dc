//! `shoal why NODEID...`: what `shoal run --affected` would decide for
//! these tests, and why (which file, which function changed), without
//! running any. It collects them, reads the store and answers with the
//! run's own decision (`run::affected`), as `--explain` does.

use std::io::Write;

use super::run::affected::{Decision, answer, verdicts};
use crate::errors::{ShoalError, exit_code};
use crate::settings::{AffectedSettings, CollectSettings};

/// Prints `NODEID: answer` for each test collected from the arguments;
/// returns the exit code (2 when some file failed to collect, 5 when
/// nothing was collected).
pub fn why(
    collect: &CollectSettings,
    options: &AffectedSettings,
    out: &mut dyn Write,
) -> Result<u8, ShoalError> {
    let Some(collection) = crate::pool::collect_only(collect)? else {
        return Ok(exit_code::INTERRUPTED);
    };
    let Decision { store, everything, mut snapshot, .. } = Decision::read(
        options,
        collect,
        &collection.rootdir.to_string_lossy(),
        collection.inifile.as_deref(),
    );
    let table = &collection.table;
    let verdicts = verdicts(options, store.as_ref(), everything.as_ref(), table, &mut snapshot);
    for (item, verdict) in table.items().zip(&verdicts) {
        writeln!(out, "{}: {}", item.nodeid, answer(verdict))
            .map_err(|error| ShoalError::io("writing the answers", error))?;
    }
    Ok(if collection.errors > 0 {
        exit_code::INTERRUPTED
    } else if table.is_empty() {
        crate::output::notice("no tests collected: nothing to explain");
        exit_code::NO_TESTS_COLLECTED
    } else {
        exit_code::OK
    })
}
