"""The protocol with shoal: the channel, the handshake and the messages.

The protocol travels as JSON lines on a socket inherited as the file
descriptor named by ``SHOAL_CHANNEL_FD``, never on the test's stdout, so a
stray ``print`` or a raw write to fd 1 cannot corrupt it. The message types are
documented in ``crates/shoal/src/protocol.rs``; keep both sides in step and
bump ``PROTOCOL_VERSION`` on any incompatible change.

This module owns the :class:`Channel` and the messages that describe what
pytest did (the ``hello`` handshake, collection errors, test reports,
warnings); the other modules decide when to send them.
"""

import io
import json
import os
import platform
import select
import socket
import sys
import time
from pathlib import Path

import pytest

PROTOCOL_VERSION = 1

# Longer texts are cut, with a visible note, so one enormous assertion message
# cannot balloon a protocol line (shoal also bounds the line length it reads).
MAX_TEXT_CHARS = 256 * 1024

# Items are announced in chunks so a 100,000-test suite is many moderate lines,
# not one huge one.
COLLECTED_CHUNK = 1000


# One encoder for every message (json.dumps would make one per call).
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=repr)


def _line(message):
    """A message as its protocol line. Lone surrogates (from undecodable
    bytes) cannot be encoded; they are replaced when the line is written,
    rather than the message lost."""
    return _ENCODER.encode(message) + "\n"


def cut(text):
    if text is None:
        return None
    text = str(text)
    if len(text) > MAX_TEXT_CHARS:
        dropped = len(text) - MAX_TEXT_CHARS
        text = text[:MAX_TEXT_CHARS] + f"\n[shoal: {dropped} more characters cut]"
    return text


# Results held back by Channel.post: at most this many, for at most this
# long (seconds, from the first). Enough to make the write and shoal's
# wake-up once per batch of sub-millisecond tests; short enough that
# shoal's live view (progress, timeline, slow-test notices) stays current.
POSTED_MOST = 64
POSTED_LONGEST = 0.05


class Channel:
    """The JSON-lines socket shared with shoal."""

    def __init__(self, fd):
        self._socket = socket.socket(fileno=fd)
        self._buffer = b""
        # Messages posted and not yet written, and when the first was
        # posted. They are encoded together when written: encoding each
        # as it came, between two tests, cost three times as much.
        self._posted = []
        self._posted_since = 0.0

    def post(self, message):
        """Sends ``message`` with the next one: now if enough are waiting or
        the first has waited long enough. Every `send` and `receive` writes
        what was posted first, so messages keep their order and none waits
        while the worker waits for shoal."""
        now = time.perf_counter()
        if not self._posted:
            self._posted_since = now
        self._posted.append(message)
        if len(self._posted) >= POSTED_MOST or now - self._posted_since >= POSTED_LONGEST:
            self.flush()

    def flush(self):
        """Writes what was posted."""
        if self._posted:
            messages, self._posted = self._posted, []
            self._socket.sendall("".join(map(_line, messages)).encode("utf-8", "replace"))

    def fileno(self):
        return self._socket.fileno()

    def send(self, message):
        """Sends ``message`` now, after what was posted."""
        self._posted.append(message)
        self.flush()

    def receive(self):
        """Blocks for the next command; None when shoal closed the channel."""
        self.flush()
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


# The handshake ------------------------------------------------------------------


def hello_message(config, worker):
    """The first message: who this worker is and what shoal must do for it
    (the reports and limits it took over from pytest and its plugins)."""
    import pluggy

    inifile = getattr(config, "inipath", None)
    return {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "pid": os.getpid(),
        "platform": sys.platform,
        "python": platform.python_version(),
        "pytest": pytest.__version__,
        "pluggy": pluggy.__version__,
        "rootdir": str(config.rootpath),
        "inifile": str(inifile) if inifile else None,
        "plugins": _plugin_versions(config),
        "maxfail": worker.maxfail,
        "cache_dir": _cache_dir(config),
        "junitxml": worker.junitxml,
        "continue_on_collection_errors": bool(config.getoption("continue_on_collection_errors", False)),
        "coverage": worker.coverage.report_options if worker.coverage else None,
        "html_report": worker.html_report,
        "benchmarks_disabled": worker.benchmarks_disabled,
        "report_chars": worker.report_chars,
        # `--show-capture` and `--no-fold-skipped` (pytest 8.3 on): how the
        # summary shows captured output and skips.
        "show_capture": config.getoption("showcapture", "all"),
        "no_fold_skipped": not getattr(config.option, "fold_skipped", True),
        # `--tb` and `--no-summary`: which sections the summary has.
        "tb_style": config.getoption("tbstyle", "auto"),
        "durations_min": config.getoption("durations_min", None),
        "no_summary": bool(config.getoption("no_summary", False)),
        # The session header as pytest's terminal writes it.
        "no_header": bool(config.getoption("no_header", False)),
        "progress_style": worker.progress_style,
        "executable": sys.executable,
        "header_lines": _report_header_lines(config),
    }


def _report_header_lines(config):
    """The lines pytest and its plugins add to the session header
    (``pytest_report_header``: rootdir, configfile, plugins, a plugin's seed
    or settings), in the order pytest's terminal writes them."""
    lines = []
    for line_or_lines in reversed(
        config.hook.pytest_report_header(config=config, start_path=config.invocation_params.dir)
    ):
        if isinstance(line_or_lines, str):
            lines.append(line_or_lines)
        else:
            lines.extend(line_or_lines)
    return lines


def report_chars(config):
    """What ``-r`` asks the short test summary for, as pytest's terminal
    reads it (``-r a``, ``N`` and the default ``fE`` resolved; ``w``, the
    warnings summary, unless ``--disable-warnings``)."""
    from _pytest.terminal import getreportopt

    return getreportopt(config)


def _plugin_versions(config):
    """The installed plugins as pytest's header names them (``name-version``)."""
    plugins = []
    for _plugin, dist in config.pluginmanager.list_plugin_distinfo():
        name = dist.project_name if hasattr(dist, "project_name") else dist.metadata["name"]
        if name.startswith("pytest-"):
            name = name[len("pytest-"):]
        entry = f"{name}-{dist.version}"
        if entry not in plugins:
            plugins.append(entry)
    return plugins


def _cache_dir(config):
    """pytest's cache directory, or None when the cache plugin is off."""
    cache = getattr(config, "cache", None)
    directory = getattr(cache, "_cachedir", None)
    return str(directory) if directory is not None else None


# What pytest did ----------------------------------------------------------------


def collect_report_message(report, config):
    """A collector that failed or was skipped."""
    category = "error" if report.failed else "skipped"
    message = {
        "type": "collect_report",
        "nodeid": report.nodeid,
        "outcome": report.outcome,
        "category": category,
        "longrepr": cut(longrepr_text(report)) if report.failed else None,
        "message": cut(crash_message(report)),
    }
    if report.skipped and isinstance(report.longrepr, tuple):
        message["message"] = cut(report.longrepr[2])
        message["skip_at"] = skip_place(report, config)
    return message


# What pytest_report_teststatus answers for each phase of a plain passing
# test, when no plugin answers otherwise (shoal's PhaseReport::plain_pass
# rebuilds the same facts).
_PLAIN_STATUS = {"setup": ("", "", ""), "call": ("passed", ".", "PASSED"), "teardown": ("", "", "")}


def finished_reports(phases, worker):
    """The ``finished`` message's ``reports``, from each phase's report and
    the status ``pytest_report_teststatus`` gave it. A test whose setup,
    call and teardown all passed plainly (``TestReport``s with the usual
    status for their phase, nothing else to show: most tests of most
    suites) is sent as their three durations, which shoal reads as the
    three reports they stand for; otherwise each phase is its
    :func:`report_facts`."""
    passes_shown = "P" in worker.report_chars
    if len(phases) == 3 and all(_passed_plainly(report, status, passes_shown) for report, status in phases):
        if tuple(report.when for report, _ in phases) == ("setup", "call", "teardown"):
            return [report.duration for report, _ in phases]
    # The terminal prints a passed teardown's output after the test's
    # failure, and under PASSES and XPASSES.
    teardown_shown = passes_shown or "X" in worker.report_chars or any(report.failed for report, _ in phases)
    return [report_facts(report, status, worker, teardown_shown) for report, status in phases]


def _passed_plainly(report, status, passes_shown):
    return (
        report.passed
        and type(report) is pytest.TestReport
        and not hasattr(report, "wasxfail")
        and status == _PLAIN_STATUS.get(report.when)
        and not (passes_shown and report.sections)
    )


def is_subtest(report):
    """A subtest's report (pytest-subtests', pytest 9's own): part of its
    test's call, not a phase of its own."""
    return type(report).__name__ == "SubtestReport"


def report_facts(report, status, worker, teardown_shown):
    """One phase of a test (setup, call, teardown), as the terminal shows it,
    given what ``pytest_report_teststatus`` answered for it. A passing
    call's captured output goes too when ``-r P`` (passes) or ``-r X``
    (xpasses) shows it, and a passing teardown's own output (its sections
    titled ``teardown``) when ``teardown_shown``."""
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
    if is_subtest(report):
        describe = getattr(report, "_sub_test_description", None)
        facts["subtest"] = cut(describe() if callable(describe) else "")
    if hasattr(report, "wasxfail"):
        facts["wasxfail"] = cut(report.wasxfail)
    if report.failed:
        facts["head_line"] = report.head_line
        facts["longrepr"] = cut(longrepr_text(report))
        facts["message"] = cut(crash_message(report))
        facts["sections"] = [[title, cut(content)] for title, content in report.sections]
        if worker.config.option.tbstyle == "line":
            facts["crash_text"] = cut(crash_line(report))
        crash = getattr(report.longrepr, "reprcrash", None)
        if crash is not None and getattr(crash, "path", None):
            facts["crash_path"] = str(crash.path)
            facts["crash_line"] = crash.lineno
    elif report.skipped and isinstance(report.longrepr, tuple):
        facts["message"] = cut(report.longrepr[2])
        facts["skip_at"] = skip_place(report, worker.config)
    elif report.passed and report.when == "call" and report.sections:
        if ("X" if hasattr(report, "wasxfail") else "P") in worker.report_chars:
            facts["head_line"] = report.head_line
            facts["sections"] = [[title, cut(content)] for title, content in report.sections]
    elif report.passed and report.when == "teardown" and teardown_shown:
        sections = [[title, cut(content)] for title, content in report.sections if "teardown" in title]
        if sections:
            facts["sections"] = sections
    return facts


def skip_place(report, config):
    """Where a skip happened, as ``-rs`` shows it: ``[path, line]``, the path
    relative to the invocation directory and the line 1-based; the line is
    null for a ``skip`` marker on the test (not a module's ``pytestmark``),
    whose skips pytest folds by file alone (``_folded_skips``)."""
    from _pytest.pathlib import bestrelpath

    path, line, _reason = report.longrepr
    keywords = getattr(report, "keywords", {})
    if report.when == "setup" and "skip" in keywords and "pytestmark" not in keywords:
        line = None
    return [bestrelpath(config.invocation_params.dir, Path(path)), line]


def warning_message(recorded, when, nodeid):
    """A warning pytest recorded, formatted as its summary shows it."""
    import warnings

    text = warnings.formatwarning(
        recorded.message,
        recorded.category,
        recorded.filename,
        recorded.lineno,
        recorded.line,
    )
    return {"type": "warning", "when": when, "nodeid": nodeid, "text": cut(text)}


def longrepr_text(report):
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


def crash_line(report):
    """A failure as one line, as ``--tb=line`` shows it (pytest's
    ``_getcrashline``)."""
    try:
        return str(report.longrepr.reprcrash)
    except AttributeError:
        try:
            return str(report.longrepr)[:50]
        except AttributeError:
            return ""


def crash_message(report):
    """The message pytest's short test summary shows after the node id."""
    longrepr = report.longrepr
    if isinstance(longrepr, str):
        return longrepr if _STRING_LONGREPR_IS_MESSAGE else None
    crash = getattr(longrepr, "reprcrash", None)
    return getattr(crash, "message", None)
