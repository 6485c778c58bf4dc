//! The commands shoal runs, each a composition of the layers below: `run`
//! (the test run, in phases), `config` (the settings a run would use),
//! `list`, `plan` (shard partitions), `merge` (shards' reports into one),
//! `report` (a queued build's machines as one run), `replay` (one test
//! after its worker's order) and `why` (`--affected`'s verdicts, explained).

pub mod config;
pub mod list;
pub mod merge;
pub mod plan;
pub mod replay;
pub mod report;
pub mod run;
pub mod why;
