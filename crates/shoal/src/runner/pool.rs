//! The worker processes of one run and the queue their events arrive on;
//! the collection phase, in spawn mode (every worker collects, and they must
//! agree) and in fork mode: the zygote collects once, or, with split
//! collection, walks the selection down to the test files without importing
//! them, and each forked worker imports and collects its share of the files
//! (their collections are merged in the zygote's order).

use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use std::collections::BTreeMap;

use crate::errors::ShoalError;
use crate::protocol::{CollectReport, Hello, WarningMessage, WorkerCommand, WorkerMessage};
use crate::settings::{CollectSettings, WorkerMode};
use crate::table::TestTable;
use crate::worker::{WorkerEvent, WorkerHandle, WorkerKey, WorkerSpec, Zygote, describe_exit, signal_group};
use shoal_scheduler::TestId;

/// Between SIGTERM and SIGKILL when killing a worker's group.
const TERMINATE_GRACE: Duration = Duration::from_millis(500);

/// How long a timed-out worker gets to write its stack dump before SIGTERM.
const STACK_DUMP_WAIT: Duration = Duration::from_millis(300);

/// Between SIGTERM and SIGKILL for a timed-out worker (a test may ignore
/// SIGTERM; it cannot ignore SIGKILL).
const TIMEOUT_KILL_GRACE: Duration = Duration::from_secs(1);

/// What a worker slot is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotPhase {
    /// Spawned and collecting, or forked and not yet ready.
    Starting,
    /// Taking tests.
    Running,
    /// Process gone.
    Exited,
}

/// What one collecting process reported.
#[derive(Debug, Default)]
pub(super) struct Collection {
    pub(super) hello: Option<Hello>,
    pub(super) table: TestTable,
    pub(super) collect_reports: Vec<CollectReport>,
    pub(super) warnings: Vec<WarningMessage>,
    pub(super) deselected: Vec<String>,
    pub(super) finished: bool,
    /// Fork mode: the zygote's verdict on forking (`None` until it says).
    pub(super) fork_unsafe: Option<Option<String>>,
    /// Split collection: the test files the zygote recorded, in order.
    pub(super) test_files: Vec<String>,
    /// Split collection: files that must be collected by one worker.
    pub(super) same_name: Vec<Vec<usize>>,
    /// Seconds each test file took to import and collect.
    pub(super) file_seconds: BTreeMap<String, f64>,
}

impl Collection {
    /// Takes a collection-phase message; messages of a later phase are the
    /// caller's.
    pub(super) fn record(&mut self, message: WorkerMessage) -> Result<(), ShoalError> {
        match message {
            WorkerMessage::Hello(hello) => {
                if hello.protocol != crate::protocol::PROTOCOL_VERSION {
                    return Err(ShoalError::Internal(format!(
                        "the worker plugin speaks protocol {} but shoal speaks {}",
                        hello.protocol,
                        crate::protocol::PROTOCOL_VERSION
                    )));
                }
                self.hello = Some(hello);
            }
            WorkerMessage::CollectReport(report) => self.collect_reports.push(report),
            WorkerMessage::Collected { items } => {
                for item in items {
                    self.table.push(item);
                }
            }
            WorkerMessage::CollectionFinished { deselected, file_seconds } => {
                self.deselected = deselected;
                self.file_seconds = file_seconds;
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

/// One worker slot and the process currently filling it.
pub(super) struct Slot {
    pub(super) handle: WorkerHandle,
    pub(super) phase: SlotPhase,
    /// Spawn mode: what this worker collected.
    pub(super) collection: Collection,
    /// How the process ended, once it has.
    pub(super) exit: Option<String>,
    /// A protocol violation that got the worker killed.
    pub(super) protocol_error: Option<String>,
}

impl Slot {
    fn new(handle: WorkerHandle) -> Self {
        Self {
            handle,
            phase: SlotPhase::Starting,
            collection: Collection::default(),
            exit: None,
            protocol_error: None,
        }
    }
}

/// The workers (and the zygote, in fork mode) of one run.
pub(super) struct Pool {
    spec: WorkerSpec,
    origin: &'static str,
    sender: Sender<WorkerEvent>,
    events: Receiver<WorkerEvent>,
    pub(super) zygote: Option<Zygote>,
    pub(super) zygote_exited: bool,
    pub(super) slots: Vec<Slot>,
    /// Signals still to send to workers being killed, and when.
    kills: Vec<(Instant, WorkerKey, Signal)>,
}

/// What the collection phase found.
pub(super) struct Collected {
    pub(super) hello: Hello,
    pub(super) table: TestTable,
    pub(super) collect_reports: Vec<CollectReport>,
    pub(super) warnings: Vec<WarningMessage>,
    pub(super) deselected: Vec<String>,
    /// The mode actually used.
    pub(super) mode: &'static str,
    /// Seconds each test file took to import and collect.
    pub(super) file_seconds: BTreeMap<String, f64>,
    /// Split collection: which worker collected which files.
    pub(super) split: Option<SplitCollection>,
}

/// Split collection's outcome: the test files and the workers' shares.
pub struct SplitCollection {
    /// The test files, in the zygote's collection order (node ids).
    pub files: Vec<String>,
    /// Indexes into `files` that each worker slot collected.
    pub shares: Vec<Vec<usize>>,
}

/// How the zygote collects, decided by the caller.
pub(super) struct CollectionPlan<'a> {
    /// Given the zygote's `hello` (its plugins), whether to split collection.
    pub(super) split: &'a dyn Fn(&Hello) -> bool,
    /// The shares of these test files among this many workers.
    pub(super) shares: &'a ShareFiles<'a>,
}

/// Given the zygote's `hello`, the test files (node ids, in order), groups
/// of them (indexes) that must go to one worker, and the number of workers:
/// each worker's share, as indexes into the files.
pub(super) type ShareFiles<'a> = dyn Fn(&Hello, &[String], &[Vec<usize>], usize) -> Vec<Vec<usize>> + 'a;

/// How the collection phase ended.
pub(super) enum CollectionEnd {
    Done(Box<Collected>),
    Interrupted,
}

impl Pool {
    /// A pool with no processes yet.
    pub(super) fn new(spec: WorkerSpec, origin: &'static str) -> Self {
        let (sender, events) = mpsc::channel();
        spawn_signal_listener(sender.clone());
        Self {
            spec,
            origin,
            sender,
            events,
            zygote: None,
            zygote_exited: false,
            slots: Vec::new(),
            kills: Vec::new(),
        }
    }

    /// Starts `count` workers and waits until they (or the zygote) have
    /// collected: fork mode forks them once the zygote is done.
    pub(super) fn start_and_collect(
        &mut self,
        mode: WorkerMode,
        count: usize,
        collect: &CollectSettings,
        plan: &CollectionPlan<'_>,
    ) -> Result<CollectionEnd, ShoalError> {
        let fork = match mode {
            WorkerMode::Spawn => false,
            WorkerMode::Fork => true,
            WorkerMode::Auto => cfg!(target_os = "linux"),
        };
        if fork {
            let zygote = Zygote::spawn(&self.spec, self.sender.clone())
                .map_err(|source| self.not_startable(source))?;
            self.zygote = Some(zygote);
            let mut collection = Collection::default();
            let mut split = None;
            while !collection.finished || collection.fork_unsafe.is_none() {
                match self.receive(None) {
                    None => {
                        return Err(ShoalError::Internal(
                            "worker events stopped during collection".to_owned(),
                        ));
                    }
                    Some(WorkerEvent::Interrupt) => return Ok(CollectionEnd::Interrupted),
                    Some(WorkerEvent::Messages(_, messages)) => {
                        for message in messages {
                            let test_files = matches!(message, WorkerMessage::TestFiles { .. });
                            collection.record(message)?;
                            if test_files {
                                // Fewer files than workers: some workers
                                // would start with nothing and import
                                // others' files again, so the zygote
                                // collects them all before forking.
                                let here = collection.test_files.len() < count;
                                let nodeids = if here { collection.test_files.clone() } else { Vec::new() };
                                split = Some(!here);
                                if let Some(zygote) = self.zygote.as_mut() {
                                    zygote.send(&WorkerCommand::Share { nodeids });
                                }
                            }
                            if split.is_none()
                                && let Some(hello) = &collection.hello
                            {
                                let decided = (plan.split)(hello);
                                split = Some(decided);
                                if let Some(zygote) = self.zygote.as_mut() {
                                    zygote.send(&WorkerCommand::CollectMode { split: decided });
                                }
                            }
                        }
                    }
                    Some(WorkerEvent::ProtocolError(_, error)) => {
                        return Err(ShoalError::Internal(format!("the zygote broke the protocol: {error}")));
                    }
                    Some(WorkerEvent::Exited(_, status)) => {
                        let output = self.zygote.as_ref().map(Zygote::output_tail).unwrap_or_default();
                        return Err(collection_exit_error(&output, status, collect, "the zygote"));
                    }
                }
            }
            match collection.fork_unsafe.clone().flatten() {
                Some(reason) if mode == WorkerMode::Auto => {
                    crate::output::notice(&format!("spawn mode: forking is unsafe here: {reason}"));
                    self.end_zygote();
                }
                unsafe_reason => {
                    if let Some(reason) = unsafe_reason {
                        crate::output::warn(&format!("forking as asked with --mode fork, though {reason}"));
                    }
                    if split == Some(true) {
                        return self.collect_split(collection, count, collect, plan);
                    }
                    // The tests are known now: fork no more workers than
                    // there are tests to give them.
                    let count = count.min(collection.table.len()).max(1);
                    self.spec.worker_count = count;
                    for slot in 0..count {
                        let handle = self.start_worker(WorkerKey { slot, generation: 0 })?;
                        self.slots.push(Slot::new(handle));
                    }
                    return Ok(CollectionEnd::Done(Box::new(Collected::from(collection, "fork"))));
                }
            }
        }
        self.spec.workerinputs = crate::worker::controller_workerinputs(&self.spec);
        for slot in 0..count {
            let handle = self.start_worker(WorkerKey { slot, generation: 0 })?;
            self.slots.push(Slot::new(handle));
        }
        self.collect_spawned(collect)
    }

    /// Shuts the zygote down and waits for it to go (used when falling back
    /// to spawn mode before any worker was forked).
    fn end_zygote(&mut self) {
        if let Some(zygote) = self.zygote.take() {
            zygote.shutdown();
            let deadline = Instant::now() + Duration::from_secs(5);
            while let Some(event) = self.receive(Some(deadline)) {
                if matches!(event, WorkerEvent::Exited(key, _) if key == Zygote::KEY) {
                    return;
                }
            }
            signal_group(zygote.pid, Signal::SIGKILL);
        }
    }

    /// Split collection, once the zygote has recorded the test files (at
    /// least one per worker; with fewer it collects them all itself): forks
    /// the workers, each collecting its share, and merges their collections
    /// in the zygote's file order.
    fn collect_split(
        &mut self,
        zygote: Collection,
        count: usize,
        collect: &CollectSettings,
        plan: &CollectionPlan<'_>,
    ) -> Result<CollectionEnd, ShoalError> {
        let files = zygote.test_files.clone();
        let hello = zygote.hello.as_ref().expect("the zygote said hello");
        let shares = (plan.shares)(hello, &files, &zygote.same_name, count);
        self.spec.worker_count = count;
        for (slot, share) in shares.iter().enumerate() {
            let handle = self.fork_collector(WorkerKey { slot, generation: 0 })?;
            self.slots.push(Slot::new(handle));
            let nodeids = share.iter().map(|&file| files[file].clone()).collect();
            self.send(slot, &WorkerCommand::Share { nodeids });
        }
        if !self.await_collections(collect, true)? {
            return Ok(CollectionEnd::Interrupted);
        }
        let mut merged = merge_shares(zygote, &files, &mut self.slots);
        merged.split = Some(SplitCollection { files, shares });
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
                WorkerEvent::Exited(key, status) => {
                    let Some(slot) = self.current(key) else { continue };
                    let output = self.slots[slot].handle.output_tail();
                    return Err(collection_exit_error(&output, status, collect, &format!("worker gw{slot}")));
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

    fn not_startable(&self, source: std::io::Error) -> ShoalError {
        ShoalError::PythonNotStartable { python: self.spec.python.clone(), origin: self.origin, source }
    }

    /// Starts a worker process for `key`: forked when a zygote is alive,
    /// else spawned.
    fn start_worker(&mut self, key: WorkerKey) -> Result<WorkerHandle, ShoalError> {
        if let Some(zygote) = self.zygote.as_ref().filter(|_| !self.zygote_exited) {
            match zygote.fork(&self.spec, key, false, self.sender.clone()) {
                Ok(handle) => return Ok(handle),
                Err(error) => {
                    // It died (the OOM killer likes it: it holds the whole
                    // collected suite) before its exit was seen.
                    crate::output::warn(&format!(
                        "the zygote could not fork a worker ({error}); spawning workers from now on"
                    ));
                    self.zygote_exited = true;
                }
            }
        }
        WorkerHandle::spawn(&self.spec, key, self.sender.clone()).map_err(|source| self.not_startable(source))
    }

    /// Keeps the `config.workerinput` a forked worker got, for a
    /// replacement spawned in its slot should the zygote die.
    pub(super) fn remember_workerinput(&mut self, slot: usize, workerinput: Option<serde_json::Value>) {
        if let Some(workerinput) = workerinput {
            self.spec.workerinputs.insert(slot, workerinput);
        }
    }

    /// Replaces a dead worker; a spawned replacement collects again.
    pub(super) fn replace(&mut self, slot: usize) -> Result<(), ShoalError> {
        let generation = self.slots[slot].handle.key.generation + 1;
        let handle = self.start_worker(WorkerKey { slot, generation })?;
        self.slots[slot] = Slot::new(handle);
        Ok(())
    }

    /// The slot an event belongs to, unless it comes from a replaced process
    /// (or the zygote).
    pub(super) fn current(&self, key: WorkerKey) -> Option<usize> {
        let slot = self.slots.get(key.slot)?;
        (slot.handle.key == key).then_some(key.slot)
    }

    pub(super) fn send(&mut self, slot: usize, command: &crate::protocol::WorkerCommand) {
        self.slots[slot].handle.send(command);
    }

    /// True when every worker and the zygote have ended.
    pub(super) fn all_exited(&self) -> bool {
        (self.zygote.is_none() || self.zygote_exited)
            && self.slots.iter().all(|slot| slot.phase == SlotPhase::Exited)
    }

    /// Tells the zygote to fork no more and to end once its workers have.
    pub(super) fn shutdown_zygote(&self) {
        if let Some(zygote) = &self.zygote {
            zygote.shutdown();
        }
    }

    /// Ends a worker stuck past its timeout: a stack dump now, SIGTERM to its
    /// process group a moment later, SIGKILL after a grace.
    pub(super) fn time_out(&mut self, slot: usize) {
        let handle = &self.slots[slot].handle;
        handle.request_stack_dump();
        let now = Instant::now();
        self.kills.push((now + STACK_DUMP_WAIT, handle.key, Signal::SIGTERM));
        self.kills.push((now + STACK_DUMP_WAIT + TIMEOUT_KILL_GRACE, handle.key, Signal::SIGKILL));
    }

    /// Calls off a timeout's pending kill steps (the test finished first).
    pub(super) fn cancel_time_out(&mut self, slot: usize) {
        let key = self.slots[slot].handle.key;
        self.kills.retain(|(_, target, _)| *target != key);
    }

    /// When the next pending kill step is due.
    pub(super) fn next_kill(&self) -> Option<Instant> {
        self.kills.iter().map(|(at, _, _)| *at).min()
    }

    /// Sends the kill steps that are due (to workers still in their slots).
    pub(super) fn run_due_kills(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.kills.drain(..).partition(|(at, _, _)| *at <= now);
        self.kills = later;
        for (_, key, signal) in due {
            if let Some(slot) = self.current(key)
                && self.slots[slot].phase != SlotPhase::Exited
            {
                self.slots[slot].handle.signal_group(signal);
            }
        }
    }

    /// Kills every process group of the run: SIGTERM, a short grace,
    /// SIGKILL. This also ends what tests left running in those groups.
    pub(super) fn kill_all(&self) {
        self.signal_all(Signal::SIGTERM);
        std::thread::sleep(TERMINATE_GRACE);
        self.signal_all(Signal::SIGKILL);
    }

    fn signal_all(&self, signal: Signal) {
        for slot in &self.slots {
            slot.handle.signal_group(signal);
        }
        if let Some(zygote) = &self.zygote {
            signal_group(zygote.pid, signal);
        }
    }

    /// The next event, or `None` once `deadline` passes.
    pub(super) fn receive(&self, deadline: Option<Instant>) -> Option<WorkerEvent> {
        match deadline {
            None => self.events.recv().ok(),
            Some(deadline) => {
                self.events.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok()
            }
        }
    }
}

impl Drop for Pool {
    /// No process of the run survives shoal, whatever path ends it.
    fn drop(&mut self) {
        self.signal_all(Signal::SIGKILL);
    }
}

impl Collected {
    fn from(collection: Collection, mode: &'static str) -> Self {
        Self {
            hello: collection.hello.expect("a process that collected said hello"),
            table: collection.table,
            collect_reports: collection.collect_reports,
            warnings: collection.warnings,
            deselected: collection.deselected,
            mode,
            file_seconds: collection.file_seconds,
            split: None,
        }
    }
}

fn spawn_signal_listener(sender: Sender<WorkerEvent>) {
    let signals = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM];
    let Ok(mut signals) = signal_hook::iterator::Signals::new(signals) else {
        crate::output::warn("cannot listen for Ctrl-C; interrupting may leave workers behind");
        return;
    };
    let _ = std::thread::Builder::new().name("shoal-signals".to_owned()).spawn(move || {
        for _ in signals.forever() {
            if sender.send(WorkerEvent::Interrupt).is_err() {
                break;
            }
        }
    });
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
        merged.file_seconds.extend(collection.file_seconds);
    }
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
pub(super) fn check_same_collection(
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
