//! `.shoal_affected.json` at the rootdir: each test's last outcome and
//! what it depended on, with the run's context (interpreter and packages,
//! pytest's configuration and arguments, declared inputs and variables).
//!
//! Versioned and written atomically by shoal alone, after the run, from
//! the workers' own files (see [`super::record`]): no worker ever writes
//! it, so parallel workers share no lock. Dependencies are interned: a
//! test holds indexes into one list, so a function many tests ran is
//! stored once. A store from another rootdir, version or interpreter is
//! ignored with one line saying why.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::errors::ShoalError;
use crate::results::Outcome;

/// The file name, at the rootdir.
pub const STORE_FILE: &str = ".shoal_affected.json";

/// Version of the store's shape.
pub const FORMAT_VERSION: u32 = 2;

/// What part of a file a test depended on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// Every line (the test's own module, its conftests).
    Whole,
    /// The lines in no function.
    ModuleLevel,
    /// One function, by name (`Class.method`).
    Block(String),
}

/// One fingerprinted dependency.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dependency {
    /// Relative to the rootdir, with `/`.
    pub file: String,
    pub part: Part,
    pub hash: u64,
}

/// One test's entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestEntry {
    /// Its last outcome.
    pub outcome: Outcome,
    /// Seconds its last run took.
    pub duration: f32,
    /// Why it was skipped or expected to fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    /// Indexes into [`Store::dependencies`] (empty for a failure).
    pub dependencies: Vec<u32>,
}

/// The whole store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Store {
    pub format_version: u32,
    pub rootdir: String,
    /// Hash of the interpreter's version and the installed packages.
    pub environment: u64,
    /// The rest of the run's context, each by name: `pytest configuration`,
    /// `pytest arguments`, `affected-inputs`, `affected-env`.
    pub context: BTreeMap<String, u64>,
    /// Project files imported at collection, with their module-level hash:
    /// that code ran before any test, for all of them.
    pub imported: BTreeMap<String, u64>,
    /// The code objects (functions, mostly) run at collection, or while a
    /// test imported a module first: what module-level code called (a
    /// registry filled at import), for every test.
    pub imported_blocks: Vec<Dependency>,
    pub dependencies: Vec<Dependency>,
    pub tests: BTreeMap<String, TestEntry>,
}

/// Why a store on disk is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    Missing,
    /// Unreadable, another version or another rootdir: the notice.
    Foreign(String),
}

impl Store {
    /// An empty store for this context.
    pub fn new(rootdir: &str, environment: u64, context: BTreeMap<String, u64>) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            rootdir: rootdir.to_owned(),
            environment,
            context,
            imported: BTreeMap::new(),
            imported_blocks: Vec::new(),
            dependencies: Vec::new(),
            tests: BTreeMap::new(),
        }
    }

    /// Reads the store at `path`, made for `rootdir`.
    pub fn load(path: &Path, rootdir: &str) -> Result<Self, Unusable> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Err(Unusable::Missing),
            Err(error) => return Err(Unusable::Foreign(format!("cannot be read ({error})"))),
        };
        #[derive(Deserialize)]
        struct Versioned {
            format_version: u32,
        }
        match serde_json::from_slice::<Versioned>(&bytes) {
            Ok(versioned) if versioned.format_version != FORMAT_VERSION => {
                return Err(Unusable::Foreign(format!(
                    "is format version {}, this shoal writes {FORMAT_VERSION}",
                    versioned.format_version
                )));
            }
            Ok(_) => {}
            Err(error) => return Err(Unusable::Foreign(format!("is not a store ({error})"))),
        }
        let store: Self = serde_json::from_slice(&bytes)
            .map_err(|error| Unusable::Foreign(format!("is corrupt ({error})")))?;
        if store.rootdir != rootdir {
            return Err(Unusable::Foreign(format!("was made for rootdir {}", store.rootdir)));
        }
        Ok(store)
    }

    /// Writes the store atomically (compact JSON: it is for shoal).
    pub fn save(&self, path: &Path) -> Result<(), ShoalError> {
        let bytes = serde_json::to_vec(self).expect("the store serializes");
        crate::fs::write_atomically(path, &bytes)
    }

    /// A test's dependencies.
    pub fn dependencies_of<'a>(&'a self, entry: &'a TestEntry) -> impl Iterator<Item = &'a Dependency> + 'a {
        entry.dependencies.iter().filter_map(|&index| self.dependencies.get(index as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Store {
        let mut store = Store::new("/project", 7, BTreeMap::from([("pytest arguments".to_owned(), 1)]));
        store.dependencies.push(Dependency {
            file: "src/a.py".into(),
            part: Part::Block("f".into()),
            hash: 3,
        });
        store.tests.insert(
            "tests/test_a.py::test_f".into(),
            TestEntry { outcome: Outcome::Passed, duration: 0.5, skip_reason: None, dependencies: vec![0] },
        );
        store
    }

    #[test]
    fn a_store_round_trips_and_another_rootdir_or_version_is_foreign() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join(STORE_FILE);
        assert_eq!(Store::load(&path, "/project"), Err(Unusable::Missing));
        sample().save(&path).unwrap();
        assert_eq!(Store::load(&path, "/project"), Ok(sample()));
        assert_eq!(
            Store::load(&path, "/elsewhere"),
            Err(Unusable::Foreign("was made for rootdir /project".into()))
        );
        let mut future = sample();
        future.format_version = 99;
        future.save(&path).unwrap();
        assert!(
            matches!(Store::load(&path, "/project"), Err(Unusable::Foreign(why)) if why.contains("version 99"))
        );
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(Store::load(&path, "/project"), Err(Unusable::Foreign(_))));
    }
}
