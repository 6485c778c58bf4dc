"""What pytest-xdist's workers show tests and plugins, shown by shoal's.

This module owns ``config.workerinput`` (built for each worker, with what
controller-side plugins add in ``pytest_configure_node``, see
:func:`workerinput`), the node and gateway objects that hook is given, the
``worker_id`` and ``testrun_uid`` fixtures when xdist is not installed,
spawn mode's controller pass (:class:`ControllerPass`), and a forked
worker's own ``--basetemp`` (:func:`repoint_basetemp`).
"""

import json
import os
import sys

import pytest

from .environment import PRIVATE


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


def workerinput(config, slot, count, configure_node):
    """xdist's ``config.workerinput`` for worker ``gw<slot>``; with
    ``configure_node``, what controller-side plugins add to it in
    ``pytest_configure_node`` too (called in the process that configured
    pytest as xdist's controller does: the zygote, or the controller pass)."""
    workerinput = {
        "workerid": f"gw{slot}",
        "workercount": count,
        "testrunuid": os.environ.get("PYTEST_XDIST_TESTRUNUID", ""),
        "mainargv": json.loads(PRIVATE.get("SHOAL_MAINARGV", "[]")),
    }
    hook = getattr(config.hook, "pytest_configure_node", None)
    if configure_node and hook is not None:
        hook(node=_WorkerNode(config, workerinput))
    return workerinput


def give_spawned_workerinput(config):
    """A spawned worker's ``config.workerinput``, before plugins configure,
    as xdist's workers have it: what the controller pass gave shoal for this
    worker, else built here without the controller-side hook."""
    given = PRIVATE.get("SHOAL_WORKERINPUT")
    config.workerinput = json.loads(given) if given else workerinput(
        config, int(os.environ["SHOAL_WORKER"]), int(os.environ["SHOAL_WORKER_COUNT"]), configure_node=False
    )
    config.workeroutput = {}


def repoint_basetemp(config, basetemp):
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


class XdistFixtures:
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


class ControllerPass:
    """Spawn mode's controller pass: pytest configured as xdist's controller
    (no ``workerinput``), so plugins say in ``pytest_configure_node`` what
    each worker needs; their answers go to the file shoal named, and the
    process ends before collecting anything."""

    def __init__(self, output, count):
        self.output = output
        self.count = count

    @pytest.hookimpl(trylast=True)
    def pytest_configure(self, config):
        inputs = [workerinput(config, slot, self.count, configure_node=True) for slot in range(self.count)]
        partial = f"{self.output}.partial"
        with open(partial, "w", encoding="utf-8") as file:
            json.dump(inputs, file, default=repr)
        os.replace(partial, self.output)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
