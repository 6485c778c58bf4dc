//! What past runs teach: per-test durations and per-module set-up costs.
//!
//! Test durations live in `.test_durations` at the rootdir, in
//! pytest-split's format (a JSON object, node id to seconds), so teams keep
//! the files they have and pytest-split keeps reading ours. That format has
//! no room for a version, so shoal's own learnings (the cost of each
//! module's module-scoped fixtures) live beside it in `.shoal_history.json`,
//! which does carry one.
//!
//! Merging rules: a test's stored value is a smoothed estimate
//! (exponentially weighted, so one noisy run moves it only halfway); tests
//! not run this time keep their entries; skipped and crashed runs are not
//! recorded; entries of tests no longer collected are pruned: a test whose
//! file was collected this run but which is not in it any more, or whose
//! file is gone. (The runner counts as collected what `-k`, `-m` and `--lf`
//! left out, and every test of a file named by node id.) Writes are atomic; a corrupt file is a warning and an empty
//! history, never a crash.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::errors::ShoalError;
use crate::fs::{write_atomically, write_atomically_with};

/// Weight of the newest sample in the smoothed estimate.
const SMOOTHING: f64 = 0.5;

/// The default file name, at the rootdir.
pub const DURATIONS_FILE: &str = ".test_durations";

/// shoal's own history file, beside the durations file.
pub const EXTRAS_FILE: &str = ".shoal_history.json";

/// Version of [`EXTRAS_FILE`]'s shape.
const EXTRAS_FORMAT_VERSION: u32 = 1;

/// Durations and module costs from past runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// Smoothed seconds per node id.
    pub durations: BTreeMap<String, f64>,
    /// Smoothed seconds of module-scoped set-up per module path.
    pub module_setup: BTreeMap<String, f64>,
    /// Smoothed seconds each test file took to import and collect, by its
    /// node id (what split collection balances the workers' shares by).
    pub file_collect: BTreeMap<String, f64>,
    /// Smoothed seconds each test module took to import, by its node id.
    pub file_import: BTreeMap<String, f64>,
    /// Smoothed seconds of each test file's collection that a split
    /// keeping the imports divides (see [`crate::plan::file_building`]).
    pub file_building: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Extras {
    format_version: u32,
    module_setup: BTreeMap<String, f64>,
    #[serde(default)]
    file_collect: BTreeMap<String, f64>,
    #[serde(default)]
    file_import: BTreeMap<String, f64>,
    #[serde(default)]
    file_building: BTreeMap<String, f64>,
}

/// What one run measured (borrowing the run's own strings: a run of
/// 100,000 tests should not copy them all again).
#[derive(Debug, Clone, Default)]
pub struct RunMeasurements<'a> {
    /// Seconds (setup + call + teardown) of each test that ran to an
    /// outcome worth recording.
    pub durations: Vec<(&'a str, f64)>,
    /// Module set-up cost samples, per module path.
    pub module_setup: Vec<(&'a str, f64)>,
    /// Import and collection seconds, per test file node id.
    pub file_collect: Vec<(&'a str, f64)>,
    /// Import seconds, per test module node id.
    pub file_import: Vec<(&'a str, f64)>,
    /// Building seconds (see [`crate::plan::file_building`]), per test
    /// file node id.
    pub file_building: Vec<(&'a str, f64)>,
    /// The files (relative to the rootdir) collection walked this run.
    pub collected_files: HashSet<&'a str>,
}

/// Where the history files are.
#[derive(Debug, Clone)]
pub struct HistoryPaths {
    /// The durations file.
    pub durations: PathBuf,
    /// shoal's extras file.
    pub extras: PathBuf,
}

impl HistoryPaths {
    /// The files for a rootdir, or at an explicit `--durations-path`.
    pub fn new(rootdir: &Path, explicit: Option<&Path>) -> Self {
        let durations = explicit.map_or_else(|| rootdir.join(DURATIONS_FILE), Path::to_owned);
        let directory = durations.parent().map_or_else(|| rootdir.to_owned(), Path::to_owned);
        Self { extras: directory.join(EXTRAS_FILE), durations }
    }
}

impl History {
    /// Reads the history; missing files are an empty history, corrupt ones a
    /// warning and an empty history.
    pub fn load(paths: &HistoryPaths) -> Self {
        let durations = read_json::<BTreeMap<String, f64>>(&paths.durations).unwrap_or_default();
        let extras = read_json::<Extras>(&paths.extras)
            .filter(|extras| extras.format_version == EXTRAS_FORMAT_VERSION);
        match extras {
            Some(Extras { module_setup, file_collect, file_import, file_building, .. }) => {
                Self { durations, module_setup, file_collect, file_import, file_building }
            }
            None => Self { durations, ..Self::default() },
        }
    }

    /// Whether anything is known.
    pub fn is_empty(&self) -> bool {
        self.durations.is_empty()
    }

    /// Folds one run's measurements in (see the module docs for the rules).
    /// `collected` says whether a node id was collected this run (selected
    /// or deselected); `file_exists` whether a rootdir-relative file exists.
    pub fn merge(
        &mut self,
        run: &RunMeasurements<'_>,
        collected: impl Fn(&str) -> bool,
        file_exists: impl Fn(&str) -> bool,
    ) {
        self.durations.retain(|nodeid, _| {
            let file = file_of(nodeid);
            if run.collected_files.contains(file) { collected(nodeid) } else { file_exists(file) }
        });
        for (nodeid, seconds) in &run.durations {
            smooth_into(&mut self.durations, nodeid, *seconds);
        }
        self.module_setup
            .retain(|module, _| run.collected_files.contains(module.as_str()) || file_exists(module));
        for (module, seconds) in &run.module_setup {
            smooth_into(&mut self.module_setup, module, *seconds);
        }
        for (map, samples) in [
            (&mut self.file_collect, &run.file_collect),
            (&mut self.file_import, &run.file_import),
            (&mut self.file_building, &run.file_building),
        ] {
            map.retain(|file, _| file_exists(file_of(file)));
            for (file, seconds) in samples {
                smooth_into(map, file, *seconds);
            }
        }
    }

    /// Writes both files atomically.
    pub fn save(&self, paths: &HistoryPaths) -> Result<(), ShoalError> {
        write_atomically_with(&paths.durations, |writer| {
            serde_json::to_writer_pretty(&mut *writer, &self.durations)?;
            writer.write_all(b"\n")
        })?;
        let extras = Extras {
            format_version: EXTRAS_FORMAT_VERSION,
            module_setup: self.module_setup.clone(),
            file_collect: self.file_collect.clone(),
            file_import: self.file_import.clone(),
            file_building: self.file_building.clone(),
        };
        let mut bytes = serde_json::to_vec_pretty(&extras).expect("extras serialize");
        bytes.push(b'\n');
        write_atomically(&paths.extras, &bytes)
    }
}

fn smooth_into(map: &mut BTreeMap<String, f64>, key: &str, sample: f64) {
    if !sample.is_finite() || sample < 0.0 {
        return;
    }
    let value = map.get(key).map_or(sample, |old| old + SMOOTHING * (sample - old));
    map.insert(key.to_owned(), value);
}

/// The file part of a node id: what comes before the first `::`. This is
/// the one thing shoal reads from a node id, and only to prune the history;
/// it holds in every pytest version (the file path is the id's first part).
pub fn file_of(nodeid: &str) -> &str {
    nodeid.split_once("::").map_or(nodeid, |(file, _)| file)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            crate::output::warn(&format!(
                "{}: cannot read ({error}); starting without history",
                path.display()
            ));
            return None;
        }
    };
    // An empty file (a CI step that made sure one exists) is no history yet.
    if text.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    match serde_json::from_slice(&text) {
        Ok(value) => Some(value),
        Err(error) => {
            crate::output::warn(&format!(
                "{}: not a valid history file ({error}); starting without it, it will be rewritten",
                path.display()
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measurements<'a>(durations: &[(&'a str, f64)], files: &[&'a str]) -> RunMeasurements<'a> {
        RunMeasurements {
            durations: durations.to_vec(),
            module_setup: Vec::new(),
            file_collect: Vec::new(),
            file_import: Vec::new(),
            file_building: Vec::new(),
            collected_files: files.iter().copied().collect(),
        }
    }

    #[test]
    fn merging_smooths_keeps_unrun_tests_and_prunes_vanished_ones() {
        let mut history = History::default();
        history.durations.insert("a.py::t1".into(), 1.0);
        history.durations.insert("a.py::gone".into(), 5.0);
        history.durations.insert("b.py::t".into(), 2.0);
        history.durations.insert("deleted.py::t".into(), 3.0);
        let run = measurements(&[("a.py::t1", 3.0), ("a.py::new", 0.5)], &["a.py"]);
        history.merge(&run, |nodeid| ["a.py::t1", "a.py::new"].contains(&nodeid), |file| file == "b.py");
        assert_eq!(
            history.durations,
            BTreeMap::from([("a.py::new".into(), 0.5), ("a.py::t1".into(), 2.0), ("b.py::t".into(), 2.0)])
        );
    }

    #[test]
    fn history_round_trips_through_pytest_split_format() {
        let directory = tempfile::tempdir().unwrap();
        let paths = HistoryPaths::new(directory.path(), None);
        let mut history = History::default();
        history.durations.insert("t.py::test[a b]".into(), 0.25);
        history.module_setup.insert("t.py".into(), 0.4);
        history.save(&paths).unwrap();
        let text = std::fs::read_to_string(&paths.durations).unwrap();
        let plain: BTreeMap<String, f64> = serde_json::from_str(&text).unwrap();
        assert_eq!(plain["t.py::test[a b]"], 0.25);
        assert_eq!(History::load(&paths), history);
    }

    #[test]
    fn a_corrupt_file_is_an_empty_history() {
        let directory = tempfile::tempdir().unwrap();
        let paths = HistoryPaths::new(directory.path(), None);
        std::fs::write(&paths.durations, "{not json").unwrap();
        assert!(History::load(&paths).is_empty());
        std::fs::write(&paths.durations, "").unwrap();
        assert!(History::load(&paths).is_empty());
    }

    #[test]
    fn an_explicit_path_moves_both_files() {
        let paths = HistoryPaths::new(Path::new("/root"), Some(Path::new("/ci/cache/durations.json")));
        assert_eq!(paths.durations, PathBuf::from("/ci/cache/durations.json"));
        assert_eq!(paths.extras, PathBuf::from("/ci/cache/.shoal_history.json"));
    }
}
