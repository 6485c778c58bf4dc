"""Collection: what a worker collects, and the facts it tells shoal about it.

This module owns the worker's collection hooks (announcing the collected
items with the markers shoal honours, collection errors, deselection) and
split collection: the zygote records each test file's collectors instead of
collecting them, and each forked child, or a worker sent tests of a file it
has not collected, collects just those files (``collect_files``). Split one
way, the zygote imports no test file (``_prime_sys_path`` puts their roots
on ``sys.path`` as importing them would have) and the children import their
share; split keeping the imports, the zygote imports every test module, in
collection order, and the children only build the items. A file whose tests
are too many for one worker is spread: several workers collect it, each
only its :class:`Part` of the tests. :class:`FileTimer` times each file's
import and collection, the history shoal decides the split and the shares by.
"""

import inspect
import sys
import time

import pytest

from . import protocol
from .environment import PRIVATE


class Collecting:
    """The collection side of :class:`~shoal_worker.session.ShoalWorker`
    (a base class of it, so these hooks are the one plugin's).

    It uses the worker's ``config``, ``channel``, ``session``, and keeps:
    ``split`` (whether the zygote records test files rather than import
    them), ``files`` (the recorded collectors by file node id: a module and
    its doctests share one), ``file_seconds`` (each file's import and
    collection time), ``items`` (the collected items by node id) and
    ``deselected`` (node ids, reported with the collection), and
    ``parts`` (the part and position of each item of a spread file, by node
    id) and ``part`` (the :class:`Part` being collected, if any).
    """

    @pytest.hookimpl(tryfirst=True)
    def pytest_make_collect_report(self, collector):
        """Split collection, in the zygote: a test file is recorded, not
        collected; its (empty) report lets collection walk on. Keeping the
        imports, a test module is imported first, where collecting it would
        have imported it; one that fails to import is collected here, which
        reports its error as pytest does."""
        if self.split and _is_test_file(collector):
            if self.keep_imports and isinstance(collector, pytest.Module) and not _import_now(collector):
                return None
            self.files.setdefault(collector.nodeid, []).append(collector)
            return pytest.CollectReport(collector.nodeid, "passed", None, [])
        return None

    def collect_files(self, nodeids, parts=()):
        """Imports and collects these test files (recorded by the zygote
        before forking), then these ``parts`` of spread files (``[node id,
        index, count, assigned]``), and returns their items, in order. A
        spread file's collectors are kept, for another part of it later."""
        items = []
        for nodeid in nodeids:
            for collector in self.files.pop(nodeid, ()):
                items.extend(self.session.genitems(collector))
        for nodeid, index, count, assigned in parts:
            self.part = Part(index, count, assigned)
            try:
                collected = [item for collector in self.files.get(nodeid, ()) for item in self.session.genitems(collector)]
            finally:
                part, self.part = self.part, None
            items.extend(part.keep(collected, self.parts))
        # pytest 8+ caches collection results for its own argument walk.
        if hasattr(self.session, "_collection_cache"):
            self.session._collection_cache = {}
        return items

    @pytest.hookimpl(hookwrapper=True)
    def pytest_generate_tests(self, metafunc):
        """Collecting a part of a spread file: once the function's
        parametrization is known (its ids need all of it), keeps only this
        part's calls, before pytest builds an item for each."""
        yield
        if self.part is not None:
            self.part.trim(metafunc)

    def collect_share(self, nodeids, parts=()):
        """A forked child's collection: its share of the test files (and
        parts of spread files), through pytest's own hooks (deselection
        included), reported as a whole collection is."""
        session, config = self.session, self.config
        self.start_collection_clock()
        items = self.collect_files(nodeids, parts)
        session.items = items
        config.hook.pytest_collection_modifyitems(session=session, config=config, items=items)
        session.testscollected = len(items)
        config.hook.pytest_collection_finish(session=session)

    def load_files(self, nodeids, parts=()):
        """Collects test files (and parts of spread files) shoal sends tests
        of, when this worker has not collected them yet."""
        if not nodeids and not parts:
            return
        items = self.collect_files(nodeids, parts)
        self.config.hook.pytest_collection_modifyitems(session=self.session, config=self.config, items=items)
        # The worker that collected these first reported their deselection.
        self.deselected = []
        self.items.update((item.nodeid, item) for item in items)
        # Plugins read the session's items when they set up (pytest-django
        # decides from them which test databases to create): they are the
        # items this worker can run.
        self.session.items.extend(items)
        self.session.testscollected = len(self.session.items)

    @pytest.hookimpl(trylast=True)
    def pytest_deselected(self, items):
        self.deselected.extend(item.nodeid for item in items)

    def pytest_collectreport(self, report):
        if report.passed:
            return
        self.channel.send(protocol.collect_report_message(report, self.config))

    def pytest_collection_finish(self, session):
        self._announce(session.items)
        divisible_seconds = self.divisible_seconds()
        self.items = {item.nodeid: item for item in session.items}
        if self.split and self._collect_here():
            return
        self.channel.send(
            {
                "type": "collection_finished",
                "deselected": self.deselected,
                "file_seconds": self.file_seconds,
                "import_seconds": self.import_seconds,
                "divisible_seconds": divisible_seconds,
            }
        )
        self.deselected = []
        self.file_seconds = {}

    def start_collection_clock(self):
        """Starts timing a collection (the whole, or a forked worker's
        share of the files) for :meth:`divisible_seconds`."""
        self.collection_started = time.perf_counter()
        self.undivided_seconds = 0.0

    def divisible_seconds(self):
        """Seconds of this collection so far that splitting it would divide
        among the workers without dividing the imports: all of it but the
        walk through directories and conftest files and the test modules'
        imports (see FileTimer), so building and announcing the items."""
        if self.collection_started is None:
            return 0.0
        return max(0.0, time.perf_counter() - self.collection_started - self.undivided_seconds)

    def _announce(self, items):
        """Sends the collected items, in chunks."""
        chunk = []
        # Items of one parent (a module, a class) share its facts
        # (_parent_facts).
        facts_of_parents = {}
        # Items of one test function share its file and line (_location).
        places = {}
        for item in items:
            chunk.append(_describe(item, facts_of_parents, places, self.parts))
            if len(chunk) >= protocol.COLLECTED_CHUNK:
                self.channel.send({"type": "collected", "items": chunk})
                chunk = []
        if chunk:
            self.channel.send({"type": "collected", "items": chunk})

    def _collect_here(self):
        """Split collection, in the zygote: tells shoal the test files and
        collects the ones it answers with here, before forking: none, or all
        of them (fewer files than workers). True when it collected them
        (which runs pytest_collection_finish again, which reports it all)."""
        same_name = _prime_sys_path(self.config, self.files, not self.keep_imports)
        self.channel.send({"type": "test_files", "nodeids": list(self.files), "same_name": same_name})
        here = (self.channel.receive() or {}).get("nodeids", ())
        if not here:
            return False
        self.split = False
        self.collect_share(here)
        return True


class Part:
    """One of ``count`` parts of a spread test file: the tests shoal
    ``assigned`` to part ``index`` (by node id, balanced by the tests'
    expected time), and of the tests it did not assign (new ones), those
    whose position in the file, in collection order, modulo ``count`` is
    ``index``. Every worker numbers the tests alike, so the parts are
    disjoint and together make the whole file.

    Parametrized functions are trimmed as their parametrization is made
    (:meth:`trim`), so the items of other parts are never built: building
    them is most of such a file's collection. Items made otherwise (a
    unittest class's, a plugin's) are numbered as they come out of
    collection (:meth:`keep`), after the functions' ones.
    """

    def __init__(self, index, count, assigned):
        self.index, self.count, self.assigned = index, count, assigned
        # Node id -> position in the whole file, for every test numbered.
        self.positions = {}

    def trim(self, metafunc):
        nodeid = metafunc.definition.nodeid
        calls = metafunc._calls
        if not calls:
            self._number(nodeid)
            return
        kept = []
        for call in calls:
            test = f"{nodeid}[{call.id}]"
            if self._is_mine(test, self._number(test)):
                kept.append(call)
        # With no call left pytest would build the function unparametrized:
        # one call (not this part's) stays, and its item is left out.
        metafunc._calls = kept or calls[:1]

    def keep(self, items, positions):
        """This part's items, in order; records their (part, position) in
        ``positions``."""
        mine = []
        for item in items:
            nodeid = item.nodeid
            position = self.positions.get(nodeid)
            if position is None:
                position = self._number(nodeid)
            if self._is_mine(nodeid, position):
                positions[nodeid] = (self.index, position)
                mine.append(item)
        return mine

    def _number(self, nodeid):
        """Gives the next position to this test, and returns it."""
        position = self.positions[nodeid] = len(self.positions)
        return position

    def _is_mine(self, nodeid, position):
        part = self.assigned.get(nodeid)
        return (position % self.count if part is None else part) == self.index


class FileTimer:
    """Times each test file's import and collection and, apart, each test
    module's import and the walk to the test files (history for split
    collection: whether to split, which way, and the workers' shares).
    Registered beside the worker plugin."""

    def __init__(self, worker):
        self.worker = worker
        # How many collectors' reports are being made (pytest 8 collects
        # the directories down to its arguments inside the session's).
        self.depth = 0

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self, session):
        self.worker.start_collection_clock()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_make_collect_report(self, collector):
        worker = self.worker
        outermost = self.depth == 0
        test_file = _is_test_file(collector)
        timed_import = None
        if test_file and isinstance(collector, pytest.Module):
            timed_import = _time_import(collector, worker, outermost)
        started = time.perf_counter()
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        seconds = time.perf_counter() - started
        if timed_import is not None and vars(collector).get("_getobj") is timed_import:
            del collector._getobj
        if test_file:
            if not worker.split:
                # A module and its doctests share a node id: one file, one cost.
                worker.file_seconds[collector.nodeid] = worker.file_seconds.get(collector.nodeid, 0.0) + seconds
        elif outermost and not _is_test_file(collector.getparent(pytest.File) or collector):
            # Session, directories, packages: their conftest files and
            # __init__ modules, collected once however collection is split.
            worker.undivided_seconds += seconds


def _time_import(module, worker, undivided):
    """Has the import of a test module (pytest's ``Module._getobj``, run on
    the first use of ``module.obj``) timed into ``worker.import_seconds``
    (and ``worker.undivided_seconds`` if ``undivided``), and returns the
    function standing in for ``_getobj`` (None when the module is imported
    already)."""
    if getattr(module, "_obj", None) is not None or "_getobj" in vars(module):
        return None
    own = module._getobj

    def timed_getobj():
        started = time.perf_counter()
        try:
            return own()
        finally:
            seconds = time.perf_counter() - started
            worker.import_seconds[module.nodeid] = worker.import_seconds.get(module.nodeid, 0.0) + seconds
            if undivided:
                worker.undivided_seconds += seconds

    module._getobj = timed_getobj
    return timed_getobj


def _import_now(module):
    """Split collection keeping the imports, in the zygote: imports a test
    module as collecting it would (``module.obj``). True when it imported;
    when it failed, collecting the module raises the same error again,
    without a second import (a failed import leaves nothing in
    ``sys.modules``, so pytest would run the module once more)."""
    try:
        module.obj
        return True
    except (KeyboardInterrupt, pytest.exit.Exception):
        raise
    except BaseException as error:  # pytest's skip and fail outcomes are BaseExceptions
        failure = error  # (`error` is unbound once the handler ends)

        def raise_again():
            raise failure

        module._getobj = raise_again
        return False


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


def _prime_sys_path(config, files, prime):
    """Split collection, in the zygote before forking: if ``prime``, puts the
    test modules' roots on ``sys.path`` as importing them in order would
    have (so a test importing a helper beside another test file finds it,
    as in sequential pytest; the zygote that imported them has). Returns
    groups of file indexes that import under one module name from different
    paths: one worker must import them in order, so pytest's "import file
    mismatch" error still shows."""
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
        if not prime:
            continue
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


# What shoal learns of each item ---------------------------------------------------


def _describe(item, facts_of_parents, places, parts):
    """An item as the ``collected`` message gives it. Its markers are read
    in one walk up its parents (the first of each name is the closest, as
    ``get_closest_marker`` finds it); ``facts_of_parents`` caches what its
    parent node tells of its items (:func:`_parent_facts`), ``places`` the file
    and line of each test function (see :func:`_location`). An item of a
    spread file has its part and its position in the whole file (from
    ``parts``)."""
    path, line, domain = _location(item, places)
    closest = {}
    for marker in item.iter_markers():
        closest.setdefault(marker.name, marker)
    group = closest.get("shoal_group")
    described = {
        "nodeid": item.nodeid,
        "path": path,
        "line": line,
        "domain": domain,
        "markers": sorted(closest),
        "timeout": _timeout_seconds(closest.get("timeout")),
        "group": _group_name(group if group is not None else closest.get("xdist_group")),
        "reruns": _reruns_count(closest.get("flaky")),
    }
    described.update(_parent_facts(item, facts_of_parents))
    part = parts.get(item.nodeid)
    if part is not None:
        described["part"], described["position"] = part
    return described


def _location(item, places):
    """``item.location``, as pytest computes it, with its costly part paid
    once per test function instead of once per item.

    For a ``pytest.Function``, pytest's location is the file and line of
    the function object (``getfslineno``: a ``stat`` of the file and path
    arithmetic, about 12 µs) and the item's ``getmodpath()``. The items of
    one parametrized function share the function, so its first item asks
    pytest and the others reuse that file and line with their own name:
    0.4 s less before the first test on a 30,000-item suite. The value is
    stored where pytest's cached property keeps it, so pytest and plugins
    read the same tuple. Other items (doctests, a plugin's, a class that
    changes ``reportinfo`` or ``location``) ask pytest.
    """
    if "location" in item.__dict__ or not _is_plain_function(type(item)):
        return item.location
    function = item.obj
    # A method's items each hold a method bound to their own instance.
    function = getattr(function, "__func__", function)
    known = places.get(id(function))
    if known is None:
        location = item.location
        # The function is kept so its id is not reused by another.
        places[id(function)] = (function, location[0], location[1])
        return location
    _, path, line = known
    location = item.__dict__["location"] = (path, line, item.getmodpath())
    return location


# Item classes whose location is pytest.Function's own: class -> bool.
_PLAIN_FUNCTION_TYPES = {}


def _is_plain_function(cls):
    plain = _PLAIN_FUNCTION_TYPES.get(cls)
    if plain is None:
        plain = _PLAIN_FUNCTION_TYPES[cls] = (
            issubclass(cls, pytest.Function)
            and cls.reportinfo is pytest.Function.reportinfo
            and inspect.getattr_static(cls, "location") is inspect.getattr_static(pytest.Item, "location")
        )
    return plain


def _parent_facts(item, facts_of_parents):
    """What an item's parent node tells of it, once per parent: the node id
    of the test file that collected it (``module``) and, under ``--lf``,
    what pytest's ``--lf`` does with it at collection (shoal does the same
    from these facts; see ``LFPluginCollWrapper``): it drops those of a
    file whose tests failed last time that did not fail, unless they are in
    a class (``file_child`` false) or their file was named on the command
    line (``file_named``, pytest's initial paths)."""
    parent = item.parent
    key = id(parent)
    if key not in facts_of_parents:
        file = item.getparent(pytest.File)
        facts = {"module": file.nodeid if file is not None else None}
        if PRIVATE.get("SHOAL_LAST_FAILED"):
            if isinstance(parent, pytest.File):
                facts["file_child"] = True
            if item.session.isinitpath(item.path):
                facts["file_named"] = True
        facts_of_parents[key] = facts
    return facts_of_parents[key]


def _timeout_seconds(marker):
    """Seconds from pytest-timeout's ``@pytest.mark.timeout(N)``, if any."""
    if marker is None:
        return None
    value = marker.kwargs.get("timeout", marker.args[0] if marker.args else None)
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _reruns_count(marker):
    """Reruns from pytest-rerunfailures' ``@pytest.mark.flaky(reruns=N)``."""
    if marker is None:
        return None
    value = marker.kwargs.get("reruns", marker.args[0] if marker.args else 1)
    try:
        return max(0, min(int(value), 254))
    except (TypeError, ValueError):
        return None


def _group_name(marker):
    """The test group from ``shoal_group(name)`` or else ``xdist_group(name)``.

    Read from the marker, never from the node id (pytest 9.2 changed node
    ids and broke xdist's own grouping that way).
    """
    if marker is None:
        return None
    value = marker.kwargs.get("name", marker.args[0] if marker.args else None)
    return str(value) if value is not None else None
