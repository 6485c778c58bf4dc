//! `shoal list`: collect with one process and print the node ids (or JSON
//! lines with location and markers), running nothing.

use crate::errors::{ShoalError, exit_code};
use crate::pool::collect_only;
use crate::settings::CollectSettings;

/// `shoal list`: collect with one worker and print the node ids.
pub fn list(settings: &CollectSettings, json: bool, out: &mut dyn std::io::Write) -> Result<u8, ShoalError> {
    let Some(collected) = collect_only(settings)? else { return Ok(exit_code::INTERRUPTED) };
    let write_error = |error| ShoalError::io("writing the list", error);
    let table = &collected.table;
    for item in table.items() {
        if json {
            let line = serde_json::json!({
                "nodeid": item.nodeid,
                "path": item.path,
                "line": item.line,
                "domain": item.domain,
                "markers": item.markers().collect::<Vec<_>>(),
            })
            .to_string();
            writeln!(out, "{line}").map_err(write_error)?;
        } else {
            writeln!(out, "{}", item.nodeid).map_err(write_error)?;
        }
    }
    Ok(if collected.errors > 0 {
        exit_code::INTERRUPTED
    } else if collected.table.is_empty() {
        exit_code::NO_TESTS_COLLECTED
    } else {
        exit_code::OK
    })
}
