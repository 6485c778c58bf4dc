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

The mechanism is the cheapest reliable one. On Python 3.12+,
``sys.monitoring``'s PY_START event through two tools: a global one finds
each code object at its first call in the process and turns it off there
for good (``DISABLE``; pytest's own code and libraries then never call back
again); a project code object gets the second tool's PY_START as a local
event, which fires at its first call in a test, is turned off there, and is
re-armed (that code object alone) before the next test. A test costs one
callback per project function it runs, not one per call, and nothing for
code outside the project. ``sys.monitoring.restart_events()`` is never
called: it would re-arm every code object, pytest's included.

Before 3.12 there is no per-code-object event: a global trace function that
returns no local tracer (one callback per Python call, no line events), or,
when a tracer is already set (coverage.py's), a profile function. It is on
from the import of this module through collection, then only while a
test's protocol runs.
"""

import json
import os
import sys
import threading

_EXCLUDED_PARTS = (os.sep + "site-packages" + os.sep, os.sep + "dist-packages" + os.sep)

# Code objects run since recording started, by id() (equal code objects,
# the same function at the same line of two files, are distinct blocks).
# Before the rootdir is known every code object goes in; the recorder keeps
# the project's and records into the same dict.
_ran = {}


def _record_early():
    """Starts recording every code object run from now on. Returns the two
    sys.monitoring tool ids (3.12+), or the trace function (before 3.12, or
    when fewer than two tools are free)."""
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is not None:
        free = [tool for tool in (3, 4, 2, 5) if monitoring.get_tool(tool) is None]
        if len(free) >= 2:
            first_call = free[0]
            disable = monitoring.DISABLE

            def started(code, _offset):
                _ran[id(code)] = code
                return disable

            monitoring.use_tool_id(first_call, "shoal-affected")
            monitoring.use_tool_id(free[1], "shoal-affected-test")
            monitoring.register_callback(first_call, monitoring.events.PY_START, started)
            monitoring.set_events(first_call, monitoring.events.PY_START)
            return tuple(free[:2])

    def traced(frame, _event, _arg):
        code = frame.f_code
        _ran[id(code)] = code

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
        # Per code object, (the code object, kept alive so its id stays
        # its own; its (file, first line, name) if it is project code,
        # else None): worked out once per code object.
        self.blocks = {}
        # The JSON list of blocks per set of code objects' ids.
        self.encoded = {}
        self.relative_paths = {}
        self.pid = None
        self.out = None
        # 3.12+: re-arms the given code objects for the next test.
        self.rearm = None
        # Before 3.12: turns the trace function on (True) or off (False).
        self.trace = None
        # Project files known imported in this process, and how many
        # modules sys.modules held when last looked at.
        self.imported = set()
        self.modules_seen = 0
        # Project code run since the last test began (3.12+: each turned
        # off after it ran; before 3.12: everything called, filtered at the
        # test's end). What ran before the rootdir was known is kept if it
        # is the project's.
        self.ran = _ran
        for key, code in list(_ran.items()):
            if self.block(code) is None:
                del _ran[key]
        if isinstance(_EARLY, tuple):
            self._monitor(*_EARLY)
        else:
            self._trace()
            self.trace(True)

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

    def block(self, code):
        """A code object's (file, first line, name) if it is project code."""
        known = self.blocks.get(id(code))
        if known is None:
            relative = self.relative(code.co_filename)
            known = (code, None if relative is None else (relative, code.co_firstlineno, code.co_name))
            self.blocks[id(code)] = known
        return known[1]

    def begin(self):
        """A test's protocol is about to run."""
        if self.pid != os.getpid():
            self._open()
        ran = self.ran
        # What ran since the last test began (that test, and anything
        # between tests) fires again in this one. Only those are removed:
        # one added meanwhile by another thread stays, to be re-armed next.
        codes = [ran.pop(key) for key in list(ran)]
        if self.rearm is not None:
            self.rearm(codes)
        else:
            self.trace(True)

    def end(self, nodeid):
        """The test's protocol ended: its line."""
        if self.trace is not None:
            self.trace(False)
        blocks = self._encoded()
        self.out.write('{"nodeid": ' + json.dumps(nodeid) + ', "blocks": ' + blocks + "}\n")
        if len(sys.modules) != self.modules_seen:
            # A module first imported by this test ran its module-level
            # code (and what it called) only here: later tests of this
            # worker use it without running it, so it counts as imported
            # for every test, with all this test ran (what the import ran
            # is not told apart: more tests run, none is missed).
            self._write_imported(blocks, always=False)
        self.out.flush()

    def _encoded(self):
        """The project code objects in ``ran`` as a JSON list of ``[path,
        line, name]``; tests that ran the same code objects (a
        parametrized test's cases, mostly) share one."""
        codes = dict(self.ran)
        ids = frozenset(codes)
        blocks = self.encoded.get(ids)
        if blocks is None:
            found = {self.block(code) for code in codes.values()}
            found.discard(None)
            blocks = self.encoded[ids] = json.dumps(sorted(found))
        return blocks

    def _open(self):
        """First test in this process (a forked child or a spawned worker):
        what ran before it (collection, imports) counts for every test."""
        self.pid = os.getpid()
        self.out = open(os.path.join(self.directory, f"{self.pid}.jsonl"), "a", encoding="utf-8")
        self.imported = set()
        self._write_imported(self._encoded(), always=True)

    def _write_imported(self, blocks, always):
        """The project files imported in this process not yet written, with
        ``blocks`` (a JSON list); nothing when no file is new, unless
        ``always``."""
        modules = list(sys.modules.values())
        self.modules_seen = len(modules)
        imported = set()
        for module in modules:
            relative = self.relative(getattr(module, "__file__", None) or "")
            if relative is not None and relative not in self.imported:
                imported.add(relative)
        if imported or always:
            self.imported.update(imported)
            self.out.write('{"imported": ' + json.dumps(sorted(imported)) + ', "blocks": ' + blocks + "}\n")

    def _monitor(self, first_call, in_test):
        """3.12+: the two sys.monitoring tools, taken over from the early
        recording (its global tool)."""
        monitoring = sys.monitoring
        disable, py_start = monitoring.DISABLE, monitoring.events.PY_START
        set_local_events = monitoring.set_local_events
        block, ran = self.block, self.ran

        def first_called(code, _offset):
            # Each code object's first call in this process: project code
            # is recorded and will fire through `in_test` from now on;
            # any code is turned off here for good.
            if block(code) is not None:
                ran[id(code)] = code
            return disable

        def called_in_test(code, _offset):
            # A project code object's first call since it was re-armed.
            ran[id(code)] = code
            return disable

        def rearm(codes):
            for code in codes:
                # Off, then on: setting the events a code object already
                # has is a no-op, and would not undo the DISABLE.
                set_local_events(in_test, code, 0)
                set_local_events(in_test, code, py_start)

        monitoring.register_callback(first_call, py_start, first_called)
        monitoring.register_callback(in_test, py_start, called_in_test)
        self.rearm = rearm

    def _trace(self):
        """Before 3.12: a trace (or profile) function, turned on and off by
        ``self.trace``."""
        ran = self.ran

        def traced(frame, _event, _arg):
            code = frame.f_code
            ran[id(code)] = code

        def profiled(frame, event, _arg):
            if event == "call":
                code = frame.f_code
                ran[id(code)] = code

        # The early trace function is replaced; a tracer set since
        # (coverage.py's, in threads too) is kept, and a profile function
        # records.
        if sys.gettrace() in (None, _EARLY):
            function, install, install_in_threads = traced, sys.settrace, threading.settrace
        else:
            function, install, install_in_threads = profiled, sys.setprofile, threading.setprofile
        # Threads a test starts are traced whenever they run.
        install_in_threads(function)

        def trace(on):
            install(function if on else None)

        self.trace = trace


def start(directory, rootdir, plugin_root):
    """The recorder for this run, taking over from the early recording."""
    return Recorder(directory, rootdir, plugin_root)
