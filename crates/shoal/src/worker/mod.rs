//! Worker processes: starting them, their channels, their output, their end.
//!
//! A worker comes to be in one of two ways:
//! - spawn: `python -m pytest -p shoal_worker ...` started by shoal, which
//!   collects on its own;
//! - fork: a [`Zygote`] (the same command, told to serve forks) collects
//!   once and forks a warm worker per request; shoal hands it the new
//!   worker's channel, stdout and stderr over a packet socket.
//!
//! Either way a worker sits in its own process group, speaks the protocol on
//! a Unix socket at descriptor 3, and has its stdout and stderr read
//! separately (anything a test writes past pytest's capture lands there,
//! never in the protocol). One thread per worker reads the protocol and, at
//! its end, learns how the process ended; two more keep a bounded tail of
//! its output. They talk to the runner only through [`WorkerEvent`]s.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use shoal_scheduler::Progress;

use crate::protocol::{self, WorkerCommand, WorkerMessage};

mod streams;
mod zygote;

pub use self::streams::OutputTail;
use self::streams::{Echo, combine_tails, read_output, start_channel_reader};
pub use self::zygote::{Zygote, controller_workerinputs};

/// The descriptor number a worker finds its channel at.
pub(super) const CHANNEL_FD: RawFd = 3;

/// The descriptor number the zygote finds its fork-request socket at.
pub(super) const ZYGOTE_CONTROL_FD: RawFd = 4;

/// How much of a worker's stdout and stderr is kept for diagnostics.
pub(super) const OUTPUT_TAIL_BYTES: usize = 64 * 1024;

/// The slot number that marks the zygote's own events.
pub const ZYGOTE_SLOT: usize = usize::MAX;

/// Identifies one worker process: its slot and which incarnation of the slot
/// (a replacement gets a new generation, so late events of the old process
/// are recognised and dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkerKey {
    /// The slot (`gw0` is 0; [`ZYGOTE_SLOT`] for the zygote).
    pub slot: usize,
    /// The incarnation of the slot, from 0.
    pub generation: u32,
}

/// What worker threads and the signal thread tell the runner.
#[derive(Debug)]
pub enum WorkerEvent {
    /// Protocol messages, in order: all those that had arrived together, so
    /// a busy worker costs the runner one wake-up per batch, not per test.
    Messages(WorkerKey, Vec<WorkerMessage>),
    /// A line that is not a valid message: the worker is misbehaving.
    ProtocolError(WorkerKey, String),
    /// The process ended (after its channel closed).
    Exited(WorkerKey, Exit),
    /// Ctrl-C or SIGTERM reached shoal. The signal thread delivers it on the
    /// same queue so the runner waits on one thing only.
    Interrupt,
}

/// How to start workers: the same for every one except the slot.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// The interpreter.
    pub python: PathBuf,
    /// Directory holding the plugin module, prepended to `PYTHONPATH`.
    pub plugin_dir: PathBuf,
    /// pytest arguments (options, then paths).
    pub pytest_args: Vec<String>,
    /// Directory under which each worker gets its own basetemp.
    pub basetemp_root: PathBuf,
    /// Where pytest runs.
    pub working_directory: PathBuf,
    /// `PYTHONHASHSEED` for every worker, so set-ordered parametrization
    /// collects alike.
    pub hash_seed: String,
    /// Total workers, for `SHOAL_WORKER_COUNT`.
    pub worker_count: usize,
    /// `--worker-memory-limit`: a worker stops itself past this (KiB).
    pub memory_limit_kib: Option<u64>,
    /// pytest's capture is off (`-s`): echo workers' output live.
    pub echo_output: bool,
    /// Marker names that make a test serial (registered in the workers so
    /// `--strict-markers` accepts them).
    pub serial_markers: Vec<String>,
    /// Identifies the run (`PYTEST_XDIST_TESTRUNUID`).
    pub run_id: String,
    /// Where workers write their coverage data when `--cov` is given
    /// (`SHOAL_COVERAGE_DIR`).
    pub coverage_directory: PathBuf,
    /// Where workers record what each test executed, with `--affected`
    /// (`SHOAL_AFFECTED_DIR`; unset otherwise, so nothing is traced).
    pub affected_directory: Option<PathBuf>,
    /// `--lf`: collecting processes tell what pytest's `--lf` would drop
    /// at collection (`SHOAL_LAST_FAILED`).
    pub last_failed_only: bool,
    /// shoal's own command line, xdist's `workerinput["mainargv"]`.
    pub mainargv: Vec<String>,
    /// Each slot's `config.workerinput` as controller-side plugins made it
    /// (spawn mode's controller pass, or a forked worker's `ready`): a
    /// spawned worker gets it before plugins configure.
    pub workerinputs: HashMap<usize, serde_json::Value>,
    /// Where spawn mode's controller pass writes the workers' inputs.
    pub controller_output: PathBuf,
}

impl WorkerSpec {
    fn echo(&self, echo: Echo) -> Echo {
        if self.echo_output { echo } else { Echo::Off }
    }

    fn basetemp(&self, slot: usize) -> PathBuf {
        self.basetemp_root.join(format!("gw{slot}"))
    }

    /// The pytest command line and environment shared by spawned workers and
    /// the zygote.
    fn command(&self, basetemp: &std::path::Path) -> Command {
        let mut command = Command::new(&self.python);
        command
            .arg("-m")
            .arg("pytest")
            .arg("-p")
            .arg(crate::python::WORKER_PLUGIN_MODULE)
            .arg(format!("--basetemp={}", basetemp.display()))
            .args(&self.pytest_args)
            .current_dir(&self.working_directory)
            .env("PYTHONPATH", crate::python::python_path(&self.plugin_dir))
            .env("PYTHONHASHSEED", &self.hash_seed)
            .env("SHOAL_CHANNEL_FD", CHANNEL_FD.to_string())
            .env("SHOAL_WORKER_COUNT", self.worker_count.to_string())
            .env("PYTEST_XDIST_WORKER_COUNT", self.worker_count.to_string())
            .env("PYTEST_XDIST_TESTRUNUID", &self.run_id)
            .env("SHOAL_COVERAGE_DIR", &self.coverage_directory)
            .env("SHOAL_MAINARGV", serde_json::to_string(&self.mainargv).expect("strings serialize"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(limit) = self.memory_limit_kib {
            command.env("SHOAL_MEMORY_LIMIT_KIB", limit.to_string());
        }
        if let Some(directory) = &self.affected_directory {
            command.env("SHOAL_AFFECTED_DIR", directory);
        }
        if self.last_failed_only {
            command.env("SHOAL_LAST_FAILED", "1");
        }
        if !self.serial_markers.is_empty() {
            command.env("SHOAL_SERIAL_MARKERS", self.serial_markers.join(","));
        }
        command
    }
}

/// How a worker process ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exit {
    /// Its wait status; `None` when it could not be learned.
    pub status: Option<ExitStatus>,
    /// How far it got: a forked worker's counts, kept in memory it shares
    /// with the zygote, as the zygote read them after its death.
    pub progress: Option<Progress>,
}

/// Exits of forked workers, as the zygote reports them, for the threads
/// that wait on those workers' ends.
#[derive(Debug, Default)]
pub struct ExitBoard {
    /// Exits not yet collected, by pid; `closed` once no more will come.
    statuses: Mutex<(HashMap<u32, Exit>, bool)>,
    changed: Condvar,
}

impl ExitBoard {
    pub(super) fn record(&self, pid: u32, status: i32, progress: Option<Progress>) {
        let exit = Exit { status: Some(ExitStatus::from_raw(status)), progress };
        self.statuses.lock().expect("exit board lock").0.insert(pid, exit);
        self.changed.notify_all();
    }

    /// No status will be recorded any more (the zygote is gone): waiters
    /// stop waiting.
    pub(super) fn close(&self) {
        self.statuses.lock().expect("exit board lock").1 = true;
        self.changed.notify_all();
    }

    pub(super) fn wait(&self, pid: u32, timeout: Duration) -> Option<Exit> {
        let statuses = self.statuses.lock().expect("exit board lock");
        let (mut statuses, _) = self
            .changed
            .wait_timeout_while(statuses, timeout, |(statuses, closed)| {
                !*closed && !statuses.contains_key(&pid)
            })
            .expect("exit board lock");
        statuses.0.remove(&pid)
    }
}

/// Where a process's exit status will appear: a board filled by a waiter
/// thread (shoal's own children) or by the zygote (forked workers), keyed
/// by the pid (a forked worker's is learned from its `ready`).
pub(super) struct Reaper {
    board: Arc<ExitBoard>,
    pid: Option<u32>,
}

impl Reaper {
    /// Waits for `child` on a thread of its own. When it ends, whatever it
    /// left in its process group is killed: a leaked grandchild holding the
    /// channel open must not keep shoal waiting for the channel's end.
    pub(super) fn wait_for(mut child: Child) -> std::io::Result<Self> {
        let board = Arc::new(ExitBoard::default());
        let pid = child.id();
        let writer = Arc::clone(&board);
        thread::Builder::new().name("shoal-waiter".to_owned()).spawn(move || {
            let status = child.wait().map_or(0xff00, ExitStatusExt::into_raw);
            signal_group(pid, Signal::SIGKILL);
            writer.record(pid, status, None);
        })?;
        Ok(Self { board, pid: Some(pid) })
    }
}

/// A running worker as the runner holds it.
#[derive(Debug)]
pub struct WorkerHandle {
    /// Which worker.
    pub key: WorkerKey,
    /// Its process id, which is also its process group id; a forked worker's
    /// is known once it says `ready`.
    pub pid: Option<u32>,
    writer: UnixStream,
    /// Tail of what it wrote to stdout.
    pub stdout: Arc<Mutex<OutputTail>>,
    /// Tail of what it wrote to stderr.
    pub stderr: Arc<Mutex<OutputTail>>,
}

impl WorkerHandle {
    /// Spawns a worker that collects on its own; its events arrive on `events`.
    pub fn spawn(spec: &WorkerSpec, key: WorkerKey, events: Sender<WorkerEvent>) -> std::io::Result<Self> {
        let (ours, theirs) = UnixStream::pair()?;
        let mut command = spec.command(&spec.basetemp(key.slot));
        command
            .env("SHOAL_WORKER", key.slot.to_string())
            .env("PYTEST_XDIST_WORKER", format!("gw{}", key.slot));
        if let Some(workerinput) = spec.workerinputs.get(&key.slot) {
            command.env("SHOAL_WORKERINPUT", workerinput.to_string());
        }
        place_descriptors(&mut command, vec![(OwnedFd::from(theirs), CHANNEL_FD)])?;
        let mut child = command.spawn()?;
        // The child has its copies now; dropping the command closes ours.
        drop(command);
        let pid = child.id();
        let (stdout, stderr, readers) =
            read_output(child.stdout.take(), child.stderr.take(), spec.echo(Echo::Stdout(key.slot)));
        start_channel_reader(key, ours.try_clone()?, Reaper::wait_for(child)?, readers, events, None)?;
        Ok(Self { key, pid: Some(pid), writer: ours, stdout, stderr })
    }

    /// Sends a command; a worker that is gone is not an error here (its
    /// exit arrives as an event).
    pub fn send(&mut self, command: &WorkerCommand) {
        let _ = self.writer.write_all(&protocol::encode_command(command));
    }

    /// Sends a signal to the worker's whole process group, once its pid is
    /// known.
    pub fn signal_group(&self, signal: Signal) {
        if let Some(pid) = self.pid {
            signal_group(pid, signal);
        }
    }

    /// Asks the worker for a dump of every thread's stack (on its stderr),
    /// from a signal handler that works even inside C code.
    pub fn request_stack_dump(&self) {
        if let Some(pid) = self.pid.and_then(|pid| i32::try_from(pid).ok()) {
            // SAFETY: kill(2) with a pid and a signal number has no memory
            // effects; a process that is gone only makes it fail.
            #[expect(unsafe_code, reason = "nix's Signal has no real-time signals")]
            unsafe {
                nix::libc::kill(pid, stack_dump_signal());
            }
        }
    }

    /// A combined tail of its stdout and stderr, for diagnostics.
    pub fn output_tail(&self) -> String {
        combine_tails(&self.stdout, &self.stderr)
    }
}

/// The signal a worker answers with every thread's stack: a real-time one
/// (`STACK_DUMP_SIGNAL` in the plugin), since tests and the libraries they
/// exercise use SIGUSR1 and SIGUSR2 for themselves.
fn stack_dump_signal() -> i32 {
    nix::libc::SIGRTMIN() + 3
}

/// Sends a signal to a process group; a group that is gone is fine.
pub fn signal_group(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

/// Arranges for each descriptor to appear at its target number in the child.
///
/// The sources are first moved above the targets so that placing one cannot
/// clobber another; `dup2` then clears close-on-exec on the copies.
pub(super) fn place_descriptors(
    command: &mut Command,
    placements: Vec<(OwnedFd, RawFd)>,
) -> std::io::Result<()> {
    let mut moved: Vec<(OwnedFd, RawFd)> = Vec::with_capacity(placements.len());
    for (descriptor, target) in placements {
        let high = nix::fcntl::fcntl(&descriptor, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(16))?;
        // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
        #[expect(unsafe_code, reason = "taking ownership of a descriptor fcntl just created")]
        let high = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(high) };
        moved.push((high, target));
    }
    // SAFETY: between fork and exec only dup2 and prctl, which are
    // async-signal-safe, are called, on descriptors that stay open in the
    // child until exec.
    #[expect(unsafe_code, reason = "placing descriptors at fixed numbers needs pre_exec")]
    unsafe {
        command.pre_exec(move || {
            for (descriptor, target) in &moved {
                if nix::libc::dup2(descriptor.as_raw_fd(), *target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Should shoal itself be killed outright, its workers go too.
            #[cfg(target_os = "linux")]
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            Ok(())
        });
    }
    Ok(())
}

/// Describes how a process ended, e.g. `exit code 3` or `signal 11 (SIGSEGV)`.
pub fn describe_exit(status: Option<ExitStatus>) -> String {
    let Some(status) = status else { return "an unknown status".to_owned() };
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(number) => match Signal::try_from(number) {
            Ok(signal) => format!("signal {number} ({})", signal.as_str()),
            Err(_) => format!("signal {number}"),
        },
        None => "an unknown status".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_described_by_code_or_signal() {
        assert_eq!(describe_exit(Some(ExitStatus::from_raw(3 << 8))), "exit code 3");
        assert_eq!(describe_exit(Some(ExitStatus::from_raw(11))), "signal 11 (SIGSEGV)");
        assert_eq!(describe_exit(None), "an unknown status");
    }

    #[test]
    fn the_exit_board_hands_a_status_to_its_waiter() {
        let board = Arc::new(ExitBoard::default());
        let writer = Arc::clone(&board);
        let handle = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            writer.record(42, 7 << 8, Some(Progress { started: 3, finished: 2 }));
        });
        let exit = board.wait(42, Duration::from_secs(5)).expect("recorded");
        assert_eq!(exit.status.and_then(|status| status.code()), Some(7));
        assert_eq!(exit.progress, Some(Progress { started: 3, finished: 2 }));
        handle.join().unwrap();
        assert_eq!(board.wait(43, Duration::from_millis(10)), None);
        board.close();
        let started = std::time::Instant::now();
        assert_eq!(board.wait(44, Duration::from_secs(5)), None);
        assert!(started.elapsed() < Duration::from_secs(1), "a closed board does not keep anyone waiting");
    }
}
