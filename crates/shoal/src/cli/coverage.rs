//! `shoal run`'s coverage options: pytest-cov's, as typed (see
//! [`crate::coverage`] for what is done with them).

use clap::Args;

/// pytest-cov's options, with its meanings: shoal passes them to pytest,
/// measures each worker's share and reports once for the whole run.
#[derive(Debug, Args)]
#[command(next_help_heading = "Coverage (pytest-cov's options; pytest-cov must be installed)")]
pub struct CoverageArgs {
    /// Measure this path or package (repeatable); a bare `--cov` measures
    /// everything that is not installed.
    #[arg(long = "cov", value_name = "SOURCE", num_args = 0..=1, default_missing_value = "")]
    pub sources: Vec<String>,

    /// Report type: `term`, `term-missing`, `annotate`, `html`, `xml`,
    /// `json`, `markdown`, `markdown-append`, `lcov`, with `:DEST` or
    /// `:skip-covered` as in pytest-cov (repeatable; `--cov-report=` for none).
    #[arg(long = "cov-report", value_name = "TYPE")]
    pub reports: Vec<String>,

    /// coverage.py's configuration file (default `.coveragerc`).
    #[arg(long = "cov-config", value_name = "PATH")]
    pub config: Option<String>,

    /// Measure branch coverage too.
    #[arg(long = "cov-branch")]
    pub branch: bool,

    /// Fail the run (exit 1) if the total coverage is below MIN percent.
    #[arg(long = "cov-fail-under", value_name = "MIN")]
    pub fail_under: Option<String>,

    /// Add to the existing coverage data instead of replacing it.
    #[arg(long = "cov-append")]
    pub append: bool,

    /// Report nothing when a test failed.
    #[arg(long = "no-cov-on-fail")]
    pub no_cov_on_fail: bool,

    /// Measure nothing, whatever else says `--cov`.
    #[arg(long = "no-cov")]
    pub no_cov: bool,

    /// Dynamic contexts: `test` records which test ran each line.
    #[arg(long = "cov-context", value_name = "CONTEXT")]
    pub context: Option<String>,

    /// Digits after the decimal point in the reports.
    #[arg(long = "cov-precision", value_name = "N")]
    pub precision: Option<String>,
}
