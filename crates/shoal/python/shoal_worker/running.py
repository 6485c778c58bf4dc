"""The run loop: running the node ids shoal sends, until told to end.

This module owns :class:`RunLoop` (the ``run``, ``continue``, ``stop`` and
``shutdown`` commands, the attempt number of a rerun, the ``finished``
message with each test's time and resources, stopping when over the memory
limit), :class:`NextItem` (the next test, learned from shoal only when
pytest needs it), :class:`Progress` (how far a forked worker got, for its
zygote to tell after its death), :class:`ChildWatch` (child processes a
test left running) and the stack dump shoal asks for before killing a test
past its timeout.
"""

import collections
import mmap
import os
import resource
import signal
import struct
import sys
import time

from .protocol import cut, finished_reports, is_subtest

# Where shoal asks for every thread's stack before killing a worker stuck
# past its timeout (shoal sends the same number). A real-time signal: tests
# and the libraries they exercise use SIGUSR1 and SIGUSR2 for themselves.
STACK_DUMP_SIGNAL = signal.SIGRTMIN + 3 if hasattr(signal, "SIGRTMIN") else None

# Between quick tests, the longest a command (a `stop`, more work) waits to
# be read, in seconds.
COMMAND_POLL_SECONDS = 0.005


class RunLoop:
    """Runs the node ids shoal sends, in order, until told to end.

    pytest tears fixtures down according to the *next* item. When the
    worker already holds its next test, that is it; when it does not,
    the next item is a :class:`NextItem` that asks shoal only when
    pytest needs it, at teardown. So shoal decides what a worker runs
    next at the last moment, knowing what every other worker is doing.
    """

    def __init__(self, worker):
        self.worker = worker
        self.channel = worker.channel
        self.items = worker.items
        self.queue = collections.deque()
        self.attempts = {}
        # `shutdown` or `stop` was received (or the channel closed).
        self.ended = False
        self.closed = False
        # Seconds spent waiting for shoal's answer during the current test.
        self.waited = 0.0
        # Set by `run` commands under -x/--maxfail (see await_verdict).
        self.confirm_failures = False
        # A forked worker's counters (see Progress); None when spawned.
        self.progress = worker.progress
        # Node ids shoal expects to be quick (`batch`): see report().
        self.quick = set()
        # When commands were last read (see poll_commands).
        self.polled = 0.0

    def run(self):
        self.take_commands(block=True)
        while self.queue:
            self.poll_commands()
            if self.worker.stopping:
                # What was sent but not started goes back to shoal, which
                # reports it as not run.
                self.channel.send({"type": "stopped", "dropped": list(self.queue)})
                break
            if self.run_next():
                # Over the memory limit: run nothing more here; shoal starts
                # a fresh worker and gives it what this one held.
                self.take_commands(block=False)
                self.channel.send({"type": "stopped", "dropped": list(self.queue), "over_memory": True})
                break
        self.channel.flush()

    def take_command(self):
        """Reads one command and returns its type.

        After `shutdown`, pending commands are still read: a `stop` (from -x,
        Ctrl-C or the budget) overrides it."""
        command = self.channel.receive()
        self.closed = command is None
        kind = command["type"] if command else "shutdown"
        if kind == "run":
            self.worker.load_files(command.get("load", ()), command.get("parts", ()))
            self.queue.extend(command["nodeids"])
            self.attempts.update(command.get("attempts", {}))
            self.confirm_failures = command.get("confirm_failures", False)
            if command.get("batch"):
                self.quick.update(command["nodeids"])
        elif kind != "continue":
            self.worker.stopping = self.worker.stopping or kind == "stop"
            self.ended = True
        return kind

    def take_commands(self, block):
        while not self.closed and ((block and not self.ended) or self.channel.has_pending_command()):
            if self.take_command() == "run":
                block = False
        self.polled = time.perf_counter()

    def poll_commands(self):
        """Reads the commands that arrived, before the next test: when the
        worker holds at most that test (it must know whether more follow,
        see NextItem), else at most every COMMAND_POLL_SECONDS (one system
        call per sub-millisecond test was a measurable share of it)."""
        if len(self.queue) <= 1 or time.perf_counter() - self.polled >= COMMAND_POLL_SECONDS:
            self.take_commands(block=False)

    def await_verdict(self):
        """Under -x/--maxfail, after a failure: shoal answers `continue` once
        it has counted it (a `stop` before that, at the limit)."""
        while not self.closed and self.take_command() != "continue" and not self.worker.stopping:
            pass

    def ask_for_work(self):
        """The next item, asked of shoal when none is queued (the wait for an
        answer is not the test's time)."""
        if not self.queue and not self.ended:
            self.channel.send({"type": "want_work"})
            asked = time.perf_counter()
            self.take_commands(block=True)
            self.waited = time.perf_counter() - asked
        return self.items[self.queue[0]] if self.queue else None

    def run_next(self):
        """Runs the test at the head of the queue and reports it. Returns
        True when the worker is over its memory limit afterwards."""
        worker = self.worker
        current = self.queue.popleft()
        item = self.items[current]
        # Tests see which attempt this is (1-based; reruns count up). Set
        # only when it changes: each write is a putenv.
        attempt = str(self.attempts.pop(current, 1))
        if os.environ.get("SHOAL_ATTEMPT") != attempt:
            os.environ["SHOAL_ATTEMPT"] = attempt
        if self.queue:
            next_item = self.items[self.queue[0]]
        else:
            # Known to be the last: plugins see pytest's own None.
            next_item = None if self.ended else NextItem(self.ask_for_work)
        started = time.perf_counter()
        self.waited = 0.0
        worker.pending_reports = []
        if worker.affected:
            worker.affected.begin()
        expected_quick = current in self.quick
        if self.progress:
            if not expected_quick:
                # Results still waiting would make shoal take their first
                # test for this one, with that test's timeout.
                self.channel.flush()
            self.progress.started()
        protocol_started = time.perf_counter()
        item.config.hook.pytest_runtest_protocol(item=item, nextitem=next_item)
        protocol_seconds = time.perf_counter() - protocol_started
        if worker.affected:
            worker.affected.end(current)
        # The wait for shoal's answer, when pytest asked during teardown, is
        # inside that phase's duration: it is not the test's time.
        waited_in_teardown = self.waited
        if isinstance(next_item, NextItem):
            next_item.resolve()
        wall = time.perf_counter() - started - self.waited
        phases = worker.pending_reports
        worker.pending_reports = []
        duration = _phases_seconds(phases, waited_in_teardown, wall)
        # pytest's own work around the phases (reports, hooks), not shoal's
        # around the protocol; the wait for shoal is in neither.
        between_phases = protocol_seconds - waited_in_teardown - duration
        message, over_memory = self.finished_message(current, phases, duration, between_phases)
        failed = any(report.failed for report, _ in phases)
        self.quick.discard(current)
        self.report(message, batched=expected_quick and not failed and not over_memory)
        if self.confirm_failures and failed:
            self.await_verdict()
        if worker.coverage:
            # A safe point: if this worker is killed later, only the
            # coverage of the test it is then running is lost.
            worker.coverage.save()
        return over_memory

    def report(self, message, batched):
        """Sends a test's ``finished`` message, or posts it to go with the
        next ones (see Channel.post) when shoal expected the test to be
        quick, it passed, and more follow.

        Only a forked worker batches: its zygote reads its Progress after
        its death, so shoal can tell the tests whose results were still
        posted (they go back to the queue) from the one it died in. The
        test counts as finished before its message leaves: a death in
        between loses a result, which is run again, never blames the next
        test.

        A message sent now carries the worker's resource usage so far; a
        posted one does not (shoal keeps the latest, and the worker's last
        message is always sent)."""
        if self.progress is not None:
            self.progress.finished()
            if batched and self.queue:
                self.channel.post(message)
                return
        message.update(self.usage(message))
        self.channel.send(message)

    def usage(self, message):
        """The worker's CPU seconds and peak memory so far (and its memory
        now, unless ``message`` has it already)."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        facts = {"cpu_seconds": usage.ru_utime + usage.ru_stime, "max_rss_kib": usage.ru_maxrss}
        if "rss_kib" not in message:
            facts["rss_kib"] = usage.ru_maxrss
        return facts

    def finished_message(self, nodeid, phases, duration, between_phases):
        """The ``finished`` message of a test that just ran, from its
        phases' reports and statuses, and whether the worker is
        now over its memory limit. ``between_phases``: the rest of its
        protocol's time (pytest making and logging its reports, the hooks
        around its phases, its plugins' included), which is in no phase's
        duration."""
        worker = self.worker
        worker.children.note(nodeid)
        message = {
            "type": "finished",
            "nodeid": nodeid,
            "duration": duration,
            "between_phases": max(0.0, between_phases),
            "ended": time.monotonic(),
            "reports": finished_reports(phases, worker),
        }
        over_memory = False
        if worker.memory_limit_kib:
            # Reading the current size costs a system call: only with a limit.
            message["rss_kib"] = rss_kib = _current_rss_kib()
            over_memory = rss_kib > worker.memory_limit_kib
        if over_memory or (self.ended and not self.queue):
            # The session's fixtures are gone: what still runs leaked.
            message["leaked"] = worker.children.leaked()
        return message, over_memory


class Progress:
    """How far a forked worker got: the tests it started and finished, as two
    counters in a page of memory it shares with its zygote (no descriptor,
    no system call per test).

    The zygote maps one :class:`ProgressBoard` before forking; each child
    counts in its own region, and the zygote reads the region when it
    reaps the child and reports both numbers with ``child_exited``.
    """

    def __init__(self, board, region):
        self._page = board.page
        self._offset = region * ProgressBoard.REGION_BYTES
        self._started = 0
        self._finished = 0

    def started(self):
        self._started += 1
        struct.pack_into("<Q", self._page, self._offset, self._started)

    def finished(self):
        self._finished += 1
        struct.pack_into("<Q", self._page, self._offset + 8, self._finished)


class ProgressBoard:
    """The zygote's page of :class:`Progress` regions, one per living child."""

    REGION_BYTES = 16
    REGIONS = mmap.PAGESIZE // REGION_BYTES

    def __init__(self):
        # Anonymous and shared: the children write, the zygote reads.
        self.page = mmap.mmap(-1, mmap.PAGESIZE)
        self.region_of = {}

    def free_region(self):
        """A region no living child uses, zeroed; None when all are used."""
        used = set(self.region_of.values())
        region = next((index for index in range(self.REGIONS) if index not in used), None)
        if region is not None:
            offset = region * self.REGION_BYTES
            self.page[offset : offset + self.REGION_BYTES] = bytes(self.REGION_BYTES)
        return region

    def give(self, pid, region):
        """The child ``pid`` counts in ``region`` (None: it has none)."""
        if region is not None:
            self.region_of[pid] = region

    def read(self, pid):
        """The child's (started, finished) counts, freeing its region; None
        when it had none."""
        region = self.region_of.pop(pid, None)
        if region is None:
            return None
        return struct.unpack_from("<QQ", self.page, region * self.REGION_BYTES)


class NextItem:
    """The test a worker runs next, learned from shoal only when needed.

    pytest reads ``nextitem`` at teardown (``nextitem and
    nextitem.listchain()``) to know which fixtures to keep. This stand-in
    asks shoal at that moment; it is falsy when there is no next test, so
    pytest then tears everything down, as it does for ``None``.
    """

    _UNRESOLVED = object()

    def __init__(self, ask):
        self._ask = ask
        self._item = self._UNRESOLVED

    def resolve(self):
        if self._item is self._UNRESOLVED:
            self._item = self._ask()
        return self._item

    def __bool__(self):
        return self.resolve() is not None

    def __getattr__(self, name):
        item = self.resolve()
        if item is None:
            raise AttributeError(name)
        return getattr(item, name)


def _phases_seconds(phases, waited, wall):
    """A test's duration as pytest measures it (and pytest-split records
    it): the sum of its setup, call and teardown reports' durations, less
    the wait for shoal's answer; a subtest's report is part of its call.
    ``wall`` (the whole protocol's time) when pytest reported no phase.
    ``phases``: each phase's report, with its status."""
    durations = [report.duration for report, _ in phases if not is_subtest(report)]
    if not durations:
        return wall
    return max(0.0, sum(durations) - waited)


def _current_rss_kib():
    """Resident memory now (not the peak), in KiB."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# Linux's __WALL: waitid considers every child, however it was cloned.
_WAIT_ALL_CHILDREN = 0x40000000 if sys.platform.startswith("linux") else 0


class ChildWatch:
    """Which test started the child processes still alive at the end.

    After each test the worker's direct children are listed (one read of
    /proc) and new ones are charged to that test; with its last
    test, the worker reports the ones still running to shoal, which kills
    them with the worker's process group and names the test that left them.
    """

    def __init__(self):
        self.first_seen = {}

    @staticmethod
    def _children():
        # The calling thread's children (the run loop's, the main thread,
        # where tests start processes; other threads' are not looked at:
        # one small read per test, without a file object; a listing over
        # 64 KiB, thousands of children, is cut).
        try:
            descriptor = os.open("/proc/thread-self/children", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return ()
        try:
            listing = os.read(descriptor, 65536)
        except OSError:
            return ()
        finally:
            os.close(descriptor)
        return [int(pid) for pid in listing.split()] if listing else ()

    @staticmethod
    def _has_any():
        """Whether the process has a child at all: one system call, no
        descriptor, where listing them is three (the listing's system calls
        cost several times more between two tests than in a loop). waitid
        fails with ECHILD when there is none; WNOWAIT leaves a child that
        ended to whoever reaps it."""
        try:
            os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT | _WAIT_ALL_CHILDREN)
        except ChildProcessError:
            return False
        except (OSError, AttributeError):  # no waitid here: list them
            return True
        return True

    def note(self, nodeid):
        if not self._has_any():
            return
        for pid in self._children():
            self.first_seen.setdefault(pid, nodeid)

    def leaked(self):
        """Node id to the pids it started that are still running."""
        alive = set(self._children())
        leaked = {}
        for pid, nodeid in self.first_seen.items():
            if pid in alive:
                leaked.setdefault(nodeid, []).append(pid)
        return leaked


# Timeouts: the stack dump ---------------------------------------------------------

# A copy of the descriptor stderr had when the worker started (a forked
# worker re-points it at its own stderr), where stack dumps are written.
_stack_dump_fd = None

# pytest's capture manager, for the output of a test that is being timed out.
_capture_manager = None


def stack_dump_descriptor():
    """The stack-dump copy of stderr, once registered."""
    return _stack_dump_fd


def register_stack_dump(capture_manager):
    """On STACK_DUMP_SIGNAL, write every thread's Python stack to stderr,
    and the test's output captured so far through ``capture_manager``.

    shoal sends it to a worker whose test ran past its timeout, just before
    killing it. faulthandler answers from a C signal handler, so this works
    even when the test is stuck in C code that never returns to Python. It
    writes to a copy of the descriptor stderr has now, so pytest's capture
    (which moves descriptor 2 during a test) cannot swallow it. The copy is a
    bare descriptor, not a file object: nothing for the garbage collector to
    find unclosed (a ResourceWarning under ``-W error``), and it is not
    inherited by processes a test starts.
    """
    global _stack_dump_fd, _capture_manager
    import faulthandler

    _capture_manager = capture_manager
    if STACK_DUMP_SIGNAL is None:
        return
    if _stack_dump_fd is None:
        _stack_dump_fd = os.dup(2)
    else:
        os.dup2(2, _stack_dump_fd, inheritable=False)
    # The Python handler runs only if the interpreter gets control back (a
    # test in time.sleep, say): then the output captured so far is shown too.
    signal.signal(STACK_DUMP_SIGNAL, _dump_captured_output)
    faulthandler.register(STACK_DUMP_SIGNAL, file=_stack_dump_fd, all_threads=True, chain=True)


def _dump_captured_output(_signum, _frame):
    capture = _capture_manager
    if capture is None or _stack_dump_fd is None:
        return
    try:
        out, err = capture.read_global_capture()
    except Exception:  # capture not active: nothing to show
        return
    for title, text in (("stdout", out), ("stderr", err)):
        if text:
            data = f"----- captured {title} so far -----\n{cut(text)}\n".encode("utf-8", "replace")
            while data:
                data = data[os.write(_stack_dump_fd, data):]
