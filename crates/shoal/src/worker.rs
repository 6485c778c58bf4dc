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

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr, sendmsg, socketpair,
};
use nix::unistd::Pid;

use crate::protocol::{self, WorkerCommand, WorkerMessage, ZygoteCommand};

/// The descriptor number a worker finds its channel at.
const CHANNEL_FD: RawFd = 3;

/// The descriptor number the zygote finds its fork-request socket at.
const ZYGOTE_CONTROL_FD: RawFd = 4;

/// How much of a worker's stdout and stderr is kept for diagnostics.
const OUTPUT_TAIL_BYTES: usize = 64 * 1024;

/// Results of tiny tests arrive thousands a second; waking the runner for
/// each costs more than the test. A result waits this long for company
/// before it is passed on (requests such as `want_work` never wait).
const COALESCE_WAIT_MS: u16 = 1;

/// The most results passed on together.
const COALESCE_MOST: usize = 64;

/// How long a forked worker's end waits for the zygote to report its status.
const EXIT_STATUS_WAIT: Duration = Duration::from_secs(5);

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
    /// The process ended (after its channel closed); `None` when its status
    /// could not be learned.
    Exited(WorkerKey, Option<ExitStatus>),
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
        if !self.serial_markers.is_empty() {
            command.env("SHOAL_SERIAL_MARKERS", self.serial_markers.join(","));
        }
        command
    }
}

/// A bounded tail of a byte stream.
#[derive(Debug, Default)]
pub struct OutputTail {
    bytes: VecDeque<u8>,
    dropped: u64,
}

impl OutputTail {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend(chunk);
        let excess = self.bytes.len().saturating_sub(OUTPUT_TAIL_BYTES);
        if excess > 0 {
            self.bytes.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    /// The kept text, with a note when the start was cut.
    pub fn text(&self) -> String {
        let (front, back) = self.bytes.as_slices();
        let mut bytes = front.to_vec();
        bytes.extend_from_slice(back);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if self.dropped > 0 { format!("[shoal: {} earlier bytes cut]\n{text}", self.dropped) } else { text }
    }
}

/// Exit statuses of forked workers, as the zygote reports them, for the
/// threads that wait on those workers' ends.
#[derive(Debug, Default)]
pub struct ExitBoard {
    /// Statuses not yet collected, by pid; `closed` once no more will come.
    statuses: Mutex<(HashMap<u32, i32>, bool)>,
    changed: Condvar,
}

impl ExitBoard {
    fn record(&self, pid: u32, status: i32) {
        self.statuses.lock().expect("exit board lock").0.insert(pid, status);
        self.changed.notify_all();
    }

    /// No status will be recorded any more (the zygote is gone): waiters
    /// stop waiting.
    fn close(&self) {
        self.statuses.lock().expect("exit board lock").1 = true;
        self.changed.notify_all();
    }

    fn wait(&self, pid: u32, timeout: Duration) -> Option<ExitStatus> {
        let statuses = self.statuses.lock().expect("exit board lock");
        let (mut statuses, _) = self
            .changed
            .wait_timeout_while(statuses, timeout, |(statuses, closed)| {
                !*closed && !statuses.contains_key(&pid)
            })
            .expect("exit board lock");
        statuses.0.remove(&pid).map(ExitStatus::from_raw)
    }
}

/// Where a process's exit status will appear: a board filled by a waiter
/// thread (shoal's own children) or by the zygote (forked workers), keyed
/// by the pid (a forked worker's is learned from its `ready`).
struct Reaper {
    board: Arc<ExitBoard>,
    pid: Option<u32>,
}

impl Reaper {
    /// Waits for `child` on a thread of its own. When it ends, whatever it
    /// left in its process group is killed: a leaked grandchild holding the
    /// channel open must not keep shoal waiting for the channel's end.
    fn wait_for(mut child: Child) -> std::io::Result<Self> {
        let board = Arc::new(ExitBoard::default());
        let pid = child.id();
        let writer = Arc::clone(&board);
        thread::Builder::new().name("shoal-waiter".to_owned()).spawn(move || {
            let status = child.wait().map_or(0xff00, ExitStatusExt::into_raw);
            signal_group(pid, Signal::SIGKILL);
            writer.record(pid, status);
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

/// The collecting process of fork mode, which forks warm workers.
#[derive(Debug)]
pub struct Zygote {
    /// The zygote's process id (and process group id).
    pub pid: u32,
    control: OwnedFd,
    /// The zygote's channel, for the commands it takes before forking.
    writer: UnixStream,
    board: Arc<ExitBoard>,
    stdout: Arc<Mutex<OutputTail>>,
    stderr: Arc<Mutex<OutputTail>>,
}

impl Zygote {
    /// The key of the zygote's own events.
    pub const KEY: WorkerKey = WorkerKey { slot: ZYGOTE_SLOT, generation: 0 };

    /// Starts the zygote; it collects, then says `zygote_ready`.
    pub fn spawn(spec: &WorkerSpec, events: Sender<WorkerEvent>) -> std::io::Result<Self> {
        let (ours, theirs) = UnixStream::pair()?;
        let (control, zygote_control) =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?;
        let mut command = spec.command(&spec.basetemp_root.join("zygote"));
        command.env("SHOAL_ZYGOTE_FD", ZYGOTE_CONTROL_FD.to_string());
        place_descriptors(
            &mut command,
            vec![(OwnedFd::from(theirs), CHANNEL_FD), (zygote_control, ZYGOTE_CONTROL_FD)],
        )?;
        let mut child = command.spawn()?;
        drop(command);
        let pid = child.id();
        let (stdout, stderr, readers) = read_output(child.stdout.take(), child.stderr.take(), Echo::Off);
        let board = Arc::new(ExitBoard::default());
        let writer = ours.try_clone()?;
        start_channel_reader(
            Self::KEY,
            ours,
            Reaper::wait_for(child)?,
            readers,
            events,
            Some(Arc::clone(&board)),
        )?;
        Ok(Self { pid, control, writer, board, stdout, stderr })
    }

    /// Sends the zygote a command on its channel (before it forks).
    pub fn send(&mut self, command: &WorkerCommand) {
        let _ = self.writer.write_all(&protocol::encode_command(command));
    }

    /// Asks the zygote to fork a worker for `key`; the worker says `ready`
    /// with its pid once it is set up. With `collect`, the worker's first
    /// command is its share of the test files, which it collects and
    /// reports before `ready` (split collection).
    pub fn fork(
        &self,
        spec: &WorkerSpec,
        key: WorkerKey,
        collect: bool,
        events: Sender<WorkerEvent>,
    ) -> std::io::Result<WorkerHandle> {
        let (ours, theirs) = UnixStream::pair()?;
        let (stdout_read, stdout_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (stderr_read, stderr_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let request = ZygoteCommand::Fork {
            slot: key.slot,
            worker_count: spec.worker_count,
            basetemp: spec.basetemp(key.slot).display().to_string(),
            collect,
        };
        let payload = serde_json::to_vec(&request).expect("requests serialize");
        let descriptors = [theirs.as_raw_fd(), stdout_write.as_raw_fd(), stderr_write.as_raw_fd()];
        sendmsg::<UnixAddr>(
            self.control.as_raw_fd(),
            &[IoSlice::new(&payload)],
            &[ControlMessage::ScmRights(&descriptors)],
            MsgFlags::empty(),
            None,
        )?;
        // The zygote holds its own copies now.
        drop((theirs, stdout_write, stderr_write));
        let (stdout, stderr, readers) = read_output(
            Some(std::fs::File::from(stdout_read)),
            Some(std::fs::File::from(stderr_read)),
            spec.echo(Echo::Stdout(key.slot)),
        );
        let reaper = Reaper { board: Arc::clone(&self.board), pid: None };
        start_channel_reader(key, ours.try_clone()?, reaper, readers, events, None)?;
        Ok(WorkerHandle { key, pid: None, writer: ours, stdout, stderr })
    }

    /// Tells the zygote to fork no more and end once its children are gone.
    pub fn shutdown(&self) {
        let payload = serde_json::to_vec(&ZygoteCommand::Shutdown).expect("requests serialize");
        let _ = sendmsg::<UnixAddr>(
            self.control.as_raw_fd(),
            &[IoSlice::new(&payload)],
            &[],
            MsgFlags::empty(),
            None,
        );
    }

    /// A combined tail of its stdout and stderr, for diagnostics.
    pub fn output_tail(&self) -> String {
        combine_tails(&self.stdout, &self.stderr)
    }
}

/// Spawn mode's controller pass: pytest configured once as xdist's
/// controller is (without `workerinput`), so controller-side plugins say in
/// `pytest_configure_node` what each worker needs (pytest-randomly its
/// seed); it ends before collecting. Returns each slot's `workerinput`;
/// nothing when the pass fails (the workers then report pytest's error).
pub fn controller_workerinputs(spec: &WorkerSpec) -> HashMap<usize, serde_json::Value> {
    let output = &spec.controller_output;
    let _ = std::fs::remove_file(output);
    let mut command = spec.command(&spec.basetemp_root.join("controller"));
    command.env_remove("SHOAL_CHANNEL_FD").env("SHOAL_CONTROLLER_OUTPUT", output);
    let answered = command.output().is_ok_and(|ended| ended.status.success());
    let inputs: Vec<serde_json::Value> = answered
        .then(|| std::fs::read(output).ok())
        .flatten()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    inputs.into_iter().enumerate().collect()
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
fn place_descriptors(command: &mut Command, placements: Vec<(OwnedFd, RawFd)>) -> std::io::Result<()> {
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

fn combine_tails(stdout: &Mutex<OutputTail>, stderr: &Mutex<OutputTail>) -> String {
    let stdout = stdout.lock().expect("output tail lock").text();
    let stderr = stderr.lock().expect("output tail lock").text();
    let mut text = String::new();
    for part in [stdout, stderr] {
        if part.trim().is_empty() {
            continue;
        }
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&part);
    }
    text
}

/// Where a worker's own output goes besides its bounded tail: with pytest's
/// `-s`, users expect test output live, so it is echoed line by line with
/// the worker's name in front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Echo {
    Off,
    Stdout(usize),
    Stderr(usize),
}

/// The shared tails of a worker's stdout and stderr, and the threads that
/// fill them (echoing too when `echo` is on; stderr to stderr).
fn read_output(
    stdout_stream: Option<impl Read + Send + 'static>,
    stderr_stream: Option<impl Read + Send + 'static>,
    echo: Echo,
) -> OutputReaders {
    let stdout = Arc::new(Mutex::new(OutputTail::default()));
    let stderr = Arc::new(Mutex::new(OutputTail::default()));
    let stderr_echo = match echo {
        Echo::Stdout(slot) => Echo::Stderr(slot),
        other => other,
    };
    let readers = [
        spawn_output_reader(stdout_stream, Arc::clone(&stdout), echo),
        spawn_output_reader(stderr_stream, Arc::clone(&stderr), stderr_echo),
    ];
    (stdout, stderr, readers)
}

/// What [`read_output`] returns: both tails and their reader threads.
type OutputReaders = (Arc<Mutex<OutputTail>>, Arc<Mutex<OutputTail>>, [Option<thread::JoinHandle<()>>; 2]);

fn spawn_output_reader(
    stream: Option<impl Read + Send + 'static>,
    tail: Arc<Mutex<OutputTail>>,
    echo: Echo,
) -> Option<thread::JoinHandle<()>> {
    let mut stream = stream?;
    thread::Builder::new()
        .name("shoal-output".to_owned())
        .spawn(move || {
            let mut buffer = [0u8; 16 * 1024];
            let mut partial: Vec<u8> = Vec::new();
            loop {
                let n = match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                tail.lock().expect("output tail lock").push(&buffer[..n]);
                if echo != Echo::Off {
                    partial.extend_from_slice(&buffer[..n]);
                    echo_lines(&mut partial, echo, false);
                }
            }
            echo_lines(&mut partial, echo, true);
        })
        .ok()
}

/// Writes the complete lines of `partial` (all of it at the end) with the
/// worker prefix; keeps an unfinished line for later, up to a bound.
fn echo_lines(partial: &mut Vec<u8>, echo: Echo, at_end: bool) {
    const LONGEST_HELD_LINE: usize = 64 * 1024;
    let (slot, mut out): (usize, Box<dyn Write>) = match echo {
        Echo::Off => return,
        Echo::Stdout(slot) => (slot, Box::new(std::io::stdout().lock())),
        Echo::Stderr(slot) => (slot, Box::new(std::io::stderr().lock())),
    };
    let cut = if at_end || partial.len() > LONGEST_HELD_LINE {
        partial.len()
    } else {
        partial.iter().rposition(|&byte| byte == b'\n').map_or(0, |position| position + 1)
    };
    for line in partial[..cut].split_inclusive(|&byte| byte == b'\n') {
        let text = String::from_utf8_lossy(line);
        let _ = write!(out, "[gw{slot}] {}", text);
        if !text.ends_with('\n') {
            let _ = writeln!(out);
        }
    }
    let _ = out.flush();
    partial.drain(..cut);
}

fn start_channel_reader(
    key: WorkerKey,
    stream: UnixStream,
    reaper: Reaper,
    output_readers: [Option<thread::JoinHandle<()>>; 2],
    events: Sender<WorkerEvent>,
    zygote_board: Option<Arc<ExitBoard>>,
) -> std::io::Result<()> {
    let name =
        if key.slot == ZYGOTE_SLOT { "shoal-zygote".to_owned() } else { format!("shoal-gw{}", key.slot) };
    thread::Builder::new()
        .name(name)
        .spawn(move || read_channel(key, stream, reaper, output_readers, &events, zygote_board.as_deref()))?;
    Ok(())
}

/// Reads protocol lines until the worker closes its end, then learns how it
/// ended. The zygote's reports of reaped children go straight to the board.
fn read_channel(
    key: WorkerKey,
    stream: UnixStream,
    reaper: Reaper,
    output_readers: [Option<thread::JoinHandle<()>>; 2],
    events: &Sender<WorkerEvent>,
    zygote_board: Option<&ExitBoard>,
) {
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    let mut line = Vec::new();
    let mut forked_pid = None;
    let mut batch = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader).take(protocol::MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut line);
        let failure = match read {
            Ok(0) | Err(_) => break,
            Ok(_) if line.len() > protocol::MAX_LINE_BYTES => {
                Some("a protocol line exceeded the size limit".to_owned())
            }
            Ok(_) => match protocol::parse_message(&line) {
                Ok(WorkerMessage::ChildExited { pid, status }) if zygote_board.is_some() => {
                    // As for spawned workers: what the worker left in its
                    // group dies with it.
                    signal_group(pid, Signal::SIGKILL);
                    zygote_board.expect("checked").record(pid, status);
                    None
                }
                Ok(message) => {
                    if let WorkerMessage::Ready { pid, .. } = message {
                        forked_pid = Some(pid);
                    }
                    batch.push(message);
                    None
                }
                Err(error) => Some(format!("unreadable protocol line: {error}")),
            },
        };
        let more_buffered = reader.buffer().contains(&b'\n');
        let worth_waking_for = failure.is_some()
            || batch.len() >= COALESCE_MOST
            || batch.last().is_some_and(|message| !matches!(message, WorkerMessage::Finished(_)))
            || !(more_buffered || (reader.buffer().is_empty() && readable_soon(reader.get_ref())));
        if !batch.is_empty()
            && worth_waking_for
            && events.send(WorkerEvent::Messages(key, std::mem::take(&mut batch))).is_err()
        {
            break;
        }
        if let Some(error) = failure {
            let _ = events.send(WorkerEvent::ProtocolError(key, error));
            break;
        }
    }
    if !batch.is_empty() {
        let _ = events.send(WorkerEvent::Messages(key, batch));
    }
    if let Some(board) = zygote_board {
        // The zygote is gone: its workers' statuses will never be reported.
        board.close();
    }
    let status = reaper.pid.or(forked_pid).and_then(|pid| reaper.board.wait(pid, EXIT_STATUS_WAIT));
    // Output written just before the end belongs in the diagnostics.
    for reader in output_readers.into_iter().flatten() {
        let _ = reader.join();
    }
    let _ = events.send(WorkerEvent::Exited(key, status));
}

/// Whether the channel has data within [`COALESCE_WAIT_MS`].
fn readable_soon(stream: &UnixStream) -> bool {
    let mut descriptors = [nix::poll::PollFd::new(stream.as_fd(), nix::poll::PollFlags::POLLIN)];
    nix::poll::poll(&mut descriptors, nix::poll::PollTimeout::from(COALESCE_WAIT_MS))
        .is_ok_and(|ready| ready > 0)
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
    fn output_tail_keeps_the_end_and_says_what_it_cut() {
        let mut tail = OutputTail::default();
        tail.push(&vec![b'a'; OUTPUT_TAIL_BYTES]);
        tail.push(b"end");
        let text = tail.text();
        assert!(text.starts_with("[shoal: 3 earlier bytes cut]\n"));
        assert!(text.ends_with("aend"));
    }

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
            writer.record(42, 7 << 8);
        });
        assert_eq!(board.wait(42, Duration::from_secs(5)).and_then(|status| status.code()), Some(7));
        handle.join().unwrap();
        assert_eq!(board.wait(43, Duration::from_millis(10)), None);
        board.close();
        let started = std::time::Instant::now();
        assert_eq!(board.wait(44, Duration::from_secs(5)), None);
        assert!(started.elapsed() < Duration::from_secs(1), "a closed board does not keep anyone waiting");
    }
}
