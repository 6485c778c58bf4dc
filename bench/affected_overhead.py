#!/usr/bin/env python3
"""What `shoal run --affected` costs when everything runs, and what it saves when nothing changed.

    python3 bench/affected_overhead.py --shoal target/release/shoal \\
        --python .venv-test/py3.11-pytest-9.2.0/bin/python \\
        --suite /tmp/affected/suites/many [--repeat 3] [--workers 2]

The suite is a directory with a `selected.txt` (the reference suites from
../shared/bench/gen_suites.py); it is copied to a temporary directory, so the
store written at its rootdir stays out of the original. Each figure is the
median of `--repeat` runs:

- `plain`: `shoal run -n W`, CPU seconds of shoal and its workers (user +
  system, from the children's rusage: a shared machine's noise moves wall
  time far more than CPU time), and wall seconds;
- `recording`: `shoal run -n W --affected --force`: every test runs and is
  recorded; `overhead` is its CPU over plain's, the recorder's cost (the
  issue's target: at most 15%);
- `cached`: `shoal run -n W --affected` with nothing changed: tests run
  (the `no_cache` and failing ones only) and wall seconds;
- `store`: the size of `.shoal_affected.json` and the number of tests in it.

CPU time is counted for every descendant: this process is their subreaper,
so a worker that outlives shoal is still waited for and counted.

Standard library only; Linux.
"""

import argparse
import ctypes
import json
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time

PR_SET_CHILD_SUBREAPER = 36


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def become_subreaper():
    """Descendants orphaned by their parent's exit (a worker outliving
    shoal) are reparented here rather than to init, so their CPU time is
    counted once they are reaped."""
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def reap_orphans():
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def run(argv, cwd):
    """(CPU seconds of the process tree, wall seconds, output)."""
    before, started = children_cpu(), time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - started
    reap_orphans()
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout[-2000:]}")
    return children_cpu() - before, wall, done.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shoal", required=True)
    parser.add_argument("--python", required=True)
    parser.add_argument("--suite", required=True)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    become_subreaper()
    with tempfile.TemporaryDirectory(prefix="shoal-affected-bench-") as directory:
        suite = os.path.join(directory, "suite")
        shutil.copytree(args.suite, suite)
        with open(os.path.join(suite, "selected.txt"), encoding="utf-8") as lines:
            paths = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        base = [os.path.abspath(args.shoal), "run", "--python", args.python, "-n", str(args.workers), "-q", *paths]
        figures = {"plain": [], "recording": [], "cached": []}
        for _ in range(args.repeat):
            figures["plain"].append(run(base, suite)[:2])
            figures["recording"].append(run([*base, "--affected", "--force"], suite)[:2])
            cpu, wall, output = run([*base, "--affected"], suite)
            figures["cached"].append((cpu, wall))
        closing = output.strip().splitlines()[-1]
        store = os.path.join(suite, ".shoal_affected.json")
        with open(store, encoding="utf-8") as file:
            tests = len(json.load(file)["tests"])
        size = os.path.getsize(store)
    medians = {name: (statistics.median(c for c, _ in runs), statistics.median(w for _, w in runs)) for name, runs in figures.items()}
    plain_cpu = medians["plain"][0]
    print(f"suite {args.suite}: {tests} tests in the store, -n {args.workers}, median of {args.repeat}")
    for name, (cpu, wall) in medians.items():
        each = " ".join(f"{c:.2f}" for c, _ in figures[name])
        print(f"  {name:<10} CPU {cpu:7.2f}s  wall {wall:6.2f}s  CPU vs plain {100 * (cpu / plain_cpu - 1):+6.1f}%  (runs: {each})")
    print(f"  store      {size / 1024:.1f} KiB ({size / max(tests, 1):.0f} bytes a test)")
    print(f"  cached run: {closing}")


if __name__ == "__main__":
    main()
