//! Worker processes: starting them, their channels, their output, their end.
//!
//! Each worker is `python -m pytest -p shoal_worker ...` in its own process
//! group, with a Unix socket at file descriptor 3 for the protocol and its
//! stdout and stderr read separately (anything a test writes past pytest's
//! capture lands there, never in the protocol). One thread per worker reads
//! the protocol and, at its end, reaps the process; two more keep a bounded
//! tail of its output. They talk to the runner only through
//! [`WorkerEvent`]s on a channel.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::protocol::{self, WorkerCommand, WorkerMessage};

/// The descriptor number the worker finds its channel at.
const CHANNEL_FD: i32 = 3;

/// How much of a worker's stdout and stderr is kept for diagnostics.
const OUTPUT_TAIL_BYTES: usize = 64 * 1024;

/// Identifies one worker process: its slot and which incarnation of the slot
/// (a replacement gets a new generation, so late events of the old process
/// are recognised and dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkerKey {
    /// The slot (`gw0` is 0).
    pub slot: usize,
    /// The incarnation of the slot, from 0.
    pub generation: u32,
}

/// What a worker's threads tell the runner.
#[derive(Debug)]
pub enum WorkerEvent {
    /// A protocol message.
    Message(WorkerKey, WorkerMessage),
    /// A line that is not a valid message: the worker is misbehaving.
    ProtocolError(WorkerKey, String),
    /// The process ended (after its channel closed).
    Exited(WorkerKey, ExitStatus),
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
    /// Whether the user gave a `--basetemp` (then it is the root instead).
    pub working_directory: PathBuf,
    /// `PYTHONHASHSEED` for every worker, so set-ordered parametrization
    /// collects alike.
    pub hash_seed: String,
    /// Total workers, for `SHOAL_WORKER_COUNT`.
    pub worker_count: usize,
    /// Identifies the run (`PYTEST_XDIST_TESTRUNUID`).
    pub run_id: String,
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

/// A running worker as the runner holds it.
#[derive(Debug)]
pub struct WorkerHandle {
    /// Which worker.
    pub key: WorkerKey,
    /// Its process id, which is also its process group id.
    pub pid: u32,
    writer: UnixStream,
    /// Tail of what it wrote to stdout.
    pub stdout: Arc<Mutex<OutputTail>>,
    /// Tail of what it wrote to stderr.
    pub stderr: Arc<Mutex<OutputTail>>,
}

impl WorkerHandle {
    /// Starts a worker; its events arrive on `events`.
    pub fn start(spec: &WorkerSpec, key: WorkerKey, events: Sender<WorkerEvent>) -> std::io::Result<Self> {
        let (ours, theirs) = UnixStream::pair()?;
        let basetemp = spec.basetemp_root.join(format!("gw{}", key.slot));
        let mut command = Command::new(&spec.python);
        command
            .arg("-m")
            .arg("pytest")
            .arg("-p")
            .arg(crate::python::WORKER_PLUGIN_MODULE)
            .arg(format!("--basetemp={}", basetemp.display()))
            .args(&spec.pytest_args)
            .current_dir(&spec.working_directory)
            .env("PYTHONPATH", python_path(&spec.plugin_dir))
            .env("PYTHONHASHSEED", &spec.hash_seed)
            .env("SHOAL_CHANNEL_FD", CHANNEL_FD.to_string())
            .env("SHOAL_WORKER", key.slot.to_string())
            .env("SHOAL_WORKER_COUNT", spec.worker_count.to_string())
            .env("PYTEST_XDIST_WORKER", format!("gw{}", key.slot))
            .env("PYTEST_XDIST_WORKER_COUNT", spec.worker_count.to_string())
            .env("PYTEST_XDIST_TESTRUNUID", &spec.run_id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let child_channel: OwnedFd = theirs.into();
        let raw = child_channel.as_raw_fd();
        // SAFETY: between fork and exec only async-signal-safe calls are made
        // (dup2 and fcntl), on a descriptor that is open in the child.
        #[expect(unsafe_code, reason = "placing the channel at a fixed descriptor needs pre_exec")]
        unsafe {
            command.pre_exec(move || {
                // dup2 clears close-on-exec on the copy; when the socket
                // already is descriptor 3, clear the flag directly.
                let result = if raw == CHANNEL_FD {
                    nix::libc::fcntl(raw, nix::libc::F_SETFD, 0)
                } else {
                    nix::libc::dup2(raw, CHANNEL_FD)
                };
                if result < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn()?;
        drop(child_channel);
        let pid = child.id();
        let stdout = Arc::new(Mutex::new(OutputTail::default()));
        let stderr = Arc::new(Mutex::new(OutputTail::default()));
        let readers = [
            spawn_output_reader(child.stdout.take(), Arc::clone(&stdout)),
            spawn_output_reader(child.stderr.take(), Arc::clone(&stderr)),
        ];
        let reader = ours.try_clone()?;
        thread::Builder::new()
            .name(format!("shoal-gw{}", key.slot))
            .spawn(move || read_channel(key, reader, child, readers, &events))?;
        Ok(Self { key, pid, writer: ours, stdout, stderr })
    }

    /// Sends a command; a worker that is gone is not an error here (its
    /// exit arrives as an event).
    pub fn send(&mut self, command: &WorkerCommand) {
        let _ = self.writer.write_all(&protocol::encode_command(command));
    }

    /// Sends a signal to the worker's whole process group.
    pub fn signal_group(&self, signal: Signal) {
        signal_group(self.pid, signal);
    }
}

/// Sends a signal to a process group; a group that is gone is fine.
pub fn signal_group(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

fn python_path(plugin_dir: &std::path::Path) -> std::ffi::OsString {
    let mut value = plugin_dir.as_os_str().to_owned();
    if let Some(existing) = std::env::var_os("PYTHONPATH").filter(|value| !value.is_empty()) {
        value.push(":");
        value.push(existing);
    }
    value
}

fn spawn_output_reader(
    stream: Option<impl Read + Send + 'static>,
    tail: Arc<Mutex<OutputTail>>,
) -> Option<thread::JoinHandle<()>> {
    let mut stream = stream?;
    thread::Builder::new()
        .name("shoal-output".to_owned())
        .spawn(move || {
            let mut buffer = [0u8; 16 * 1024];
            loop {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => tail.lock().expect("output tail lock").push(&buffer[..n]),
                }
            }
        })
        .ok()
}

/// Reads protocol lines until the worker closes its end, then reaps it.
fn read_channel(
    key: WorkerKey,
    stream: UnixStream,
    mut child: Child,
    output_readers: [Option<thread::JoinHandle<()>>; 2],
    events: &Sender<WorkerEvent>,
) {
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader).take(protocol::MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut line);
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) if line.len() > protocol::MAX_LINE_BYTES => {
                let _ = events.send(WorkerEvent::ProtocolError(
                    key,
                    "a protocol line exceeded the size limit".to_owned(),
                ));
                break;
            }
            Ok(_) => {
                let event = match protocol::parse_message(&line) {
                    Ok(message) => WorkerEvent::Message(key, message),
                    Err(error) => {
                        WorkerEvent::ProtocolError(key, format!("unreadable protocol line: {error}"))
                    }
                };
                if events.send(event).is_err() {
                    break;
                }
            }
        }
    }
    let status = child.wait().unwrap_or_else(|_| ExitStatus::from_raw(0xff00));
    // Output written just before the end belongs in the diagnostics.
    for reader in output_readers.into_iter().flatten() {
        let _ = reader.join();
    }
    let _ = events.send(WorkerEvent::Exited(key, status));
}

/// Describes how a process ended, e.g. `exit code 3` or `signal 11 (SIGSEGV)`.
pub fn describe_exit(status: ExitStatus) -> String {
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
        assert_eq!(describe_exit(ExitStatus::from_raw(3 << 8)), "exit code 3");
        assert_eq!(describe_exit(ExitStatus::from_raw(11)), "signal 11 (SIGSEGV)");
    }
}
