//! Sharding across CI machines: which shard this machine is
//! ([`ci`], `--shard K/N` or `--shard auto`), the partition every machine
//! computes alike ([`partition`]), narrowing a run to its shard, and
//! `shoal plan --shards N`.
//!
//! A sharded run collects everything, as an unsharded run does, then keeps
//! only its shard's tests; the others count as deselected (as pytest-split
//! reports them). A shard left with nothing while other shards have tests
//! exits 0 with a notice. The JSON report records the shard and a
//! fingerprint of the partitioned collection, which `shoal merge` checks.

pub mod ci;
pub mod partition;

use std::path::PathBuf;

use crate::errors::ShoalError;
use crate::history::History;
use crate::plan;
use crate::results::ShardInfo;
use crate::table::TestTable;

use self::partition::Partition;

/// One shard of N, 0-based inside shoal (`--shard K/N` is 1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSpec {
    /// 0-based index.
    pub index: usize,
    /// Number of shards.
    pub total: usize,
}

impl ShardSpec {
    /// Parses `K/N`, 1-based: `1/4` is the first of four.
    pub fn parse(text: &str) -> Option<Self> {
        let (index, total) = text.trim().split_once('/')?;
        let (index, total): (usize, usize) = (index.trim().parse().ok()?, total.trim().parse().ok()?);
        (1..=total).contains(&index).then(|| Self { index: index - 1, total })
    }
}

impl std::fmt::Display for ShardSpec {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}/{}", self.index + 1, self.total)
    }
}

/// The shard a run was asked to be, resolved from the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRequest {
    /// The shard.
    pub spec: ShardSpec,
    /// With `--shard auto`: the CI system and the variables read.
    pub source: Option<String>,
    /// Bazel's `TEST_SHARD_STATUS_FILE`, to touch.
    pub status_file: Option<PathBuf>,
}

/// A fingerprint of a set of node ids that is the same on every machine
/// and in every release: 64-bit FNV-1a over the sorted ids, each followed
/// by a newline, in hex.
pub fn collection_fingerprint<'a>(nodeids: impl IntoIterator<Item = &'a str>) -> String {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut sorted: Vec<&str> = nodeids.into_iter().collect();
    sorted.sort_unstable();
    let mut hash = OFFSET_BASIS;
    for byte in sorted.iter().flat_map(|nodeid| nodeid.bytes().chain(std::iter::once(b'\n'))) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    format!("{hash:016x}")
}

/// The partition of these tests from history, as every shard computes it.
pub fn partition_table(
    table: &TestTable,
    history: &History,
    serial_markers: &[String],
    shards: usize,
) -> Partition {
    let mut workload = plan::workload(table, history, &|_| None);
    plan::mark_serial_and_groups(&mut workload, table, serial_markers);
    let nodeids: Vec<&str> = table.items().map(|item| item.nodeid).collect();
    partition::partition(&workload, &nodeids, shards)
}

/// The run narrowed to its shard.
#[derive(Debug)]
pub struct Narrowed {
    /// For the report.
    pub info: ShardInfo,
    /// Tests of other shards: deselected.
    pub left_out: usize,
}

/// Keeps only this shard's tests in `table`; the whole collection is kept
/// in `whole_collection` (what replacement workers collect, and what the
/// history must not prune). Announces the shard on stderr and touches
/// Bazel's status file.
pub fn narrow(
    request: &ShardRequest,
    table: &mut TestTable,
    whole_collection: &mut Option<TestTable>,
    history: &History,
    serial_markers: &[String],
) -> Result<Narrowed, ShoalError> {
    let spec = request.spec;
    if let Some(source) = &request.source {
        crate::output::notice(&format!("shard {spec} from {source}"));
    }
    if let Some(path) = &request.status_file {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|error| ShoalError::io(format!("touching {}", path.display()), error))?;
    }
    let partition = partition_table(table, history, serial_markers, spec.total);
    let info = ShardInfo {
        index: spec.index + 1,
        total: spec.total,
        collection: collection_fingerprint(table.items().map(|item| item.nodeid)),
        collected: table.len(),
    };
    let mine = partition.shards[spec.index];
    if mine.tests == 0 && !table.is_empty() {
        crate::output::notice(&format!(
            "shard {spec} has no tests: {} test{} over {} shards; nothing to run here",
            table.len(),
            if table.len() == 1 { "" } else { "s" },
            spec.total
        ));
    } else {
        crate::output::notice(&format!(
            "shard {spec}: {} of {} tests, expected {:.1}s (largest shard {:.1}s, lower bound {:.1}s)",
            mine.tests,
            table.len(),
            mine.expected_seconds,
            partition.largest_seconds(),
            partition.lower_bound()
        ));
    }
    let (kept, left_out) = table.retain(|test| partition.shard_of[test] == spec.index);
    let whole = std::mem::replace(table, kept);
    whole_collection.get_or_insert(whole);
    Ok(Narrowed { info, left_out })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_ignores_order_and_is_fixed_across_releases() {
        let first = collection_fingerprint(["b.py::t", "a.py::t"]);
        assert_eq!(first, collection_fingerprint(["a.py::t", "b.py::t"]));
        assert_ne!(first, collection_fingerprint(["a.py::t"]));
        // FNV-1a of "a\n": pinned, so a release that changed the hash would fail here.
        assert_eq!(collection_fingerprint(["a"]), "089bdc07b544e7b2");
    }

    #[test]
    fn shard_specs_print_as_typed() {
        assert_eq!(ShardSpec::parse(" 3/8 ").map(|spec| spec.to_string()), Some("3/8".to_owned()));
    }
}
