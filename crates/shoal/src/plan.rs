//! Between history and scheduler: what each test is expected to cost before
//! the run, and what the run measured afterwards.
//!
//! Tests without history get an estimate: their module's median, else the
//! suite's, else [`DEFAULT_ESTIMATE`]. A module is a test file (the item's
//! path), the unit pytest scopes `module` fixtures to.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub use crate::protocol::PartAssignment;

use crate::table::TestTable;

use shoal_scheduler::Workload;

use crate::history::{History, RunMeasurements};
use crate::protocol::Phase;
use crate::results::Outcome;
use crate::results::TestRecord;

/// Split collection's outcome: the test files and the workers' shares.
pub struct SplitCollection {
    /// The test files, in the zygote's collection order (node ids).
    pub files: Vec<String>,
    /// What each worker slot collected.
    pub shares: Shares,
    /// How it was split.
    pub kind: SplitKind,
}

/// How a collection is split among the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitKind {
    /// The zygote stops at the test files; each worker imports and
    /// collects its share (`--collect split`).
    DividingImports,
    /// The zygote imports every test module, in collection order; each
    /// worker builds the items of its share (`--collect items`).
    KeepingImports,
}

/// Which test files each worker collects, under split collection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shares {
    /// Indexes into the files, per worker slot, in collection order. A
    /// spread file is in the share of each worker holding one of its parts.
    pub files: Vec<Vec<usize>>,
    /// Files whose tests are too much for one worker: each of several
    /// workers collects one part of it (the worker plugin's `Part`).
    pub spread: Vec<SpreadFile>,
}

/// A test file spread over several workers.
#[derive(Debug, Clone, PartialEq)]
pub struct SpreadFile {
    /// Index of the file.
    pub file: usize,
    /// The worker slot holding each part: part `p` is `holders[p]`'s.
    pub holders: Vec<usize>,
    /// The part of each of its tests the history knows, balanced by
    /// expected time (see [`balanced_parts`]).
    pub assigned: Arc<PartAssignment>,
}

impl Shares {
    /// The parts `slot` collects: `(file, [part, parts], assignment)`.
    pub fn parts_of(
        &self,
        slot: usize,
    ) -> impl Iterator<Item = (usize, [usize; 2], &Arc<PartAssignment>)> + '_ {
        self.spread.iter().filter_map(move |spread| {
            let part = spread.holders.iter().position(|&holder| holder == slot)?;
            Some((spread.file, [part, spread.holders.len()], &spread.assigned))
        })
    }
}

/// A spread file's known tests divided into `parts` of about equal
/// expected time: longest first, each to the part with the least so far
/// (ties to the lower part), so parts are balanced by time, not by count.
pub fn balanced_parts(file: &str, history: &History, parts: usize) -> PartAssignment {
    let mut tests: Vec<(&str, f64)> = history
        .durations
        .iter()
        .filter(|(nodeid, _)| crate::history::file_of(nodeid) == file)
        .map(|(nodeid, seconds)| (nodeid.as_str(), *seconds))
        .collect();
    tests.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    let mut load = vec![0.0_f64; parts.max(1)];
    tests
        .into_iter()
        .map(|(nodeid, seconds)| {
            let part =
                (0..load.len()).min_by(|&a, &b| load[a].total_cmp(&load[b]).then(a.cmp(&b))).unwrap_or(0);
            load[part] += seconds;
            (nodeid.to_owned(), part)
        })
        .collect()
}

/// What a worker is told to import and collect before running a test: a
/// test file, or one part of a spread file.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadTarget {
    /// The test file's node id.
    pub file: String,
    /// Of a spread file: `[part, parts]`, and which part each known test
    /// is in.
    pub part: Option<([usize; 2], Arc<PartAssignment>)>,
}

/// `--collect auto` splits collection only when that saves at least this
/// many seconds of the run's critical path (dividing the imports, a
/// semantic change)...
pub const SPLIT_MIN_SAVING_SECONDS: f64 = 0.3;

/// ...or this many keeping the imports (which changes only the order in
/// which modules are imported and their items built)...
pub const KEEPING_IMPORTS_MIN_SAVING_SECONDS: f64 = 0.1;

/// ...and at least this share of it, either way.
pub const SPLIT_MIN_SAVING_SHARE: f64 = 0.1;

/// `--collect auto`: whether to split collection among `workers`, and how,
/// judged from history, with a sentence saying why when it does.
///
/// Collecting in full pays the whole collection on the critical path once;
/// a split pays a worker's share of what it divides, so it saves
/// `divided × (1 − 1/workers)`. Dividing the imports is a semantic change
/// (a test no longer sees the import side effects of test files outside
/// its worker's share), so it is chosen only where the imports alone save
/// [`SPLIT_MIN_SAVING_SECONDS`]. Otherwise a split that keeps the imports
/// (the zygote imports every test module as full collection does; the
/// workers build and announce the items) is chosen where building saves
/// [`KEEPING_IMPORTS_MIN_SAVING_SECONDS`]. Either must also save
/// [`SPLIT_MIN_SAVING_SHARE`] of the run collected in full. Without
/// history nothing is known: in full.
pub fn split_pays(history: &History, workers: usize) -> Option<(SplitKind, String)> {
    // A history written before imports were timed apart knows only each
    // file's import and collection together.
    let imports: f64 = if history.file_import.is_empty() {
        history.file_collect.values().sum()
    } else {
        history.file_import.values().sum()
    };
    let building: f64 = history.file_building.values().sum();
    let tests: f64 = history.durations.values().sum();
    let workers = workers.max(1) as f64;
    let divided = 1.0 - 1.0 / workers;
    let full_run = imports + building + tests / workers;
    let pays = |saving: f64, minimum: f64| saving >= minimum && saving >= SPLIT_MIN_SAVING_SHARE * full_run;
    let saving = imports * divided;
    if pays(saving, SPLIT_MIN_SAVING_SECONDS) {
        return Some((
            SplitKind::DividingImports,
            format!(
                "each worker imports its share of the test files: importing them all took {imports:.1}s last \
                 time, ~{saving:.1}s of a ~{full_run:.1}s run saved (--collect full to import them all first)"
            ),
        ));
    }
    let saving = building * divided;
    pays(saving, KEEPING_IMPORTS_MIN_SAVING_SECONDS).then(|| {
        (
            SplitKind::KeepingImports,
            format!(
                "each worker builds the tests of its share of the test files, all imported first: building \
                 them took {building:.1}s last time, ~{saving:.1}s of a ~{full_run:.1}s run saved (--collect \
                 full to build them all first)"
            ),
        )
    })
}

/// What one run's collection cost each test file beyond its import, the
/// part of it that a split keeping the imports divides: the file's own
/// collection less its import, plus a share, by its number of items, of
/// the rest of the divisible time (classes, plugins' hooks, announcing the
/// items to shoal). `items_per_file` counts the collected items of each
/// file; the result sums to `divisible_seconds` when that covers the
/// files' own collections.
pub fn file_building<'a>(
    file_seconds: &'a BTreeMap<String, f64>,
    import_seconds: &BTreeMap<String, f64>,
    divisible_seconds: f64,
    items_per_file: &HashMap<&str, usize>,
) -> Vec<(&'a str, f64)> {
    let own =
        |file: &str, seconds: f64| (seconds - import_seconds.get(file).copied().unwrap_or(0.0)).max(0.0);
    let files_own: f64 = file_seconds.iter().map(|(file, seconds)| own(file, *seconds)).sum();
    let rest = (divisible_seconds - files_own).max(0.0);
    let items: usize =
        file_seconds.keys().map(|file| items_per_file.get(file.as_str()).copied().unwrap_or(0)).sum();
    file_seconds
        .iter()
        .map(|(file, seconds)| {
            let count = items_per_file.get(file.as_str()).copied().unwrap_or(0);
            let share = if items == 0 { 0.0 } else { rest * count as f64 / items as f64 };
            (file.as_str(), own(file, *seconds) + share)
        })
        .collect()
}

/// Seconds assumed for a test when nothing at all is known.
pub const DEFAULT_ESTIMATE: f64 = 0.01;

/// The scheduler's input for these items, from history.
/// `default_timeout` gives each test's timeout by its index (`--timeout`,
/// or its profile's override); a test's own `timeout` marker wins (`0`
/// there means no limit, as in pytest-timeout).
pub fn workload(
    table: &TestTable,
    history: &History,
    default_timeout: &dyn Fn(usize) -> Option<f64>,
) -> Workload {
    let module: Vec<usize> = table.items().map(|item| item.module as usize).collect();
    let known: Vec<Option<f64>> =
        table.items().map(|item| history.durations.get(item.nodeid).copied()).collect();
    let mut per_module: Vec<Vec<f64>> = vec![Vec::new(); table.module_count()];
    for (test, value) in known.iter().enumerate() {
        if let Some(value) = value {
            per_module[module[test]].push(*value);
        }
    }
    let suite_median = median(known.iter().flatten().copied().collect()).unwrap_or(DEFAULT_ESTIMATE);
    let module_medians: Vec<f64> =
        per_module.into_iter().map(|values| median(values).unwrap_or(suite_median)).collect();
    let expected =
        known.iter().enumerate().map(|(test, value)| value.unwrap_or(module_medians[module[test]])).collect();
    let module_setup = (0..table.module_count())
        .map(|module| {
            let path = table.module_path(u32::try_from(module).expect("module indexes fit in u32"));
            history.module_setup.get(path).copied().unwrap_or(0.0)
        })
        .collect();
    let timeouts: Vec<Option<f64>> = table
        .items()
        .enumerate()
        .map(|(test, item)| match item.timeout {
            Some(seconds) if seconds > 0.0 => Some(seconds),
            Some(_) => None,
            None => default_timeout(test),
        })
        .collect();
    let timeouts = if timeouts.iter().any(Option::is_some) { timeouts } else { Vec::new() };
    Workload { expected, module, module_setup, timeouts, ..Workload::default() }
}

/// Seconds assumed for importing and collecting a test file nothing is
/// known about, when no file's cost is known either.
pub const DEFAULT_FILE_COLLECT: f64 = 0.05;

/// Split collection's shares: which worker collects which test files (node
/// ids, in collection order), balanced by each file's collection cost (its
/// import and collection, or, keeping the imports, its building) plus its
/// tests' expected time, from history (unknown files: the median file).
/// Files of one `together` group go to one worker.
///
/// A file heavier than a worker's fair share of the whole (one file holding
/// most of the run's tests) is spread: `k` workers each collect one part of
/// it (`k` the file's weight over the fair share, rounded up), each part
/// weighing the whole import plus `1/k` of the tests, so long as that is
/// lighter than the file whole (its module set-up is paid by every part).
/// Parts go first, to the least loaded workers; then the other files,
/// heaviest first to the least loaded worker; ties by collection order,
/// then by worker. Each share keeps collection order.
pub fn file_shares(
    files: &[String],
    together: &[Vec<usize>],
    history: &History,
    kind: SplitKind,
    workers: usize,
) -> Shares {
    let collect_costs = match kind {
        SplitKind::DividingImports => &history.file_collect,
        SplitKind::KeepingImports => &history.file_building,
    };
    let mut tests_seconds: HashMap<&str, f64> = HashMap::new();
    for (nodeid, seconds) in &history.durations {
        *tests_seconds.entry(crate::history::file_of(nodeid)).or_default() += seconds;
    }
    let known: Vec<f64> = files.iter().filter_map(|file| collect_costs.get(file).copied()).collect();
    let typical_collect = median(known).unwrap_or(DEFAULT_FILE_COLLECT);
    let known_tests: Vec<f64> =
        files.iter().filter_map(|file| tests_seconds.get(file.as_str()).copied()).collect();
    let typical_tests = median(known_tests).unwrap_or(0.0);
    let collect = |file: usize| collect_costs.get(files[file].as_str()).copied().unwrap_or(typical_collect);
    let tests = |file: usize| tests_seconds.get(files[file].as_str()).copied().unwrap_or(typical_tests);
    let weight = |file: usize| collect(file) + tests(file);
    let (bundles, grouped) = bundles(files.len(), together);
    let workers = workers.max(1);
    let fair = (0..files.len()).map(weight).sum::<f64>() / workers as f64;
    let setup = |file: usize| history.module_setup.get(files[file].as_str()).copied().unwrap_or(0.0);
    let parts = |file: usize| {
        let parts = ((weight(file) / fair).ceil() as usize).min(workers);
        let part_weight = collect(file) + setup(file) + tests(file) / parts as f64;
        if parts >= 2 && part_weight < weight(file) { parts } else { 1 }
    };
    let mut load = vec![0.0_f64; workers];
    let mut shares = Shares { files: vec![Vec::new(); workers], spread: Vec::new() };
    let least_loaded = |load: &[f64], taken: &[usize]| {
        (0..workers)
            .filter(|worker| !taken.contains(worker))
            .min_by(|&a, &b| load[a].total_cmp(&load[b]).then(a.cmp(&b)))
            .expect("a worker")
    };
    let mut whole = Vec::new();
    for (bundle, members) in bundles.iter().enumerate() {
        let file = members.first().copied();
        match file.filter(|_| bundle >= grouped && fair > 0.0).map(|file| (file, parts(file))) {
            Some((file, parts)) if parts >= 2 => {
                let mut holders = Vec::with_capacity(parts);
                for _ in 0..parts {
                    let worker = least_loaded(&load, &holders);
                    load[worker] += collect(file) + tests(file) / parts as f64;
                    shares.files[worker].push(file);
                    holders.push(worker);
                }
                let assigned = Arc::new(balanced_parts(&files[file], history, parts));
                shares.spread.push(SpreadFile { file, holders, assigned });
            }
            _ => whole.push(bundle),
        }
    }
    let bundle_weight: Vec<f64> =
        bundles.iter().map(|bundle| bundle.iter().map(|&file| weight(file)).sum()).collect();
    let first_file = |bundle: usize| bundles[bundle].iter().copied().min().unwrap_or(usize::MAX);
    whole.sort_by(|&a, &b| {
        bundle_weight[b].total_cmp(&bundle_weight[a]).then(first_file(a).cmp(&first_file(b)))
    });
    for bundle in whole {
        let worker = least_loaded(&load, &[]);
        load[worker] += bundle_weight[bundle];
        shares.files[worker].extend_from_slice(&bundles[bundle]);
    }
    shares.files.iter_mut().for_each(|share| share.sort_unstable());
    shares
}

/// Bundles of files (indexes) that go to one worker: each `together` group
/// (its files not in an earlier group), then every other file alone; and
/// how many of them are groups.
fn bundles(files: usize, together: &[Vec<usize>]) -> (Vec<Vec<usize>>, usize) {
    let mut bundle_of: Vec<Option<usize>> = vec![None; files];
    let mut bundles: Vec<Vec<usize>> = Vec::new();
    for group in together {
        let members: Vec<usize> =
            group.iter().copied().filter(|&file| file < files && bundle_of[file].is_none()).collect();
        for &file in &members {
            bundle_of[file] = Some(bundles.len());
        }
        bundles.push(members);
    }
    let grouped = bundles.len();
    for (file, bundle) in bundle_of.iter_mut().enumerate() {
        if bundle.is_none() {
            *bundle = Some(bundles.len());
            bundles.push(vec![file]);
        }
    }
    (bundles, grouped)
}

/// Split collection: tells the scheduler which file collects each test,
/// what each file costs a worker to collect (as measured while collecting:
/// building its items, `building`, a part of a spread file its share, and
/// its import unless the zygote kept the imports), and which files each
/// worker has already. With more workers than CPUs,
/// an import also slows the others: its cost counts `workers / cpus` times.
///
/// Each part of a spread file is a file and a module of its own to the
/// scheduler (a worker holds the tests of its part only). Returns what each
/// of the scheduler's file indexes tells a worker to collect.
pub fn set_split_collection(
    workload: &mut Workload,
    table: &TestTable,
    split: &SplitCollection,
    building: &HashMap<&str, f64>,
    import_seconds: &BTreeMap<String, f64>,
    oversubscription: f64,
) -> Result<Vec<LoadTarget>, crate::errors::ShoalError> {
    let index: HashMap<&str, usize> =
        split.files.iter().enumerate().map(|(position, file)| (file.as_str(), position)).collect();
    let mut targets: Vec<LoadTarget> =
        split.files.iter().map(|file| LoadTarget { file: file.clone(), part: None }).collect();
    // The scheduler's file index of each part of each spread file.
    let mut part_index: HashMap<usize, Vec<usize>> = HashMap::new();
    for spread in &split.shares.spread {
        let count = spread.holders.len();
        let indexes = (0..count)
            .map(|part| {
                let target = LoadTarget {
                    file: split.files[spread.file].clone(),
                    part: Some(([part, count], spread.assigned.clone())),
                };
                if part == 0 {
                    targets[spread.file] = target;
                    spread.file
                } else {
                    targets.push(target);
                    targets.len() - 1
                }
            })
            .collect();
        part_index.insert(spread.file, indexes);
    }
    workload.file = table
        .items()
        .map(|item| {
            let file = item.file.and_then(|file| index.get(file).copied());
            match (file, file.and_then(|file| part_index.get(&file))) {
                (Some(file), None) => Some(file),
                (Some(_), Some(parts)) => item.part.and_then(|part| parts.get(usize::from(part)).copied()),
                (None, _) => None,
            }
            .ok_or_else(|| {
                crate::errors::ShoalError::Internal(format!(
                    "split collection: no test file collected {}",
                    item.nodeid
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    parts_as_modules(workload, table);
    workload.file_load = targets
        .iter()
        .map(|target| oversubscription.max(1.0) * load_seconds(target, split.kind, building, import_seconds))
        .collect();
    workload.initially_loaded = (0..split.shares.files.len())
        .map(|slot| {
            let spread: Vec<(usize, [usize; 2])> =
                split.shares.parts_of(slot).map(|(file, part, _)| (file, part)).collect();
            split.shares.files[slot]
                .iter()
                .map(|&file| match spread.iter().find(|(spread, _)| *spread == file) {
                    Some(&(_, [part, _])) => part_index[&file][part],
                    None => file,
                })
                .collect()
        })
        .collect();
    Ok(targets)
}

/// A worker holds one part of a spread file: the scheduler keeps tests of
/// one module together, so each part after the first counts as a module of
/// its own (with the module's set-up cost).
fn parts_as_modules(workload: &mut Workload, table: &TestTable) {
    let mut part_modules: HashMap<(usize, u16), usize> = HashMap::new();
    for (test, item) in table.items().enumerate() {
        if let Some(part) = item.part.filter(|&part| part > 0) {
            let module = workload.module[test];
            workload.module[test] = *part_modules.entry((module, part)).or_insert_with(|| {
                workload.module_setup.push(workload.module_setup[module]);
                workload.module_setup.len() - 1
            });
        }
    }
}

/// What collecting a load target costs a worker that has not: building its
/// items (a part of a spread file, its share), and importing it unless the
/// zygote kept the imports.
fn load_seconds(
    target: &LoadTarget,
    kind: SplitKind,
    building: &HashMap<&str, f64>,
    import_seconds: &BTreeMap<String, f64>,
) -> f64 {
    let parts = target.part.as_ref().map_or(1, |([_, parts], _)| (*parts).max(1));
    let import = match kind {
        SplitKind::DividingImports => import_seconds.get(&target.file).copied().unwrap_or(0.0),
        SplitKind::KeepingImports => 0.0,
    };
    match building.get(target.file.as_str()) {
        Some(seconds) => seconds / parts as f64 + import,
        None => DEFAULT_FILE_COLLECT,
    }
}

/// Sets how often each test may be rerun: its `flaky(reruns=N)` marker, else
/// `default_reruns` of its index (`--reruns`, or its profile's override).
/// Tests in a group and serial tests are not rerun: a rerun runs
/// on a fresh worker, which would break their contract (one worker, in
/// order; nothing else running).
pub fn set_reruns(workload: &mut Workload, table: &TestTable, default_reruns: &dyn Fn(usize) -> u8) {
    let reruns: Vec<u8> = table
        .items()
        .enumerate()
        .map(|(test, item)| {
            let serial = workload.serial.get(test).copied().unwrap_or(false);
            if item.group.is_some() || serial {
                0
            } else {
                item.reruns.unwrap_or_else(|| default_reruns(test))
            }
        })
        .collect();
    if reruns.iter().any(|&count| count > 0) {
        workload.reruns = reruns;
    }
}

/// Marks serial tests (any of `serial_markers`) and test groups.
pub fn mark_serial_and_groups(workload: &mut Workload, table: &TestTable, serial_markers: &[String]) {
    let serial: Vec<bool> = table
        .items()
        .map(|item| item.markers().any(|marker| serial_markers.iter().any(|name| name == marker)))
        .collect();
    if serial.iter().any(|&flag| flag) {
        workload.serial = serial;
    }
    if table.items().any(|item| item.group.is_some()) {
        workload.group = table.items().map(|item| item.group.map(|(index, _)| index)).collect();
    }
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len() % 2 == 1 { values[middle] } else { (values[middle - 1] + values[middle]) / 2.0 })
}

/// What this run measured, for the history.
///
/// A module's set-up cost is learned from the setup phases: on each worker,
/// the first test of a module pays the module-scoped fixtures, so its setup
/// time minus the median setup of the module's other tests there is one
/// sample. That excess is taken out of the first test's own duration, so a
/// test's recorded time does not depend on whether it happened to run first.
/// Skipped, crashed and unrun tests are not recorded.
pub fn measurements<'a>(
    records: &[TestRecord],
    execution_order: &[(u16, u32)],
    table: &'a TestTable,
) -> RunMeasurements<'a> {
    let mut groups: BTreeMap<(usize, &str), Vec<usize>> = BTreeMap::new();
    for &(worker, test) in execution_order {
        let test = test as usize;
        groups.entry((usize::from(worker), table.item(test).path)).or_default().push(test);
    }
    let mut excess: HashMap<usize, f64> = HashMap::new();
    let mut module_samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for ((_, module), tests) in &groups {
        let Some((&first, rest)) = tests.split_first() else { continue };
        let Some(others) =
            median(rest.iter().map(|&test| records[test].phase_duration(Phase::Setup)).collect())
        else {
            continue;
        };
        let sample = (records[first].phase_duration(Phase::Setup) - others).max(0.0);
        excess.insert(first, sample);
        module_samples.entry(module).or_default().push(sample);
    }
    let durations = records
        .iter()
        .enumerate()
        // A cached record's time was measured by an earlier run.
        .filter(|(_, record)| recordable(record.outcome) && !record.cached)
        .map(|(test, record)| {
            let total: f64 = Phase::ALL.into_iter().map(|phase| record.phase_duration(phase)).sum();
            (table.nodeid(test), total - excess.get(&test).copied().unwrap_or(0.0))
        })
        .collect();
    let module_setup = module_samples
        .into_iter()
        .filter_map(|(module, samples)| median(samples).map(|value| (module, value)))
        .collect();
    RunMeasurements {
        durations,
        module_setup,
        file_collect: Vec::new(),
        file_import: Vec::new(),
        file_building: Vec::new(),
        collected_files: (0..table.module_count())
            .map(|module| table.module_path(u32::try_from(module).expect("module indexes fit in u32")))
            .collect(),
    }
}

fn recordable(outcome: Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Passed | Outcome::Failed | Outcome::Error | Outcome::Xfailed | Outcome::Xpassed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history_of(import: &[f64], tests: &[f64]) -> History {
        let mut history = History::default();
        for (index, seconds) in import.iter().enumerate() {
            history.file_collect.insert(format!("test_{index}.py"), *seconds);
        }
        for (index, seconds) in tests.iter().enumerate() {
            history.durations.insert(format!("test_0.py::test_{index}"), *seconds);
        }
        history
    }

    #[test]
    fn collection_is_split_only_where_importing_is_a_large_share_of_the_run() {
        assert!(split_pays(&History::default(), 2).is_none(), "nothing known: in full");
        assert!(split_pays(&history_of(&[2.0; 4], &[0.01; 100]), 2).is_some(), "import-heavy");
        assert!(split_pays(&history_of(&[0.05; 4], &[0.5; 100]), 2).is_none(), "cheap imports");
        assert!(split_pays(&history_of(&[0.5; 4], &[1.0; 300]), 2).is_none(), "a small share of a long run");
        assert!(split_pays(&history_of(&[2.0; 4], &[0.01; 100]), 1).is_none(), "one worker saves nothing");
    }

    #[test]
    fn where_building_the_tests_is_the_large_share_collection_is_split_keeping_the_imports() {
        let kind = |history: &History, workers| split_pays(history, workers).map(|(kind, _)| kind);
        // Cheap imports (0.05 s) but 2 s of building, against 5 s of tests.
        let mut history = history_of(&[0.05; 4], &[0.05; 100]);
        history.file_import = history.file_collect.clone();
        assert_eq!(kind(&history, 2), None, "nothing to build");
        history.file_building.insert("test_0.py".into(), 2.0);
        assert_eq!(kind(&history, 2), Some(SplitKind::KeepingImports));
        assert_eq!(kind(&history, 1), None, "one worker saves nothing");
        // Costly imports still divide them.
        history.file_import.insert("test_1.py".into(), 3.0);
        assert_eq!(kind(&history, 2), Some(SplitKind::DividingImports));
        // Building a small share of a long run: in full.
        let mut long = history_of(&[0.05; 4], &[10.0; 100]);
        long.file_import = long.file_collect.clone();
        long.file_building.insert("test_0.py".into(), 2.0);
        assert_eq!(kind(&long, 2), None);
        // A history without imports timed apart counts each file's whole
        // collection as its import, as before.
        let mut old = history_of(&[2.0; 4], &[0.01; 100]);
        old.file_building.clear();
        assert_eq!(kind(&old, 2), Some(SplitKind::DividingImports));
    }

    #[test]
    fn a_spread_files_parts_are_balanced_by_expected_time_not_by_count() {
        // Alternately slow and quick tests: by position, one part would get
        // every slow one.
        let mut history = History::default();
        for test in 0..40 {
            let seconds = if test % 2 == 0 { 1.0 } else { 0.01 };
            history.durations.insert(format!("big.py::test[{test}]"), seconds);
        }
        history.durations.insert("other.py::test".into(), 5.0);
        let assigned = balanced_parts("big.py", &history, 2);
        assert_eq!(assigned.len(), 40, "the other file's tests are not the spread file's");
        let time = |part| -> f64 {
            assigned.iter().filter(|(_, of)| **of == part).map(|(nodeid, _)| history.durations[nodeid]).sum()
        };
        assert!((time(0) - time(1)).abs() <= 1.0, "parts of {} s and {} s", time(0), time(1));
        let slow = |part| {
            assigned.iter().filter(|(nodeid, of)| **of == part && history.durations[*nodeid] == 1.0).count()
        };
        assert_eq!((slow(0), slow(1)), (10, 10));
    }

    #[test]
    fn building_is_each_files_collection_less_its_import_plus_its_items_share_of_the_rest() {
        let seconds = |pairs: &[(&str, f64)]| -> BTreeMap<String, f64> {
            pairs.iter().map(|(file, seconds)| ((*file).to_owned(), *seconds)).collect()
        };
        let file_seconds = seconds(&[("a.py", 1.0), ("b.py", 0.5)]);
        let import_seconds = seconds(&[("a.py", 0.8)]);
        let items: HashMap<&str, usize> = [("a.py", 1), ("b.py", 3)].into();
        // Own building 0.2 + 0.5; the other 0.3 s divisible by items, 1:3.
        let built = file_building(&file_seconds, &import_seconds, 1.0, &items);
        let close = |value: f64, expected: f64| (value - expected).abs() < 1e-9;
        assert!(close(built[0].1, 0.2 + 0.075) && close(built[1].1, 0.5 + 0.225), "{built:?}");
        // Divisible time less than the files' own collections: theirs alone.
        let built = file_building(&file_seconds, &import_seconds, 0.1, &items);
        assert!(close(built[0].1, 0.2) && close(built[1].1, 0.5), "{built:?}");
    }

    use crate::protocol::{PhaseOutcome, PhaseReport};

    #[test]
    fn file_shares_balance_import_and_test_time_and_keep_collection_order() {
        let files: Vec<String> = ["a.py", "b.py", "c.py", "d.py"].map(str::to_owned).to_vec();
        let mut history = History::default();
        // a: 3 s of tests; b, c, d: 1 s of import each.
        history.durations.insert("a.py::test".into(), 3.0);
        for file in ["b.py", "c.py", "d.py"] {
            history.file_collect.insert(file.into(), 1.0);
            history.durations.insert(format!("{file}::test"), 0.0);
        }
        history.file_collect.insert("a.py".into(), 0.0);
        let shares = file_shares(&files, &[], &history, SplitKind::DividingImports, 2);
        assert_eq!(shares, Shares { files: vec![vec![0], vec![1, 2, 3]], spread: Vec::new() });
        let whole = |shares: Shares| {
            assert!(shares.spread.is_empty(), "{shares:?}");
            shares.files
        };
        // Nothing known: round robin by collection order.
        assert_eq!(
            whole(file_shares(&files, &[], &History::default(), SplitKind::DividingImports, 2)),
            vec![vec![0, 2], vec![1, 3]]
        );
        // Files imported under one name stay together.
        assert_eq!(
            whole(file_shares(&files, &[vec![1, 3]], &History::default(), SplitKind::DividingImports, 2)),
            vec![vec![1, 3], vec![0, 2]]
        );
        // More workers than files: some shares are empty.
        assert_eq!(
            whole(file_shares(&files[..1], &[], &History::default(), SplitKind::DividingImports, 2)),
            vec![vec![0], vec![]]
        );
    }

    #[test]
    fn a_file_heavier_than_a_fair_share_is_spread_over_workers_in_parts() {
        let files: Vec<String> = ["big.py", "b.py", "c.py", "d.py"].map(str::to_owned).to_vec();
        let mut history = History::default();
        // big: 12 s of tests, 1 s to collect; the others 1 s of tests each.
        for test in 0..120 {
            history.durations.insert(format!("big.py::test[{test}]"), 0.1);
        }
        history.file_collect.insert("big.py".into(), 1.0);
        for file in ["b.py", "c.py", "d.py"] {
            history.durations.insert(format!("{file}::test"), 1.0);
            history.file_collect.insert(file.into(), 0.0);
        }
        // Two workers: fair share 8 s; big (13 s) in two parts of 7 s.
        let shares = file_shares(&files, &[], &history, SplitKind::DividingImports, 2);
        let spread = |shares: &Shares| -> Vec<(usize, Vec<usize>)> {
            shares.spread.iter().map(|spread| (spread.file, spread.holders.clone())).collect()
        };
        assert_eq!(spread(&shares), vec![(0, vec![0, 1])]);
        // Its 120 tests of equal time: 60 a part.
        let per_part = |part| shares.spread[0].assigned.values().filter(|&&of| of == part).count();
        assert_eq!((per_part(0), per_part(1)), (60, 60));
        assert_eq!(shares.files, vec![vec![0, 1, 3], vec![0, 2]]);
        assert_eq!(
            shares.parts_of(1).map(|(file, part, _)| (file, part)).collect::<Vec<_>>(),
            vec![(0, [1, 2])]
        );
        // Four workers: fair share 4 s; big in four parts of 4 s.
        let shares = file_shares(&files, &[], &history, SplitKind::DividingImports, 4);
        assert_eq!(spread(&shares), vec![(0, vec![0, 1, 2, 3])]);
        // One worker: nothing to spread over.
        assert!(file_shares(&files, &[], &history, SplitKind::DividingImports, 1).spread.is_empty());
        // A module set-up that every part would pay makes parts no lighter.
        history.module_setup.insert("big.py".into(), 7.0);
        assert!(file_shares(&files, &[], &history, SplitKind::DividingImports, 2).spread.is_empty());
        // A file that must stay with another is never spread.
        history.module_setup.clear();
        assert!(
            file_shares(&files, &[vec![0, 1]], &history, SplitKind::DividingImports, 2).spread.is_empty()
        );
    }

    fn table(tests: &[(&str, &str)]) -> TestTable {
        let mut table = TestTable::default();
        for (nodeid, path) in tests {
            table.push(crate::protocol::CollectedItem {
                nodeid: (*nodeid).into(),
                path: (*path).into(),
                domain: (*nodeid).into(),
                ..Default::default()
            });
        }
        table
    }

    fn phase(when: Phase, duration: f64) -> PhaseReport {
        PhaseReport::bare(when, PhaseOutcome::Passed, "", duration)
    }

    fn record(setup: f64, call: f64) -> TestRecord {
        let reports = [phase(Phase::Setup, setup), phase(Phase::Call, call), phase(Phase::Teardown, 0.0)];
        TestRecord::from_reports(Outcome::Passed, 0, setup + call, &reports)
    }

    #[test]
    fn unknown_tests_get_their_module_median_then_the_suite_median() {
        let items =
            table(&[("a.py::1", "a.py"), ("a.py::2", "a.py"), ("a.py::new", "a.py"), ("b.py::new", "b.py")]);
        let mut history = History::default();
        history.durations.insert("a.py::1".into(), 1.0);
        history.durations.insert("a.py::2".into(), 3.0);
        history.module_setup.insert("a.py".into(), 0.4);
        let workload = workload(&items, &history, &|_| None);
        assert_eq!(workload.expected, vec![1.0, 3.0, 2.0, 2.0]);
        assert_eq!(workload.module, vec![0, 0, 0, 1]);
        assert_eq!(workload.module_setup, vec![0.4, 0.0]);
        assert_eq!(
            super::workload(&items, &History::default(), &|_| None).expected,
            vec![DEFAULT_ESTIMATE; 4]
        );
    }

    #[test]
    fn the_first_test_of_a_module_on_a_worker_reveals_its_setup_cost() {
        let items = table(&[("m.py::a", "m.py"), ("m.py::b", "m.py"), ("m.py::c", "m.py")]);
        let records = [record(0.41, 0.02), record(0.01, 0.02), record(0.01, 0.02)];
        let measured = measurements(&records, &[(0, 0), (0, 1), (0, 2)], &items);
        assert_eq!(measured.module_setup.len(), 1);
        assert!((measured.module_setup[0].1 - 0.4).abs() < 1e-6);
        let first = measured.durations.iter().find(|(id, _)| *id == "m.py::a").unwrap().1;
        assert!((first - 0.03).abs() < 1e-6, "the set-up excess is not the test's own time: {first}");
    }
}
