"""shoal's pytest worker plugin: it runs what shoal tells it and reports facts.

shoal embeds this file in its binary, writes it to a cache directory and starts
each worker as ``python -m pytest -p shoal_worker ...``. Every decision (which
test runs where, outcomes, retries, reports) is made on the Rust side; this
plugin only collects, runs the node ids it is sent, and describes what pytest
did.

The protocol travels as JSON lines on a socket inherited as the file
descriptor named by ``SHOAL_CHANNEL_FD``, never on the test's stdout, so a
stray ``print`` or a raw write to fd 1 cannot corrupt it. The message types are
documented in ``crates/shoal/src/protocol.rs``; keep both sides in step and
bump ``PROTOCOL_VERSION`` on any incompatible change.
"""

import collections
import io
import json
import os
import platform
import resource
import select
import signal
import socket
import sys
import time

import pytest

PROTOCOL_VERSION = 1

# The variables shoal hands this plugin and nobody else. They are read once,
# when pytest imports the plugin, and removed, so a test (and every process it
# starts) sees the environment the user gave, plus xdist's public variables
# (PYTEST_XDIST_WORKER, ...) and shoal's documented ones (SHOAL_WORKER, ...).
_PRIVATE_VARIABLES = (
    "SHOAL_CHANNEL_FD",
    "SHOAL_ZYGOTE_FD",
    "SHOAL_CONTROLLER_OUTPUT",
    "SHOAL_MEMORY_LIMIT_KIB",
    "SHOAL_COVERAGE_DIR",
    "SHOAL_SERIAL_MARKERS",
    "SHOAL_MAINARGV",
    "SHOAL_WORKERINPUT",
)

# Where shoal asks for every thread's stack before killing a worker stuck
# past its timeout (shoal sends the same number). A real-time signal: tests
# and the libraries they exercise use SIGUSR1 and SIGUSR2 for themselves.
STACK_DUMP_SIGNAL = signal.SIGRTMIN + 3 if hasattr(signal, "SIGRTMIN") else None

# Longer texts are cut, with a visible note, so one enormous assertion message
# cannot balloon a protocol line (shoal also bounds the line length it reads).
MAX_TEXT_CHARS = 256 * 1024

# Items are announced in chunks so a 100,000-test suite is many moderate lines,
# not one huge one.
COLLECTED_CHUNK = 1000


def _take_private_environment():
    """Reads and removes shoal's private variables, and takes this plugin's
    directory back off ``PYTHONPATH`` and ``sys.path`` (shoal put it first in
    ``PYTHONPATH`` so ``-p shoal_worker`` could be imported)."""
    taken = {name: os.environ.pop(name) for name in _PRIVATE_VARIABLES if name in os.environ}
    if not taken:
        return taken
    here = os.path.dirname(os.path.abspath(__file__))
    if taken.get("SHOAL_COVERAGE_DIR"):
        # Imported while its directory is still on sys.path.
        import shoal_coverage  # noqa: F401
    entries = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if entries and os.path.abspath(entries[0] or ".") == here:
        if len(entries) > 1:
            os.environ["PYTHONPATH"] = os.pathsep.join(entries[1:])
        else:
            del os.environ["PYTHONPATH"]
    sys.path[:] = [entry for entry in sys.path if not (entry and os.path.abspath(entry) == here)]
    return taken


_PRIVATE = _take_private_environment()


def _cut(text):
    if text is None:
        return None
    text = str(text)
    if len(text) > MAX_TEXT_CHARS:
        dropped = len(text) - MAX_TEXT_CHARS
        text = text[:MAX_TEXT_CHARS] + f"\n[shoal: {dropped} more characters cut]"
    return text


class _NextItem:
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


class _DiscardingWriter:
    """A text stream that drops what it is given."""

    encoding = "utf-8"

    def write(self, text):
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False


class Channel:
    """The JSON-lines socket shared with shoal."""

    def __init__(self, fd):
        self._socket = socket.socket(fileno=fd)
        self._buffer = b""

    def send(self, message):
        line = json.dumps(message, ensure_ascii=False, default=repr) + "\n"
        # Lone surrogates (from undecodable bytes) cannot be encoded: replace
        # them rather than lose the message.
        self._socket.sendall(line.encode("utf-8", "replace"))

    def receive(self):
        """Blocks for the next command; None when shoal closed the channel."""
        while b"\n" not in self._buffer:
            data = self._socket.recv(65536)
            if not data:
                return None
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def detach(self):
        """Lets go of the descriptor without closing it (it is about to be replaced)."""
        self._socket.detach()

    def has_pending_command(self):
        """True when a command can be read without blocking."""
        if b"\n" in self._buffer:
            return True
        readable, _, _ = select.select([self._socket], [], [], 0)
        return bool(readable)


class ShoalWorker:
    """Plugin object registered when the channel variable is present."""

    def __init__(self, config, channel, maxfail, zygote_fd):
        self.config = config
        self.channel = channel
        self.zygote_fd = zygote_fd
        global _capture_manager
        _capture_manager = config.pluginmanager.get_plugin("capturemanager")
        limit = _PRIVATE.get("SHOAL_MEMORY_LIMIT_KIB")
        self.memory_limit_kib = int(limit) if limit else 0
        self.children = _ChildWatch()
        _register_stack_dump()
        self.maxfail = maxfail
        self.deselected = []
        self.pending_reports = []
        self.stopping = False
        # The coverage measurement when --cov is given; see shoal_coverage.
        self.coverage = _coverage
        self.session = None
        # Split collection (shoal says so after `hello`): the zygote records
        # each test file's collectors (by node id: a module and its doctests
        # share one) instead of importing them; each child then collects the
        # files shoal gives it. See collect_files.
        self.split = False
        self.files = {}
        # Seconds each test file took to import and collect here.
        self.file_seconds = {}
        # The collected items this process can run, by node id.
        self.items = {}

    # Configuration -----------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session):
        self.session = session
        config = self.config
        # Nobody reads a worker's own terminal report: shoal renders one from
        # the facts. Writing it would cost a system call per test.
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        writer = getattr(reporter, "_tw", None)
        if writer is not None and hasattr(writer, "_file"):
            writer._file = _DiscardingWriter()
        # pytest's cache plugin would let every worker overwrite the
        # last-failed list with its own share; shoal keeps that record.
        for name in ("lfplugin", "nfplugin"):
            plugin = config.pluginmanager.get_plugin(name)
            if plugin is not None:
                config.pluginmanager.unregister(plugin)
        plugins = []
        for _plugin, dist in config.pluginmanager.list_plugin_distinfo():
            name = dist.project_name if hasattr(dist, "project_name") else dist.metadata["name"]
            if name.startswith("pytest-"):
                name = name[len("pytest-"):]
            entry = f"{name}-{dist.version}"
            if entry not in plugins:
                plugins.append(entry)
        import pluggy

        inifile = getattr(config, "inipath", None)
        self.channel.send(
            {
                "type": "hello",
                "protocol": PROTOCOL_VERSION,
                "pid": os.getpid(),
                "platform": sys.platform,
                "python": platform.python_version(),
                "pytest": pytest.__version__,
                "pluggy": pluggy.__version__,
                "rootdir": str(config.rootpath),
                "inifile": str(inifile) if inifile else None,
                "plugins": plugins,
                "maxfail": self.maxfail,
                "cache_dir": _cache_dir(config),
                "junitxml": self.junitxml,
                "continue_on_collection_errors": bool(
                    config.getoption("continue_on_collection_errors", False)
                ),
                "coverage": self.coverage.report_options if self.coverage else None,
                "html_report": self.html_report,
                "benchmarks_disabled": self.benchmarks_disabled,
            }
        )
        if self.zygote_fd is not None:
            # shoal decides how the zygote collects, knowing the plugins.
            command = self.channel.receive() or {}
            self.split = bool(command.get("split"))

    # Collection --------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_make_collect_report(self, collector):
        """Split collection, in the zygote: a test file is recorded, not
        imported; its (empty) report lets collection walk on."""
        if self.split and _is_test_file(collector):
            self.files.setdefault(collector.nodeid, []).append(collector)
            return pytest.CollectReport(collector.nodeid, "passed", None, [])
        return None

    def collect_files(self, nodeids):
        """Imports and collects these test files (recorded by the zygote
        before forking) and returns their items, in order."""
        items = []
        for nodeid in nodeids:
            for collector in self.files.pop(nodeid, ()):
                items.extend(self.session.genitems(collector))
        # pytest 8+ caches collection results for its own argument walk.
        if hasattr(self.session, "_collection_cache"):
            self.session._collection_cache = {}
        return items

    def collect_share(self, nodeids):
        """A forked child's collection: its share of the test files, through
        pytest's own hooks (deselection included), reported as a whole
        collection is."""
        session, config = self.session, self.config
        items = self.collect_files(nodeids)
        session.items = items
        config.hook.pytest_collection_modifyitems(session=session, config=config, items=items)
        session.testscollected = len(items)
        config.hook.pytest_collection_finish(session=session)

    def load_files(self, nodeids):
        """Collects test files shoal sends tests of, when this worker has
        not collected them yet."""
        if not nodeids:
            return
        items = self.collect_files(nodeids)
        self.config.hook.pytest_collection_modifyitems(session=self.session, config=self.config, items=items)
        # The worker that collected these first reported their deselection.
        self.deselected = []
        self.items.update((item.nodeid, item) for item in items)

    @pytest.hookimpl(trylast=True)
    def pytest_deselected(self, items):
        self.deselected.extend(item.nodeid for item in items)

    def pytest_collectreport(self, report):
        if report.passed:
            return
        category = "error" if report.failed else "skipped"
        self.channel.send(
            {
                "type": "collect_report",
                "nodeid": report.nodeid,
                "outcome": report.outcome,
                "category": category,
                "longrepr": _cut(_longrepr_text(report)) if report.failed else None,
                "message": _cut(_crash_message(report)),
            }
        )

    def pytest_collection_finish(self, session):
        chunk = []
        for item in session.items:
            path, line, domain = item.location
            chunk.append(
                {
                    "nodeid": item.nodeid,
                    "path": path,
                    "line": line,
                    "domain": domain,
                    "markers": sorted({marker.name for marker in item.iter_markers()}),
                    "timeout": _timeout_marker(item),
                    "group": _group_marker(item),
                    "reruns": _reruns_marker(item),
                    "module": _file_of(item),
                }
            )
            if len(chunk) >= COLLECTED_CHUNK:
                self.channel.send({"type": "collected", "items": chunk})
                chunk = []
        if chunk:
            self.channel.send({"type": "collected", "items": chunk})
        self.items = {item.nodeid: item for item in session.items}
        if self.split:
            self.channel.send(
                {"type": "test_files", "nodeids": list(self.files), "same_name": _prime_sys_path(self.config, self.files)}
            )
            # shoal answers with the files to collect here before forking:
            # none, or all of them (fewer files than workers).
            here = (self.channel.receive() or {}).get("nodeids", ())
            if here:
                # Collecting them runs this hook again, which reports it all.
                self.split = False
                self.collect_share(here)
                return
        self.channel.send(
            {"type": "collection_finished", "deselected": self.deselected, "file_seconds": self.file_seconds}
        )
        self.deselected = []
        self.file_seconds = {}

    # Running -----------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        """Replaces pytest's loop.

        A zygote serves fork requests and runs nothing itself; each forked
        child, like a spawned worker, runs the node ids shoal sends.
        """
        if self.zygote_fd is not None and not self.serve_forks():
            # The zygote ran no test and its children are reaped: nothing of
            # pytest's teardown (a full garbage collection of the collected
            # suite, among others) is worth waiting for.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        try:
            self.run_assigned(session)
        finally:
            if self.coverage:
                self.coverage.finish()
        return True

    def run_assigned(self, session):
        """Runs the node ids shoal sends, in order, until told to end.

        pytest tears fixtures down according to the *next* item. When the
        worker already holds its next test, that is it; when it does not,
        the next item is a :class:`_NextItem` that asks shoal only when
        pytest needs it, at teardown. So shoal decides what a worker runs
        next at the last moment, knowing what every other worker is doing.
        """
        items = self.items
        queue = collections.deque()
        attempts = {}
        ended = False
        closed = False
        waited = 0.0
        # Set by `run` commands under -x/--maxfail (see await_verdict).
        confirm_failures = False

        def take_command():
            # After `shutdown`, pending commands are still read: a `stop`
            # (from -x, Ctrl-C or the budget) overrides it. Returns the
            # command's type.
            nonlocal ended, closed, confirm_failures
            command = self.channel.receive()
            closed = command is None
            kind = command["type"] if command else "shutdown"
            if kind == "run":
                self.load_files(command.get("load", ()))
                queue.extend(command["nodeids"])
                attempts.update(command.get("attempts", {}))
                confirm_failures = command.get("confirm_failures", False)
            elif kind != "continue":
                self.stopping = self.stopping or kind == "stop"
                ended = True
            return kind

        def take_commands(block):
            while not closed and ((block and not ended) or self.channel.has_pending_command()):
                if take_command() == "run":
                    block = False

        def await_verdict():
            # Under -x/--maxfail, after a failure: shoal answers `continue`
            # once it has counted it (a `stop` before that, at the limit).
            while not closed and take_command() != "continue" and not self.stopping:
                pass

        def ask_for_work():
            # The wait for an answer is not the test's time.
            nonlocal waited
            if not queue and not ended:
                self.channel.send({"type": "want_work"})
                asked = time.perf_counter()
                take_commands(block=True)
                waited = time.perf_counter() - asked
            return items[queue[0]] if queue else None

        take_commands(block=True)
        while queue:
            take_commands(block=False)
            if self.stopping:
                # What was sent but not started goes back to shoal, which
                # reports it as not run.
                self.channel.send({"type": "stopped", "dropped": list(queue)})
                break
            current = queue.popleft()
            item = items[current]
            # Tests see which attempt this is (1-based; reruns count up).
            os.environ["SHOAL_ATTEMPT"] = str(attempts.pop(current, 1))
            if queue:
                next_item = items[queue[0]]
            else:
                # Known to be the last: plugins see pytest's own None.
                next_item = None if ended else _NextItem(ask_for_work)
            started = time.perf_counter()
            waited = 0.0
            self.pending_reports = []
            item.config.hook.pytest_runtest_protocol(item=item, nextitem=next_item)
            if isinstance(next_item, _NextItem):
                next_item.resolve()
            duration = time.perf_counter() - started - waited
            usage = resource.getrusage(resource.RUSAGE_SELF)
            # Reading the current size costs a system call: only with a limit.
            rss_kib = _current_rss_kib() if self.memory_limit_kib else usage.ru_maxrss
            self.children.note(current)
            over_memory = bool(self.memory_limit_kib and rss_kib > self.memory_limit_kib)
            last = over_memory or (ended and not queue)
            message = {
                "type": "finished",
                "nodeid": current,
                "duration": duration,
                "reports": self.pending_reports,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "max_rss_kib": usage.ru_maxrss,
                "rss_kib": rss_kib,
            }
            if last:
                # The session's fixtures are gone: what still runs leaked.
                message["leaked"] = self.children.leaked()
            self.channel.send(message)
            self.pending_reports = []
            if confirm_failures and any(report["outcome"] == "failed" for report in message["reports"]):
                await_verdict()
            if self.coverage:
                # A safe point: if this worker is killed later, only the
                # coverage of the test it is then running is lost.
                self.coverage.save()
            if over_memory:
                # Over the limit: run nothing more here; shoal starts a fresh
                # worker and gives it what this one held.
                take_commands(block=False)
                self.channel.send({"type": "stopped", "dropped": list(queue), "over_memory": True})
                break

    # Fork mode ---------------------------------------------------------------

    def serve_forks(self):
        """The zygote's loop: fork a worker per request, report their ends.

        Requests arrive on a separate packet socket together with the new
        worker's descriptors (its channel, stdout and stderr). Returns True
        in a forked child, which then runs tests; False in the zygote once
        shoal says to shut down and every child has been reaped.
        """
        import gc

        unsafe = _fork_unsafe_reason()
        # Everything collected so far lives as long as the workers: keep the
        # garbage collector off it, so the children neither copy its pages
        # (a collection writes to every object it visits) nor spend their
        # final collections walking the whole suite again.
        if self.coverage:
            # What collecting ran is saved here, once; each child's data
            # file then holds only what that child ran.
            self.coverage.save()
        gc.collect()
        gc.freeze()
        self.channel.send({"type": "zygote_ready", "fork_safe": unsafe is None, "reason": unsafe})
        control = socket.socket(fileno=self.zygote_fd)
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        previous_wakeup = signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        children = set()
        shutting_down = False
        while not (shutting_down and not children):
            try:
                readable, _, _ = select.select([control, wake_read], [], [], None if not shutting_down else 1.0)
            except InterruptedError:
                readable = []
            if wake_read in readable:
                os.read(wake_read, 4096)
            self._reap(children)
            if control not in readable:
                continue
            data, fds, _flags, _address = socket.recv_fds(control, 65536, 3)
            command = json.loads(data) if data else {"type": "shutdown"}
            if command["type"] == "fork":
                # xdist's controller-side hook runs here, in the process
                # that configured pytest as xdist's controller does.
                workerinput = _workerinput(self.config, command["slot"], command["worker_count"], configure_node=True)
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    signal.set_wakeup_fd(previous_wakeup)
                    for fd in (wake_read, wake_write):
                        os.close(fd)
                    control.close()
                    self._become_worker(command, fds, workerinput)
                    return True
                children.add(pid)
                for fd in fds:
                    os.close(fd)
            else:
                shutting_down = True
        return False

    def _reap(self, children):
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children.clear()
                return
            if pid == 0:
                return
            children.discard(pid)
            self.channel.send({"type": "child_exited", "pid": pid, "status": status})

    def _become_worker(self, command, fds, workerinput):
        """Turns a freshly forked child into a worker that looks fresh to its
        tests: its own descriptors, process group, environment, random
        state, temporary directories and xdist worker surface."""
        import random

        channel_fd, stdout_fd, stderr_fd = fds
        os.setpgid(0, 0)
        _die_with_parent()
        config = self.config
        capture = config.pluginmanager.get_plugin("capturemanager")
        if capture is not None:
            capture.stop_global_capturing()
        os.dup2(stdout_fd, 1)
        os.dup2(stderr_fd, 2)
        self.channel.detach()
        os.dup2(channel_fd, 3)
        for fd in fds:
            if fd > 3:
                os.close(fd)
        self.channel = Channel(3)
        if capture is not None:
            capture.start_global_capturing()
            capture.suspend_global_capture()
        import faulthandler

        if faulthandler.is_enabled():
            faulthandler.enable(file=sys.stderr, all_threads=True)
        _register_stack_dump()
        self.children = _ChildWatch()
        slot = command["slot"]
        os.environ["SHOAL_WORKER"] = str(slot)
        os.environ["SHOAL_WORKER_COUNT"] = str(command["worker_count"])
        os.environ["PYTEST_XDIST_WORKER"] = f"gw{slot}"
        os.environ["PYTEST_XDIST_WORKER_COUNT"] = str(command["worker_count"])
        config.workerinput = workerinput
        config.workeroutput = {}
        random.seed()
        _repoint_basetemp(config, command["basetemp"])
        self.zygote_fd = None
        if self.split:
            self.split = False
            if command.get("collect"):
                # The first command is this worker's share of the test files.
                share = self.channel.receive() or {}
                self.collect_share(share.get("nodeids", ()))
        self.channel.send({"type": "ready", "pid": os.getpid(), "workerinput": workerinput})

    def pytest_runtest_logreport(self, report):
        config = self.config
        status = config.hook.pytest_report_teststatus(report=report, config=config)
        category, letter, word = status if status else ("", "", "")
        if isinstance(word, tuple):
            word = word[0]
        facts = {
            "when": report.when,
            "outcome": report.outcome,
            "category": category,
            "letter": letter,
            "word": word,
            "duration": report.duration,
        }
        if type(report).__name__ == "SubtestReport":
            describe = getattr(report, "_sub_test_description", None)
            facts["subtest"] = _cut(describe() if callable(describe) else "")
        if hasattr(report, "wasxfail"):
            facts["wasxfail"] = _cut(report.wasxfail)
        if report.failed:
            facts["head_line"] = report.head_line
            facts["longrepr"] = _cut(_longrepr_text(report))
            facts["message"] = _cut(_crash_message(report))
            facts["sections"] = [[title, _cut(content)] for title, content in report.sections]
            crash = getattr(report.longrepr, "reprcrash", None)
            if crash is not None and getattr(crash, "path", None):
                facts["crash_path"] = str(crash.path)
                facts["crash_line"] = crash.lineno
        elif report.skipped and isinstance(report.longrepr, tuple):
            facts["message"] = _cut(report.longrepr[2])
        self.pending_reports.append(facts)

    def pytest_warning_recorded(self, warning_message, when, nodeid, location):
        import warnings

        text = warnings.formatwarning(
            warning_message.message,
            warning_message.category,
            warning_message.filename,
            warning_message.lineno,
            warning_message.line,
        )
        self.channel.send({"type": "warning", "when": when, "nodeid": nodeid, "text": _cut(text)})


# A copy of the descriptor stderr had when the worker started (a forked
# worker re-points it at its own stderr), where stack dumps are written.
_stack_dump_fd = None

# pytest's capture manager, for the output of a test that is being timed out.
_capture_manager = None


def _register_stack_dump():
    """On STACK_DUMP_SIGNAL, write every thread's Python stack to stderr.

    shoal sends it to a worker whose test ran past its timeout, just before
    killing it. faulthandler answers from a C signal handler, so this works
    even when the test is stuck in C code that never returns to Python. It
    writes to a copy of the descriptor stderr has now, so pytest's capture
    (which moves descriptor 2 during a test) cannot swallow it. The copy is a
    bare descriptor, not a file object: nothing for the garbage collector to
    find unclosed (a ResourceWarning under ``-W error``), and it is not
    inherited by processes a test starts.
    """
    global _stack_dump_fd
    import faulthandler

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
            data = f"----- captured {title} so far -----\n{_cut(text)}\n".encode("utf-8", "replace")
            while data:
                data = data[os.write(_stack_dump_fd, data):]


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


def _current_rss_kib():
    """Resident memory now (not the peak), in KiB."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class _ChildWatch:
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
        # The main thread's children: tests start processes from it (one
        # small read per test; other threads' children are not looked at).
        try:
            with open(f"/proc/self/task/{os.getpid()}/children", "rb") as listing:
                return {int(pid) for pid in listing.read().split()}
        except OSError:
            return set()

    def note(self, nodeid):
        for pid in self._children():
            self.first_seen.setdefault(pid, nodeid)

    def leaked(self):
        """Node id to the pids it started that are still running."""
        alive = self._children()
        leaked = {}
        for pid, nodeid in self.first_seen.items():
            if pid in alive:
                leaked.setdefault(nodeid, []).append(pid)
        return leaked


class _FileTimer:
    """Times each test file's import and collection (history for split
    collection's shares). Registered beside the worker plugin."""

    def __init__(self, worker):
        self.worker = worker

    @pytest.hookimpl(hookwrapper=True)
    def pytest_make_collect_report(self, collector):
        started = time.perf_counter()
        yield
        if _is_test_file(collector) and not self.worker.split:
            seconds = time.perf_counter() - started
            # A module and its doctests share a node id: one file, one cost.
            self.worker.file_seconds[collector.nodeid] = self.worker.file_seconds.get(collector.nodeid, 0.0) + seconds


def _import_root_and_name(path, config):
    """Where pytest's prepend/append import modes put a test module's root on
    ``sys.path``, and the name it imports the module as (as
    ``_pytest.pathlib.import_path`` decides)."""
    try:
        from _pytest.pathlib import CouldNotResolvePathError, resolve_pkg_root_and_module_name
    except ImportError:  # pytest < 8.1
        from _pytest.pathlib import resolve_package_path

        package = resolve_package_path(path)
        if package is None:
            return str(path.parent), path.stem
        names = list(path.with_suffix("").relative_to(package.parent).parts)
        if names[-1] == "__init__":
            names.pop()
        return str(package.parent), ".".join(names)
    try:
        try:
            namespaces = config.getini("consider_namespace_packages")
        except ValueError:
            namespaces = False
        root, name = resolve_pkg_root_and_module_name(path, consider_namespace_packages=namespaces)
    except CouldNotResolvePathError:
        root, name = path.parent, path.stem
    return str(root), name


def _prime_sys_path(config, files):
    """Split collection, in the zygote before forking: puts the test modules'
    roots on ``sys.path`` as importing them in order would have (so a test
    importing a helper beside another test file finds it, as in sequential
    pytest). Returns groups of file indexes that import under one module
    name from different paths: one worker must import them in order, so
    pytest's "import file mismatch" error still shows."""
    mode = str(config.getoption("importmode"))
    if mode.endswith("importlib"):
        return []
    names = {}
    for index, collectors in enumerate(files.values()):
        module = next((c for c in collectors if isinstance(c, pytest.Module)), None)
        if module is None:
            continue
        root, name = _import_root_and_name(module.path, config)
        names.setdefault(name, []).append((index, str(module.path)))
        if mode.endswith("prepend"):
            if sys.path[0] != root:
                sys.path.insert(0, root)
        elif root not in sys.path:
            sys.path.append(root)
    return [[index for index, _ in group] for group in names.values() if len({path for _, path in group}) > 1]


def _is_test_file(collector):
    """A test file's collector (a module, a doctest file, a plugin's file),
    not a package, whose collection imports ``__init__.py`` and walks on."""
    return isinstance(collector, pytest.File) and not isinstance(collector, pytest.Package)


def _file_of(item):
    """The node id of the test file that collected an item."""
    file = item.getparent(pytest.File)
    return file.nodeid if file is not None else None


def _cache_dir(config):
    """pytest's cache directory, or None when the cache plugin is off."""
    cache = getattr(config, "cache", None)
    directory = getattr(cache, "_cachedir", None)
    return str(directory) if directory is not None else None


def _fork_unsafe_reason():
    """Why forking this process would be unsafe, or None."""
    import threading

    if not hasattr(os, "fork"):
        return "this platform has no fork"
    if not hasattr(socket, "recv_fds"):
        return "this Python has no socket.recv_fds (3.9+)"
    others = [thread.name for thread in threading.enumerate() if thread is not threading.main_thread()]
    if others:
        return f"another thread is alive in the collecting process ({', '.join(sorted(others))})"
    return None


def _timeout_marker(item):
    """Seconds from pytest-timeout's ``@pytest.mark.timeout(N)``, if any."""
    marker = item.get_closest_marker("timeout")
    if marker is None:
        return None
    value = marker.kwargs.get("timeout", marker.args[0] if marker.args else None)
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _reruns_marker(item):
    """Reruns from pytest-rerunfailures' ``@pytest.mark.flaky(reruns=N)``."""
    marker = item.get_closest_marker("flaky")
    if marker is None:
        return None
    value = marker.kwargs.get("reruns", marker.args[0] if marker.args else 1)
    try:
        return max(0, min(int(value), 254))
    except (TypeError, ValueError):
        return None


def _group_marker(item):
    """The test group from ``xdist_group(name)`` or ``shoal_group(name)``.

    Read from the marker, never from the node id (pytest 9.2 changed node
    ids and broke xdist's own grouping that way).
    """
    for name in ("shoal_group", "xdist_group"):
        marker = item.get_closest_marker(name)
        if marker is not None:
            value = marker.kwargs.get("name", marker.args[0] if marker.args else None)
            return str(value) if value is not None else None
    return None


def _longrepr_text(report):
    """The failure text exactly as pytest's terminal prints it.

    ``report.longreprtext`` strips the leading blank line and indentation that
    pytest shows, so render it the way the terminal reporter does.
    """
    try:
        from _pytest._io import TerminalWriter

        buffer = io.StringIO()
        writer = TerminalWriter(buffer)
        writer.hasmarkup = False
        report.toterminal(writer)
        return buffer.getvalue()
    except Exception:  # a plugin's exotic longrepr: fall back to the public text
        return report.longreprtext


# The short test summary shows a plain-string failure (e.g. a strict XPASS)
# as its message from pytest 9 on; earlier versions show no message for it.
_STRING_LONGREPR_IS_MESSAGE = int(pytest.__version__.split(".")[0]) >= 9


def _crash_message(report):
    """The message pytest's short test summary shows after the node id."""
    longrepr = report.longrepr
    if isinstance(longrepr, str):
        return longrepr if _STRING_LONGREPR_IS_MESSAGE else None
    crash = getattr(longrepr, "reprcrash", None)
    return getattr(crash, "message", None)


class _WorkerNode:
    """What xdist's controller-side ``pytest_configure_node(node)`` hook is
    given for a worker: plugins read ``node.config`` and add what their
    workers need to ``node.workerinput`` (pytest-randomly its seed)."""

    def __init__(self, config, workerinput):
        self.config = config
        self.workerinput = workerinput
        self.gateway = _Gateway(workerinput["workerid"])
        self.workeroutput = None
        self.shutting_down = False


class _Gateway:
    """The part of an execnet gateway plugins read: its id (``gwN``)."""

    def __init__(self, gateway_id):
        self.id = gateway_id


def _workerinput(config, slot, count, configure_node):
    """xdist's ``config.workerinput`` for worker ``gw<slot>``; with
    ``configure_node``, what controller-side plugins add to it in
    ``pytest_configure_node`` too (called in the process that configured
    pytest as xdist's controller does: the zygote, or the controller pass)."""
    workerinput = {
        "workerid": f"gw{slot}",
        "workercount": count,
        "testrunuid": os.environ.get("PYTEST_XDIST_TESTRUNUID", ""),
        "mainargv": json.loads(_PRIVATE.get("SHOAL_MAINARGV", "[]")),
    }
    hook = getattr(config.hook, "pytest_configure_node", None)
    if configure_node and hook is not None:
        hook(node=_WorkerNode(config, workerinput))
    return workerinput


def _repoint_basetemp(config, basetemp):
    """Points pytest's own temporary-path factory at this worker's basetemp.

    The factory object is kept, not replaced: the legacy ``tmpdir_factory``
    and any plugin that captured it hold a reference to it and must see the
    worker's directory, not the zygote's. (Private attributes, the same from
    pytest 7 to 9.)"""
    config.option.basetemp = basetemp
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is not None and hasattr(factory, "_given_basetemp"):
        import pathlib

        factory._given_basetemp = pathlib.Path(os.path.abspath(basetemp))
        factory._basetemp = None


class _XdistFixtures:
    """pytest-xdist's ``worker_id`` and ``testrun_uid`` fixtures, with its
    values, for when xdist is not installed (when it is, its own fixtures
    answer from ``config.workerinput``)."""

    @pytest.fixture(scope="session")
    def worker_id(self, request):
        workerinput = getattr(request.config, "workerinput", None)
        return workerinput["workerid"] if workerinput is not None else "master"

    @pytest.fixture(scope="session")
    def testrun_uid(self, request):
        workerinput = getattr(request.config, "workerinput", None)
        return workerinput["testrunuid"] if workerinput is not None else os.environ.get("PYTEST_XDIST_TESTRUNUID")


class _ControllerPass:
    """Spawn mode's controller pass: pytest configured as xdist's controller
    (no ``workerinput``), so plugins say in ``pytest_configure_node`` what
    each worker needs; their answers go to the file shoal named, and the
    process ends before collecting anything."""

    def __init__(self, output, count):
        self.output = output
        self.count = count

    @pytest.hookimpl(trylast=True)
    def pytest_configure(self, config):
        inputs = [_workerinput(config, slot, self.count, configure_node=True) for slot in range(self.count)]
        partial = f"{self.output}.partial"
        with open(partial, "w", encoding="utf-8") as file:
            json.dump(inputs, file, default=repr)
        os.replace(partial, self.output)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def pytest_configure(config):
    """Registers the markers shoal honours, so --strict-markers accepts
    them, and xdist's fixtures when xdist is absent."""
    if _PRIVATE.get("SHOAL_CHANNEL_FD") is None:
        return
    if not config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistFixtures(), "shoal_xdist_fixtures")
    known = {line.split("(")[0].split(":")[0].strip() for line in config.getini("markers")}
    ours = {
        "timeout": "timeout(seconds): stop the test after this many seconds (shoal)",
        "serial": "serial: run this test while nothing else runs (shoal)",
        "xdist_group": "xdist_group(name): run tests of a group on one worker, in order (shoal)",
        "shoal_group": "shoal_group(name): run tests of a group on one worker, in order (shoal)",
        "flaky": "flaky(reruns=N): rerun the test up to N times on a fresh worker (shoal)",
    }
    extra = _PRIVATE.get("SHOAL_SERIAL_MARKERS", "")
    for name in filter(None, extra.split(",")):
        ours.setdefault(name, f"{name}: run this test while nothing else runs (shoal)")
    for name, line in ours.items():
        if name not in known:
            config.addinivalue_line("markers", line)


# The coverage measurement, when this process measures coverage.
_coverage = None


@pytest.hookimpl(hookwrapper=True)
def pytest_load_initial_conftests(early_config, parser, args):
    """Starts coverage where pytest-cov would, before any conftest.py is
    imported, and keeps pytest-cov's own controller out (see shoal_coverage)."""
    global _coverage
    directory = _PRIVATE.get("SHOAL_COVERAGE_DIR")
    if _PRIVATE.get("SHOAL_CHANNEL_FD") is not None and directory:
        import shoal_coverage

        _coverage = shoal_coverage.start(early_config, directory, os.path.dirname(os.path.abspath(__file__)))
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_cmdline_main(config):
    """Takes over before pytest (and any plugin) configures the session.

    Options that would make every worker act on its own share as if it were
    the whole run are recorded for shoal and switched off: shoal decides
    max-fail, writes the reports, and is itself the parallel layer (a
    ``-n auto`` in the user's addopts must not start xdist inside a worker).
    A spawned worker gets xdist's ``config.workerinput`` here, before
    plugins configure, as xdist's workers do; a forked one gets it right
    after the fork (the zygote configures as xdist's controller).
    """
    option = config.option
    output = _PRIVATE.get("SHOAL_CONTROLLER_OUTPUT")
    if output is not None:
        option.dist = "no"
        option.tx = []
        option.numprocesses = None
        config.pluginmanager.register(
            _ControllerPass(output, int(os.environ.get("SHOAL_WORKER_COUNT", "1"))), "shoal_controller_pass"
        )
    fd = _PRIVATE.get("SHOAL_CHANNEL_FD")
    if fd is not None:
        zygote_fd = _PRIVATE.get("SHOAL_ZYGOTE_FD")
        worker = ShoalWorker(
            config,
            Channel(int(fd)),
            maxfail=option.maxfail or 0,
            zygote_fd=int(zygote_fd) if zygote_fd else None,
        )
        if zygote_fd is None:
            given = _PRIVATE.get("SHOAL_WORKERINPUT")
            config.workerinput = json.loads(given) if given else _workerinput(
                config, int(os.environ["SHOAL_WORKER"]), int(os.environ["SHOAL_WORKER_COUNT"]), configure_node=False
            )
            config.workeroutput = {}
        # A --junitxml in addopts (or after --) is written by shoal, for
        # the whole run, instead of by every worker for its share.
        xmlpath = getattr(option, "xmlpath", None)
        worker.junitxml = os.path.abspath(os.path.expanduser(xmlpath)) if xmlpath else None
        option.maxfail = 0
        option.xmlpath = None
        # pytest-html builds its report in one process from every test's
        # report; a worker would write its own share over the others'.
        worker.html_report = getattr(option, "htmlpath", None)
        if worker.html_report:
            option.htmlpath = None
        # pytest-benchmark disables itself under xdist (it cannot time
        # reliably in parallel); the same here (shoal says so).
        worker.benchmarks_disabled = bool(
            config.pluginmanager.hasplugin("benchmark")
            and not getattr(option, "benchmark_skip", False)
            and not getattr(option, "benchmark_disable", False)
        )
        if worker.benchmarks_disabled:
            option.benchmark_disable = True
            option.benchmark_enable = False
        # shoal reruns failed tests itself, each on a fresh worker.
        option.reruns = 0
        # shoal also enforces @pytest.mark.timeout / --timeout itself, from
        # outside (stack dump, then kill): pytest-timeout inside would race it.
        for name in ("rerunfailures", "timeout"):
            plugin = config.pluginmanager.get_plugin(name)
            if plugin is not None:
                config.pluginmanager.unregister(plugin)
        option.dist = "no"
        option.tx = []
        option.numprocesses = None
        config.pluginmanager.register(worker, "shoal_worker_session")
        config.pluginmanager.register(_FileTimer(worker), "shoal_file_timer")
    yield
