#!/usr/bin/env python3
"""CPU microseconds per test: what shoal spends on a test beyond what pytest does.

    python3 bench/per_test_cost.py --shoal target/release/shoal \\
        --python .venv-test/py3.11-pytest-9.2.0/bin/python \\
        --suite /tmp/suites/many [--old OLD/shoal] [--repeat 3]

The suite is any directory with a `selected.txt` (the reference suites from
../shared/bench/gen_suites.py). CPU time, not wall time, so the figures hold
on a shared, noisy machine. Each figure is the median of `--repeat` runs:

- `pytest collect`: `python -m pytest --collect-only -q` (user + system CPU
  of the process), the cost of importing and collecting, paid once by any
  runner;
- `pytest run`: sequential `python -m pytest -q`, less the collection: what
  pytest itself spends per test;
- `shoal worker`: `shoal run -n 1 --mode MODE` (one worker; `--mode fork`,
  the default, as users run it: the zygote collects and the worker runs;
  `--mode spawn`: the worker collects everything itself), the CPU of
  shoal's child processes (zygote, worker, the interpreter probes) less the
  collection: pytest's per-test work plus the worker plugin's. A first,
  unmeasured run gives shoal its history (a fork-mode worker batches the
  results of tests history says are quick);
- `shoal main`: the shoal process itself (sampled from /proc until it exits):
  parsing, scheduling, reporting.

`worker - pytest` is the plugin's cost per test; `main` is shoal's. Standard
library only; Linux.
"""

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
import time

TICKS = os.sysconf("SC_CLK_TCK")


def selection(suite):
    with open(os.path.join(suite, "selected.txt"), encoding="utf-8") as lines:
        return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv, cwd):
    """(CPU seconds of the process tree, CPU seconds of the main process alone, stdout)."""
    before = children_cpu()
    # Output to a file: a pipe nobody reads while polling would fill and block the run.
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True)
    main = 0.0
    while process.poll() is None:
        try:
            with open(f"/proc/{process.pid}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            main = (int(fields[11]) + int(fields[12])) / TICKS
        except (OSError, IndexError, ValueError):
            pass
        time.sleep(0.02)
    log.seek(0)
    output = log.read()
    log.close()
    if process.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(argv)} exited {process.returncode}:\n{output[-2000:]}")
    return children_cpu() - before, main, output


def test_count(output):
    for line in reversed(output.splitlines()):
        words = line.replace("=", " ").split()
        if "passed" in words or "passed," in words:
            return sum(int(words[i - 1]) for i, word in enumerate(words) if word.rstrip(",") in {"passed", "failed", "skipped"})
    raise SystemExit(f"no closing line in:\n{output[-2000:]}")


def measure(args, shoal):
    paths = selection(args.suite)
    pytest = [args.python, "-m", "pytest", "-q"]
    shoal_run = [shoal, "run", "-n", "1", "--mode", args.mode, "--python", args.python, "-q", *paths]
    collect, run, worker, main = [], [], [], []
    count = None
    timed(shoal_run, args.suite)
    for _ in range(args.repeat):
        collect.append(timed(pytest + ["--collect-only", *paths], args.suite)[0])
        total, _, output = timed(pytest + paths, args.suite)
        count = test_count(output)
        run.append(total)
        tree, own, output = timed(shoal_run, args.suite)
        worker.append(tree - own)
        main.append(own)
    collect_seconds = statistics.median(collect)
    per_test = lambda seconds: (statistics.median(seconds) - collect_seconds) / count * 1e6
    return {
        "tests": count,
        "pytest collect s": collect_seconds,
        "pytest µs/test": per_test(run),
        "shoal worker µs/test": per_test(worker),
        "shoal main µs/test": statistics.median(main) / count * 1e6,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shoal", required=True)
    parser.add_argument("--old", help="another shoal binary to compare (before/after)")
    parser.add_argument("--python", required=True, help="interpreter with pytest")
    parser.add_argument("--suite", required=True, help="a directory with selected.txt")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mode", choices=("fork", "spawn"), default="fork", help="shoal's worker mode")
    args = parser.parse_args()
    # The runs start in the suite's directory.
    args.python = os.path.abspath(args.python) if os.sep in args.python else args.python
    args.shoal = os.path.abspath(args.shoal)
    args.old = os.path.abspath(args.old) if args.old else None
    binaries = [("old", args.old), ("new", args.shoal)] if args.old else [("shoal", args.shoal)]
    print(f"suite {args.suite}, {args.mode} mode, CPU microseconds per test, medians of {args.repeat}\n")
    print("| binary | tests | pytest µs/test | shoal worker µs/test | plugin µs/test | shoal main µs/test |")
    print("|---|---|---|---|---|---|")
    for name, binary in binaries:
        figures = measure(args, binary)
        plugin = figures["shoal worker µs/test"] - figures["pytest µs/test"]
        print(
            f"| {name} | {figures['tests']} | {figures['pytest µs/test']:.0f} | {figures['shoal worker µs/test']:.0f} "
            f"| {plugin:.0f} | {figures['shoal main µs/test']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
