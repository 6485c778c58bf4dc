//! The worker processes of one run and the queue their events arrive on:
//! starting, forking, replacing, timing out and killing workers. How they
//! collect is in `collect`; what they are started with, in `spec`.

mod collect;
mod spec;

pub(crate) use self::collect::{
    Collected, Collection, CollectionEnd, CollectionPlanner, check_same_collection, collect_only,
};
pub(crate) use self::spec::{run_directory, worker_spec};

use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::errors::ShoalError;
use crate::worker::{WorkerEvent, WorkerHandle, WorkerKey, WorkerSpec, Zygote, signal_group};

/// Between SIGTERM and SIGKILL when killing a worker's group.
const TERMINATE_GRACE: Duration = Duration::from_millis(500);

/// How long a timed-out worker gets to write its stack dump before SIGTERM.
const STACK_DUMP_WAIT: Duration = Duration::from_millis(300);

/// Between SIGTERM and SIGKILL for a timed-out worker (a test may ignore
/// SIGTERM; it cannot ignore SIGKILL).
const TIMEOUT_KILL_GRACE: Duration = Duration::from_secs(1);

/// What a worker slot is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotPhase {
    /// Spawned and collecting, or forked and not yet ready.
    Starting,
    /// Taking tests.
    Running,
    /// Process gone.
    Exited,
}

/// One worker slot and the process currently filling it.
pub(crate) struct Slot {
    pub(crate) handle: WorkerHandle,
    pub(crate) phase: SlotPhase,
    /// Spawn mode: what this worker collected.
    pub(crate) collection: Collection,
    /// How the process ended, once it has.
    pub(crate) exit: Option<String>,
    /// A protocol violation that got the worker killed.
    pub(crate) protocol_error: Option<String>,
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
pub(crate) struct Pool {
    spec: WorkerSpec,
    origin: &'static str,
    sender: Sender<WorkerEvent>,
    events: Receiver<WorkerEvent>,
    pub(crate) zygote: Option<Zygote>,
    pub(crate) zygote_exited: bool,
    pub(crate) slots: Vec<Slot>,
    /// Signals still to send to workers being killed, and when.
    kills: Vec<(Instant, WorkerKey, Signal)>,
}

impl Pool {
    /// A pool with no processes yet.
    pub(crate) fn new(spec: WorkerSpec, origin: &'static str) -> Self {
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
    pub(crate) fn remember_workerinput(&mut self, slot: usize, workerinput: Option<serde_json::Value>) {
        if let Some(workerinput) = workerinput {
            self.spec.workerinputs.insert(slot, workerinput);
        }
    }

    /// Replaces a dead worker; a spawned replacement collects again.
    pub(crate) fn replace(&mut self, slot: usize) -> Result<(), ShoalError> {
        let generation = self.slots[slot].handle.key.generation + 1;
        let handle = self.start_worker(WorkerKey { slot, generation })?;
        self.slots[slot] = Slot::new(handle);
        Ok(())
    }

    /// The slot an event belongs to, unless it comes from a replaced process
    /// (or the zygote).
    pub(crate) fn current(&self, key: WorkerKey) -> Option<usize> {
        let slot = self.slots.get(key.slot)?;
        (slot.handle.key == key).then_some(key.slot)
    }

    pub(crate) fn send(&mut self, slot: usize, command: &crate::protocol::WorkerCommand) {
        self.slots[slot].handle.send(command);
    }

    /// True when every worker and the zygote have ended.
    pub(crate) fn all_exited(&self) -> bool {
        (self.zygote.is_none() || self.zygote_exited)
            && self.slots.iter().all(|slot| slot.phase == SlotPhase::Exited)
    }

    /// Tells the zygote to fork no more and to end once its workers have.
    pub(crate) fn shutdown_zygote(&self) {
        if let Some(zygote) = &self.zygote {
            zygote.shutdown();
        }
    }

    /// Ends a worker stuck past its timeout: a stack dump now, SIGTERM to its
    /// process group a moment later, SIGKILL after a grace.
    pub(crate) fn time_out(&mut self, slot: usize) {
        let handle = &self.slots[slot].handle;
        handle.request_stack_dump();
        let now = Instant::now();
        self.kills.push((now + STACK_DUMP_WAIT, handle.key, Signal::SIGTERM));
        self.kills.push((now + STACK_DUMP_WAIT + TIMEOUT_KILL_GRACE, handle.key, Signal::SIGKILL));
    }

    /// Calls off a timeout's pending kill steps (the test finished first).
    pub(crate) fn cancel_time_out(&mut self, slot: usize) {
        let key = self.slots[slot].handle.key;
        self.kills.retain(|(_, target, _)| *target != key);
    }

    /// When the next pending kill step is due.
    pub(crate) fn next_kill(&self) -> Option<Instant> {
        self.kills.iter().map(|(at, _, _)| *at).min()
    }

    /// Sends the kill steps that are due (to workers still in their slots).
    pub(crate) fn run_due_kills(&mut self) {
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
    pub(crate) fn kill_all(&self) {
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
    pub(crate) fn receive(&self, deadline: Option<Instant>) -> Option<WorkerEvent> {
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
