"""shoal's pytest worker plugin: it runs what shoal tells it and reports facts.

shoal embeds this package in its binary, writes it to a cache directory and
starts each worker as ``python -m pytest -p shoal_worker ...``. Every decision
(which test runs where, outcomes, retries, reports) is made on the Rust side;
this plugin only collects, runs the node ids it is sent, and describes what
pytest did.

This module is the entry point pytest loads: it takes shoal's private
environment at import, registers the markers shoal honours, and in
``pytest_cmdline_main`` takes over the options shoal handles for the whole
run and registers the worker. The jobs live in the submodules:

- ``environment``: shoal's private variables, read once and removed;
- ``protocol``: the channel to shoal, the handshake and the messages;
- ``session``: the worker's plugin object, ``ShoalWorker``;
- ``collection``: collection hooks and split collection;
- ``running``: the run loop (commands, reruns, timeouts' stack dumps);
- ``zygote``: fork mode's collecting process and its forked workers;
- ``descriptors``: what the zygote holds open that workers would share;
- ``xdist_surface``: what pytest-xdist's workers show tests and plugins.
"""

import os

import pytest

# Every submodule is imported here, while the plugin's directory is still on
# sys.path (environment.take() removes it).
from . import collection, descriptors, environment, protocol, running, session, xdist_surface, zygote  # noqa: F401

PRIVATE = environment.take()

# The coverage measurement, when this process measures coverage.
_coverage = None


class _ForkHooks:
    """Hooks shoal calls in fork mode, for a project's own fork work (see
    README, *Fork mode*). A conftest.py implements them with
    ``@pytest.hookimpl(optionalhook=True)``, so plain pytest accepts them."""

    @pytest.hookspec
    def pytest_shoal_before_fork(self, config):
        """In the collecting process, once, before any worker is forked:
        close what workers must not share (a database connection), or
        shoal finds it open and runs in spawn mode."""

    @pytest.hookspec
    def pytest_shoal_after_fork(self, config):
        """In each forked worker, right after the fork and before its first
        test: reopen a connection, reseed a library."""


def pytest_addhooks(pluginmanager):
    pluginmanager.add_hookspecs(_ForkHooks)


def pytest_configure(config):
    """Registers the markers shoal honours, so --strict-markers accepts
    them, and xdist's fixtures when xdist is absent."""
    if PRIVATE.get("SHOAL_CHANNEL_FD") is None:
        return
    if not config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(xdist_surface.XdistFixtures(), "shoal_xdist_fixtures")
    known = {line.split("(")[0].split(":")[0].strip() for line in config.getini("markers")}
    ours = {
        "timeout": "timeout(seconds): stop the test after this many seconds (shoal)",
        "serial": "serial: run this test while nothing else runs (shoal)",
        "xdist_group": "xdist_group(name): run tests of a group on one worker, in order (shoal)",
        "shoal_group": "shoal_group(name): run tests of a group on one worker, in order (shoal)",
        "flaky": "flaky(reruns=N): rerun the test up to N times on a fresh worker (shoal)",
        "no_cache": "no_cache: always run this test under shoal run --affected (shoal)",
    }
    extra = PRIVATE.get("SHOAL_SERIAL_MARKERS", "")
    for name in filter(None, extra.split(",")):
        ours.setdefault(name, f"{name}: run this test while nothing else runs (shoal)")
    for name, line in ours.items():
        if name not in known:
            config.addinivalue_line("markers", line)


@pytest.hookimpl(hookwrapper=True)
def pytest_load_initial_conftests(early_config, parser, args):
    """Starts coverage where pytest-cov would, before any conftest.py is
    imported, and keeps pytest-cov's own controller out (see shoal_coverage)."""
    global _coverage
    directory = PRIVATE.get("SHOAL_COVERAGE_DIR")
    if PRIVATE.get("SHOAL_CHANNEL_FD") is not None and directory:
        import shoal_coverage

        _coverage = shoal_coverage.start(early_config, directory, environment.PLUGIN_ROOT)
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
    output = PRIVATE.get("SHOAL_CONTROLLER_OUTPUT")
    if output is not None:
        _no_parallel_layer(option)
        config.pluginmanager.register(
            xdist_surface.ControllerPass(output, int(os.environ.get("SHOAL_WORKER_COUNT", "1"))),
            "shoal_controller_pass",
        )
    fd = PRIVATE.get("SHOAL_CHANNEL_FD")
    if fd is not None:
        _start_worker(config, int(fd))
    yield


def _start_worker(config, fd):
    """Creates and registers the worker on channel ``fd``, with the options
    shoal handles for the whole run taken over."""
    option = config.option
    zygote_fd = PRIVATE.get("SHOAL_ZYGOTE_FD")
    worker = session.ShoalWorker(
        config,
        protocol.Channel(fd),
        maxfail=option.maxfail or 0,
        zygote_fd=int(zygote_fd) if zygote_fd else None,
        coverage=_coverage,
    )
    affected_directory = PRIVATE.get("SHOAL_AFFECTED_DIR")
    if affected_directory:
        import shoal_affected

        worker.affected = shoal_affected.start(affected_directory, str(config.rootpath), environment.PLUGIN_ROOT)
    if zygote_fd is None:
        xdist_surface.give_spawned_workerinput(config)
    _take_over_reports(worker, option)
    _take_over_plugins(worker, config)
    _no_parallel_layer(option)
    config.pluginmanager.register(worker, "shoal_worker_session")
    config.pluginmanager.register(collection.FileTimer(worker), "shoal_file_timer")


def _take_over_reports(worker, option):
    """max-fail and the reports written for the whole run: shoal's."""
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


def _take_over_plugins(worker, config):
    """What pytest-benchmark, pytest-rerunfailures and pytest-timeout would
    do in each worker and shoal does instead (or not at all)."""
    option = config.option
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


def _no_parallel_layer(option):
    """shoal is the parallel layer: no xdist inside a worker."""
    option.dist = "no"
    option.tx = []
    option.numprocesses = None
