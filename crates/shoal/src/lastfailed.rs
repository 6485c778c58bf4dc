//! pytest's own record of the tests that failed last time,
//! `<cache_dir>/v/cache/lastfailed` (a JSON object, node id to `true`), read
//! for `--lf` / `--ff` and updated after every run the way pytest's cache
//! plugin updates it, so `pytest --lf` after `shoal run`, and the other way
//! round, do what users expect.
//!
//! Update rules (pytest's `LFPlugin`): a test that ran and passed (or was
//! skipped, xfailed, xpassed) leaves the record; one that failed, errored,
//! crashed or timed out enters it; one that did not run keeps its entry; a
//! collector that failed enters it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::errors::ShoalError;
use crate::fs::write_atomically_with;
use crate::results::Outcome;

/// The last-failed record of one pytest cache.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LastFailed {
    cache_dir: PathBuf,
    entries: BTreeMap<String, bool>,
}

impl LastFailed {
    /// Reads the record in `cache_dir`; missing is empty, corrupt is a
    /// warning and empty.
    pub fn load(cache_dir: &Path) -> Self {
        let path = record_path(cache_dir);
        let entries = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                crate::output::warn(&format!(
                    "{}: not a valid last-failed record ({error}); ignoring it",
                    path.display()
                ));
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        };
        Self { cache_dir: cache_dir.to_owned(), entries }
    }

    /// Whether the test failed last time.
    pub fn contains(&self, nodeid: &str) -> bool {
        self.entries.contains_key(nodeid)
    }

    /// Whether any test failed last time.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many tests (and collectors) failed last time.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Folds one run's results in (see the module docs).
    pub fn update<'a>(
        &mut self,
        outcomes: impl IntoIterator<Item = (&'a str, Outcome)>,
        failed_collectors: impl IntoIterator<Item = &'a str>,
    ) {
        for (nodeid, outcome) in outcomes {
            match outcome {
                Outcome::Failed | Outcome::Error | Outcome::Crashed | Outcome::Timeout => {
                    self.entries.insert(nodeid.to_owned(), true);
                }
                Outcome::Passed | Outcome::Flaky | Outcome::Skipped | Outcome::Xfailed | Outcome::Xpassed => {
                    self.entries.remove(nodeid);
                }
                Outcome::NotRun => {}
            }
        }
        for nodeid in failed_collectors {
            self.entries.insert(nodeid.to_owned(), true);
        }
    }

    /// Writes the record atomically, creating the cache directory with the
    /// files pytest puts in it (so git ignores it) when it is new.
    pub fn save(&self) -> Result<(), ShoalError> {
        if !self.cache_dir.exists() {
            let context = |error| ShoalError::io(format!("creating {}", self.cache_dir.display()), error);
            std::fs::create_dir_all(&self.cache_dir).map_err(context)?;
            let support = [
                (".gitignore", "# Created by pytest automatically.\n*\n"),
                ("CACHEDIR.TAG", "Signature: 8a477f597d28d172789f06886806bc55\n"),
                (
                    "README.md",
                    "# pytest cache directory #\n\nThis directory contains data from pytest's cache plugin.\n",
                ),
            ];
            for (name, text) in support {
                std::fs::write(self.cache_dir.join(name), text).map_err(context)?;
            }
        }
        write_atomically_with(&record_path(&self.cache_dir), |writer| {
            serde_json::to_writer_pretty(&mut *writer, &self.entries)?;
            Ok(())
        })
    }
}

fn record_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("v").join("cache").join("lastfailed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_enter_and_leave_the_record_as_with_pytest() {
        let directory = tempfile::tempdir().unwrap();
        let cache = directory.path().join(".pytest_cache");
        let mut record = LastFailed::load(&cache);
        assert!(record.is_empty());
        record.entries.insert("a.py::fixed".into(), true);
        record.entries.insert("a.py::unrun".into(), true);
        record.update(
            [
                ("a.py::fixed", Outcome::Passed),
                ("a.py::broke", Outcome::Failed),
                ("a.py::unrun", Outcome::NotRun),
            ],
            ["b.py"],
        );
        record.save().unwrap();
        let again = LastFailed::load(&cache);
        assert!(again.contains("a.py::broke") && again.contains("a.py::unrun") && again.contains("b.py"));
        assert!(!again.contains("a.py::fixed"));
        assert!(cache.join("CACHEDIR.TAG").exists(), "a new cache directory gets pytest's support files");
    }
}
