//! The collection phase: in spawn mode every worker collects and they must
//! agree; in fork mode the zygote collects once, or, with split collection,
//! walks the selection down to the test files without importing them, and
//! each forked worker imports and collects its share of the files (their
//! collections are merged in the zygote's order).

use std::collections::BTreeMap;
use std::path::PathBuf;

use shoal_scheduler::TestId;

use crate::errors::ShoalError;
use crate::plan::{Shares, SplitCollection, SplitKind};
use crate::protocol::{CollectReport, FilePart, Hello, WarningMessage, WorkerCommand, WorkerMessage};
use crate::settings::{CollectSettings, WorkerMode};
use crate::table::TestTable;
use crate::worker::{WorkerEvent, WorkerHandle, WorkerKey, Zygote, describe_exit};

use super::{Pool, Slot, SlotPhase};

/// What one collecting process reported.
#[derive(Debug, Default)]
pub(crate) struct Collection {
    pub(crate) hello: Option<Hello>,
    pub(crate) table: TestTable,
    pub(crate) collect_reports: Vec<CollectReport>,
    pub(crate) warnings: Vec<WarningMessage>,
    pub(crate) deselected: Vec<String>,
    pub(crate) finished: bool,
    /// Fork mode: the zygote's verdict on forking (`None` until it says).
    pub(crate) fork_unsafe: Option<Option<String>>,
    /// Split collection: the test files the zygote recorded, in order.
    pub(crate) test_files: Vec<String>,
    /// Split collection: files that must be collected by one worker.
    pub(crate) same_name: Vec<Vec<usize>>,
    /// Seconds each test file took to import and collect.
    pub(crate) file_seconds: BTreeMap<String, f64>,
    /// Seconds each test module took to import.
    pub(crate) import_seconds: BTreeMap<String, f64>,
    /// Seconds of the collection a split divides even keeping the imports.
    pub(crate) divisible_seconds: f64,
}

impl Collection {
    /// Takes a collection-phase message; messages of a later phase are the
    /// caller's.
    pub(crate) fn record(&mut self, message: WorkerMessage) -> Result<(), ShoalError> {
        match message {
            WorkerMessage::Hello(hello) => {
                if hello.protocol != crate::protocol::PROTOCOL_VERSION {
                    return Err(ShoalError::Internal(format!(
                        "the worker plugin speaks protocol {} but shoal speaks {}",
                        hello.protocol,
                        crate::protocol::PROTOCOL_VERSION
                    )));
                }
                self.hello = Some(*hello);
            }
            WorkerMessage::CollectReport(report) => self.collect_reports.push(report),
            WorkerMessage::Collected { items } => {
                for item in items {
                    self.table.push(item);
                }
            }
            WorkerMessage::CollectionFinished {
                deselected,
                file_seconds,
                import_seconds,
                divisible_seconds,
            } => {
                self.deselected = deselected;
                self.file_seconds = file_seconds;
                self.import_seconds = import_seconds;
                self.divisible_seconds = divisible_seconds;
                self.finished = true;
            }
            WorkerMessage::TestFiles { nodeids, same_name } => {
                self.test_files = nodeids;
                self.same_name = same_name;
            }
            WorkerMessage::Warning(warning) => self.warnings.push(warning),
            WorkerMessage::ZygoteReady { fork_safe, reason } => {
                self.fork_unsafe = Some(if fork_safe { None } else { reason.or(Some("unknown".to_owned())) });
            }
            WorkerMessage::Finished(_)
            | WorkerMessage::Stopped { .. }
            | WorkerMessage::Ready { .. }
            | WorkerMessage::WantWork
            | WorkerMessage::ChildExited { .. } => {
                return Err(ShoalError::Internal("a worker ran tests before it was told to".to_owned()));
            }
        }
        Ok(())
    }
}

/// What the collection phase found.
pub(crate) struct Collected {
    pub(crate) hello: Hello,
    pub(crate) table: TestTable,
    pub(crate) collect_reports: Vec<CollectReport>,
    pub(crate) warnings: Vec<WarningMessage>,
    pub(crate) deselected: Vec<String>,
    /// The mode actually used.
    pub(crate) mode: &'static str,
    /// Seconds each test file took to import and collect.
    pub(crate) file_seconds: BTreeMap<String, f64>,
    /// Seconds each test module took to import (a part of its
    /// `file_seconds`).
    pub(crate) import_seconds: BTreeMap<String, f64>,
    /// Seconds of the collection, in all its processes, that a split
    /// divides among the workers even keeping the imports (see
    /// [`crate::plan::file_building`]).
    pub(crate) divisible_seconds: f64,
    /// Split collection: which worker collected which files.
    pub(crate) split: Option<SplitCollection>,
}

/// The decisions of the collection phase, which belong to the caller: the
/// pool asks, the planner (the run command, with the history) answers.
pub(crate) trait CollectionPlanner {
    /// Given the zygote's `hello` (its plugins, its rootdir), whether to
    /// split collection, and how.
    fn split(&mut self, hello: &Hello) -> Option<SplitKind>;
    /// The test files (node ids, in order), groups of them (indexes) that
    /// must go to one worker, and the number of workers: each worker's
    /// share, as indexes into the files, and the files spread in parts.
    fn shares(&mut self, files: &[String], together: &[Vec<usize>], workers: usize) -> Shares;
}

/// The planner of a collection that is never split.
pub(crate) struct CollectWhole;

impl CollectionPlanner for CollectWhole {
    fn split(&mut self, _hello: &Hello) -> Option<SplitKind> {
        None
    }

    fn shares(&mut self, _files: &[String], _together: &[Vec<usize>], _workers: usize) -> Shares {
        Shares::default()
    }
}

/// How the collection phase ended.
pub(crate) enum CollectionEnd {
    Done(Box<Collected>),
    Interrupted,
}

impl Pool {
    /// Starts `count` workers and waits until they (or the zygote) have
    /// collected: fork mode forks them once the zygote is done.
    pub(crate) fn start_and_collect(
        &mut self,
        mode: WorkerMode,
        count: usize,
        collect: &CollectSettings,
        plan: &mut dyn CollectionPlanner,
    ) -> Result<CollectionEnd, ShoalError> {
        let fork = match mode {
            WorkerMode::Spawn => false,
            WorkerMode::Fork => true,
            WorkerMode::Auto => cfg!(target_os = "linux"),
        };
        if fork && let Some(end) = self.collect_in_zygote(mode, count, collect, plan)? {
            return Ok(end);
        }
        self.spec.workerinputs = crate::worker::controller_workerinputs(&self.spec);
        for slot in 0..count {
            let handle = self.start_worker(WorkerKey { slot, generation: 0 })?;
            self.slots.push(Slot::new(handle));
        }
        self.collect_spawned(collect)
    }

    /// Fork mode: the zygote collects (whole, or down to the test files for
    /// split collection), then the workers are forked. `None` when forking
    /// turned out unsafe under `--mode auto`: the zygote is gone and the
    /// caller spawns the workers instead.
    fn collect_in_zygote(
        &mut self,
        mode: WorkerMode,
        count: usize,
        collect: &CollectSettings,
        plan: &mut dyn CollectionPlanner,
    ) -> Result<Option<CollectionEnd>, ShoalError> {
        let zygote =
            Zygote::spawn(&self.spec, self.sender.clone()).map_err(|source| self.not_startable(source))?;
        self.zygote = Some(zygote);
        let Some((collection, split)) = self.zygote_collection(count, collect, plan)? else {
            return Ok(Some(CollectionEnd::Interrupted));
        };
        match collection.fork_unsafe.clone().flatten() {
            Some(reason) if mode == WorkerMode::Auto => {
                crate::output::notice(&format!("spawn mode: forking is unsafe here: {reason}"));
                self.end_zygote();
                Ok(None)
            }
            unsafe_reason => {
                if let Some(reason) = unsafe_reason {
                    crate::output::warn(&format!("forking as asked with --mode fork, though {reason}"));
                }
                if let Some(split) = split {
                    return self.collect_split(collection, split, collect).map(Some);
                }
                // The tests are known now: fork no more workers than there
                // are tests to give them.
                let count = count.min(collection.table.len()).max(1);
                self.spec.worker_count = count;
                for slot in 0..count {
                    let handle = self.start_worker(WorkerKey { slot, generation: 0 })?;
                    self.slots.push(Slot::new(handle));
                }
                Ok(Some(CollectionEnd::Done(Box::new(Collected::from(collection, "fork")))))
            }
        }
    }

    /// The zygote's own collection, and the workers' shares when it was
    /// split (the planner decides once `hello` arrives, and gives the shares
    /// once the zygote lists the test files; when a worker would start with
    /// none, the zygote collects them all after all). `None` on Ctrl-C.
    fn zygote_collection(
        &mut self,
        count: usize,
        collect: &CollectSettings,
        plan: &mut dyn CollectionPlanner,
    ) -> Result<Option<(Collection, Option<SplitCollection>)>, ShoalError> {
        let mut collection = Collection::default();
        // The planner's answer, once asked: how (or whether) to split.
        let mut decided: Option<Option<SplitKind>> = None;
        let mut split = None;
        while !collection.finished || collection.fork_unsafe.is_none() {
            let messages = match self.receive(None) {
                None => {
                    return Err(ShoalError::Internal("worker events stopped during collection".to_owned()));
                }
                Some(WorkerEvent::Interrupt) => return Ok(None),
                Some(WorkerEvent::Messages(_, messages)) => messages,
                Some(WorkerEvent::ProtocolError(_, error)) => {
                    return Err(ShoalError::Internal(format!("the zygote broke the protocol: {error}")));
                }
                Some(WorkerEvent::Exited(_, exit)) => {
                    let output = self.zygote.as_ref().map(Zygote::output_tail).unwrap_or_default();
                    return Err(collection_exit_error(&output, exit.status, collect, "the zygote"));
                }
            };
            for message in messages {
                let test_files = matches!(message, WorkerMessage::TestFiles { .. });
                collection.record(message)?;
                let command = if test_files {
                    // A worker without a share (fewer files than workers)
                    // would start with nothing and import others' files
                    // again, so the zygote collects them all before forking.
                    let Some(kind) = decided.flatten() else {
                        return Err(ShoalError::Internal("the zygote listed test files, unasked".to_owned()));
                    };
                    let planned = plan.shares(&collection.test_files, &collection.same_name, count);
                    let here = planned.files.iter().any(Vec::is_empty);
                    split = (!here).then(|| SplitCollection {
                        files: collection.test_files.clone(),
                        shares: planned,
                        kind,
                    });
                    WorkerCommand::Share {
                        nodeids: if here { collection.test_files.clone() } else { Vec::new() },
                        parts: Default::default(),
                    }
                } else if let (None, Some(hello)) = (decided, &collection.hello) {
                    let kind = plan.split(hello);
                    decided = Some(kind);
                    WorkerCommand::CollectMode {
                        split: kind.is_some(),
                        keep_imports: kind == Some(SplitKind::KeepingImports),
                    }
                } else {
                    continue;
                };
                if let Some(zygote) = self.zygote.as_mut() {
                    zygote.send(&command);
                }
            }
        }
        // pytest would have shown it on its own stderr.
        if let Some(zygote) = &self.zygote {
            let started = zygote.stderr_so_far();
            if !started.is_empty() {
                let line_end = if started.ends_with('\n') { "" } else { "\n" };
                let _ = std::io::Write::write_all(
                    &mut std::io::stderr(),
                    format!("{started}{line_end}").as_bytes(),
                );
            }
        }
        Ok(Some((collection, split)))
    }

    /// Split collection, once the zygote has recorded the test files and
    /// every worker has a share: forks the workers, each collecting its
    /// share (of a spread file, its part), and merges their collections in
    /// the zygote's file order.
    fn collect_split(
        &mut self,
        zygote: Collection,
        split: SplitCollection,
        collect: &CollectSettings,
    ) -> Result<CollectionEnd, ShoalError> {
        let SplitCollection { files, shares, .. } = &split;
        self.spec.worker_count = shares.files.len();
        for (slot, share) in shares.files.iter().enumerate() {
            let handle = self.fork_collector(WorkerKey { slot, generation: 0 })?;
            self.slots.push(Slot::new(handle));
            let parts: Vec<_> = shares.parts_of(slot).collect();
            let nodeids = share
                .iter()
                .filter(|&&file| parts.iter().all(|&(spread, _, _)| spread != file))
                .map(|&file| files[file].clone())
                .collect();
            let parts = parts
                .into_iter()
                .map(|(file, [part, count], assigned)| {
                    FilePart(files[file].clone(), part, count, assigned.clone())
                })
                .collect();
            self.send(slot, &WorkerCommand::Share { nodeids, parts });
        }
        if !self.await_collections(collect, true)? {
            return Ok(CollectionEnd::Interrupted);
        }
        let mut merged = merge_shares(zygote, files, &mut self.slots);
        merged.split = Some(split);
        Ok(CollectionEnd::Done(Box::new(merged)))
    }

    /// Waits until every starting worker has collected: a spawned worker is
    /// then ready; a forked one (`says_ready`) says so once it has reported
    /// its share. False on Ctrl-C.
    fn await_collections(&mut self, collect: &CollectSettings, says_ready: bool) -> Result<bool, ShoalError> {
        while self.slots.iter().any(|slot| slot.phase == SlotPhase::Starting) {
            let Some(event) = self.receive(None) else {
                return Err(ShoalError::Internal("worker events stopped during collection".to_owned()));
            };
            match event {
                WorkerEvent::Interrupt => return Ok(false),
                WorkerEvent::Messages(key, messages) => {
                    let Some(slot) = self.current(key) else { continue };
                    let state = &mut self.slots[slot];
                    let mut ready_input = None;
                    for message in messages {
                        if let WorkerMessage::Ready { pid, workerinput } = message {
                            state.handle.pid = Some(pid);
                            state.phase = SlotPhase::Running;
                            ready_input = workerinput;
                        } else {
                            state.collection.record(message)?;
                        }
                    }
                    if !says_ready && state.collection.finished {
                        state.phase = SlotPhase::Running;
                    }
                    self.remember_workerinput(slot, ready_input);
                }
                WorkerEvent::ProtocolError(key, error) => {
                    return Err(ShoalError::Internal(format!(
                        "worker gw{} broke the protocol: {error}",
                        key.slot
                    )));
                }
                WorkerEvent::Exited(key, exit) => {
                    let Some(slot) = self.current(key) else { continue };
                    let output = self.slots[slot].handle.output_tail();
                    return Err(collection_exit_error(
                        &output,
                        exit.status,
                        collect,
                        &format!("worker gw{slot}"),
                    ));
                }
            }
        }
        Ok(true)
    }

    /// Forks a worker whose first command is its share of the test files.
    fn fork_collector(&mut self, key: WorkerKey) -> Result<WorkerHandle, ShoalError> {
        let zygote = self.zygote.as_ref().expect("split collection forks from the zygote");
        zygote.fork(&self.spec, key, true, self.sender.clone()).map_err(|error| {
            ShoalError::Internal(format!("the zygote could not fork a collecting worker: {error}"))
        })
    }

    fn collect_spawned(&mut self, collect: &CollectSettings) -> Result<CollectionEnd, ShoalError> {
        if !self.await_collections(collect, false)? {
            return Ok(CollectionEnd::Interrupted);
        }
        let first = &self.slots[0].collection;
        for (index, other) in self.slots.iter().enumerate().skip(1) {
            check_same_collection(&first.table, &other.collection.table, index)?;
        }
        let collection = std::mem::take(&mut self.slots[0].collection);
        Ok(CollectionEnd::Done(Box::new(Collected::from(collection, "spawn"))))
    }
}

impl Collected {
    /// What building each test file's items cost, beyond its import (see
    /// [`crate::plan::file_building`]); `table` holds the collected items.
    pub(crate) fn building_seconds(&self, table: &TestTable) -> Vec<(&str, f64)> {
        let mut items_per_file: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for item in table.items() {
            if let Some(file) = item.file {
                *items_per_file.entry(file).or_default() += 1;
            }
        }
        crate::plan::file_building(
            &self.file_seconds,
            &self.import_seconds,
            self.divisible_seconds,
            &items_per_file,
        )
    }

    /// How many collectors failed.
    pub(crate) fn collect_errors(&self) -> usize {
        self.collect_reports.iter().filter(|report| report.category == "error").count()
    }

    fn from(collection: Collection, mode: &'static str) -> Self {
        Self {
            hello: collection.hello.expect("a process that collected said hello"),
            table: collection.table,
            collect_reports: collection.collect_reports,
            warnings: collection.warnings,
            deselected: collection.deselected,
            mode,
            file_seconds: collection.file_seconds,
            import_seconds: collection.import_seconds,
            divisible_seconds: collection.divisible_seconds,
            split: None,
        }
    }
}

/// The zygote's collection with each worker's share merged in: tests in the
/// zygote's file order (each file's tests in the order its worker collected
/// them), collector reports and deselected tests likewise.
fn merge_shares(zygote: Collection, files: &[String], slots: &mut [Slot]) -> Collected {
    let mut merged = Collected::from(zygote, "fork");
    let position: std::collections::HashMap<&str, usize> =
        files.iter().enumerate().map(|(index, file)| (file.as_str(), index)).collect();
    // Each worker's tests, grouped by the file that collected them.
    let mut by_file: Vec<Vec<(usize, TestId)>> = vec![Vec::new(); files.len()];
    let mut unattributed = Vec::new();
    for (slot, state) in slots.iter().enumerate() {
        for test in 0..state.collection.table.len() {
            match state.collection.table.item(test).file.and_then(|file| position.get(file)) {
                Some(&file) => by_file[file].push((slot, test)),
                None => unattributed.push((slot, test)),
            }
        }
    }
    // A spread file's parts interleave: its tests go back in the file's order.
    for tests in &mut by_file {
        let spread_position =
            |&(slot, test): &(usize, TestId)| slots[slot].collection.table.item(test).position;
        if tests.first().and_then(spread_position).is_some() {
            tests.sort_by_key(|test| spread_position(test).unwrap_or(u32::MAX));
        }
    }
    for (slot, test) in by_file.into_iter().flatten().chain(unattributed) {
        merged.table.push(slots[slot].collection.table.item(test).to_collected());
    }
    let order = |nodeid: &str| position.get(crate::history::file_of(nodeid)).copied().unwrap_or(usize::MAX);
    let mut reports: Vec<CollectReport> = Vec::new();
    for state in slots.iter_mut() {
        let collection = std::mem::take(&mut state.collection);
        reports.extend(collection.collect_reports);
        merged.warnings.extend(collection.warnings);
        merged.deselected.extend(collection.deselected);
        // Each part of a spread file was collected apart: the file costs
        // what its costliest part did.
        for (file, seconds) in collection.file_seconds {
            let known = merged.file_seconds.entry(file).or_insert(seconds);
            *known = known.max(seconds);
        }
        // Kept imports were the zygote's, which each worker's inherited.
        for (file, seconds) in collection.import_seconds {
            let known = merged.import_seconds.entry(file).or_insert(seconds);
            *known = known.max(seconds);
        }
        merged.divisible_seconds += collection.divisible_seconds;
    }
    // A spread file that fails to collect fails in each of its parts.
    let mut seen = std::collections::HashSet::new();
    reports.retain(|report| seen.insert((report.nodeid.clone(), report.category.clone())));
    reports.sort_by_key(|report| order(&report.nodeid));
    merged.collect_reports.extend(reports);
    merged
}

/// A process that ended before collecting: pytest refused to start (its own
/// output says why, and is shown), or pytest is missing.
fn collection_exit_error(
    output: &str,
    status: Option<std::process::ExitStatus>,
    collect: &CollectSettings,
    who: &str,
) -> ShoalError {
    if output.contains("No module named pytest") {
        return ShoalError::PytestMissing {
            python: collect.interpreter.path.clone(),
            origin: collect.interpreter.origin,
        };
    }
    let _ = std::io::Write::write_all(&mut std::io::stderr(), output.as_bytes());
    let unrecognized =
        output.lines().filter_map(|line| line.split_once("unrecognized arguments:")).map(|(_, rest)| rest);
    if unrecognized
        .flat_map(str::split_whitespace)
        .any(|argument| argument.starts_with("--cov") || argument.starts_with("--no-cov"))
    {
        crate::output::notice(&format!(
            "--cov and its options need pytest-cov: install it with `{} -m pip install pytest-cov`",
            collect.interpreter.path.display()
        ));
    }
    match status.and_then(|status| status.code()).and_then(|code| u8::try_from(code).ok()) {
        Some(code) if code != 0 => ShoalError::PytestRefused { code },
        _ => ShoalError::Internal(format!("{who} ended before collecting ({})", describe_exit(status))),
    }
}

/// Checks two workers collected the same node ids in the same order.
pub(crate) fn check_same_collection(
    first: &TestTable,
    other: &TestTable,
    worker: usize,
) -> Result<(), ShoalError> {
    let Some(position) = first.first_difference(other) else { return Ok(()) };
    let describe = |table: &TestTable| {
        if position < table.len() {
            format!("`{}`", table.nodeid(position))
        } else {
            "nothing more".to_owned()
        }
    };
    Err(ShoalError::CollectionMismatch(format!(
        "workers collected different tests: at position {position}, gw0 has {} where gw{worker} has {} \
         ({} and {} tests in all); collection must not depend on the process (random ids, unordered sets)",
        describe(first),
        describe(other),
        first.len(),
        other.len()
    )))
}

/// One collection and nothing run: what `shoal list` and `shoal plan` see.
pub(crate) struct CollectedOnly {
    /// The collected tests.
    pub table: TestTable,
    /// pytest's rootdir.
    pub rootdir: PathBuf,
    /// pytest's configuration file, rootdir-relative.
    pub inifile: Option<String>,
    /// How many collectors failed (each is reported on stderr).
    pub errors: usize,
}

/// Collects with one spawned process and runs nothing; `None` on Ctrl-C.
/// Collection errors are reported on stderr.
pub(crate) fn collect_only(settings: &CollectSettings) -> Result<Option<CollectedOnly>, ShoalError> {
    let run_directory = super::run_directory()?;
    let spec = super::worker_spec(settings, 1, None, &[], run_directory.path())?;
    // One collection and no workers: spawn a single process.
    let mut pool = Pool::new(spec, settings.interpreter.origin);
    let collected = match pool.start_and_collect(WorkerMode::Spawn, 1, settings, &mut CollectWhole)? {
        CollectionEnd::Done(collected) => collected,
        CollectionEnd::Interrupted => return Ok(None),
    };
    pool.send(0, &WorkerCommand::Shutdown);
    let errors: Vec<&CollectReport> =
        collected.collect_reports.iter().filter(|report| report.category == "error").collect();
    for report in &errors {
        crate::output::error(&format!(
            "collecting {}: {}",
            report.nodeid,
            report.message.as_deref().unwrap_or("failed")
        ));
    }
    let errors = errors.len();
    let collected = *collected;
    Ok(Some(CollectedOnly {
        table: collected.table,
        rootdir: PathBuf::from(collected.hello.environment.rootdir),
        inifile: collected.hello.environment.inifile,
        errors,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::CollectedItem;

    fn table(nodeids: &[&str]) -> TestTable {
        let mut table = TestTable::default();
        for nodeid in nodeids {
            table.push(CollectedItem {
                nodeid: (*nodeid).to_owned(),
                path: "t.py".to_owned(),
                domain: (*nodeid).to_owned(),
                ..CollectedItem::default()
            });
        }
        table
    }

    #[test]
    fn differing_collections_name_the_first_difference() {
        let first = table(&["t.py::a", "t.py::b"]);
        let other = table(&["t.py::a", "t.py::c"]);
        let message = check_same_collection(&first, &other, 1).unwrap_err().to_string();
        assert!(message.contains("at position 1, gw0 has `t.py::b` where gw1 has `t.py::c`"), "{message}");
        let shorter = table(&["t.py::a"]);
        let message = check_same_collection(&first, &shorter, 2).unwrap_err().to_string();
        assert!(message.contains("gw0 has `t.py::b` where gw2 has nothing more"), "{message}");
        assert!(check_same_collection(&first, &first, 1).is_ok());
    }
}
