//! shoal's own messages on stderr (warnings and errors), apart from the
//! pytest-shaped report on stdout.

use std::io::Write;

/// Prints `shoal: warning: {message}` on stderr.
pub fn warn(message: &str) {
    let _ = writeln!(std::io::stderr(), "shoal: warning: {message}");
}

/// Prints `shoal: error: {message}` on stderr.
pub fn error(message: &str) {
    let _ = writeln!(std::io::stderr(), "shoal: error: {message}");
}

/// Prints a one-line notice on stderr.
pub fn notice(message: &str) {
    let _ = writeln!(std::io::stderr(), "shoal: {message}");
}
