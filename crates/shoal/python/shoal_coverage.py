"""Coverage under shoal: pytest-cov's options, measured per worker, reported once.

pytest-cov parses its options (``--cov``, ``--cov-report``, ...) in every
worker as usual, but its own controller stays off there: it would erase,
combine and report in each worker as if that worker ran the whole suite.
Instead this module, loaded by ``shoal_worker`` only when ``--cov`` is given:

- starts coverage.py where pytest-cov starts it (before any ``conftest.py`` is
  imported), in the process that collects, so what collection imports counts;
- in fork mode, saves what the collecting process measured just before it
  forks, so each worker's data file holds only its own share;
- saves each worker's data after every test (the safe points), so a worker
  that is killed loses at most the test it was running;
- after the run, run as ``python -m shoal_coverage REQUEST.json``, combines
  the workers' files into the configured data file (``.coverage``) and writes
  the reports with pytest-cov's own code, so they are the ones ``pytest --cov``
  writes, in the same places. It prints one JSON object of facts (the report
  text, the total, whether ``--cov-fail-under`` was missed) for shoal.
"""

import argparse
import io
import json
import os
import sys

import pytest


class Measurement:
    """One process's coverage. It is registered under pytest-cov's plugin
    name, ``_cov``, so pytest-cov's ``cov`` fixture finds it, and it honours
    the ``no_cover`` marker and fixture as pytest-cov does."""

    def __init__(self, options, data_directory, omit_directory):
        import coverage

        source = _prepare_cov_source(options.cov_source)
        # What the report after the run needs, sent to shoal in `hello`.
        self.report_options = {
            "cov_source": source,
            "cov_report": options.cov_report,
            "cov_config": options.cov_config,
            "cov_branch": options.cov_branch,
            "cov_append": options.cov_append,
            "cov_precision": options.cov_precision,
            "cov_fail_under": options.cov_fail_under,
            "no_cov_on_fail": options.no_cov_on_fail,
        }
        self.cov = coverage.Coverage(
            source=source,
            branch=options.cov_branch,
            config_file=options.cov_config,
            data_file=os.path.join(data_directory, "worker"),
            data_suffix=True,
        )
        # A worker's share need not import every measured module: the
        # combined report warns about those, not each worker (pytest-cov's
        # xdist workers do the same).
        self.cov._warn_unimported_source = False
        self.cov._warn_no_data = False
        # shoal's own plugin files are not the user's code.
        omit = list(self.cov.get_option("run:omit") or [])
        self.cov.set_option("run:omit", [*omit, os.path.join(omit_directory, "*")])
        # What pytest-cov's `cov` fixture reads: plugin.cov_controller.cov.
        self.cov_controller = self
        self.cov.start()

    def save(self):
        """Writes what was measured since the last save to this process's
        data file (a new file after a fork)."""
        self.cov.save()

    def finish(self):
        self.cov.stop()
        self.cov.save()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        paused = item.get_closest_marker("no_cover") or "no_cover" in getattr(item, "fixturenames", ())
        if paused:
            self.cov.stop()
        try:
            yield
        finally:
            if paused:
                self.cov.start()


class TestContexts:
    """``--cov-context=test``: each phase of each test is its own dynamic
    context, named as pytest-cov names it."""

    def __init__(self, cov):
        self.cov = cov

    def pytest_runtest_setup(self, item):
        self.cov.switch_context(f"{item.nodeid}|setup")

    def pytest_runtest_call(self, item):
        self.cov.switch_context(f"{item.nodeid}|run")

    def pytest_runtest_teardown(self, item):
        self.cov.switch_context(f"{item.nodeid}|teardown")


def start(early_config, data_directory, omit_directory):
    """Starts measuring if ``--cov`` was given (and not ``--no-cov``).

    Returns the measurement, or None. pytest-cov then sees no sources and
    starts nothing of its own in this process.
    """
    namespace = early_config.known_args_namespace
    if not getattr(namespace, "cov_source", None) or getattr(namespace, "no_cov", False):
        return None
    measurement = Measurement(namespace, data_directory, omit_directory)
    namespace.cov_source = []
    early_config.pluginmanager.register(measurement, "_cov")
    if namespace.cov_context == "test":
        early_config.pluginmanager.register(TestContexts(measurement.cov), "_cov_contexts")
    return measurement


def _prepare_cov_source(cov_source):
    """pytest-cov's rule: a bare ``--cov`` anywhere means no source filter."""
    if cov_source is None:
        return None
    return None if True in cov_source else [path for path in cov_source if path is not True]


# The report, after the run ----------------------------------------------------


def report(request):
    """Combines the workers' data into the configured data file and, when
    ``request["report"]`` is true, writes pytest-cov's reports.

    ``request`` also holds the options the workers reported and the
    directory of their data files. Returns the facts shoal prints and acts on.
    """
    import coverage
    from coverage.misc import CoverageException
    from coverage.results import display_covered, should_fail_under
    from pytest_cov import engine

    options = argparse.Namespace(**request["options"])
    cov = coverage.Coverage(source=options.cov_source, branch=options.cov_branch, config_file=options.cov_config)
    if options.cov_append:
        cov.load()
    else:
        cov.erase()
    directory = request["data_directory"]
    files = sorted(os.path.join(directory, name) for name in os.listdir(directory))
    if files:
        cov.combine(data_paths=files)
    cov.save()

    # What pytest-cov's plugin does with its options before reporting.
    if not options.cov_report:
        options.cov_report = {"term": None}
    elif len(options.cov_report) == 1 and "" in options.cov_report:
        options.cov_report = {}
    if options.cov_fail_under is None:
        options.cov_fail_under = cov.config.fail_under
    if options.cov_precision is None:
        options.cov_precision = cov.config.precision
    facts = {"text": "", "warning": None, "total": None, "fail_under": None, "error": None, "fail_under_missed": False}
    if not request["report"] or not (options.cov_report or options.cov_fail_under):
        return facts

    controller = engine.CovController(options, None, None)
    controller.cov = cov
    controller.node_descs.add(controller.get_node_desc(sys.platform, sys.version_info))
    stream = io.StringIO()
    try:
        total = controller.summary(stream)
    except CoverageException as error:
        facts["warning"] = f"Failed to generate report: {error}"
        total = 0
    facts["text"] = stream.getvalue()
    facts["total"] = total
    fail_under = options.cov_fail_under
    if fail_under:
        precision = options.cov_precision
        missed = should_fail_under(total, fail_under, precision)
        facts["fail_under_missed"] = missed
        facts["fail_under"] = (
            f"{'FAIL ' if missed else ''}Required test coverage of {fail_under}% "
            f"{'not reached' if missed else 'reached'}. Total coverage: {total:.2f}%"
        )
        if missed:
            facts["error"] = (
                f"Coverage failure: total of {display_covered(total, precision)} "
                f"is less than fail-under={fail_under:.{precision}f}"
            )
    return facts


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as request_file:
        result = report(json.load(request_file))
    sys.stdout.write(json.dumps(result))
