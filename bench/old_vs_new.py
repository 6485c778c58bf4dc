"""Times two shoal binaries against each other on the reference suites.

For changes that should not change speed (a restructuring): both binaries
run each suite, interleaved (old, new, then new, old, ...), after one
warm-up round each that fills the durations history, and the medians and
their ratio are printed with each binary's closing counts.

    python3 bench/old_vs_new.py --old OLD/shoal --new target/release/shoal \\
        --python .venv-test/py3.11-pytest-9.2.0/bin/python \\
        --suites-dir /tmp/suites --suites tiny,imports,fixtures,cpu,many --repeat 5

The suites come from ../shared/bench/gen_suites.py (`python3
../shared/bench/gen_suites.py /tmp/suites`).
"""

import argparse
import re
import statistics
import subprocess
import time


def run(binary, python, directory, workers):
    started = time.perf_counter()
    done = subprocess.run(
        [binary, "run", "--select", "selected.txt", "-n", workers, "--python", python, "-q"],
        cwd=directory,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    counts = re.sub(r" in [0-9.]+s.*", "", lines[-1]).strip("= ") if lines else f"exit {done.returncode}"
    return elapsed, counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="the baseline shoal binary")
    parser.add_argument("--new", required=True, help="the shoal binary under test")
    parser.add_argument("--python", required=True, help="the interpreter with pytest")
    parser.add_argument("--suites-dir", required=True, help="where the generated suites are")
    parser.add_argument("--suites", default="tiny,imports,fixtures,cpu,many")
    parser.add_argument("--workers", default="2")
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    binaries = {"old": options.old, "new": options.new}
    print("| suite | old (s) | new (s) | new / old | counts |")
    print("|---|---|---|---|---|")
    for suite in options.suites.split(","):
        directory = f"{options.suites_dir}/{suite}"
        times = {"old": [], "new": []}
        counts = {}
        for round_number in range(options.repeat + 1):
            order = ("old", "new") if round_number % 2 == 0 else ("new", "old")
            for name in order:
                elapsed, counts[name] = run(binaries[name], options.python, directory, options.workers)
                if round_number > 0:
                    times[name].append(elapsed)
        old, new = statistics.median(times["old"]), statistics.median(times["new"])
        same = counts["old"] == counts["new"]
        shown = counts["new"] if same else f"DIFFER: old {counts['old']}, new {counts['new']}"
        print(f"| {suite} | {old:.2f} | {new:.2f} | {new / old:.2f} | {shown} |", flush=True)


if __name__ == "__main__":
    main()
