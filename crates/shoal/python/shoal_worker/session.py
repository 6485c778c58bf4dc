"""The worker's plugin object: one pytest session driven by shoal.

:class:`ShoalWorker` is registered (as ``shoal_worker_session``) when shoal
started this process. It holds the session's state, says ``hello``, hands
the test loop to the zygote (fork mode's collecting process) or to the run
loop, and reports what pytest did. Its collection hooks come from
:class:`~shoal_worker.collection.Collecting`.
"""

import atexit
import os
import sys

import pytest

from . import protocol, running, zygote
from .collection import Collecting
from .environment import PRIVATE


class ShoalWorker(Collecting):
    """Plugin object registered when the channel variable is present."""

    def __init__(self, config, channel, maxfail, zygote_fd, coverage):
        self.config = config
        self.channel = channel
        self.zygote_fd = zygote_fd
        limit = PRIVATE.get("SHOAL_MEMORY_LIMIT_KIB")
        self.memory_limit_kib = int(limit) if limit else 0
        self.children = running.ChildWatch()
        running.register_stack_dump(config.pluginmanager.get_plugin("capturemanager"))
        self.maxfail = maxfail
        self.deselected = []
        # The running test's reports so far, each with the status pytest's
        # terminal gave it (see protocol.finished_reports).
        self.pending_reports = []
        # What `-r` asks the short test summary for (see protocol.report_chars).
        self.report_chars = ""
        # How pytest's terminal would show progress (see _silence_terminal).
        self.progress_style = "progress"
        # The last report pytest_report_teststatus was asked about, and its answer.
        self.last_status = (None, None)
        self.stopping = False
        # The coverage measurement when --cov is given; see shoal_coverage.
        self.coverage = coverage
        # What each test executes, with --affected; see shoal_affected.
        self.affected = None
        self.session = None
        # Split collection (shoal says so after `hello`): the zygote records
        # each test file's collectors (by node id: a module and its doctests
        # share one) instead of importing them; each child then collects the
        # files shoal gives it. See Collecting.collect_files.
        self.split = False
        # Split collection keeping the imports (shoal says so too): the
        # zygote imports each test module it records, as collecting it
        # would, and the children build the items of their share.
        self.keep_imports = False
        self.files = {}
        # Spread files (see collection.Part): the part being collected, and
        # the part and position of each item collected from one.
        self.part = None
        self.parts = {}
        # Seconds each test file took to import and collect here; each test
        # module's import apart; when this collection started, and how much
        # of it since went to what no split divides: the walk to the test
        # files, and the imports (see Collecting.divisible_seconds).
        self.file_seconds = {}
        self.import_seconds = {}
        self.collection_started = None
        self.undivided_seconds = 0.0
        # The collected items this process can run, by node id.
        self.items = {}
        # A forked worker's counts of tests started and finished, which its
        # zygote reads after its death (see running.Progress).
        self.progress = None
        # The reports and limits taken over from pytest and its plugins
        # (set before the session starts; see shoal_worker.pytest_cmdline_main).
        self.junitxml = None
        self.html_report = None
        self.benchmarks_disabled = False

    # Configuration -----------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session):
        self.session = session
        config = self.config
        self.progress_style = _silence_terminal(config)
        # pytest's cache plugin would let every worker overwrite the
        # last-failed list with its own share; shoal keeps that record.
        for name in ("lfplugin", "nfplugin"):
            plugin = config.pluginmanager.get_plugin(name)
            if plugin is not None:
                config.pluginmanager.unregister(plugin)
        self.report_chars = protocol.report_chars(config)
        self.channel.send(protocol.hello_message(config, self))
        if self.zygote_fd is not None:
            # shoal decides how the zygote collects, knowing the plugins.
            command = self.channel.receive() or {}
            self.split = bool(command.get("split"))
            self.keep_imports = self.split and bool(command.get("keep_imports"))

    # Running -----------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        """Replaces pytest's loop.

        A zygote serves fork requests and runs nothing itself; each forked
        child, like a spawned worker, runs the node ids shoal sends.
        """
        if self.zygote_fd is not None and not zygote.serve_forks(self):
            # The zygote ran no test and its children are reaped: nothing of
            # pytest's teardown (a full garbage collection of the collected
            # suite, among others) is worth waiting for.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        try:
            running.RunLoop(self).run()
        finally:
            if self.coverage:
                self.coverage.finish()
        return True

    # Reporting ---------------------------------------------------------------

    @pytest.hookimpl(hookwrapper=True)
    def pytest_report_teststatus(self, report, config):
        """Remembers the answer pytest's terminal reporter just got, so the
        facts of the phase need not ask every plugin a second time."""
        outcome = yield
        self.last_status = (report, outcome.get_result())

    # After the terminal reporter's (which asks for the phase's status).
    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report):
        asked, status = self.last_status
        if asked is not report:
            status = self.config.hook.pytest_report_teststatus(report=report, config=self.config)
        self.last_status = (None, None)
        self.pending_reports.append((report, status))

    def pytest_warning_recorded(self, warning_message, when, nodeid, location):
        self.channel.send(protocol.warning_message(warning_message, when, nodeid))

    # Ending ------------------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config):
        """Registered last, so it runs first at exit: see _exit_after_handlers."""
        status = getattr(self.session, "exitstatus", 0)
        atexit.register(_exit_after_handlers, int(status))


def _exit_after_handlers(status):
    """Ends the process once what a program may rely on at exit is done.

    Python has already waited for non-daemon threads. Every other ``atexit``
    handler runs here, in the usual last-registered-first order (coverage
    saves its data, logging flushes its files, ``weakref.finalize`` and
    temporary directories clean up), then the standard streams are flushed.
    What is skipped is the interpreter's teardown: freeing every object of
    the collected suite, which in a forked worker also copies every page it
    shares with the zygote. That took about a second of each worker on a
    30,000-test suite, after the last result, while shoal waited.
    """
    atexit.unregister(_exit_after_handlers)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    os._exit(status)


class _DiscardingWriter:
    """A text stream that drops what it is given."""

    encoding = "utf-8"

    def write(self, text):
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False


def _silence_terminal(config):
    """Nobody reads a worker's own terminal report: shoal renders one from
    the facts. Writing it would cost a system call per test, and laying out
    each test's file name and progress percentage (path arithmetic) costs
    more than a sub-millisecond test: the reporter keeps its statistics,
    which plugins read, but lays out nothing per test.

    Returns how it would have shown progress, for shoal's terminal to do the
    same: ``progress``, ``count`` or ``times`` (``console_output_style``),
    or ``none`` (``classic``, ``-s``, ``--setup-show``)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    writer = getattr(reporter, "_tw", None)
    if writer is not None and hasattr(writer, "_file"):
        writer._file = _DiscardingWriter()
    progress_style = "progress"
    if reporter is not None and hasattr(reporter, "_show_progress_info"):
        shown = reporter._show_progress_info
        progress_style = shown if isinstance(shown, str) else ("progress" if shown else "none")
        reporter.showfspath = False
        reporter._show_progress_info = False
    return progress_style
