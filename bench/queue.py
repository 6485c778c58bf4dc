#!/usr/bin/env python3
"""Time a build over three machines, one of them slowed: `--shard K/3`
against `--queue` (a Redis work queue), the issue 15 "Done when" measure.

    python3 bench/queue.py --suite /tmp/suites/seed81 --python PY [--shoal PATH]
                           [--workers 2,2,1] [--repeat 3] [--kill-after SECONDS]

Each "machine" is a `shoal run` process in its own copy of the suite (same
durations history: a suite without `.test_durations` is first run once,
`-n 2`, to write one); all start together. The slowed machine has fewer
workers (`--workers`, one count per machine). A build's wall time is the
last machine's end; the spread is last end minus first end. `--queue` runs
against a private `redis-server` (Debian's package) on a free loopback port.
`shoal report` then checks that every test was reported once.

`--kill-after S` instead runs the queue only, and SIGKILLs the last machine
(with its workers) S seconds in, with a 3 s lease: the table shows whether
the build still reported every test once.

Standard library only; Linux. Prints a Markdown table on stdout.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis(directory):
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", directory],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        ping = subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True, text=True)
        if ping.stdout.strip() == "PONG":
            return server, port
        time.sleep(0.05)
    server.kill()
    sys.exit("bench/queue.py: redis-server did not start")


def machines_run(args, mode, round_index, port, work):
    """Starts one process per machine at once; returns each one's seconds to
    its end, and the report's test count (queue) or the shards' (shard)."""
    total = len(args.workers)
    processes = []
    start = time.monotonic()
    for index, workers in enumerate(args.workers):
        directory = os.path.join(work, f"{mode}-{round_index}-{index}")
        shutil.copytree(args.suite, directory)
        command = [args.shoal, "run", "--python", args.python, "-n", str(workers), "-q",
                   "--json-report", "machine.json"]
        if mode == "shard":
            command += ["--shard", f"{index + 1}/{total}"]
        else:
            command += ["--queue", f"redis://127.0.0.1:{port}/0", "--build", f"bench-{round_index}",
                        "--machine", f"m{index}"]
            if args.kill_after is not None:
                command += ["--queue-lease", "3"]
        processes.append((subprocess.Popen(command, cwd=directory, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL), directory))
    ends = [None] * total
    killed = args.kill_after is None
    while any(end is None for end in ends):
        if not killed and time.monotonic() - start >= args.kill_after:
            kill_tree(processes[-1][0].pid)
            killed = True
        for index, (process, _) in enumerate(processes):
            if ends[index] is None and process.poll() is not None:
                ends[index] = time.monotonic() - start
        time.sleep(0.01)
    counts = []
    for _, directory in processes:
        path = os.path.join(directory, "machine.json")
        if not os.path.exists(path):
            counts.append("killed")
            continue
        with open(path) as handle:
            counts.append(len(json.load(handle)["tests"]))
    return ends, counts


def kill_tree(root):
    """SIGKILLs a process and everything under it (a machine dying whole)."""
    doomed = [root]
    for parent in doomed:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == parent and int(entry) not in doomed:
                doomed.append(int(entry))
    for pid in doomed:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def report_count(args, port, round_index, work):
    directory = os.path.join(work, f"report-{round_index}")
    shutil.copytree(args.suite, directory)
    subprocess.run([args.shoal, "report", "--queue", f"redis://127.0.0.1:{port}/0", "--build",
                    f"bench-{round_index}", "--json-report", "build.json", "--queue-wait=60"],
                   cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(directory, "build.json")) as handle:
        tests = json.load(handle)["tests"]
    return len(tests), len({test["nodeid"] for test in tests})


def warmed_suite(args, work):
    """A copy of the suite with a durations history (one run writes it
    when the suite has none)."""
    suite = os.path.join(work, "suite")
    shutil.copytree(args.suite, suite)
    if not os.path.exists(os.path.join(suite, ".test_durations")):
        print("no .test_durations: one run to write it", file=sys.stderr)
        subprocess.run([args.shoal, "run", "--python", args.python, "-n", "2", "-q"], cwd=suite,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return suite


def longest_test(suite):
    with open(os.path.join(suite, ".test_durations")) as handle:
        return max(json.load(handle).values())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", required=True)
    parser.add_argument("--python", required=True)
    parser.add_argument("--shoal", default=os.path.join(REPO, "target", "release", "shoal"))
    parser.add_argument("--workers", default="2,2,1", type=lambda text: [int(n) for n in text.split(",")])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--kill-after", type=float)
    args = parser.parse_args()
    modes = ("queue",) if args.kill_after is not None else ("shard", "queue")
    work = tempfile.mkdtemp(prefix="shoal-bench-queue-")
    name = os.path.basename(args.suite.rstrip("/"))
    args.suite = warmed_suite(args, work)
    server, port = start_redis(work)
    rows = {"shard": [], "queue": []}
    try:
        for round_index in range(args.repeat):
            for mode in modes:
                ends, counts = machines_run(args, mode, round_index, port, work)
                reported = report_count(args, port, round_index, work) if mode == "queue" else None
                rows[mode].append((ends, counts, reported))
                print(f"round {round_index + 1} {mode}: ends {['%.2f' % end for end in ends]} tests {counts}"
                      f" reported {reported}", file=sys.stderr)
        longest = longest_test(args.suite)
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    print_table(args, rows, name, longest)


def print_table(args, rows, name, longest):
    print(f"{name}, machines with -n {','.join(map(str, args.workers))}, "
          f"{args.repeat} rounds, longest test {longest:.2f}s (history); medians:\n")
    print("| mode | machine ends (s) | spread (s) | build wall (s) | tests per machine | reported (unique) |")
    print("|---|---|---|---|---|---|")
    walls = {}
    for mode, runs in rows.items():
        if not runs:
            continue
        per_machine = [statistics.median(run[0][index] for run in runs) for index in range(len(args.workers))]
        spread = statistics.median(max(run[0]) - min(run[0]) for run in runs)
        walls[mode] = statistics.median(max(run[0]) for run in runs)
        counts = "/".join(str(count) for count in rows[mode][-1][1])
        ends = ", ".join(f"{end:.2f}" for end in per_machine)
        reported = "; ".join(f"{run[2][0]} ({run[2][1]})" for run in runs) if mode == "queue" else "-"
        print(f"| `--{mode}` | {ends} | {spread:.2f} | {walls[mode]:.2f} | {counts} | {reported} |")
    if "shard" in walls:
        print(f"\nqueue wall / shard wall: {walls['queue'] / walls['shard']:.2f}")


if __name__ == "__main__":
    main()
