#!/usr/bin/env python3
"""How fast pytest itself can go on two cores: the floor for any runner.

    python3 bench/floor.py --python .venv-test/py3.11-pytest-9.2.0/bin/python \\
        --shoal target/release/shoal --suite /tmp/suites/tiny [--repeat 5]
    python3 bench/floor.py --python CORPUS/py3.11/packaging/venv/bin/python \\
        --shoal target/release/shoal --suite CORPUS/py3.11/packaging/src --paths tests

A parallel runner that runs pytest's test protocol (a drop-in) can at best
pay pytest's start-up once and divide the rest. This script measures, on
one suite, interleaved, medians of `--repeat` runs (wall seconds):

- `pytest`: sequential `python -m pytest -q PATHS`, with a probe plugin
  (one hook call per phase) that splits its wall time into start-up and
  collection (until the test loop starts), test time (the sum of the
  phases' durations, what pytest, pytest-split's `.test_durations` and
  shoal's "tests" figure count) and the rest: pytest's own work between
  phases (making and logging reports, its hooks), which no phase's
  duration holds. `wall / limit` is pytest's own distance from the
  one-worker limit `start-up and collection + test time`: a runner of
  pytest's protocol is no closer to its limit per test than pytest is;
- `pytest shares (files)`: `--workers` plain pytest processes at once,
  each given a share of the test files balanced by the time the
  sequential run measured for them (no runner at all: each imports and
  collects only its files);
- `pytest shares (tests)`: the same with each process collecting
  everything and keeping a contiguous share of the tests balanced by
  time (for a suite whose time is in one file);
- `shoal`: `shoal run -n WORKERS` (after one unmeasured run that gives it
  its history).

Standard library only; Linux. Each process's output is discarded.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

PROBE = '''
"""Writes what the run spent where (bench/floor.py), and keeps a share of the tests."""
import json, os, time

STARTED = float(os.environ["FLOOR_STARTED"])
KEEP = os.environ.get("FLOOR_KEEP")
state = {"loop": None, "tests": {}}


def pytest_collection_modifyitems(config, items):
    if KEEP:
        with open(KEEP) as fh:
            keep = set(json.load(fh))
        kept = [item for item in items if item.nodeid in keep]
        config.hook.pytest_deselected(items=[item for item in items if item.nodeid not in keep])
        items[:] = kept


def pytest_runtestloop(session):
    state["loop"] = time.time() - STARTED


def pytest_runtest_logreport(report):
    state["tests"][report.nodeid] = state["tests"].get(report.nodeid, 0.0) + report.duration


def pytest_unconfigure(config):
    out = os.environ.get("FLOOR_OUT")
    if out:
        with open(out, "w") as fh:
            json.dump({"wall": time.time() - STARTED, "loop": state["loop"], "tests": state["tests"]}, fh)
'''


def run_together(commands, env_of):
    """Wall seconds until every command has ended (they start together)."""
    started = time.time()
    processes = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env_of(index, started))
        for index, command in enumerate(commands)
    ]
    codes = [process.wait() for process in processes]
    if any(code not in (0, 1) for code in codes):
        sys.exit(f"floor.py: a run ended with exit status {codes}: {commands}")
    return time.time() - started


def balanced(weights, shares):
    """Names split into `shares` lists of about equal weight, heaviest first."""
    bins = [[0.0, []] for _ in range(shares)]
    for name, weight in sorted(weights.items(), key=lambda pair: -pair[1]):
        lightest = min(bins, key=lambda pair: pair[0])
        lightest[0] += weight
        lightest[1].append(name)
    return [names for _, names in bins]


def contiguous(nodeids, seconds, shares):
    """Node ids, in collection order, cut into `shares` runs of about equal time."""
    total = sum(seconds[nodeid] for nodeid in nodeids)
    cuts, so_far = [[] for _ in range(shares)], 0.0
    for nodeid in nodeids:
        index = min(int(so_far / total * shares), shares - 1) if total else 0
        cuts[index].append(nodeid)
        so_far += seconds[nodeid]
    return cuts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", required=True, help="the interpreter with pytest")
    parser.add_argument("--shoal", required=True, help="the shoal binary")
    parser.add_argument("--suite", required=True, help="the directory the runs start in")
    parser.add_argument("--paths", nargs="*", help="test paths (default: the suite's selected.txt)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    suite = os.path.abspath(options.suite)
    python, shoal = os.path.abspath(options.python), os.path.abspath(options.shoal)
    paths = options.paths or [
        line.strip() for line in open(os.path.join(suite, "selected.txt")) if line.strip() and not line.startswith("#")
    ]
    work = tempfile.mkdtemp(prefix="shoal-floor-")
    with open(os.path.join(work, "floor_probe.py"), "w") as fh:
        fh.write(PROBE)
    base_env = {key: value for key, value in os.environ.items() if key not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    base_env["PYTHONPATH"] = work + os.pathsep + base_env.get("PYTHONPATH", "")
    pytest = [python, "-m", "pytest", "-q", "-p", "floor_probe"]

    def env_of(keep=None, out=None):
        def make(index, started):
            env = dict(base_env, FLOOR_STARTED=repr(started))
            if keep:
                env["FLOOR_KEEP"] = keep[index]
            if out:
                env["FLOOR_OUT"] = out
            return env

        return make

    os.chdir(suite)
    probe_out = os.path.join(work, "sequential.json")
    run_together([pytest + paths], env_of(out=probe_out))  # warm-up: caches, and the times to balance by
    with open(probe_out) as fh:
        seconds = json.load(fh)["tests"]
    nodeids = list(seconds)
    by_file = {}
    for nodeid in nodeids:
        by_file[nodeid.split("::")[0]] = by_file.get(nodeid.split("::")[0], 0.0) + seconds[nodeid]
    file_shares = balanced(by_file, options.workers)
    keep_files = []
    for index, share in enumerate(contiguous(nodeids, seconds, options.workers)):
        keep_files.append(os.path.join(work, f"keep{index}.json"))
        with open(keep_files[-1], "w") as fh:
            json.dump(share, fh)
    shoal_run = [shoal, "run", "-n", str(options.workers), "--python", python, "-q", *paths]
    run_together([shoal_run], env_of())  # its history
    runs = {
        "pytest": ([pytest + paths], env_of(out=probe_out)),
        f"{options.workers} pytest processes (files)": ([pytest + share for share in file_shares], env_of()),
        f"{options.workers} pytest processes (tests)": ([pytest + paths] * options.workers, env_of(keep=keep_files)),
        f"shoal -n {options.workers}": ([shoal_run], env_of()),
    }
    walls, breakdowns = {name: [] for name in runs}, []
    for _ in range(options.repeat):
        for name, (commands, env) in runs.items():
            walls[name].append(run_together(commands, env))
            if name == "pytest":
                with open(probe_out) as fh:
                    probe = json.load(fh)
                breakdowns.append((probe["wall"], probe["loop"], sum(probe["tests"].values())))
    wall, loop, tests = (statistics.median(column) for column in zip(*breakdowns))
    print(f"suite {suite} ({len(nodeids)} tests), {options.workers} workers, medians of {options.repeat}\n")
    print(
        f"sequential pytest: wall {wall:.2f}s = start-up and collection {loop:.2f}s + test time {tests:.2f}s"
        f" + between phases {wall - loop - tests:.2f}s; wall / limit {wall / (loop + tests):.2f}\n"
    )
    print("| run | wall s | × pytest | runs |")
    print("|---|---:|---:|---|")
    sequential = statistics.median(walls["pytest"])
    for name, values in walls.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {median / sequential:.2f} | {' '.join(f'{v:.2f}' for v in values)} |")


if __name__ == "__main__":
    main()
