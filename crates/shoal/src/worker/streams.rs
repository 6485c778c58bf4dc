//! A worker's streams: the protocol channel, read line by line on a thread
//! of its own (coalescing messages that arrive together), and its stdout
//! and stderr, read separately into bounded tails (echoed through when
//! pytest's capture is off).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::protocol::{self, WorkerMessage};

use super::{
    ExitBoard, OUTPUT_TAIL_BYTES, Progress, Reaper, WorkerEvent, WorkerKey, ZYGOTE_SLOT, signal_group,
};

/// Results of tiny tests arrive thousands a second; waking the runner for
/// each costs more than the test. A result waits this long for company
/// before it is passed on (requests such as `want_work` never wait).
const COALESCE_WAIT_MS: u16 = 1;

/// The most results passed on together.
const COALESCE_MOST: usize = 64;

/// How long a forked worker's end waits for the zygote to report its status.
const EXIT_STATUS_WAIT: Duration = Duration::from_secs(5);

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

pub(super) fn combine_tails(stdout: &Mutex<OutputTail>, stderr: &Mutex<OutputTail>) -> String {
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
pub(super) enum Echo {
    Off,
    Stdout(usize),
    Stderr(usize),
}

/// The shared tails of a worker's stdout and stderr, and the threads that
/// fill them (echoing too when `echo` is on; stderr to stderr).
pub(super) fn read_output(
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

pub(super) fn spawn_output_reader(
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
pub(super) fn echo_lines(partial: &mut Vec<u8>, echo: Echo, at_end: bool) {
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

pub(super) fn start_channel_reader(
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
pub(super) fn read_channel(
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
                Ok(WorkerMessage::ChildExited { pid, status, started, finished })
                    if zygote_board.is_some() =>
                {
                    // As for spawned workers: what the worker left in its
                    // group dies with it.
                    signal_group(pid, Signal::SIGKILL);
                    let progress =
                        started.zip(finished).map(|(started, finished)| Progress { started, finished });
                    zygote_board.expect("checked").record(pid, status, progress);
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
    let exit = reaper.pid.or(forked_pid).and_then(|pid| reaper.board.wait(pid, EXIT_STATUS_WAIT));
    // Output written just before the end belongs in the diagnostics.
    for reader in output_readers.into_iter().flatten() {
        let _ = reader.join();
    }
    let _ = events.send(WorkerEvent::Exited(key, exit.unwrap_or_default()));
}

/// Whether the channel has data within [`COALESCE_WAIT_MS`].
pub(super) fn readable_soon(stream: &UnixStream) -> bool {
    let mut descriptors = [nix::poll::PollFd::new(stream.as_fd(), nix::poll::PollFlags::POLLIN)];
    nix::poll::poll(&mut descriptors, nix::poll::PollTimeout::from(COALESCE_WAIT_MS))
        .is_ok_and(|ready| ready > 0)
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
}
