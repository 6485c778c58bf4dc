//! The results model: what a run found out, in the shape every consumer
//! shares. The run command fills it; reporters, `shoal merge`, the
//! durations history and sharding read it. It depends on nothing above the
//! wire types and the test table.

mod outcome;
mod run;
mod test;

pub use self::outcome::{Outcome, StopReason, Tally, outcome_from_reports};
pub use self::run::{Expectation, RunHeader, RunStats, RunSummary, ShardInfo};
pub use self::test::{CrashDetails, TestDetails, TestRecord, TestView};
