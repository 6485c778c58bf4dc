//! The zygote: a pytest process that collects once and then serves forks.
//! shoal asks it for a worker over its control channel, and receives the
//! new worker's protocol channel, stdout and stderr over a packet socket;
//! the zygote reports each reaped child's exit status, which the
//! [`super::ExitBoard`] hands to the thread waiting on that worker.

use std::collections::HashMap;
use std::io::{IoSlice, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr, sendmsg, socketpair,
};

use crate::protocol::{self, WorkerCommand, ZygoteCommand};

use super::streams::{Echo, OutputTail, combine_tails, read_output, start_channel_reader};
use super::{
    CHANNEL_FD, ExitBoard, Reaper, WorkerEvent, WorkerHandle, WorkerKey, WorkerSpec, ZYGOTE_CONTROL_FD,
    ZYGOTE_SLOT, place_descriptors,
};

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

    /// What it wrote to stderr so far: once it has collected, what pytest
    /// and its plugins printed while starting (a plugin's deprecation
    /// warning at configure time, say), which pytest shows its user.
    pub fn stderr_so_far(&self) -> String {
        self.stderr.lock().expect("output tail lock").text()
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
