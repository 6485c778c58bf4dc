"""Per-test outcomes of a pytest (or pytest-xdist) run, for bench/corpus/run.py.

Loaded with `-p corpus_report` (run.py copies this file into each project's venv);
writes one JSON object a line to $CORPUS_REPORT: every test report and every failed
collection, as the controlling process sees them. Under pytest-xdist only the
controller writes (it receives every worker's reports). No conftest, no fixture,
nothing a test can observe beyond an imported module.
"""
import json
import os

_file = None

# Read once, at import: a test may replace os.environ while it runs (pytest's
# own test_terminalwriter_dumb_term_no_markup does), and its reports must
# still be written.
_PATH = os.environ.get("CORPUS_REPORT")


def _write(obj):
    global _file
    if _file is None:
        _file = open(_PATH, "a", encoding="utf-8")
    _file.write(json.dumps(obj) + "\n")
    _file.flush()


def _active(config):
    return bool(_PATH) and not hasattr(config, "workerinput")


def _text(report):
    if report.passed or report.longrepr is None:
        return None
    try:
        text = report.longreprtext
    except Exception:  # noqa: BLE001 - a report we cannot render still has an outcome
        text = str(report.longrepr)
    return text[-6000:]


def pytest_configure(config):
    global _config
    _config = config


_config = None


def pytest_runtest_logreport(report):
    if _config is None or not _active(_config):
        return
    _write({
        "kind": "test",
        "nodeid": report.nodeid,
        "when": report.when,
        "outcome": report.outcome,
        "wasxfail": hasattr(report, "wasxfail"),
        # pytest >= 9's built-in subtests (and pytest-subtests) report each subtest too
        "subtest": type(report).__name__ == "SubtestReport",
        "text": _text(report),
    })


def pytest_collectreport(report):
    if _config is None or not _active(_config) or not report.failed:
        return
    _write({"kind": "collect", "nodeid": report.nodeid, "text": _text(report)})


def pytest_unconfigure(config):
    global _file
    if _file is not None and _active(config):
        _file.close()
        _file = None
