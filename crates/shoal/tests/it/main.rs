//! Integration tests: the real `shoal` binary on real pytest projects.
//!
//! The interpreter comes from `SHOAL_TEST_PYTHON` (scripts/test.sh sets it
//! once per entry of its Python and pytest matrix); see [`harness`].

mod affected;
mod control;
mod coverage;
mod crash;
mod django_pg;
mod exit_codes;
mod footprint;
mod fork_hazards;
mod github;
mod harness;
mod interpreters;
mod junit;
mod list;
mod output_shape;
mod parity;
mod passthrough;
mod plugins;
mod profiles;
mod pytest_cli;
mod queue;
mod randomly;
mod replay;
mod report_json;
mod robustness;
mod selection;
mod shards;
mod split;
mod stopping;
mod terminal;
mod timeline;
mod workers;
mod xdist_surface;
