//! The commands shoal runs, each a composition of the layers below: `run`
//! (the test run, in phases), `list`, `plan` (shard partitions) and `merge`
//! (shards' reports into one).

pub mod list;
pub mod merge;
pub mod plan;
pub mod run;
