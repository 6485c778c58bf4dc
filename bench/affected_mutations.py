#!/usr/bin/env python3
"""The safety check of `shoal run --affected`: mutations and a stream of releases.

    python3 bench/affected_mutations.py --shoal target/release/shoal \\
        [--projects toolz,cachetools] [--python 3.12] [--work /tmp/shoal-affected] \\
        [--seed 1] [--count 50] [--json OUT.json]
    python3 bench/affected_mutations.py --shoal target/release/shoal \\
        --stream toolz --versions 0.12.0,0.12.1,1.0.0,1.1.0,1.2.0 [--json OUT.json]

Mutations: each project is set up as bench/corpus/run.py sets it up (its pinned
sdist, a venv with pinned dependencies, in --work), with the package under test
imported from the unpacked sdist (PYTHONPATH), so that it is the project's own
code to shoal. A baseline store is recorded with `shoal run --affected --force`
on the unmutated source. Then --count small changes to function bodies of the
package (not its tests), chosen with a seeded generator (--seed), are applied one
at a time: flip a comparison, swap `and`/`or`, `+`/`-`, drop a `not`, change a
number, a string or a boolean, replace a statement with `pass`. Sites are found
with `ast`; each change edits the source text in place, so the rest of the file
stays byte-identical. For each change: the baseline store is restored, the change
applied, `shoal run -n 2 --affected` and a full `shoal run -n 2` run (JSON
reports), and every test compared: a **miss** is a test the affected run reported
cached with outcome X while the full run gives Y != X. The file is restored from a
pristine copy whatever happens.

Stream (--stream NAME --versions A,B,...): the sdists of consecutive releases
replace the source tree in order, the store (and durations history) kept; per
step `shoal run -n 2 --affected` against a full `shoal run -n 2`: the fraction of
tests run, the wall times, and misses as above. The venv is the corpus one
(dependencies pinned for the corpus version).

Standard library only; Python >= 3.9; Linux. Output: one line per change or step
on stderr as it goes, Markdown tables on stdout at the end. Exit 1 if any miss.
"""
import argparse
import ast
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(BENCH_DIR, "corpus"))
import run as corpus  # noqa: E402  (bench/corpus/run.py: projects and their set-up)

WORKERS = 2
STORE = ".shoal_affected.json"

# Per corpus project: the package directory (relative to the unpacked sdist) the
# changes go to, and the PYTHONPATH entry that makes the tests import it from
# there (None: the tests already do, running from the sdist). pluggy and
# packaging are not here: pytest itself imports them, so a change breaks the
# runner before any test (pytest's INTERNALERROR), not a test.
TARGETS = {
    "toolz": ("toolz", None),
    "cachetools": ("src/cachetools", "src"),
    "asgiref": ("asgiref", "."),
    "more-itertools": ("more_itertools", "."),
    "attrs": ("src/attr", "src"),
}
# Projects beyond the corpus's (bench/corpus/run.py's PROJECTS), set up the same way.
PROJECTS = dict(corpus.BY_NAME)
PROJECTS["cachetools"] = corpus.Project(
    "cachetools", "cachetools", "8.0.2", "pure-Python caches and memoizing decorators; a fast suite",
    [], ["tests"], install=False)

# Directories and files that are tests: never changed.
TEST_PARTS = ("tests", "testing", "conftest.py")


def log(message):
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Mutation sites: found with ast, applied as a text splice.


class Site:
    """One change: replace bytes [start, end) of `path` with `text`."""

    def __init__(self, path, line, kind, start, end, text):
        self.path, self.line, self.kind = path, line, kind
        self.start, self.end, self.text = start, end, text

    def apply(self, source):
        return source[: self.start] + self.text + source[self.end:]


FLIPS = {
    ast.Lt: (r"<", ">="), ast.GtE: (r">=", "<"), ast.Gt: (r">", "<="), ast.LtE: (r"<=", ">"),
    ast.Eq: (r"==", "!="), ast.NotEq: (r"!=", "=="), ast.Is: (r"\bis\b", "is not"),
    ast.IsNot: (r"\bis\s+not\b", "is"), ast.In: (r"\bin\b", "not in"),
    ast.NotIn: (r"\bnot\s+in\b", "in"),
}
ARITHMETIC = {ast.Add: (r"\+", "-"), ast.Sub: (r"-", "+"), ast.Mult: (r"\*", "//"),
              ast.FloorDiv: (r"//", "*")}
BOOLEANS = {ast.And: (r"\band\b", "or"), ast.Or: (r"\bor\b", "and")}


class Finder:
    """The sites of one file's function bodies."""

    def __init__(self, path, source):
        self.path = path
        self.source = source  # bytes: ast's column offsets count UTF-8 bytes
        self.starts = [0]
        for line in source.split(b"\n"):
            self.starts.append(self.starts[-1] + len(line) + 1)
        self.sites = []

    def offset(self, line, column):
        return self.starts[line - 1] + column

    def span(self, node):
        return self.offset(node.lineno, node.col_offset), self.offset(node.end_lineno, node.end_col_offset)

    def gap_operator(self, node, left, right, table, kind):
        """The operator between `left` and `right` (the text between them, found by regex)."""
        pattern, replacement = table
        start, end = self.span(left)[1], self.span(right)[0]
        gap = self.source[start:end].decode("utf-8", "replace")
        match = re.search(pattern, gap)
        if match and "#" not in gap:
            self.sites.append(Site(self.path, node.lineno, kind, start + match.start(),
                                   start + match.end(), replacement.encode()))

    def function(self, function, skipped):
        """`skipped`: ids of nodes never changed (docstrings, f-strings' parts)."""
        for statement in function.body:
            if id(statement) not in skipped:
                self.statement(statement, skipped)

    def statement(self, statement, skipped):
        for node in ast.walk(statement):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.stmt) and not (
                    isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                    and node.decorator_list):
                start, end = self.span(node)
                self.sites.append(Site(self.path, node.lineno, "delete statement", start, end, b"pass"))
            if isinstance(node, ast.Compare):
                table = FLIPS.get(type(node.ops[0]))
                if table:
                    self.gap_operator(node, node.left, node.comparators[0], table, "flip comparison")
            elif isinstance(node, ast.BoolOp):
                self.gap_operator(node, node.values[0], node.values[1], BOOLEANS[type(node.op)],
                                  "swap and/or")
            elif isinstance(node, ast.BinOp) and type(node.op) in ARITHMETIC:
                self.gap_operator(node, node.left, node.right, ARITHMETIC[type(node.op)],
                                  "swap arithmetic")
            elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
                start = self.span(node)[0]
                self.sites.append(Site(self.path, node.lineno, "drop not", start,
                                       self.span(node.operand)[0], b""))
            elif isinstance(node, ast.Constant):
                self.constant(node)

    def constant(self, node):
        value = node.value
        if isinstance(value, bool):
            text = repr(not value)
        elif isinstance(value, int):
            text = repr(value + 1)
        elif isinstance(value, float):
            text = repr(value * 2 + 1)
        elif isinstance(value, str):
            text = repr(value + "~")
        else:
            return
        start, end = self.span(node)
        self.sites.append(Site(self.path, node.lineno, "change constant", start, end, text.encode()))


def sites_of(root, package):
    """Every site in the package's non-test files, in a stable order."""
    sites = []
    base = os.path.join(root, package)
    for directory, subdirectories, files in os.walk(base):
        subdirectories[:] = sorted(d for d in subdirectories if d not in TEST_PARTS and d != "__pycache__")
        for name in sorted(files):
            if not name.endswith(".py") or name.startswith("test_") or name in TEST_PARTS:
                continue
            path = os.path.relpath(os.path.join(directory, name), root)
            with open(os.path.join(root, path), "rb") as f:
                source = f.read()
            try:
                tree = ast.parse(source)
            except SyntaxError:
                continue
            finder = Finder(path, source)
            skipped = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.JoinedStr):
                    skipped.update(id(child) for child in ast.walk(node))
                body = getattr(node, "body", None)
                if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                        and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                    skipped.update((id(body[0]), id(body[0].value)))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    finder.function(node, skipped)
            sites.extend(finder.sites)
    # Nested functions are walked twice (as part of the outer body and as
    # functions): one site each.
    unique = {}
    for site in sites:
        unique.setdefault((site.path, site.start, site.end, site.kind), site)
    return list(unique.values())


def choose(sites, root, count, seed):
    """`count` sites by a seeded generator: kinds in turn (so rare kinds are tried
    too), a random site of each; a site whose change does not compile or does not
    change the code (the AST) is passed over."""
    rng = random.Random(seed)
    by_kind = {}
    for site in sites:
        by_kind.setdefault(site.kind, []).append(site)
    for kind_sites in by_kind.values():
        rng.shuffle(kind_sites)
    kinds = sorted(by_kind)
    rng.shuffle(kinds)
    chosen = []
    sources = {}
    while len(chosen) < count and any(by_kind.values()):
        for kind in kinds:
            if len(chosen) >= count or not by_kind[kind]:
                continue
            site = by_kind[kind].pop()
            if site.path not in sources:
                with open(os.path.join(root, site.path), "rb") as f:
                    sources[site.path] = f.read()
            original = sources[site.path]
            mutated = site.apply(original)
            try:
                changed = ast.dump(ast.parse(mutated)) != ast.dump(ast.parse(original))
                compile(mutated, site.path, "exec")
            except (SyntaxError, ValueError):
                continue
            if changed:
                chosen.append(site)
    return chosen


# ---------------------------------------------------------------------------
# Running shoal and comparing.


def shoal_run(shoal, project, vpy, src, env, report, logpath, extra, timeout, test_timeout):
    # A change can make a loop endless: --timeout makes that test `timeout`.
    argv = [shoal, "run", "-n", str(WORKERS), "--python", vpy, "--timeout", str(test_timeout),
            "--json-report", report, *extra, *project.paths]
    if project.args:
        argv += ["--", *project.args]
    if os.path.exists(report):
        os.remove(report)
    wall, code, timed_out = corpus.run_logged(argv, src, env, timeout, logpath)
    if timed_out:
        raise corpus.CorpusError(f"{' '.join(argv)} timed out; log {logpath}")
    if not os.path.exists(report):
        raise corpus.CorpusError(f"{' '.join(argv)} exited {code} without a report; log {logpath}")
    with open(report, encoding="utf-8") as f:
        tests = {t["nodeid"]: (t["outcome"], bool(t.get("cached"))) for t in json.load(f)["tests"]}
    return wall, code, tests


def compare(affected, full):
    """(tests run under --affected, misses, tests absent from one run, ran but differ).

    A test the full run did not run (`not_run`: the run stopped at a collection
    error, as pytest's does) has no outcome to compare: it is counted apart,
    with the tests in one report only (`absent`)."""
    ran = sum(1 for _, cached in affected.values() if not cached)
    misses, absent, differ = [], [], []
    for nodeid, (outcome, _) in full.items():
        if nodeid not in affected or outcome == "not_run":
            absent.append(nodeid)
            continue
        got, cached = affected[nodeid]
        if got != outcome:
            (misses if cached else differ).append((nodeid, got, outcome))
    absent += [n for n in affected if n not in full]
    return ran, misses, absent, differ


def environment(base_env, project, src):
    env = dict(base_env)
    env.update(project.env)
    target = TARGETS[project.name][1]
    if target is not None:
        env["PYTHONPATH"] = os.path.join(src, target)
    return env


def check_imported_from_source(project, vpy, src, env):
    package = os.path.basename(TARGETS[project.name][0])
    where = corpus.run([vpy, "-c", f"import {package}; print({package}.__file__)"],
                       f"[{project.name}] finding {package}", cwd=src, env=env).strip()
    if not os.path.realpath(where).startswith(os.path.realpath(src) + os.sep):
        raise corpus.CorpusError(f"[{project.name}] {package} is imported from {where}, not from {src}")


def mutations(args, project, python, pydir, shoal, base_env):
    src, vpy = corpus.setup_project(project, python, pydir, os.path.join(args.work, "sdists"))
    env = environment(base_env, project, src)
    check_imported_from_source(project, vpy, src, env)
    out = os.path.join(pydir, project.name, "mutations")
    pristine = os.path.join(out, "pristine")
    os.makedirs(out, exist_ok=True)
    package = TARGETS[project.name][0]
    if not os.path.exists(pristine):
        shutil.copytree(os.path.join(src, package), pristine)
    # A previous interrupted run's change is undone first.
    shutil.rmtree(os.path.join(src, package))
    shutil.copytree(pristine, os.path.join(src, package))
    store = os.path.join(src, STORE)
    if os.path.exists(store):
        os.remove(store)
    files = lambda name: (os.path.join(out, name + ".json"), os.path.join(out, name + ".log"))  # noqa: E731
    report, logpath = files("baseline")
    wall, code, baseline = shoal_run(shoal, project, vpy, src, env, report, logpath,
                                     ["--affected", "--force"], args.timeout, args.test_timeout)
    shutil.copyfile(store, os.path.join(out, "baseline-store.json"))
    failing = sorted(n for n, (o, _) in baseline.items() if o not in ("passed", "skipped", "xfailed", "xpassed"))
    log(f"[{project.name}] baseline: {len(baseline)} tests in {wall:.1f}s (exit {code}), "
        f"{len(failing)} not passing (always run)")
    # Nothing changed: only the failing tests run.
    report, logpath = files("unchanged")
    _, _, unchanged = shoal_run(shoal, project, vpy, src, env, report, logpath, ["--affected"], args.timeout, args.test_timeout)
    ran_unchanged = sum(1 for _, cached in unchanged.values() if not cached)
    log(f"[{project.name}] unchanged: {ran_unchanged} of {len(unchanged)} tests run")

    chosen = choose(sites_of(src, package), src, args.count, args.seed)
    rows = []
    for index, site in enumerate(chosen, 1):
        path = os.path.join(src, site.path)
        pristine_file = os.path.join(pristine, os.path.relpath(site.path, package))
        shutil.copyfile(os.path.join(out, "baseline-store.json"), store)
        with open(pristine_file, "rb") as f:
            original = f.read()
        stat = os.stat(pristine_file)
        try:
            with open(path, "wb") as f:
                f.write(site.apply(original))
            # A distinct mtime per change: a .pyc written for an earlier change of
            # the same size within the same second would otherwise be reused.
            os.utime(path, (stat.st_atime, stat.st_mtime + index))
            report, logpath = files(f"{index:03d}-affected")
            affected_wall, _, affected = shoal_run(shoal, project, vpy, src, env, report, logpath,
                                                   ["--affected"], args.timeout, args.test_timeout)
            report, logpath = files(f"{index:03d}-full")
            full_wall, _, full = shoal_run(shoal, project, vpy, src, env, report, logpath, [], args.timeout, args.test_timeout)
        finally:
            shutil.copy2(pristine_file, path)
        ran, misses, absent, differ = compare(affected, full)
        row = {"site": f"{site.path}:{site.line}", "kind": site.kind,
               "from": original[site.start:site.end].decode("utf-8", "replace"),
               "change": site.text.decode("utf-8", "replace"),
               "tests": len(full), "ran": ran, "misses": misses, "absent": absent, "differ": differ,
               "affected_seconds": affected_wall, "full_seconds": full_wall,
               "failing_in_full": sum(1 for o, _ in full.values() if o in ("failed", "error"))}
        rows.append(row)
        log(f"[{project.name}] {index}/{len(chosen)} {row['site']} {site.kind} -> {row['change']!r}: "
            f"ran {ran}/{len(full)}, {row['failing_in_full']} fail in full, misses {len(misses)}"
            + (f", absent {len(absent)}" if absent else "") + (f", ran but differ {len(differ)}" if differ else "")
            + f" ({affected_wall:.1f}s vs {full_wall:.1f}s)")
        for nodeid, got, outcome in misses:
            log(f"    MISS {nodeid}: cached {got}, full run {outcome}")
    return {"project": project.name, "version": project.version, "baseline_tests": len(baseline),
            "baseline_not_passing": failing, "unchanged_ran": ran_unchanged, "mutations": rows}


# ---------------------------------------------------------------------------
# A stream of releases.


def download_sdist(project, version, python, sdists):
    release = corpus.Project(project.name, project.dist, version, "", [], [])
    found = corpus.find_sdist(release, sdists)
    if not found:
        corpus.run([python, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                    "--no-deps", "--no-binary", project.dist, "-d", sdists,
                    f"{project.dist}=={version}"], f"[{project.name}] pip download {version}")
        found = corpus.find_sdist(release, sdists)
    if not found:
        raise corpus.CorpusError(f"[{project.name}] no sdist of {version} in {sdists}")
    return found


KEPT = (STORE, ".test_durations", ".pytest_cache")


def replace_tree(src, tarball, scratch):
    """The unpacked tarball (an sdist, or `git archive`'s, each with one top
    directory) in place of `src`'s files; the store, durations history and pytest's
    cache kept."""
    for name in os.listdir(src):
        if name not in KEPT:
            path = os.path.join(src, name)
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    top = corpus.unpack(tarball, scratch)
    for name in os.listdir(top):
        shutil.move(os.path.join(top, name), os.path.join(src, name))


def git_tarball(git_dir, commit, out):
    """A commit's tree as a checkout has it, as a tarball with one top directory.
    (Not `git archive`: it fills `$Format$` placeholders, such as versioneer's,
    with the commit, a change to the code no checkout sees.)"""
    tree = os.path.join(out, "checkout", commit)
    shutil.rmtree(tree, ignore_errors=True)
    os.makedirs(tree)
    env = dict(os.environ, GIT_INDEX_FILE=os.path.join(out, "checkout", "index"))
    corpus.run(["git", "--git-dir", git_dir, "read-tree", commit], f"git read-tree {commit}", env=env)
    corpus.run(["git", "--git-dir", git_dir, "--work-tree", tree, "checkout-index", "-a", "-f"],
               f"git checkout-index {commit}", env=env)
    path = os.path.join(out, f"{commit}.tar")
    with tarfile.open(path, "w") as tar:
        tar.add(tree, arcname=commit)
    return path


def stream(args, project, python, pydir, shoal, base_env):
    _, vpy = corpus.setup_project(project, python, pydir, os.path.join(args.work, "sdists"))
    out = os.path.join(pydir, project.name, "stream-git" if args.git else "stream")
    src = os.path.join(out, "src")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(src)
    env = environment(base_env, project, src)
    rows = []
    for version in args.versions.split(","):
        if args.git:
            tarball = git_tarball(args.git, version, out)
        else:
            tarball = download_sdist(project, version, python, os.path.join(args.work, "sdists"))
        replace_tree(src, tarball, os.path.join(out, "unpack"))
        check_imported_from_source(project, vpy, src, env)
        report = os.path.join(out, f"{version}-affected.json")
        affected_wall, _, affected = shoal_run(shoal, project, vpy, src, env, report,
                                               report[:-5] + ".log", ["--affected"], args.timeout, args.test_timeout)
        report = os.path.join(out, f"{version}-full.json")
        full_wall, _, full = shoal_run(shoal, project, vpy, src, env, report, report[:-5] + ".log", [],
                                       args.timeout, args.test_timeout)
        ran, misses, absent, differ = compare(affected, full)
        row = {"version": version, "tests": len(full), "ran": ran, "misses": misses, "absent": absent,
               "differ": differ, "affected_seconds": affected_wall, "full_seconds": full_wall,
               "everything": everything_because(report[:-len("full.json")] + "affected.log")}
        rows.append(row)
        log(f"[{project.name}] {version}: ran {ran}/{len(full)}, misses {len(misses)}"
            + (f", absent {len(absent)}" if absent else "") + (f", ran but differ {len(differ)}" if differ else "")
            + f" ({affected_wall:.1f}s vs {full_wall:.1f}s)")
        for nodeid, got, outcome in misses:
            log(f"    MISS {nodeid}: cached {got}, full run {outcome}")
    return {"project": project.name, "stream": rows}


def everything_because(logpath):
    """Why every test ran, from the affected run's notice ("" when not all did)."""
    with open(logpath, encoding="utf-8", errors="replace") as f:
        for line in f:
            for notice in ("--affected: every test runs: ", "--affected: no usable record"):
                if notice in line:
                    return line.split(notice, 1)[1].strip() if notice.endswith(": ") else "no store yet"
    return ""


# ---------------------------------------------------------------------------
# Tables.


def print_mutations(results, pyver, seed):
    out = sys.stdout
    out.write(f"\n## Mutations (Python {pyver}, seed {seed}, -n {WORKERS})\n\n")
    out.write("| project | tests | changes tried | misses | median fraction run | "
              "median wall --affected | median wall full | ratio |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
    for result in results:
        rows = result["mutations"]
        if not rows:
            continue
        affected = statistics.median(r["affected_seconds"] for r in rows)
        full = statistics.median(r["full_seconds"] for r in rows)
        fraction = statistics.median(r["ran"] / max(r["tests"], 1) for r in rows)
        out.write(f"| {result['project']} {result['version']} | {result['baseline_tests']} | {len(rows)} | "
                  f"{sum(len(r['misses']) for r in rows)} | {fraction:.1%} | {affected:.1f}s | {full:.1f}s | "
                  f"{affected / full:.2f} |\n")
    for result in results:
        out.write(f"\n### {result['project']} {result['version']}: every change\n\n"
                  f"(baseline: {result['baseline_tests']} tests, {len(result['baseline_not_passing'])} not "
                  f"passing, always run; with nothing changed {result['unchanged_ran']} run)\n\n"
                  "| # | site | kind | change | tests run | failing in full run | misses | "
                  "wall --affected | wall full |\n|---:|---|---|---|---:|---:|---:|---:|---:|\n")
        for index, r in enumerate(result["mutations"], 1):
            change = (f"{r['from']} → " if "from" in r else "") + r["change"]
            change = " ".join(change.replace("|", "\\|").split())
            if len(change) > 60:
                change = change[:57] + "..."
            out.write(f"| {index} | {r['site']} | {r['kind']} | `{change}` | {r['ran']} | "
                      f"{r['failing_in_full']} | {len(r['misses'])} | {r['affected_seconds']:.1f}s | "
                      f"{r['full_seconds']:.1f}s |\n")
    out.flush()


def print_stream(result, pyver):
    out = sys.stdout
    out.write(f"\n## Release stream: {result['project']} (Python {pyver}, -n {WORKERS})\n\n"
              "| step | tests | tests run | fraction | wall --affected | wall full | misses | every test ran because |\n"
              "|---|---:|---:|---:|---:|---:|---:|---|\n")
    for r in result["stream"]:
        out.write(f"| {r['version']} | {r['tests']} | {r['ran']} | {r['ran'] / max(r['tests'], 1):.1%} | "
                  f"{r['affected_seconds']:.1f}s | {r['full_seconds']:.1f}s | {len(r['misses'])} | "
                  f"{r['everything'].replace('|', '/')} |\n")
    out.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shoal", required=True, help="the shoal binary")
    parser.add_argument("--projects", default="toolz,cachetools",
                        help="comma-separated, from " + ",".join(TARGETS))
    parser.add_argument("--python", default="3.12", help="interpreter path or version (default 3.12)")
    parser.add_argument("--work", default="/tmp/shoal-affected", help="work directory (as run.py's)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--count", type=int, default=50, help="changes per project (default 50)")
    parser.add_argument("--stream", metavar="PROJECT", help="the release stream of this project instead")
    parser.add_argument("--versions", help="with --stream: releases (or commits, with --git), oldest first, "
                        "comma-separated")
    parser.add_argument("--git", metavar="GIT_DIR", help="with --stream: a clone's git directory; --versions "
                        "are its commits, each applied as `git archive` gives it")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run (default 900)")
    parser.add_argument("--test-timeout", type=float, default=60,
                        help="shoal's --timeout: seconds per test (default 60)")
    parser.add_argument("--json", help="write every result here")
    parser.add_argument("--render", metavar="JSON", help="print the tables of a run saved with --json; "
                        "run nothing (--python and --seed as that run's, for the titles)")
    args = parser.parse_args()
    if args.render:
        with open(args.render, encoding="utf-8") as f:
            results = json.load(f)
        pyver = args.python
        if results and "stream" in results[0]:
            print_stream(results[0], pyver)
        else:
            print_mutations(results, pyver, args.seed)
        return 0
    names = [args.stream] if args.stream else args.projects.split(",")
    unknown = [name for name in names if name not in TARGETS]
    if unknown:
        raise corpus.CorpusError(f"unknown project(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    if args.stream and not args.versions:
        raise corpus.CorpusError("--stream needs --versions A,B,...")
    shoal = os.path.abspath(args.shoal)
    if not os.access(shoal, os.X_OK):
        raise corpus.CorpusError(f"--shoal {args.shoal}: not an executable")
    args.work = os.path.abspath(args.work)
    python = corpus.resolve_python(args.python)
    pyver = corpus.python_version(python)
    pydir = os.path.join(args.work, f"py{pyver}")
    os.makedirs(pydir, exist_ok=True)
    base_env = dict(os.environ)
    for variable in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONDEVMODE", "CI"):
        base_env.pop(variable, None)
    if args.stream:
        result = stream(args, PROJECTS[args.stream], python, pydir, shoal, base_env)
        print_stream(result, pyver)
        results = [result]
        missed = any(r["misses"] for r in result["stream"])
    else:
        results = []
        for name in names:
            results.append(mutations(args, PROJECTS[name], python, pydir, shoal, base_env))
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(results, f, indent=1)
        print_mutations(results, pyver, args.seed)
        missed = any(r["misses"] for result in results for r in result["mutations"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 1 if missed else 0


def _interrupted(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    # SIGTERM ends the run as Ctrl-C does: the changed file is restored.
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        sys.exit(main())
    except corpus.CorpusError as error:
        log(f"error: {error}")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
