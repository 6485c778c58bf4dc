//! `--cov`: pytest-cov's coverage, measured by every worker, reported once.
//!
//! The measuring happens in Python (`python/shoal_coverage.py`): each worker
//! writes its own coverage.py data file into the run's coverage directory,
//! saving after every test. When the workers have exited, [`CoverageRun::combine_and_report`]
//! runs that module once more, as `python -m shoal_coverage`, to combine the
//! files into the configured data file and write pytest-cov's reports with
//! pytest-cov's own code. What it prints back are facts (the report text, the
//! total, whether `--cov-fail-under` was missed); what they mean for the exit
//! code and the terminal is decided here and in the terminal reporter.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::Deserialize;

use crate::errors::ShoalError;

use crate::protocol::CoverageOptions;

/// What the coverage step reported.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct CoverageReport {
    /// pytest-cov's report section (`coverage: platform ...`, the table,
    /// `Coverage XML written to file ...`), empty when nothing is reported.
    pub text: String,
    /// Why a report could not be produced (`No data to report.`).
    pub warning: Option<String>,
    /// The total percentage, when reported.
    pub total: Option<f64>,
    /// pytest-cov's `Required test coverage of N% ...` line, with
    /// `--cov-fail-under` (or coverage's `fail_under`).
    pub fail_under: Option<String>,
    /// pytest-cov's `Coverage failure: ...` message, when the total missed.
    pub error: Option<String>,
    /// Whether the total missed `--cov-fail-under`: the run then fails.
    pub fail_under_missed: bool,
}

/// Where the workers' data files go and how to run the report.
#[derive(Debug, Clone)]
pub struct CoverageRun {
    /// The interpreter the workers ran.
    pub python: PathBuf,
    /// The directory holding shoal's Python modules.
    pub plugin_dir: PathBuf,
    /// Where pytest ran (reports' relative paths start here).
    pub working_directory: PathBuf,
    /// The workers' data files.
    pub data_directory: PathBuf,
}

impl CoverageRun {
    /// A coverage step for workers started with these paths.
    pub fn new(
        python: PathBuf,
        plugin_dir: PathBuf,
        working_directory: PathBuf,
        data_directory: PathBuf,
    ) -> Self {
        Self { python, plugin_dir, working_directory, data_directory }
    }

    /// Creates the data directory, before any worker starts.
    pub fn prepare(&self) -> Result<(), ShoalError> {
        std::fs::create_dir_all(&self.data_directory).map_err(|error| {
            ShoalError::io(
                format!("creating the coverage directory {}", self.data_directory.display()),
                error,
            )
        })
    }

    /// Combines the workers' data into the configured data file (always,
    /// as pytest-cov does) and, when `write_report`, writes the reports.
    /// `width` is the terminal width the report's rules are drawn for.
    pub fn combine_and_report(
        &self,
        options: &CoverageOptions,
        write_report: bool,
        width: usize,
    ) -> Result<CoverageReport, ShoalError> {
        let request = serde_json::json!({
            "options": options,
            "data_directory": self.data_directory,
            "report": write_report,
        });
        let request_path = self.data_directory.with_file_name("coverage-request.json");
        std::fs::write(&request_path, request.to_string())
            .map_err(|error| ShoalError::io(format!("writing {}", request_path.display()), error))?;
        let output = Command::new(&self.python)
            .arg("-m")
            .arg(crate::python::COVERAGE_MODULE)
            .arg(&request_path)
            .current_dir(&self.working_directory)
            .env("PYTHONPATH", crate::python::python_path(&self.plugin_dir))
            .env("COLUMNS", width.to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|error| {
                ShoalError::io(format!("starting {} for the coverage report", self.python.display()), error)
            })?;
        if !output.status.success() {
            return Err(ShoalError::Internal(format!(
                "the coverage report failed ({}); the workers' data files are in {}",
                output.status,
                self.data_directory.display()
            )));
        }
        serde_json::from_slice(&output.stdout).map_err(|error| {
            ShoalError::Internal(format!("the coverage report printed something unexpected: {error}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_what_the_module_prints() {
        let printed = r#"{"text": "TOTAL 1 0 100%\n", "warning": null, "total": 100.0,
            "fail_under": "Required test coverage of 90% reached. Total coverage: 100.00%",
            "error": null, "fail_under_missed": false}"#;
        let report: CoverageReport = serde_json::from_str(printed).unwrap();
        assert_eq!(report.total, Some(100.0));
        assert!(!report.fail_under_missed);
        assert!(report.fail_under.unwrap().ends_with("100.00%"));
    }
}
