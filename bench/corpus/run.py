#!/usr/bin/env python3
"""Run real open-source test suites under pytest, pytest-xdist and shoal; compare per test.

    python3 bench/corpus/run.py [--projects a,b] [--runners pytest,xdist,shoal-fork,shoal-spawn,shoal-split,shoal-items]
                                [--python 3.12|PATH] [--work DIR] [--shoal PATH]

For each project (pinned sdist from PyPI, its own venv with pinned test dependencies,
pytest and pytest-xdist) it runs the suite sequentially (`python -m pytest`), with
`pytest -n 2`, and with `shoal run -n 2 --mode fork|spawn`, all with the same pytest
arguments, collects every test's outcome node id by node id (pytest: the small plugin
corpus_report.py, loaded with `-p`; shoal: its --json-report), and prints a Markdown
table and every node id whose outcome differs from the sequential run, with each
runner's outcome and failure text. See bench/corpus/README.md.

Standard library only; Python >= 3.9; Linux. Nothing is written inside the repository
except shoal's own build (target/); everything else goes to --work (default
/tmp/shoal-corpus).
"""
import argparse
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import time

CORPUS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(CORPUS_DIR))
PLUGIN = os.path.join(CORPUS_DIR, "corpus_report.py")
CONSTRAINTS = os.path.join(CORPUS_DIR, "constraints.txt")  # transitive dependencies, pinned
PINS = ["pytest==9.2.0", "pytest-xdist==3.8.0"]
WORKERS = 2
PG_PORT = 54329


class CorpusError(Exception):
    """A problem the user can fix; printed without a traceback."""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# The projects. Each: the sdist (name, version), why it is here (its shape), the pinned
# test dependencies (pytest and pytest-xdist come from PINS), whether the project itself
# is pip-installed into the venv (src layouts; flat layouts whose tests live inside the
# package run from the unpacked sdist instead), the test paths and the pytest options
# every runner gets, extra environment, and services it needs.


class Project:
    def __init__(self, name, dist, version, shape, deps, paths, args=(), install=True,
                 env=None, services=(), note=""):
        self.name = name
        self.dist = dist
        self.version = version
        self.shape = shape
        self.deps = list(deps)
        self.paths = list(paths)
        self.args = list(args)
        self.install = install
        self.env = dict(env or {})
        self.services = list(services)
        self.note = note


PROJECTS = [
    Project(
        "django-model-utils", "django-model-utils", "5.0.0",
        "Django app on PostgreSQL, pytest-django (a test database per xdist worker)",
        ["Django==5.1.15", "pytest-django==4.14.0", "psycopg2-binary==2.9.11",
         "time-machine==3.2.0"],
        ["tests"],
        env={"PYTHONPATH": ".", "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": str(PG_PORT),
             "POSTGRES_USER": "postgres", "POSTGRES_DB": "modelutils"},
        services=["postgres"]),
    Project(
        "attrs", "attrs", "26.1.0",
        "hypothesis-heavy; --import-mode=importlib; filterwarnings once::Warning",
        ["hypothesis==6.170.17", "cloudpickle==3.1.2", "Pympler==1.1"],
        ["tests"],
        note="tests/test_mypy.yml needs pytest-mypy-plugins (minutes of mypy runs): not installed, so not collected"),
    Project(
        "more-itertools", "more-itertools", "11.2.1",
        "unittest.TestCase classes throughout",
        [], ["tests"]),
    Project(
        "toolz", "toolz", "1.2.0",
        "doctests (--doctest-modules) and filterwarnings = error; tests inside the package",
        [], ["toolz"], args=["--doctest-modules"], install=False),
    Project(
        "pluggy", "pluggy", "1.7.0",
        "filterwarnings = error (tox.ini [pytest]); pytest's own plugin machinery",
        [], ["testing"]),
    Project(
        "packaging", "packaging", "26.4",
        "many small parametrized tests; addopts with -m, --capture=sys and -p no:... plugins",
        ["pretend==1.0.9", "hypothesis==6.170.17", "tomli_w==1.2.0",
         "tomli==2.5.0; python_version < '3.11'"], ["tests"]),
    Project(
        "jsonschema", "jsonschema", "4.26.0",
        "unittest.TestCase classes and the JSON-Schema-Test-Suite (thousands of generated tests); tests inside the package",
        ["attrs==26.1.0", "jsonschema-specifications==2025.9.1", "referencing==0.37.0",
         "rpds-py==0.30.0", "jsonpath-ng==1.7.0"],
        ["jsonschema/tests"],
        note="installed (test_cli reads its metadata) but imported from the unpacked sdist, where its tests live"),
    Project(
        "sympy", "sympy", "1.14.0",
        "heavy import (sympy) in every test module; conftest with its own options",
        ["mpmath==1.3.0", "hypothesis==6.170.17"],
        ["sympy/core/tests", "sympy/sets/tests", "sympy/logic/tests"],
        args=[f"--ignore=sympy/core/tests/{f}.py" for f in (
            "test_arit", "test_function", "test_relational", "test_expr", "test_diff", "test_evalf")],
        install=False,
        note="a subset: sympy/core (less its six slowest files), sets and logic tests (the whole "
             "suite takes hours); addopts deselects slow tests"),
    Project(
        "asgiref", "asgiref", "3.13.0",
        "asyncio with pytest-asyncio (strict mode), threads and event loops (sync_to_async)",
        ["pytest-asyncio==1.5.0", "typing_extensions==4.16.0"], ["tests"]),
    Project(
        "anyio", "anyio", "4.16.0",
        "anyio's own pytest plugin (asyncio and trio backends), pytest-mock, pytest-timeout, -p in addopts, xfail_strict",
        ["trio==0.32.0", "hypothesis==6.170.17", "psutil==7.1.3", "pytest-mock==3.15.1",
         "pytest-timeout==2.4.0", "trustme==1.2.1", "truststore==0.10.4", "uvloop==0.22.1",
         "blockbuster==1.5.26", "exceptiongroup==1.3.1"],
        ["tests"], args=["--ignore=tests/test_sockets.py"],
        note="tests/test_sockets.py left out: 208 of its tests fail or error under every runner "
             "here (IPv6 and dual-stack sockets), and it is a third of the run time"),
    Project(
        "werkzeug", "werkzeug", "3.1.9",
        "plugin-heavy conftest (dev-server fixtures that start servers in subprocesses, ephemeral ports), pytest-timeout, filterwarnings = error",
        ["MarkupSafe==3.0.3", "cryptography==50.0.2", "ephemeral-port-reserve==1.1.4",
         "pytest-timeout==2.4.0", "watchdog==6.0.0", "cffi==2.1.1"],
        ["tests"]),
    Project(
        "pytest", "pytest", "9.2.0",
        "pytest's own suite: pytester, runpytest_subprocess, -p pytester in addopts, a conftest that reorders items",
        ["argcomplete==3.6.3", "attrs==26.1.0", "hypothesis==6.170.17", "mock==5.2.0",
         "pexpect==4.9.0", "PyYAML==6.0.3", "requests==2.32.5", "setuptools==80.9.0",
         "xmlschema==4.2.0", "Pygments==2.21.0"],
        ["testing/test_assertion.py", "testing/test_capture.py", "testing/test_junitxml.py",
         "testing/test_skipping.py", "testing/test_unittest.py", "testing/test_warnings.py",
         "testing/python/fixtures.py"],
        install=False,
        note="a subset of testing/ (the whole takes ~10 min sequentially here); pytest itself is the pinned 9.2.0 wheel, the same version as the sdist"),
]
BY_NAME = {p.name: p for p in PROJECTS}

RUNNERS = ["pytest", "xdist", "shoal-fork", "shoal-spawn", "shoal-split", "shoal-items"]
# shoal-split (fork mode, `--collect split`: each worker imports its share of
# the test files, a file heavier than a worker's fair share spread over
# several in parts, as the history says) and shoal-items (`--collect items`:
# the same shares, every test module imported before forking) are run when
# asked for.
DEFAULT_RUNNERS = RUNNERS[:4]
RUNNER_TITLES = {"pytest": "sequential s", "xdist": f"pytest -n {WORKERS} s",
                 "shoal-fork": "shoal fork s", "shoal-spawn": "shoal spawn s",
                 "shoal-split": "shoal split s", "shoal-items": "shoal items s"}


def runner_argv(runner, project, python, shoal, report):
    if runner == "pytest":
        return [python, "-m", "pytest", "-p", "corpus_report", *project.args, *project.paths]
    if runner == "xdist":
        return [python, "-m", "pytest", "-p", "corpus_report", "-n", str(WORKERS),
                *project.args, *project.paths]
    mode = runner.split("-", 1)[1]
    collect = []
    if mode in ("split", "items"):
        mode, collect = "fork", ["--collect", mode]
    argv = [shoal, "run", "-n", str(WORKERS), "--mode", mode, *collect, "--python", python,
            "--json-report", report, *project.paths]
    if project.args:
        argv += ["--", *project.args]
    return argv


# ---------------------------------------------------------------------------
# Helpers


def unpack(tarball, into):
    """Unpacks a tarball with one top directory (an sdist) into `into`; returns
    that directory's path."""
    with tarfile.open(tarball) as tar:
        top = tar.getnames()[0].split("/")[0]
        if sys.version_info >= (3, 12):
            tar.extractall(into, filter="data")
        else:
            tar.extractall(into)
    return os.path.join(into, top)


def run(argv, what, cwd=None, env=None, timeout=1800):
    try:
        p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise CorpusError(f"{what}: {argv[0]!r} not found") from None
    except subprocess.TimeoutExpired:
        raise CorpusError(f"{what}: timed out after {timeout} s") from None
    if p.returncode != 0:
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-25:])
        raise CorpusError(f"{what} failed (exit {p.returncode}):\n{textwrap.indent(tail, '    ')}")
    return p.stdout


def resolve_python(spec):
    """An interpreter path, or a version such as 3.12 (python3.12 on PATH, else pyenv's)."""
    if not spec:
        return os.path.realpath(sys.executable)
    if os.sep in spec:
        if not os.access(spec, os.X_OK):
            raise CorpusError(f"--python {spec!r}: not an executable")
        return os.path.abspath(spec)
    if shutil.which(spec):
        return shutil.which(spec)
    try:
        versions = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True,
                                  text=True).stdout.split()
    except FileNotFoundError:
        versions = []
    for v in sorted(versions, reverse=True):
        if v == spec or v.startswith(spec + "."):
            prefix = subprocess.run(["pyenv", "prefix", v], capture_output=True, text=True).stdout.strip()
            exe = os.path.join(prefix, "bin", "python")
            if os.access(exe, os.X_OK):
                return exe
    found = shutil.which(f"python{spec}")
    if found:
        return found
    raise CorpusError(f"--python {spec!r}: no such interpreter (not on PATH, not in `pyenv versions`)")


def python_version(python):
    return run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
               f"asking {python} its version").strip()


def build_shoal():
    if not shutil.which("cargo"):
        raise CorpusError("cargo not found: pass --shoal PATH")
    log("building shoal (cargo build --release -p shoal) ...")
    run(["cargo", "build", "--release", "-p", "shoal"], "cargo build", cwd=REPO_ROOT, timeout=3600)
    return os.path.join(REPO_ROOT, "target", "release", "shoal")


# ---------------------------------------------------------------------------
# PostgreSQL: a private cluster on a loopback port, owned by the postgres user when we
# are root (postgres refuses to run as root), or the server in $CORPUS_POSTGRES_URL.


def start_postgres(work):
    url = os.environ.get("CORPUS_POSTGRES_URL")
    if url:
        from urllib.parse import urlparse
        u = urlparse(url)
        return {"POSTGRES_HOST": u.hostname or "127.0.0.1", "POSTGRES_PORT": str(u.port or 5432),
                "POSTGRES_USER": u.username or "postgres", "POSTGRES_PASSWORD": u.password or ""}, None
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not bins:
        raise CorpusError("PostgreSQL not found: `apt-get update && apt-get install -y postgresql`, "
                          "or set CORPUS_POSTGRES_URL=postgresql://user:pw@host:port")
    bindir = os.path.dirname(bins[-1])
    data = os.path.join(work, "pg", "data")
    sock = os.path.join(work, "pg")
    as_user = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
    os.makedirs(sock, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(sock, "postgres", "postgres")
    if not os.path.exists(os.path.join(data, "PG_VERSION")):
        log("creating a private PostgreSQL cluster ...")
        run([*as_user, os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres",
             "--auth=trust", "-E", "UTF8"], "initdb")
    probe = subprocess.run([*as_user, os.path.join(bindir, "pg_ctl"), "-D", data, "status"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        log(f"starting PostgreSQL on 127.0.0.1:{PG_PORT} ...")
        run([*as_user, os.path.join(bindir, "pg_ctl"), "-D", data, "-w", "-l",
             os.path.join(sock, "log"), "-o",
             f"-p {PG_PORT} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off "
             f"-c max_connections=50 -c log_statement=ddl", "start"], "pg_ctl start")
    stop = [*as_user, os.path.join(bindir, "pg_ctl"), "-D", data, "-m", "fast", "stop"]
    return {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": str(PG_PORT),
            "POSTGRES_USER": "postgres", "POSTGRES_PASSWORD": ""}, stop


# ---------------------------------------------------------------------------
# Setting up one project: sdist, unpacked tree, venv with pins.


def spec_hash(project, python):
    h = hashlib.sha256()
    h.update(json.dumps([python, project.dist, project.version, project.deps, PINS,
                         project.install]).encode())
    with open(CONSTRAINTS, "rb") as f:
        h.update(f.read())
    return h.hexdigest()[:16]


def setup_project(project, python, pydir, sdists):
    pdir = os.path.join(pydir, project.name)
    src = os.path.join(pdir, "src")
    venv = os.path.join(pdir, "venv")
    vpy = os.path.join(venv, "bin", "python")
    stamp = os.path.join(pdir, "setup.done")
    want = spec_hash(project, python)
    if os.path.exists(stamp) and open(stamp).read().strip() == want and os.path.exists(vpy):
        install_plugin(vpy)
        return src, vpy
    log(f"[{project.name}] setting up in {pdir} ...")
    shutil.rmtree(pdir, ignore_errors=True)
    os.makedirs(pdir)
    os.makedirs(sdists, exist_ok=True)
    sdist = find_sdist(project, sdists)
    if not sdist:
        run([python, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--no-binary", project.dist, "-d", sdists,
             f"{project.dist}=={project.version}"], f"[{project.name}] pip download")
        sdist = find_sdist(project, sdists)
        if not sdist:
            raise CorpusError(f"[{project.name}] pip download left no sdist in {sdists}")
    os.rename(unpack(sdist, pdir), src)
    run([python, "-m", "venv", venv], f"[{project.name}] venv")
    pip = [vpy, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run([*pip, "-c", CONSTRAINTS, *PINS, *project.deps], f"[{project.name}] pip install pins",
        timeout=3600)
    if project.install:
        run([*pip, "--no-deps", src], f"[{project.name}] pip install the project", timeout=3600)
    freeze = run([vpy, "-m", "pip", "freeze", "--all"], f"[{project.name}] pip freeze")
    with open(os.path.join(pdir, "freeze.txt"), "w") as f:
        f.write(freeze)
    install_plugin(vpy)
    with open(stamp, "w") as f:
        f.write(want)
    return src, vpy


def find_sdist(project, sdists):
    stems = {project.dist, project.dist.replace("-", "_"), project.dist.lower().replace("-", "_")}
    for stem in stems:
        for ext in (".tar.gz", ".zip"):
            path = os.path.join(sdists, f"{stem}-{project.version}{ext}")
            if os.path.exists(path):
                return path
    return None


def install_plugin(vpy):
    purelib = run([vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                  "finding site-packages").strip()
    shutil.copyfile(PLUGIN, os.path.join(purelib, "corpus_report.py"))


# ---------------------------------------------------------------------------
# Running one runner and reading its outcomes.


def run_logged(argv, cwd, env, timeout, logpath):
    t0 = time.perf_counter()
    with open(logpath, "w") as out:
        out.write("$ " + " ".join(argv) + "\n")
        out.flush()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                code = proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                code = proc.wait()
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    wall = time.perf_counter() - t0
    try:  # nothing a run leaves behind may slow down the next one
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return wall, code, timed_out


def pytest_outcomes(path):
    """{nodeid: (outcome, text)} from corpus_report.py's lines, folded as shoal folds phases."""
    phases = {}
    collect = {}
    if not os.path.exists(path):
        return {}, {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r["kind"] == "collect":
                collect[r["nodeid"]] = r["text"]
            elif r.get("subtest"):
                if r["outcome"] == "failed":
                    phases.setdefault(r["nodeid"], {})["subtest-failed"] = r
            else:
                phases.setdefault(r["nodeid"], {})[r["when"]] = r
    tests = {}
    for nodeid, ph in phases.items():
        setup, call, teardown = ph.get("setup"), ph.get("call"), ph.get("teardown")
        subtest = ph.get("subtest-failed")
        texts = [p["text"] for p in (setup, call, subtest, teardown)
                 if p and p.get("text") and p["outcome"] == "failed"]
        # the precedence of shoal's outcome_from_reports: a failed call, then a failed
        # setup or teardown, then a failed subtest, then xfail, skip, pass
        if call and call["outcome"] == "failed":
            outcome = "failed"
        elif any(p and p["outcome"] == "failed" for p in (setup, teardown)):
            outcome = "error"
        elif subtest:
            outcome = "failed"
        elif setup and setup["outcome"] == "skipped":
            outcome = "xfailed" if setup["wasxfail"] else "skipped"
        elif call and call["outcome"] == "skipped":
            outcome = "xfailed" if call["wasxfail"] else "skipped"
        elif call and call["wasxfail"]:
            outcome = "xpassed"
        elif call:
            outcome = "passed"
        else:
            outcome = "not_run"
        if not texts and outcome in ("skipped", "xfailed"):
            texts = [p["text"] for p in (setup, call) if p and p.get("text")]
        tests[nodeid] = (outcome, "\n".join(t for t in texts if t) or None)
    return tests, collect


def shoal_outcomes(path):
    if not os.path.exists(path):
        return {}, {}
    with open(path, encoding="utf-8") as f:
        report = json.load(f)
    tests = {}
    for t in report["tests"]:
        outcome = t["outcome"]
        if outcome == "not_run" and t.get("reason"):
            outcome = f"not_run ({t['reason']})"
        tests[t["nodeid"]] = (outcome, t.get("failure"))
    collect = {c["nodeid"]: c.get("longrepr") or c.get("message") for c in report["collect_errors"]}
    return tests, collect


def run_project(project, runner, src, vpy, shoal, outdir, env, timeout):
    report = os.path.join(outdir, f"{runner}.report")
    logpath = os.path.join(outdir, f"{runner}.log")
    if os.path.exists(report):
        os.remove(report)
    env = dict(env)
    env["CORPUS_REPORT"] = report
    argv = runner_argv(runner, project, vpy, shoal, report)
    log(f"[{project.name}] {runner}: {' '.join(argv)}")
    wall, code, timed_out = run_logged(argv, src, env, timeout, logpath)
    if runner.startswith("shoal"):
        tests, collect = shoal_outcomes(report)
    else:
        tests, collect = pytest_outcomes(report)
    counts = {}
    for outcome, _ in tests.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    log(f"[{project.name}] {runner}: {wall:.1f}s exit {code}{' TIMED OUT' if timed_out else ''} "
        + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return {"runner": runner, "seconds": wall, "exit_code": code, "timed_out": timed_out,
            "tests": tests, "collect_errors": collect, "counts": counts, "log": logpath,
            "report": report}


def same(outcome):
    """What an outcome is compared as: a test pytest never reported (its run stopped on a
    collection error, -x, Ctrl-C) and one shoal reports `not_run` (for any reason) both
    did not run."""
    return "not run" if outcome == "absent" or outcome.startswith("not_run") else outcome


def compare(results):
    """Node ids whose outcome differs between runners (missing counts as `absent`)."""
    runners = [r["runner"] for r in results]
    ids = []
    seen = set()
    for r in results:
        for nodeid in r["tests"]:
            if nodeid not in seen:
                seen.add(nodeid)
                ids.append(nodeid)
    diffs = []
    for nodeid in ids:
        outcomes = {r["runner"]: r["tests"].get(nodeid, ("absent", None)) for r in results}
        if len({same(o) for o, _ in outcomes.values()}) > 1:
            diffs.append((nodeid, outcomes))
    cdiffs = []
    cids = set()
    for r in results:
        cids |= set(r["collect_errors"])
    for nodeid in sorted(cids):
        have = {r["runner"]: nodeid in r["collect_errors"] for r in results}
        if len(set(have.values())) > 1:
            cdiffs.append((nodeid, {k: ("collect error" if v else "collected", None) for k, v in have.items()}))
    return runners, diffs + [("collect:" + n, o) for n, o in cdiffs]


# ---------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--projects", help="comma-separated names (default: all): " + ",".join(BY_NAME))
    ap.add_argument("--runners", default=",".join(DEFAULT_RUNNERS),
                    help="comma-separated, from " + ",".join(RUNNERS) + " (default: all but shoal-split and shoal-items)")
    ap.add_argument("--python", "--python-version", dest="python",
                    help="interpreter path or version (3.12: python3.12 on PATH or pyenv's); default: this one")
    ap.add_argument("--work", default="/tmp/shoal-corpus", help="work directory (default /tmp/shoal-corpus)")
    ap.add_argument("--shoal", help="shoal binary (default: cargo build --release -p shoal in the repo)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per run (default 900)")
    ap.add_argument("--setup-only", action="store_true", help="set up the projects, run nothing")
    ap.add_argument("--json", help="write every result (outcomes per node id per runner) here")
    ap.add_argument("--text-lines", type=int, default=30, help="failure text lines shown per difference")
    ap.add_argument("--render", metavar="JSON",
                    help="print the table and differences of a run saved with --json; run nothing")
    args = ap.parse_args()
    if args.render:
        return render(args.render, args.text_lines)

    names = args.projects.split(",") if args.projects else list(BY_NAME)
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise CorpusError(f"unknown project(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    runners = args.runners.split(",")
    bad = [r for r in runners if r not in RUNNERS]
    if bad:
        raise CorpusError(f"unknown runner(s) {', '.join(bad)}; known: {', '.join(RUNNERS)}")
    work = os.path.abspath(args.work)
    if os.path.commonpath([work, REPO_ROOT]) == REPO_ROOT:
        raise CorpusError(f"--work {work} is inside the repository; choose a directory outside it")
    python = resolve_python(args.python)
    pyver = python_version(python)
    pydir = os.path.join(work, f"py{pyver}")
    os.makedirs(pydir, exist_ok=True)
    projects = [BY_NAME[n] for n in names]

    shoal = None
    if any(r.startswith("shoal") for r in runners) and not args.setup_only:
        shoal = os.path.abspath(args.shoal) if args.shoal else build_shoal()
        if not os.access(shoal, os.X_OK):
            raise CorpusError(f"no shoal binary at {shoal}")

    stops = []
    base_env = dict(os.environ)
    for var in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONDEVMODE",
                "CORPUS_REPORT", "CI"):
        base_env.pop(var, None)
    all_results = {}
    rows = []
    try:
        service_env = {}
        if any("postgres" in p.services for p in projects) and not args.setup_only:
            service_env, stop = start_postgres(work)
            if stop:
                stops.append(stop)
        for project in projects:
            src, vpy = setup_project(project, python, pydir, os.path.join(work, "sdists"))
            if args.setup_only:
                continue
            env = dict(base_env)
            env.update(project.env)
            if "postgres" in project.services:
                env.update(service_env)
            outdir = os.path.join(pydir, project.name, "out")
            os.makedirs(outdir, exist_ok=True)
            results = [run_project(project, r, src, vpy, shoal, outdir, env, args.timeout)
                       for r in runners]
            rnames, diffs = compare(results)
            all_results[project.name] = {
                "version": project.version, "python": pyver,
                "runners": {r["runner"]: {k: v for k, v in r.items() if k != "runner"} for r in results},
                "differences": [{"nodeid": n, "outcomes": {k: v[0] for k, v in o.items()}} for n, o in diffs],
            }
            rows.append((project, results, diffs))
            print_project(project, results, diffs, args.text_lines)
            if args.json:  # after every project, so an interrupted run keeps what it measured
                with open(args.json, "w") as f:
                    json.dump(all_results, f, indent=1)
    finally:
        for stop in stops:
            subprocess.run(stop, capture_output=True)
    if args.setup_only:
        log("set up; nothing run (--setup-only)")
        return 0
    print_table(rows, runners, pyver)
    return 1 if any(diffs for _, _, diffs in rows) else 0


def render(path, text_lines):
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    rows = []
    runners = None
    pyver = "?"
    for name, res in saved.items():
        project = BY_NAME.get(name) or Project(name, name, res["version"], "", [], [])
        results = []
        for runner, r in res["runners"].items():
            r = dict(r, runner=runner)
            r["tests"] = {k: tuple(v) for k, v in r["tests"].items()}
            results.append(r)
        runners = [r["runner"] for r in results]
        pyver = res["python"]
        _, diffs = compare(results)
        print_project(project, results, diffs, text_lines)
        rows.append((project, results, diffs))
    print_table(rows, runners or [], pyver)
    return 1 if any(diffs for _, _, diffs in rows) else 0


def signature(text):
    """The last `E   ...` line of a failure text (or its last line): what groups differences."""
    if not text:
        return ""
    lines = [l.strip() for l in text.rstrip().splitlines() if l.strip()]
    elines = [l for l in lines if l.startswith("E ")]
    return (elines[-1] if elines else lines[-1])[:200]


def print_project(project, results, diffs, text_lines):
    """Each runner's counts, then the differing node ids grouped by (outcomes, failure
    signature): every node id is listed, each group's failure text is shown once."""
    out = sys.stdout
    out.write(f"\n### {project.name} {project.version}\n\n")
    for r in results:
        out.write(f"- {r['runner']}: {r['seconds']:.1f}s, exit {r['exit_code']}"
                  f"{', TIMED OUT' if r['timed_out'] else ''}, "
                  + (", ".join(f"{v} {k}" for k, v in sorted(r["counts"].items())) or "no tests")
                  + (f", {len(r['collect_errors'])} collection errors" if r["collect_errors"] else "")
                  + f" (log {r['log']})\n")
    if not diffs:
        out.write("\noutcomes identical\n")
        out.flush()
        return
    groups = {}
    for nodeid, outcomes in diffs:
        key = tuple((k, v[0], signature(v[1])) for k, v in outcomes.items())
        groups.setdefault(key, []).append((nodeid, outcomes))
    out.write(f"\n{len(diffs)} node ids differ, in {len(groups)} groups:\n")
    for key, members in groups.items():
        out.write("\n- " + ", ".join(f"{k} **{o}**" for k, o, _ in key) + f" ({len(members)} node ids):\n")
        for nodeid, _ in members:
            out.write(f"  - `{nodeid}`\n")
        shown = set()
        for runner, (outcome, text) in members[0][1].items():
            if text and text not in shown and outcome not in ("passed", "absent"):
                shown.add(text)
                lines = text.rstrip().splitlines()
                if len(lines) > text_lines:
                    lines = ["..."] + lines[-text_lines:]
                out.write(f"\n  {runner} ({outcome}) on `{members[0][0]}`:\n\n"
                          + textwrap.indent("\n".join(lines), "      ") + "\n")
    out.flush()


def print_table(rows, runners, pyver):
    out = sys.stdout
    out.write(f"\n## Corpus on Python {pyver}, {WORKERS} workers\n\n")
    out.write("| project | tests | " + " | ".join(RUNNER_TITLES[r] for r in runners) + " | outcomes |\n")
    out.write("|---|---:|" + "---:|" * len(runners) + "---|\n")
    for project, results, diffs in rows:
        ntests = max(len(r["tests"]) for r in results)
        cells = []
        for r in results:
            cell = f"{r['seconds']:.1f}"
            if r["timed_out"]:
                cell += " (timed out)"
            cells.append(cell)
        if not diffs:
            verdict = "identical"
        else:
            verdict = f"{len(diffs)} differ: " + "; ".join(
                f"`{n}` " + "/".join(o for o, _ in outs.values()) for n, outs in diffs[:6])
            if len(diffs) > 6:
                verdict += f"; ... ({len(diffs) - 6} more)"
        out.write(f"| {project.name} {project.version} | {ntests} | " + " | ".join(cells) + f" | {verdict} |\n")
    out.write("\n(outcomes per runner in the order " + "/".join(runners) + ")\n")
    out.flush()


def _interrupted(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    # SIGTERM (and SIGINT, which a shell's background job ignores) end the run the same way:
    # the running suite's process group is killed and PostgreSQL is stopped.
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)
    try:
        sys.exit(main())
    except CorpusError as e:
        log(f"error: {e}")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
