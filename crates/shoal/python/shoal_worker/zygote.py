"""Fork mode: the zygote, a collected pytest session that forks the workers.

This module owns the zygote's loop (:func:`serve_forks`: a fork per request,
the children's exits reported to shoal) and what turns a forked child into a
worker that looks fresh to its tests (:func:`become_worker`: its own
descriptors, process group, environment, random state, ``workerinput``,
``--basetemp`` and share of the test files).
"""

import json
import os
import select
import signal
import socket
import sys

from . import descriptors, running, xdist_surface
from .protocol import Channel


def serve_forks(worker):
    """The zygote's loop: fork a worker per request, report their ends.

    Requests arrive on a separate packet socket together with the new
    worker's descriptors (its channel, stdout and stderr). Returns True
    in a forked child, which then runs tests; False in the zygote once
    shoal says to shut down and every child has been reaped.
    """
    import gc

    worker.config.hook.pytest_shoal_before_fork(config=worker.config)
    unsafe = _fork_unsafe_reason(worker)
    if worker.coverage:
        # What collecting ran is saved here, once; each child's data
        # file then holds only what that child ran.
        worker.coverage.save()
    # The children inherit no garbage. (Not gc.freeze(), which would
    # spare them collections over the inherited objects: frozen objects
    # are hidden from gc.get_objects() and gc.get_referrers(), which
    # tests and libraries use; hypothesis's register_random warns then.)
    gc.collect()
    worker.channel.send({"type": "zygote_ready", "fork_safe": unsafe is None, "reason": unsafe})
    return _ForkServer(worker).serve()


class _ForkServer:
    """The zygote's requests socket, its children, and the self-pipe that
    wakes it when one of them exits."""

    def __init__(self, worker):
        self.worker = worker
        self.control = socket.socket(fileno=worker.zygote_fd)
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_write, False)
        self.previous_wakeup = signal.set_wakeup_fd(self.wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.children = set()
        self.progress = running.ProgressBoard()
        self.shutting_down = False

    def serve(self):
        while not (self.shutting_down and not self.children):
            command, fds = self._next_command()
            if command is None:
                continue
            if command["type"] != "fork":
                self.shutting_down = True
            elif self._fork(command, fds):
                return True
        return False

    def _next_command(self):
        """Waits for a request or a child's exit (reaping exited children);
        returns the request and the descriptors it came with, or None."""
        try:
            timeout = None if not self.shutting_down else 1.0
            readable, _, _ = select.select([self.control, self.wake_read], [], [], timeout)
        except InterruptedError:
            readable = []
        if self.wake_read in readable:
            os.read(self.wake_read, 4096)
        self._reap()
        if self.control not in readable:
            return None, ()
        data, fds, _flags, _address = socket.recv_fds(self.control, 65536, 3)
        return (json.loads(data) if data else {"type": "shutdown"}), fds

    def _fork(self, command, fds):
        """Forks the requested worker. True in the child, now that worker."""
        # xdist's controller-side hook runs here, in the process that
        # configured pytest as xdist's controller does.
        workerinput = xdist_surface.workerinput(
            self.worker.config, command["slot"], command["worker_count"], configure_node=True
        )
        sys.stdout.flush()
        sys.stderr.flush()
        region = self.progress.free_region()
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.set_wakeup_fd(self.previous_wakeup)
            for fd in (self.wake_read, self.wake_write):
                os.close(fd)
            self.control.close()
            if region is not None:
                self.worker.progress = running.Progress(self.progress, region)
            become_worker(self.worker, command, fds, workerinput)
            return True
        self.children.add(pid)
        self.progress.give(pid, region)
        for fd in fds:
            os.close(fd)
        return False

    def _reap(self):
        children = self.children
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children.clear()
                return
            if pid == 0:
                return
            children.discard(pid)
            message = {"type": "child_exited", "pid": pid, "status": status}
            progress = self.progress.read(pid)
            if progress is not None:
                message["started"], message["finished"] = progress
            self.worker.channel.send(message)


def become_worker(worker, command, fds, workerinput):
    """Turns a freshly forked child into a worker that looks fresh to its
    tests: its own descriptors, process group, environment, random
    state, temporary directories and xdist worker surface."""
    import faulthandler

    os.setpgid(0, 0)
    _die_with_parent()
    config = worker.config
    _take_descriptors(worker, fds)
    if faulthandler.is_enabled():
        faulthandler.enable(file=sys.stderr, all_threads=True)
    running.register_stack_dump(config.pluginmanager.get_plugin("capturemanager"))
    worker.children = running.ChildWatch()
    slot = command["slot"]
    os.environ["SHOAL_WORKER"] = str(slot)
    os.environ["SHOAL_WORKER_COUNT"] = str(command["worker_count"])
    os.environ["PYTEST_XDIST_WORKER"] = f"gw{slot}"
    os.environ["PYTEST_XDIST_WORKER_COUNT"] = str(command["worker_count"])
    config.workerinput = workerinput
    config.workeroutput = {}
    _reseed()
    xdist_surface.repoint_basetemp(config, command["basetemp"])
    worker.zygote_fd = None
    config.hook.pytest_shoal_after_fork(config=config)
    if worker.split:
        worker.split = False
        if command.get("collect"):
            # The first command is this worker's share of the test files.
            share = worker.channel.receive() or {}
            worker.collect_share(share.get("nodeids", ()), share.get("parts", ()))
    worker.channel.send({"type": "ready", "pid": os.getpid(), "workerinput": workerinput})


def _take_descriptors(worker, fds):
    """Moves the child onto the descriptors shoal sent with the request: its
    stdout and stderr (pytest's capture restarted on them) and its channel,
    as descriptor 3."""
    channel_fd, stdout_fd, stderr_fd = fds
    capture = worker.config.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        capture.stop_global_capturing()
    os.dup2(stdout_fd, 1)
    os.dup2(stderr_fd, 2)
    worker.channel.detach()
    os.dup2(channel_fd, 3)
    for fd in fds:
        if fd > 3:
            os.close(fd)
    worker.channel = Channel(3)
    if capture is not None:
        capture.start_global_capturing()
        capture.suspend_global_capture()


def _reseed():
    """Random state as a fresh process has it: from the OS, for ``random``
    and, when it is imported, numpy's global generator."""
    import random

    random.seed()
    numpy = sys.modules.get("numpy")
    try:
        numpy.random.seed()
    except (AttributeError, TypeError, ValueError):
        pass


def _fork_unsafe_reason(worker):
    """Why forking this process would be unsafe, or None."""
    import threading

    if not hasattr(os, "fork"):
        return "this platform has no fork"
    if not hasattr(socket, "recv_fds"):
        return "this Python has no socket.recv_fds (3.9+)"
    others = [thread.name for thread in threading.enumerate() if thread is not threading.main_thread()]
    if others:
        return f"another thread is alive in the collecting process ({', '.join(sorted(others))})"
    shared = descriptors.shared_descriptor(worker.config, _own_descriptors(worker), _shared_on_purpose())
    if shared:
        return (
            f"the collecting process holds {shared}, opened at import or in a conftest: forked workers "
            "would share it (close it in a pytest_shoal_before_fork hook)"
        )
    return None


def _own_descriptors(worker):
    """The zygote's own descriptors: the channel, the fork requests and the
    stack-dump copy of stderr."""
    own = {worker.channel.fileno(), worker.zygote_fd, running.stack_dump_descriptor()}
    return {fd for fd in own if fd is not None}


def _shared_on_purpose():
    """Directories whose files workers share on purpose: coverage's data."""
    from . import PRIVATE

    directory = PRIVATE.get("SHOAL_COVERAGE_DIR")
    return (os.path.abspath(directory),) if directory else ()


def _die_with_parent():
    """Linux: a forked worker dies with its zygote (which dies with shoal),
    so no worker outlives a shoal that was killed outright."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass
