//! Errors that end a shoal command, and pytest's exit codes they map to.
//!
//! Everything a user can get wrong (a flag, a selection file, a missing
//! pytest) is a [`ShoalError`] with a message that names the thing at fault;
//! [`crate::main`] prints it and exits with [`ShoalError::exit_code`].

use std::path::PathBuf;

use crate::selection::SelectionError;

/// pytest's exit codes, which shoal keeps so CI scripts need no change.
pub mod exit_code {
    /// All tests passed.
    pub const OK: u8 = 0;
    /// Some tests failed.
    pub const TESTS_FAILED: u8 = 1;
    /// The run was interrupted (Ctrl-C, collection errors).
    pub const INTERRUPTED: u8 = 2;
    /// shoal itself failed.
    pub const INTERNAL_ERROR: u8 = 3;
    /// The command line or configuration was wrong.
    pub const USAGE_ERROR: u8 = 4;
    /// No tests were collected.
    pub const NO_TESTS_COLLECTED: u8 = 5;
}

/// A failure that ends the command.
#[derive(Debug, thiserror::Error)]
pub enum ShoalError {
    /// A selection file or path is wrong.
    #[error(transparent)]
    Selection(#[from] SelectionError),
    /// `[tool.shoal]` in pyproject.toml is wrong.
    #[error("{path}: {message}")]
    Config {
        /// The pyproject.toml.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A flag's value is wrong.
    #[error("{0}")]
    Usage(String),
    /// pytest cannot be imported by the interpreter shoal found.
    #[error(
        "pytest cannot be imported by {python} ({origin}); install it with `{python} -m pip install pytest`, or name another interpreter with --python"
    )]
    PytestMissing {
        /// The interpreter tried.
        python: PathBuf,
        /// How shoal chose it.
        origin: &'static str,
    },
    /// The interpreter could not be started at all.
    #[error("cannot start {python} ({origin}): {source}")]
    PythonNotStartable {
        /// The interpreter tried.
        python: PathBuf,
        /// How shoal chose it.
        origin: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// pytest itself refused to start (bad arguments, a broken conftest):
    /// its own output has been shown; shoal exits with its code.
    #[error("pytest exited with code {code} before collecting")]
    PytestRefused {
        /// pytest's exit code.
        code: u8,
    },
    /// Workers collected different tests.
    #[error("{0}")]
    CollectionMismatch(String),
    /// The work queue (Redis) failed or refused this machine.
    #[error("{0}")]
    Queue(String),
    /// Something shoal did not expect; a bug or an environment problem.
    #[error("internal error: {0}")]
    Internal(String),
    /// An I/O failure, with what shoal was doing.
    #[error("{context}: {source}")]
    Io {
        /// What shoal was doing.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

impl ShoalError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Selection(_)
            | Self::Config { .. }
            | Self::Usage(_)
            | Self::PytestMissing { .. }
            | Self::PythonNotStartable { .. } => exit_code::USAGE_ERROR,
            Self::PytestRefused { code } => *code,
            Self::CollectionMismatch(_) => exit_code::INTERRUPTED,
            Self::Internal(_) | Self::Io { .. } | Self::Queue(_) => exit_code::INTERNAL_ERROR,
        }
    }

    /// Wraps an I/O error with what shoal was doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { context: context.into(), source }
    }
}
