//! Integration tests: the real `shoal` binary on real pytest projects.
//!
//! The interpreter comes from `SHOAL_TEST_PYTHON` (scripts/test.sh sets it
//! once per supported pytest version); see [`harness`].

mod control;
mod coverage;
mod crash;
mod exit_codes;
mod footprint;
mod github;
mod harness;
mod junit;
mod list;
mod output_shape;
mod parity;
mod passthrough;
mod report_json;
mod robustness;
mod selection;
mod shards;
mod split;
mod stopping;
mod terminal;
mod timeline;
mod workers;
