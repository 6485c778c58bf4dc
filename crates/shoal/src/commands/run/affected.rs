//! `--affected` in the run: after `select`, the tests whose dependencies did
//! not change are set aside with their stored outcome (told to the
//! reporters first, marked cached) and only the rest go to the workers;
//! after the run, the two are put back together in collection order and
//! the workers' records are folded into the store (see [`crate::affected`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::affected::store::{STORE_FILE, Store, Unusable};
use crate::affected::{Context, Ran, Reason, Shards, Snapshot, Verdict, global_reason, update, verdict};
use crate::errors::ShoalError;
use crate::protocol::Hello;
use crate::report::Reporter;
use crate::results::{Outcome, Tally, TestDetails, TestRecord, TestView};
use crate::settings::{AffectedSettings, CollectSettings, RunSettings};
use crate::table::TestTable;

use super::drive::Results;
use super::select::Selected;

/// The marker that opts a test out of caching.
const NO_CACHE_MARKER: &str = "no_cache";

/// `--affected`'s part of a run, from the decision to the store's update.
pub(super) struct AffectedRun {
    store_path: PathBuf,
    rootdir: String,
    /// The store, when its entries still hold (same rootdir, version and
    /// context): entries of tests not run this time are kept.
    store: Option<Store>,
    context: Context,
    snapshot: Snapshot,
    /// Where the workers write what each test ran.
    shards: PathBuf,
    /// The selected tests before the cached ones were set aside.
    selected: TestTable,
    /// `whole_collection` as `select` left it.
    whole_collection: Option<TestTable>,
    /// The cached tests' records, by node id.
    cached: HashMap<String, TestRecord>,
}

/// What `--affected` decides from: the store when its entries hold, why
/// every test runs when something they all depend on changed, the run's
/// context and the project's files as read now.
pub(crate) struct Decision {
    pub(crate) store_path: PathBuf,
    pub(crate) store: Option<Store>,
    pub(crate) everything: Option<Reason>,
    pub(crate) context: Context,
    pub(crate) snapshot: Snapshot,
}

impl Decision {
    /// Reads the store at the rootdir and gathers the run's context (a
    /// foreign store is named in a notice).
    pub(crate) fn read(
        options: &AffectedSettings,
        collect: &CollectSettings,
        rootdir: &str,
        inifile: Option<&str>,
    ) -> Self {
        let root = Path::new(rootdir);
        let environment = crate::affected::environment_hash(&collect.interpreter.path, &collect.cwd);
        let context = Context::gather(
            environment,
            root,
            inifile,
            &collect.pytest_args,
            &options.inputs,
            &options.environment_variables,
        );
        let store_path = root.join(STORE_FILE);
        let mut snapshot = Snapshot::new(root);
        let (store, everything) = match Store::load(&store_path, rootdir) {
            Ok(store) => match global_reason(&store, &context, &mut snapshot) {
                None => (Some(store), None),
                Some(reason) => (None, Some(reason)),
            },
            Err(Unusable::Missing) => (None, Some(Reason::NoStore)),
            Err(Unusable::Foreign(why)) => {
                crate::output::notice(&format!(
                    "--affected: {} {why}; it is ignored (every test runs) and will be rewritten",
                    store_path.display()
                ));
                (None, Some(Reason::NoStore))
            }
        };
        Self { store_path, store, everything, context, snapshot }
    }
}

/// Each test's verdict, in the table's order.
pub(crate) fn verdicts<'a>(
    options: &AffectedSettings,
    store: Option<&'a Store>,
    everything: Option<&Reason>,
    table: &TestTable,
    snapshot: &mut Snapshot,
) -> Vec<Verdict<'a>> {
    table
        .items()
        .map(|item| {
            let no_cache = item.markers().any(|marker| marker == NO_CACHE_MARKER);
            match (store, everything) {
                _ if !options.use_cache => {
                    Verdict::Run(Reason::Context("nothing: --no-cache-results".to_owned()))
                }
                (Some(store), None) => verdict(store, item.nodeid, item.path, no_cache, snapshot),
                (_, Some(reason)) => Verdict::Run(reason.clone()),
                (None, None) => Verdict::Run(Reason::NoStore),
            }
        })
        .collect()
}

/// Why a test runs or is cached, in words (`--explain`, `shoal why`).
pub(crate) fn answer(verdict: &Verdict<'_>) -> String {
    match verdict {
        Verdict::Run(reason) => format!("runs: {reason}"),
        Verdict::Cached(entry) => {
            format!("cached ({}): nothing it ran, read or was configured by changed", entry.outcome.as_str())
        }
    }
}

/// Decides which selected tests run; the cached ones leave `selected`.
pub(super) fn narrow(
    options: &AffectedSettings,
    settings: &RunSettings,
    hello: &Hello,
    selected: &mut Selected,
    shards: PathBuf,
) -> AffectedRun {
    let Decision { store_path, store, everything, context, mut snapshot } = Decision::read(
        options,
        &settings.collect,
        &hello.environment.rootdir,
        hello.environment.inifile.as_deref(),
    );
    let table = &selected.table;
    let verdicts = verdicts(options, store.as_ref(), everything.as_ref(), table, &mut snapshot);
    announce(options, &store_path, table, &verdicts, everything.as_ref());
    let mut cached = HashMap::new();
    for (test, verdict) in verdicts.iter().enumerate() {
        if let Verdict::Cached(entry) = verdict {
            let mut record = TestRecord::new(entry.outcome);
            record.cached = true;
            if let Some(reason) = &entry.skip_reason {
                record.details = Some(Box::new(TestDetails {
                    skip_reason: Some(reason.clone()),
                    ..TestDetails::default()
                }));
            }
            cached.insert(table.nodeid(test).to_owned(), record);
        }
    }
    let (to_run, _) = table.retain(|test| !matches!(verdicts[test], Verdict::Cached(_)));
    let before = std::mem::replace(&mut selected.table, to_run);
    let whole_collection = selected.whole_collection.clone();
    if selected.whole_collection.is_none() && !cached.is_empty() {
        selected.whole_collection = Some(before.clone());
    }
    AffectedRun {
        store_path,
        rootdir: hello.environment.rootdir.clone(),
        store,
        context,
        snapshot,
        shards,
        selected: before,
        whole_collection,
        cached,
    }
}

/// The notices: why everything runs (once), and `--explain`'s answers.
fn announce(
    options: &AffectedSettings,
    store_path: &Path,
    table: &TestTable,
    verdicts: &[Verdict<'_>],
    everything: Option<&Reason>,
) {
    match everything {
        Some(Reason::NoStore) => crate::output::notice(&format!(
            "--affected: no usable record in {}: every test runs and is recorded",
            store_path.display()
        )),
        Some(reason) if options.use_cache => {
            crate::output::notice(&format!("--affected: every test runs: {reason}"));
        }
        _ => {}
    }
    for nodeid in &options.explain {
        let answer = table
            .find(nodeid)
            .map_or_else(|| "not selected in this run".to_owned(), |test| answer(&verdicts[test]));
        crate::output::notice(&format!("--explain {nodeid}: {answer}"));
    }
}

impl AffectedRun {
    /// How many tests are cached.
    pub(super) fn cached_count(&self) -> usize {
        self.cached.len()
    }

    /// The count of tests selected, cached ones included.
    pub(super) fn selected_count(&self) -> usize {
        self.selected.len()
    }

    /// Tells the reporters of the cached tests (before any test runs) and
    /// counts them in the closing line (`3 passed, 2 cached`).
    pub(super) fn report_cached(&self, reporters: &mut [Box<dyn Reporter>], tally: &mut Tally) {
        let total = self.selected.len();
        let mut done = 0;
        for (test, item) in self.selected.items().enumerate() {
            let Some(record) = self.cached.get(item.nodeid) else { continue };
            done += 1;
            tally.add(record.outcome.as_str(), 1);
            tally.add("cached", 1);
            let view = TestView { item: self.selected.item(test), record };
            for reporter in reporters.iter_mut() {
                reporter.test_finished(view, &[], done, total);
            }
        }
    }

    /// After the run: the cached records back among the run's, and the
    /// store updated.
    pub(super) fn finish(mut self, results: &mut Results) {
        self.merge_into(results);
        self.save(results);
    }

    /// Puts the cached records back among the run's, in collection order.
    fn merge_into(&mut self, results: &mut Results) {
        if self.cached.is_empty() {
            return;
        }
        let run_table = std::mem::replace(&mut results.table, self.selected.clone());
        let mut run_records = std::mem::take(&mut results.records);
        let mut position = vec![0u32; run_table.len()];
        results.records = Vec::with_capacity(self.selected.len());
        for (test, item) in self.selected.items().enumerate() {
            let record = match run_table.find(item.nodeid) {
                Some(ran) => {
                    position[ran] = test as u32;
                    std::mem::replace(&mut run_records[ran], TestRecord::new(Outcome::NotRun))
                }
                None => {
                    self.cached.get(item.nodeid).cloned().unwrap_or_else(|| TestRecord::new(Outcome::NotRun))
                }
            };
            results.records.push(record);
        }
        for (_, test) in &mut results.execution_order {
            *test = position[*test as usize];
        }
        results.whole_collection = self.whole_collection.take();
    }

    /// Folds what the workers recorded into the store and saves it; a
    /// failure to save is a warning.
    fn save(mut self, results: &Results) {
        let shards = Shards::read(&self.shards);
        let ran: Vec<Ran<'_>> = results
            .table
            .items()
            .zip(&results.records)
            .filter(|(_, record)| !record.cached)
            .map(|(item, record)| Ran {
                nodeid: item.nodeid,
                test_file: item.path,
                record,
                no_cache: item.markers().any(|marker| marker == NO_CACHE_MARKER),
            })
            .collect();
        let mut store = self.store.take().unwrap_or_else(|| {
            Store::new(&self.rootdir, self.context.environment, self.context.items.clone())
        });
        let test_files = results.table.items().map(|item| item.path).collect();
        update(&mut store, &shards, &ran, &test_files, &mut self.snapshot);
        if let Err(error) = store.save(&self.store_path) {
            crate::output::warn(&format!("--affected: the record was not saved: {error}"));
        }
    }
}

/// With `--affected`, the directory the workers record into, made now.
pub(super) fn shards_directory(
    settings: &RunSettings,
    run_directory: &Path,
) -> Result<Option<PathBuf>, ShoalError> {
    if settings.affected.is_none() {
        return Ok(None);
    }
    if settings.queue.is_some() {
        return Err(ShoalError::Usage("--affected cannot be combined with --queue".to_owned()));
    }
    let directory = run_directory.join("affected");
    std::fs::create_dir_all(&directory)
        .map_err(|error| ShoalError::io(format!("creating {}", directory.display()), error))?;
    Ok(Some(directory))
}
