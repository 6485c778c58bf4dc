"""What each test executed, for ``shoal run --affected``: facts, no decisions.

Imported only when shoal asks for recording (``SHOAL_AFFECTED_DIR``); without
it a worker has no tracer and this module is never imported.

Each worker process appends to its own file in that directory (no lock is
shared between workers; shoal merges the files after the run), one JSON line
per test: ``{"nodeid": ..., "blocks": [[path, first_line, name], ...]}``, the
code objects of the project's own files (under the rootdir, outside
site-packages) that ran during the test's protocol (setup, call, teardown).
Lines ``{"imported": [...], "blocks": [...]}`` list the project files
imported in the worker (at collection, before its first test, or first by
some test) and the code objects run while they were: their module-level
code, and the functions it called (a registry filled at import, a
decorator's work), ran once, for every later test of the worker. Recording
starts when this module is imported, as the plugin loads, before any
conftest; code run before the rootdir is known is kept and filtered once it
is. A line cut short by a crash is ignored by shoal.

The mechanism is the cheapest reliable one: on Python 3.12+,
``sys.monitoring``'s PY_START event: code outside the project is turned off
at its first call, for good; project code at its second call within a test,
and re-armed for the next test (so a test costs about one callback per
project function it runs, not one per call); before 3.12, a global trace function that returns no
local tracer (one callback per Python call, no line events), or, when a
tracer is already set (coverage.py's), a profile function.
"""

import json
import os
import sys
import threading

_EXCLUDED_PARTS = (os.sep + "site-packages" + os.sep, os.sep + "dist-packages" + os.sep)

# Code objects run before the recorder starts (the rootdir unknown yet):
# every one, each once (turned off at its first call on 3.12+).
_early = set()


def _record_early():
    """Records every code object run from now on; returns the monitoring
    tool id or the trace function used, for the recorder to take over."""
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is not None:
        tool = next((tool for tool in (3, 4, 2, 5) if monitoring.get_tool(tool) is None), None)
        if tool is not None:
            disable = monitoring.DISABLE

            def started(code, _offset):
                _early.add(code)
                return disable

            monitoring.use_tool_id(tool, "shoal-affected")
            monitoring.register_callback(tool, monitoring.events.PY_START, started)
            monitoring.set_events(tool, monitoring.events.PY_START)
        return tool

    def traced(frame, _event, _arg):
        _early.add(frame.f_code)

    sys.settrace(traced)
    threading.settrace(traced)
    return traced


_EARLY = _record_early()


class Recorder:
    """Records, per test, the project code objects it ran."""

    def __init__(self, directory, rootdir, plugin_root):
        self.directory = directory
        self.rootdir = os.path.join(os.path.realpath(rootdir), "")
        self.plugin_root = os.path.join(os.path.realpath(plugin_root), "")
        self.seen = set()
        self.relative_paths = {}
        self.pid = None
        self.out = None
        # Project files known imported in this process, and how many
        # modules sys.modules held when last looked at.
        self.imported = set()
        self.modules_seen = 0
        self._install()
        self.seen.update(code for code in _early if self.relative(code.co_filename) is not None)
        _early.clear()
        # Some project code was turned off during the current test (or, at
        # first, early: with sys.monitoring everything was, at its first call).
        self.rearm = getattr(sys, "monitoring", None) is not None and _EARLY is not None

    def relative(self, filename):
        """The rootdir-relative path of a project file, else None."""
        known = self.relative_paths.get(filename, False)
        if known is not False:
            return known
        relative = None
        if filename and not filename.startswith("<"):
            path = os.path.realpath(filename)
            if (
                path.startswith(self.rootdir)
                and not path.startswith(self.plugin_root)
                and not any(part in path for part in _EXCLUDED_PARTS)
            ):
                relative = os.path.relpath(path, self.rootdir).replace(os.sep, "/")
        self.relative_paths[filename] = relative
        return relative

    def begin(self):
        """A test's protocol is about to run."""
        if self.pid != os.getpid():
            self._open()
        self.seen.clear()
        if self.rearm:
            # Project code turned off during the last test fires again
            # (restart_events re-arms everything; the rest turns itself
            # off again at its first call).
            self.rearm = False
            sys.monitoring.restart_events()

    def end(self, nodeid):
        """The test's protocol ended: its line."""
        blocks = self._blocks()
        self.out.write(json.dumps({"nodeid": nodeid, "blocks": blocks}) + "\n")
        if len(sys.modules) != self.modules_seen:
            # A module first imported by this test ran its module-level
            # code (and what it called) only here: later tests of this
            # worker use it without running it, so it counts as imported
            # for every test, with all this test ran (what the import ran
            # is not told apart: more tests run, none is missed).
            self._write_imported(blocks, always=False)
        self.out.flush()

    def _blocks(self):
        """The project code objects in ``seen``, as ``[path, line, name]``."""
        blocks = set()
        for code in list(self.seen):
            relative = self.relative(code.co_filename)
            if relative is not None:
                blocks.add((relative, code.co_firstlineno, code.co_name))
        return sorted(blocks)

    def _open(self):
        """First test in this process (a forked child or a spawned worker):
        what ran before it (collection, imports) counts for every test."""
        self.pid = os.getpid()
        self.out = open(os.path.join(self.directory, f"{self.pid}.jsonl"), "a", encoding="utf-8")
        self.imported = set()
        self._write_imported(self._blocks(), always=True)

    def _write_imported(self, blocks, always):
        """The project files imported in this process not yet written, with
        ``blocks``; nothing when no file is new, unless ``always``."""
        modules = list(sys.modules.values())
        self.modules_seen = len(modules)
        imported = set()
        for module in modules:
            relative = self.relative(getattr(module, "__file__", None) or "")
            if relative is not None and relative not in self.imported:
                imported.add(relative)
        if imported or always:
            self.imported.update(imported)
            self.out.write(json.dumps({"imported": sorted(imported), "blocks": blocks}) + "\n")

    def _install(self):
        add = self.seen.add
        monitoring = getattr(sys, "monitoring", None)
        if monitoring is not None:
            # The tool recording early, taken over (none was free: nothing is recorded).
            tool = _EARLY
            if tool is not None:
                disable = monitoring.DISABLE
                paths, relative, seen = self.relative_paths, self.relative, self.seen

                def started(code, _offset):
                    # Code outside the project (pytest's own, libraries) is
                    # turned off for good: it is never recorded. Project
                    # code keeps firing until its second call in a test,
                    # then is turned off until the next test re-arms it.
                    if code in seen:
                        self.rearm = True
                        return disable
                    known = paths.get(code.co_filename, False)
                    if known is False:
                        known = relative(code.co_filename)
                    if known is None:
                        return disable
                    add(code)
                    return None

                monitoring.register_callback(tool, monitoring.events.PY_START, started)
                return

        def traced(frame, _event, _arg):
            add(frame.f_code)

        def profiled(frame, event, _arg):
            if event == "call":
                add(frame.f_code)

        # The early trace function is replaced; a tracer set since (coverage.py's) is kept.
        if sys.gettrace() in (None, _EARLY):
            sys.settrace(traced)
            threading.settrace(traced)
        else:
            sys.setprofile(profiled)
            threading.setprofile(profiled)


def start(directory, rootdir, plugin_root):
    """The recorder for this run, taking over from the early recording."""
    return Recorder(directory, rootdir, plugin_root)
