#!/usr/bin/env python3
"""Benchmark shoal against sequential pytest and pytest-xdist on the reference suites.

One command (from the repo root):

    python3 bench/compare.py

sets up bench/.venv (pytest==9.2.0, pytest-xdist==3.8.0), builds shoal
(`cargo build --release -p shoal`), generates the reference suites with
../shared/bench/gen_suites.py into bench/out/suites, times every runner on every
suite (interleaved round-robin, --repeat times) and prints a Markdown table.
Progress goes to stderr, the table to stdout. See bench/README.md for what the
columns mean.

`--mode memory` (or `--big N`) instead generates one synthetic suite of N trivial
tests and measures each runner's peak memory: the peak RSS of the runner's own
main process (VmHWM sampled from /proc) and the largest RSS of any process in
its tree (wait4 rusage, what `/usr/bin/time -v` would print).

Standard library only; Python >= 3.9; Linux (process groups, /proc).
"""
import argparse
import collections
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
DEFAULT_GEN = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "bench", "gen_suites.py"))
OUT_DIR = os.path.join(BENCH_DIR, "out")
VENV_DIR = os.path.join(BENCH_DIR, ".venv")
PINS = {"pytest": "9.2.0", "pytest-xdist": "3.8.0"}
ALL_SUITES = ["seed81", "tiny", "imports", "fixtures", "cpu"]
# Suites whose table rows get a "× bound" column by default: the generator's docstring
# gives an ideal wall time only for seed81 (max(sum of durations / N, longest test)).
DEFAULT_BOUND_SUITES = ["seed81"]
GRACE_SECONDS = 5.0  # SIGTERM -> SIGKILL grace when a run times out


class BenchError(Exception):
    """A problem the user can fix; printed without a traceback."""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Runners: one line each. `argv(ctx, n)` builds the command run from inside the
# suite directory; `sequential` runners are timed once per suite, not per worker count.


class Runner:
    def __init__(self, name, argv, sequential=False, needs=()):
        self.name = name
        self.argv = argv
        self.sequential = sequential
        self.needs = set(needs)  # "xdist" (plugin importable), "shoal" (binary)


RUNNERS = [
    Runner("pytest", lambda c, n: [c.python, "-m", "pytest", "-q", *c.paths, *c.extra], sequential=True),
    Runner("xdist", lambda c, n: [c.python, "-m", "pytest", "-q", "-n", str(n), *c.paths, *c.extra], needs=["xdist"]),
    Runner("xdist-worksteal", lambda c, n: [c.python, "-m", "pytest", "-q", "-n", str(n), "--dist", "worksteal", *c.paths, *c.extra], needs=["xdist"]),
    Runner("xdist-loadscope", lambda c, n: [c.python, "-m", "pytest", "-q", "-n", str(n), "--dist", "loadscope", *c.paths, *c.extra], needs=["xdist"]),
    Runner("shoal", lambda c, n: [*shoal_run(c, n), *shoal_extra(c)], needs=["shoal"]),
    Runner("shoal-fork", lambda c, n: [*shoal_run(c, n), "--mode", "fork", *shoal_extra(c)], needs=["shoal"]),
    Runner("shoal-spawn", lambda c, n: [*shoal_run(c, n), "--mode", "spawn", *shoal_extra(c)], needs=["shoal"]),
    Runner("shoal-full", lambda c, n: [*shoal_run(c, n), "--collect", "full", *shoal_extra(c)], needs=["shoal"]),
    Runner("shoal-split", lambda c, n: [*shoal_run(c, n), "--collect", "split", *shoal_extra(c)], needs=["shoal"]),
    Runner("shoal-items", lambda c, n: [*shoal_run(c, n), "--collect", "items", *shoal_extra(c)], needs=["shoal"]),
]
RUNNERS_BY_NAME = {r.name: r for r in RUNNERS}

# shoal writes its JSON report here (in the suite directory), so the table can
# show shoal's own CPU time apart from its workers'.
SHOAL_REPORT = ".shoal-bench-report.json"


def shoal_run(c, n):
    return [c.shoal, "run", "--select", c.select, "-n", str(n), "--python", c.python, "-q",
            "--json-report", SHOAL_REPORT]


def shoal_extra(c):
    """--extra-args for shoal: after `--`, so they reach pytest unchanged."""
    return ["--", *c.extra] if c.extra else []


def shoal_own_cpu(sdir):
    """shoal's own CPU seconds from the report of the run that just ended, if any."""
    path = os.path.join(sdir, SHOAL_REPORT)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)["run"].get("shoal_cpu_seconds")
    except (OSError, ValueError, KeyError):
        return None
    finally:
        if os.path.exists(path):
            os.remove(path)


class Ctx:
    """What a runner's argv builder may use."""

    def __init__(self, python, shoal, paths, select="selected.txt", extra=()):
        self.python = python
        self.shoal = shoal
        self.paths = paths
        self.select = select
        self.extra = list(extra)  # --extra-args, given to every runner's pytest


# ---------------------------------------------------------------------------
# Parsing


def read_selection(path):
    """Entries of a selection file: one a line; blank lines and '#' comment lines skipped."""
    entries = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                entries.append(line)
    return entries


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
SUMMARY_BANNER = re.compile(r"^=+ (.*) =+$")
SUMMARY_BODY = re.compile(r"^(.*?),? in [0-9.]+s\b")
SUMMARY_PART = re.compile(r"^(\d+) ([a-z_]+(?: [a-z_]+)*)$")  # "3 passed", "2 subtests passed"
NORMALISE = {"errors": "error", "warnings": "warning", "tests": "test"}


def parse_summary(text):
    """Counts from the last pytest-style closing line, e.g.
    '==== 1 failed, 80 passed in 3.2s ====' or (-q) '5000 passed in 3.21s'.
    Returns a dict like {'passed': 80, 'failed': 1}, {} for 'no tests ran', or None."""
    for line in reversed(ANSI.sub("", text).splitlines()):
        line = line.strip()
        banner = SUMMARY_BANNER.match(line)
        body = SUMMARY_BODY.match(banner.group(1) if banner else line)
        if not body:
            continue
        inner = body.group(1).strip()
        if inner == "no tests ran":
            return {}
        counts = {}
        for part in inner.split(", "):
            m = SUMMARY_PART.match(part.strip())
            if not m:
                counts = None
                break
            key = NORMALISE.get(m.group(2), m.group(2))
            counts[key] = counts.get(key, 0) + int(m.group(1))
        if counts:
            return counts
    return None


def summary_of(res):
    counts = parse_summary(res.stdout)
    return counts if counts is not None else parse_summary(res.stderr)


def outcome_counts(counts):
    """Counts that must match sequential pytest (warnings may legitimately differ)."""
    if counts is None:
        return None
    return {k: v for k, v in counts.items() if k != "warning"}


def format_counts(counts):
    if counts is None:
        return "no summary line"
    if not counts:
        return "no tests ran"
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))


DURATION_LINE = re.compile(r"^\s*([0-9.]+)s (setup|call|teardown)\s+(\S.*)$")


def parse_durations(text):
    """Per-test seconds (setup + call + teardown) from `pytest --durations=0 --durations-min=0`."""
    per_test = collections.defaultdict(float)
    for line in ANSI.sub("", text).splitlines():
        m = DURATION_LINE.match(line)
        if m:
            per_test[m.group(3).strip()] += float(m.group(1))
    return dict(per_test)


# ---------------------------------------------------------------------------
# Running one command


class RunResult:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class _GroupKiller(threading.Thread):
    """Kills the child's process group after `timeout` seconds: SIGTERM, then SIGKILL."""

    def __init__(self, pgid, timeout):
        super().__init__(daemon=True)
        self.pgid = pgid
        self.timeout = timeout
        self.finished = threading.Event()
        self.timed_out = False

    def run(self):
        if self.finished.wait(self.timeout):
            return
        self.timed_out = True
        _signal_group(self.pgid, signal.SIGTERM)
        if not self.finished.wait(GRACE_SECONDS):
            _signal_group(self.pgid, signal.SIGKILL)


def _signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _live_group_members(pgid):
    """Pids of processes (not zombies) in process group pgid."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # after "(comm)": state, ppid, pgrp, ...
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def _read_vmhwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def run_command(argv, cwd, timeout, env, sample_memory=False):
    """Run argv in its own process group with output sent to temp files.

    Wall time is time.perf_counter() around spawn + wait4 (what subprocess.run would
    measure, without Popen.wait's coarse timeout polling). CPU time and max RSS come
    from wait4's rusage: the child plus the descendants it reaped."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        self_peak = None
        t0 = time.perf_counter()
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, start_new_session=True)
        except OSError as e:
            raise BenchError(f"cannot start {argv[0]!r}: {e}") from None
        killer = _GroupKiller(proc.pid, timeout)
        killer.start()
        try:
            if sample_memory:
                self_peak = 0
                while True:
                    hwm = _read_vmhwm_kib(proc.pid)
                    if hwm:
                        self_peak = max(self_peak, hwm)
                    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                    if pid:
                        break
                    time.sleep(0.01)
            else:
                _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            _signal_group(proc.pid, signal.SIGTERM)
            time.sleep(0.5)
            _signal_group(proc.pid, signal.SIGKILL)
            try:
                os.waitpid(proc.pid, 0)
            except ChildProcessError:
                pass
            proc.returncode = -signal.SIGKILL
            raise
        wall = time.perf_counter() - t0
        killer.finished.set()
        proc.returncode = os.waitstatus_to_exitcode(status)
        # Anything still in the group outlived its runner; kill it so it cannot skew later runs.
        leftovers = False
        if _live_group_members(proc.pid):
            time.sleep(0.2)
            if _live_group_members(proc.pid):
                leftovers = True
                _signal_group(proc.pid, signal.SIGKILL)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    return RunResult(
        seconds=wall, exit_code=proc.returncode, timed_out=killer.timed_out,
        cpu_seconds=usage.ru_utime + usage.ru_stime, tree_maxrss_kib=usage.ru_maxrss,
        self_peak_kib=self_peak, leftovers=leftovers, stdout=stdout, stderr=stderr)


def clean_env():
    env = dict(os.environ)
    # A user's PYTEST_ADDOPTS would change every runner's behaviour behind the table's back.
    env.pop("PYTEST_ADDOPTS", None)
    # The warm-up writes the .pyc files (pytest's rewritten test modules among
    # them) that every timed run then reuses, as a developer's next run does;
    # a PYTHONDONTWRITEBYTECODE=1 inherited from the shell (some CI images
    # and sandboxes set it) would make every run parse and rewrite every test
    # file again.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


# ---------------------------------------------------------------------------
# Set-up: interpreter, shoal binary, suites


def check_call(argv, what, cwd=None, timeout=1800):
    try:
        p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise BenchError(f"{what}: {argv[0]!r} not found") from None
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: timed out after {timeout} s") from None
    if p.returncode != 0:
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-20:])
        raise BenchError(f"{what} failed (exit {p.returncode}):\n{textwrap.indent(tail, '    ')}")
    return p.stdout


def installed_versions(python):
    code = ("import importlib.metadata as m, json\n"
            "v = {}\n"
            "for d in ('pytest', 'pytest-xdist'):\n"
            "    try: v[d] = m.version(d)\n"
            "    except m.PackageNotFoundError: v[d] = None\n"
            "print(json.dumps(v))")
    return json.loads(check_call([python, "-c", code], f"querying {python}"))


def setup_python(args):
    """The interpreter every runner uses: --python as given, else bench/.venv with the pins."""
    if args.python:
        python = args.python
        if not (os.path.isfile(python) and os.access(python, os.X_OK)):
            found = shutil.which(python)
            if not found:
                raise BenchError(f"--python {python!r}: no such interpreter")
            python = found
        python = os.path.abspath(python)
        versions = installed_versions(python)
        if not versions["pytest"]:
            raise BenchError(f"pytest is not installed for {python}")
        for dist, pin in PINS.items():
            if versions[dist] and versions[dist] != pin:
                log(f"note: {python} has {dist} {versions[dist]}, the benchmark pins {pin}")
        return python, versions
    python = os.path.join(VENV_DIR, "bin", "python")
    if not os.path.exists(python):
        log(f"creating {os.path.relpath(VENV_DIR)} ...")
        check_call([sys.executable, "-m", "venv", VENV_DIR], "creating the venv")
    versions = installed_versions(python)
    if any(versions[d] != v for d, v in PINS.items()):
        log(f"installing {', '.join(f'{d}=={v}' for d, v in PINS.items())} into {os.path.relpath(VENV_DIR)} ...")
        check_call([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    *(f"{d}=={v}" for d, v in PINS.items())], "pip install")
        versions = installed_versions(python)
    return python, versions


def setup_shoal(args):
    if args.shoal:
        path = os.path.abspath(args.shoal)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise BenchError(f"--shoal {args.shoal!r}: no executable file there")
        return path
    if not shutil.which("cargo"):
        raise BenchError("cargo not found, so shoal cannot be built; pass --shoal PATH, "
                         "or leave shoal out with --runners pytest,xdist")
    log("building shoal (cargo build --release -p shoal) ...")
    try:
        check_call(["cargo", "build", "--release", "-p", "shoal"], "cargo build --release -p shoal",
                   cwd=REPO_ROOT)
    except BenchError as e:
        raise BenchError(f"{e}\n(pass --shoal PATH to use a prebuilt binary, or --runners pytest,xdist)") from None
    path = os.path.join(REPO_ROOT, "target", "release", "shoal")
    if not os.path.isfile(path):
        raise BenchError(f"cargo build succeeded but {path} does not exist")
    return path


def tool_version(argv):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (p.stdout or p.stderr).strip()
    return text.splitlines()[0] if p.returncode == 0 and text else None


def setup_suites(args, names):
    """Directory of each suite, generated fresh into bench/out/suites unless --suites-dir."""
    if args.suites_dir:
        root = os.path.abspath(args.suites_dir)
    else:
        gen = os.path.abspath(args.gen)
        if not os.path.isfile(gen):
            raise BenchError(f"suite generator not found at {gen}; pass --gen PATH or --suites-dir DIR")
        root = os.path.join(OUT_DIR, "suites")
        for name in names:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        log(f"generating {', '.join(names)} into {os.path.relpath(root)} ...")
        check_call([sys.executable, gen, root, *names], "generating suites")
    dirs = {}
    for name in names:
        d = os.path.join(root, name)
        if not os.path.isfile(os.path.join(d, "selected.txt")):
            raise BenchError(f"{d}/selected.txt not found (is {root} a directory of generated suites?)")
        dirs[name] = d
    return dirs


def make_big_suite(n_tests):
    """N trivial parametrized tests spread over (up to) 100 files, in bench/out/big-N."""
    root = os.path.join(OUT_DIR, f"big-{n_tests}")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.join(root, "tests"))
    n_files = max(1, min(100, n_tests))
    for f in range(n_files):
        count = n_tests // n_files + (1 if f < n_tests % n_files else 0)
        with open(os.path.join(root, "tests", f"test_big_{f:03d}.py"), "w", encoding="utf-8") as fh:
            fh.write("import pytest\n\n\n"
                     f"@pytest.mark.parametrize('n', range({count}))\n"
                     f"def test_big_{f}(n):\n"
                     "    assert n >= 0\n")
    with open(os.path.join(root, "pytest.ini"), "w", encoding="utf-8") as fh:
        fh.write("[pytest]\naddopts = -p no:cacheprovider\n")
    with open(os.path.join(root, "conftest.py"), "w", encoding="utf-8") as fh:
        fh.write("")
    with open(os.path.join(root, "selected.txt"), "w", encoding="utf-8") as fh:
        fh.write(f"# {n_tests} trivial tests\ntests\n")
    return root


# ---------------------------------------------------------------------------
# Benchmark


def save_log(suite, runner, workers, rep, res):
    d = os.path.join(OUT_DIR, "logs")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"{suite}-{runner}-n{workers}-r{rep}.log")
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"exit code: {res.exit_code}{' (timed out)' if res.timed_out else ''}\n"
                f"seconds: {res.seconds:.3f}\n\n--- stdout ---\n{res.stdout}\n--- stderr ---\n{res.stderr}\n")
    return os.path.relpath(path)


def jobs_for(runners, workers):
    jobs = []
    for r in runners:
        if r.sequential:
            jobs.append((r, 1))
    for n in workers:
        for r in runners:
            if not r.sequential:
                jobs.append((r, n))
    return jobs


def calibrate(suite, sdir, ctx, env, args):
    """Untimed warm-up before timing a suite: writes the .pyc files every runner then reuses.
    For bound suites it is a full sequential run with per-test durations, from which the
    lower bound max(sum / N, longest) is computed."""
    if suite in args.bound_suites:
        log(f"[{suite}] warm-up: sequential pytest with --durations=0 (for the lower bound) ...")
        res = run_command([ctx.python, "-m", "pytest", "-q", "-p", "no:xdist", "--durations=0",
                           "--durations-min=0", *ctx.paths], sdir, args.timeout, env)
        per_test = parse_durations(res.stdout)
        if not per_test:
            log(f"[{suite}] warning: no durations parsed; no lower bound (log: {save_log(suite, 'durations', 1, 0, res)})")
            return None
        total = sum(per_test.values())
        longest = max(per_test.values())
        log(f"[{suite}] {len(per_test)} tests, sum of durations {total:.2f} s, longest {longest:.2f} s")
        return {"tests": len(per_test), "sum_seconds": total, "longest_seconds": longest,
                "warmup_wall_seconds": res.seconds}
    if not args.no_warmup:
        log(f"[{suite}] warm-up: pytest --collect-only ...")
        run_command([ctx.python, "-m", "pytest", "-q", "--collect-only", *ctx.paths], sdir, args.timeout, env)
    return None


def seed_shoal_history(suite, sdir, ctx, env, args, runners):
    """One untimed shoal run, so every timed shoal run schedules with history
    from a previous run (as it would in CI with a kept .test_durations)."""
    if args.no_warmup or not any(r.name.startswith("shoal") for r in runners):
        return
    log(f"[{suite}] warm-up: one shoal run to write .test_durations ...")
    run_command(shoal_run(ctx, max(args.workers)), sdir, args.timeout, env)
    shoal_own_cpu(sdir)


def lower_bound(bound, n):
    return max(bound["sum_seconds"] / n, bound["longest_seconds"]) if bound else None


def bench_suite(suite, sdir, runners, args, python, shoal, env, runs):
    ctx = Ctx(python, shoal, read_selection(os.path.join(sdir, "selected.txt")), extra=args.extra_args)
    if not ctx.paths:
        raise BenchError(f"{sdir}/selected.txt selects nothing")
    bound = calibrate(suite, sdir, ctx, env, args)
    seed_shoal_history(suite, sdir, ctx, env, args, runners)
    jobs = jobs_for(runners, args.workers)
    before = set(os.listdir(sdir))
    for rep in range(args.repeat):
        # Rotate the starting runner each round so no runner always runs first (or last).
        k = rep % len(jobs)
        for runner, n in jobs[k:] + jobs[:k]:
            res = run_command(runner.argv(ctx, n), sdir, args.timeout, env)
            counts = summary_of(res)
            label = runner.name if runner.sequential else f"{runner.name} -n {n}"
            run = {"suite": suite, "runner": runner.name, "workers": n, "repeat": rep,
                   "seconds": res.seconds, "cpu_seconds": res.cpu_seconds,
                   "own_cpu_seconds": shoal_own_cpu(sdir) if runner.name.startswith("shoal") else None,
                   "tree_maxrss_kib": res.tree_maxrss_kib, "exit_code": res.exit_code,
                   "timed_out": res.timed_out, "counts": counts, "leftover_processes": res.leftovers,
                   "argv": runner.argv(ctx, n), "log": None}
            bad = res.timed_out or res.leftovers or counts is None or res.exit_code not in (0, 1)
            if bad:
                run["log"] = save_log(suite, runner.name, n, rep, res)
            after = set(os.listdir(sdir))
            if after - before:
                run["new_files"] = sorted(after - before)
                before = after
            runs.append(run)
            extra = " TIMED OUT" if res.timed_out else ""
            extra += " (left processes behind)" if res.leftovers else ""
            extra += f" [log: {run['log']}]" if run["log"] else ""
            log(f"[{suite}] round {rep + 1}/{args.repeat}: {label:<24} {res.seconds:8.2f} s  "
                f"exit {res.exit_code}  {format_counts(counts)}{extra}")
    return bound


def most_common(values):
    values = [json.dumps(v, sort_keys=True) for v in values]
    return json.loads(collections.Counter(values).most_common(1)[0][0]) if values else None


def summarise(runs, bounds, suites, runners, workers):
    rows = []
    for suite in suites:
        srun = [r for r in runs if r["suite"] == suite]
        base = [r for r in srun if r["runner"] == "pytest"]
        base_counts = most_common([outcome_counts(r["counts"]) for r in base]) if base else None
        base_exit = most_common([r["exit_code"] for r in base]) if base else None
        medians = {}
        for runner, n in jobs_for(runners, workers):
            rr = [r for r in srun if r["runner"] == runner.name and r["workers"] == n]
            if not rr:
                continue
            # A runner that never printed a summary line failed outright: its time means nothing.
            ok_times = [r["seconds"] for r in rr if not r["timed_out"] and r["counts"] is not None]
            med = statistics.median(ok_times) if ok_times else None
            medians[(runner.name, n)] = med
            problems = []
            if any(r["timed_out"] for r in rr):
                problems.append(f"{sum(r['timed_out'] for r in rr)} timed out")
            if base:
                for r in rr:
                    c = outcome_counts(r["counts"])
                    if c != base_counts:
                        problems.append(f"{format_counts(c)} (pytest: {format_counts(base_counts)})")
                    if r["exit_code"] != base_exit and not r["timed_out"]:
                        problems.append(f"exit {r['exit_code']} (pytest: {base_exit})")
            if any(r["leftover_processes"] for r in rr):
                problems.append("left processes behind")
            problems = list(dict.fromkeys(problems))
            notes = []
            for r in rr:
                for f in r.get("new_files", []):
                    notes.append(f"wrote {f}")
            rows.append({
                "suite": suite, "workers": n, "runner": runner.name, "sequential": runner.sequential,
                "median": med, "min": min(ok_times) if ok_times else None,
                "max": max(ok_times) if ok_times else None, "runs": len(rr),
                "cpu_median": statistics.median(r["cpu_seconds"] for r in rr),
                "own_cpu_share": statistics.median(
                    [r["own_cpu_seconds"] / r["cpu_seconds"] for r in rr if r.get("own_cpu_seconds") and r["cpu_seconds"]]
                ) if any(r.get("own_cpu_seconds") for r in rr) else None,
                "counts": format_counts(most_common([outcome_counts(r["counts"]) for r in rr])),
                "ok": False if problems else (True if base else None), "problems": problems,
                "notes": list(dict.fromkeys(notes)),
                "bound": lower_bound(bounds.get(suite), n),
            })
        for row in rows:
            if row["suite"] != suite:
                continue
            pm = medians.get(("pytest", 1))
            xm = medians.get(("xdist", row["workers"])) if not row["sequential"] else None
            row["x_pytest"] = row["median"] / pm if pm and row["median"] else None
            row["x_xdist"] = row["median"] / xm if xm and row["median"] else None
            row["x_bound"] = row["median"] / row["bound"] if row["bound"] and row["median"] else None
    return rows


def fmt(x, digits=2, suffix=""):
    return "—" if x is None else f"{x:.{digits}f}{suffix}"


def markdown_table(rows, bounds):
    show_bound = any(r["bound"] for r in rows)
    head = ["suite", "workers", "runner", "median s", "min–max s", "× pytest", "× xdist(N)"]
    if show_bound:
        head += ["bound s", "× bound"]
    head += ["CPU s", "own CPU", "counts OK?"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(
        "---" if h in ("suite", "runner", "counts OK?") else "---:" for h in head) + "|"]
    for r in rows:
        if r["ok"] is None:
            ok = "n/a (no pytest baseline)"
        elif r["ok"]:
            ok = f"ok ({r['counts']})" if r["runner"] == "pytest" else "ok"
        else:
            ok = "⚠ " + "; ".join(r["problems"])
        cells = [r["suite"], "1 (seq)" if r["sequential"] else str(r["workers"]), r["runner"],
                 fmt(r["median"]), f"{fmt(r['min'])}–{fmt(r['max'])}" if r["min"] is not None else "—", fmt(r["x_pytest"]),
                 fmt(r["x_xdist"])]
        if show_bound:
            cells += [fmt(r["bound"]), fmt(r["x_bound"])]
        own = "—" if r["own_cpu_share"] is None else f"{100 * r['own_cpu_share']:.1f}%"
        cells += [fmt(r["cpu_median"], 1), own, ok]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def memory_table(runs):
    head = ["suite", "workers", "runner", "wall s", "self peak RSS MiB", "tree max RSS MiB", "CPU s", "counts"]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---|---:|---:|---:|---:|---|"]
    for r in runs:
        counts = format_counts(r["counts"])
        if r["timed_out"]:
            counts = "⚠ timed out"
        elif r["exit_code"] != 0:
            counts = f"⚠ exit {r['exit_code']}: {counts}"
        lines.append("| " + " | ".join([
            r["suite"], "1 (seq)" if r["workers"] == 1 and r["runner"] == "pytest" else str(r["workers"]),
            r["runner"], fmt(r["seconds"]), fmt((r["self_peak_kib"] or 0) / 1024, 1),
            fmt(r["tree_maxrss_kib"] / 1024, 1), fmt(r["cpu_seconds"], 1), counts]) + " |")
    return "\n".join(lines)


def bench_memory(args, runners, python, shoal, env, runs):
    sdir = make_big_suite(args.big)
    suite = f"big-{args.big}"
    log(f"generated {os.path.relpath(sdir)} ({args.big} tests)")
    ctx = Ctx(python, shoal, read_selection(os.path.join(sdir, "selected.txt")), extra=args.extra_args)
    if not args.no_warmup:
        log(f"[{suite}] warm-up: pytest --collect-only ...")
        run_command([python, "-m", "pytest", "-q", "--collect-only", *ctx.paths], sdir, args.timeout, env)
    for rep in range(args.repeat):
        for runner, n in jobs_for(runners, args.workers):
            res = run_command(runner.argv(ctx, n), sdir, args.timeout, env, sample_memory=True)
            counts = summary_of(res)
            run = {"suite": suite, "runner": runner.name, "workers": n, "repeat": rep,
                   "seconds": res.seconds, "cpu_seconds": res.cpu_seconds,
                   "self_peak_kib": res.self_peak_kib, "tree_maxrss_kib": res.tree_maxrss_kib,
                   "exit_code": res.exit_code, "timed_out": res.timed_out, "counts": counts,
                   "leftover_processes": res.leftovers, "argv": runner.argv(ctx, n), "log": None}
            if res.exit_code != 0 or counts is None:
                run["log"] = save_log(suite, runner.name, n, rep, res)
            runs.append(run)
            log(f"[{suite}] {runner.name:<16} n={n}: {res.seconds:.2f} s, self peak "
                f"{(res.self_peak_kib or 0) / 1024:.1f} MiB, tree max {res.tree_maxrss_kib / 1024:.1f} MiB, "
                f"{format_counts(counts)}")


# ---------------------------------------------------------------------------


def csv_list(text):
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Time shoal against sequential pytest and pytest-xdist on the reference suites.",
        epilog="Progress goes to stderr, the Markdown table to stdout. See bench/README.md.")
    p.add_argument("--mode", choices=["time", "memory"], default=None,
                   help="time (default): wall-time table; memory: peak RSS on a --big suite")
    p.add_argument("--suites", type=csv_list, default=ALL_SUITES,
                   help=f"comma-separated suites (default: {','.join(ALL_SUITES)})")
    p.add_argument("--workers", type=csv_list, default=["2"], help="comma-separated worker counts (default: 2)")
    p.add_argument("--runners", type=csv_list, default=["pytest", "xdist", "shoal"],
                   help=f"comma-separated runners from: {', '.join(RUNNERS_BY_NAME)} (default: pytest,xdist,shoal)")
    p.add_argument("--repeat", type=int, default=None,
                   help="timed runs per runner and worker count (default: 3; 1 in memory mode)")
    p.add_argument("--timeout", type=float, default=600, help="seconds before one run is killed (default: 600)")
    p.add_argument("--python", help="use this interpreter (with pytest, pytest-xdist) instead of bench/.venv")
    p.add_argument("--shoal", help="use this shoal binary instead of building it with cargo")
    p.add_argument("--gen", default=DEFAULT_GEN, help="suite generator (default: ../shared/bench/gen_suites.py from the repo root)")
    p.add_argument("--suites-dir", help="use the suites already in DIR/<suite> instead of generating them")
    p.add_argument("--bound-suites", type=csv_list, default=DEFAULT_BOUND_SUITES,
                   help="suites that get a lower bound from a sequential --durations run (default: seed81)")
    p.add_argument("--no-warmup", action="store_true",
                   help="skip the untimed `pytest --collect-only` warm-up (bound suites still get their durations run)")
    p.add_argument("--big", type=int, default=None, metavar="N",
                   help="memory mode: number of trivial tests in the synthetic suite (default: 100000); implies --mode memory")
    p.add_argument("--json", help="also write every raw timing and the summary rows to this JSON file")
    p.add_argument("--extra-args", type=shlex.split, default=[], metavar="ARGS",
                   help="pytest arguments for every runner, e.g. \"--cov=pkg --cov-report=\" (shoal gets them after --)")
    args = p.parse_args(argv)
    if args.mode is None:
        args.mode = "memory" if args.big is not None else "time"
    if args.mode == "memory" and args.big is None:
        args.big = 100_000
    if args.repeat is None:
        args.repeat = 3 if args.mode == "time" else 1
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.big is not None and args.big < 1:
        p.error("--big must be at least 1")
    try:
        args.workers = [int(w) for w in args.workers]
    except ValueError:
        p.error("--workers takes comma-separated integers, e.g. 2,4")
    if not args.workers or min(args.workers) < 1:
        p.error("--workers needs at least one worker count >= 1")
    unknown = [r for r in args.runners if r not in RUNNERS_BY_NAME]
    if unknown:
        p.error(f"unknown runner(s) {', '.join(unknown)}; known: {', '.join(RUNNERS_BY_NAME)}")
    if not args.runners:
        p.error("--runners is empty")
    bad = [s for s in args.suites if s not in ALL_SUITES] if not args.suites_dir else []
    if bad:
        p.error(f"unknown suite(s) {', '.join(bad)}; known: {', '.join(ALL_SUITES)}")
    return args


def main(argv):
    args = parse_args(argv)
    if not sys.platform.startswith("linux"):
        raise BenchError("compare.py needs Linux (process groups, /proc)")
    runners = [RUNNERS_BY_NAME[r] for r in args.runners]
    needs = set().union(*(r.needs for r in runners))
    python, versions = setup_python(args)
    if "xdist" in needs and not versions["pytest-xdist"]:
        raise BenchError(f"pytest-xdist is not installed for {python}; install it or drop the xdist runners")
    shoal = setup_shoal(args) if "shoal" in needs else None
    env = clean_env()
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": args.mode, "host": platform.node(), "platform": platform.platform(),
        "cpus": os.cpu_count(), "python": python,
        "python_version": tool_version([python, "--version"]), "versions": versions,
        "shoal": shoal, "shoal_version": tool_version([shoal, "--version"]) if shoal else None,
        "git_rev": tool_version(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"]),
        "runners": args.runners, "workers": args.workers, "repeat": args.repeat, "timeout": args.timeout,
    }
    runs, bounds, interrupted = [], {}, False
    header = (f"{meta['date']} · {meta['cpus']} CPUs · {meta['python_version']} · "
              f"pytest {versions['pytest']} · pytest-xdist {versions['pytest-xdist']}"
              + (f" · {meta['shoal_version'] or 'shoal (no --version)'}" if shoal else "")
              + f" · repeat {args.repeat}")
    try:
        if args.mode == "memory":
            bench_memory(args, runners, python, shoal, env, runs)
        else:
            dirs = setup_suites(args, args.suites)
            for suite in args.suites:
                bound = bench_suite(suite, dirs[suite], runners, args, python, shoal, env, runs)
                if bound:
                    bounds[suite] = bound
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; reporting what was measured so far")
    if args.mode == "memory":
        rows = runs
        table = memory_table(runs)
    else:
        rows = summarise(runs, bounds, args.suites, runners, args.workers)
        table = markdown_table(rows, bounds)
    print(header + "\n")
    print(table)
    footer = []
    for suite, b in bounds.items():
        footer.append(f"- {suite}: {b['tests']} tests, sum of per-test durations {b['sum_seconds']:.2f} s, "
                      f"longest {b['longest_seconds']:.2f} s; bound(N) = max(sum / N, longest)")
    if args.mode == "time":
        for r in rows:
            for note in r["notes"]:
                footer.append(f"- {r['suite']} {r['runner']} -n {r['workers']}: {note} in the suite directory")
    for r in runs:
        if r.get("log"):
            footer.append(f"- log of a failed/odd run: {r['log']}")
    footer = list(dict.fromkeys(footer))
    if footer:
        print("\n" + "\n".join(footer))
    if args.json:
        with open(args.json + ".tmp", "w", encoding="utf-8") as f:
            json.dump({"version": 1, "meta": meta, "bounds": bounds, "summary": rows, "runs": runs},
                      f, indent=2)
        os.replace(args.json + ".tmp", args.json)
        log(f"wrote {args.json}")
    if interrupted:
        return 130
    problems = any(r.get("ok") is False for r in rows) if args.mode == "time" else \
        any(r["exit_code"] != 0 for r in runs)
    return 1 if problems else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as e:
        print(f"compare.py: error: {e}", file=sys.stderr)
        sys.exit(2)
