//! `shoal run --queue`: several shoal processes as the machines of one
//! build on a real `redis-server` (Debian's package, on loopback, a free
//! port, in a temp dir): every test runs once across machines and `shoal
//! report` equals one machine's run; a machine killed mid-test has its unit
//! finished by another, and an interrupted one's unrun tests too; a late
//! machine takes work; a machine whose
//! collection differs is refused; a failed test's rerun goes back to the
//! queue; a retried machine re-runs what it ran;
//! an unreachable or stopped Redis is a clear error that loses no stored
//! result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Outcome, Project, Report};

/// The tests of `fixtures/queue`.
const TESTS: usize = 13;

/// A private `redis-server` on loopback, stopped on drop.
struct Redis {
    directory: tempfile::TempDir,
    port: u16,
    server: Child,
}

impl Redis {
    fn start() -> Self {
        let directory = tempfile::Builder::new().prefix("shoal-it-redis-").tempdir().expect("tempdir");
        let port = free_port();
        let server = Self::spawn(directory.path(), port);
        let redis = Self { directory, port, server };
        redis.wait_until_up();
        redis
    }

    fn spawn(directory: &Path, port: u16) -> Child {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(directory)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts (scripts/redis.sh install)")
    }

    fn wait_until_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]) != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not answer on port {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `redis-cli <args>`'s output, trimmed (empty when it fails).
    fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output();
        output.map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned()).unwrap_or_default()
    }

    /// Stops the server, saving its data first, and starts it again from
    /// that data.
    fn stop_saving(&mut self) {
        self.cli(&["SHUTDOWN", "SAVE"]);
        let _ = self.server.wait();
    }

    fn restart(&mut self) {
        self.server = Self::spawn(self.directory.path(), self.port);
        self.wait_until_up();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("an address").port()
}

/// One machine of a build: its own copy of the fixture.
struct Machine {
    name: String,
    project: Project,
}

impl Machine {
    fn new(name: &str) -> Self {
        Self { name: name.to_owned(), project: Project::fixture("queue") }
    }

    /// `shoal run --queue ... --machine NAME -n WORKERS`, started.
    fn start(&self, redis: &Redis, build: &str, workers: usize, log: &Path, env: &[(&str, &str)]) -> Child {
        self.start_with(redis, build, workers, log, env, &[])
    }

    /// [`Self::start`] with more arguments.
    /// [`Self::start`] on one worker with `test_slow` first (the history
    /// says it is the longest) taking `seconds`, once that test started.
    fn start_in_the_slow_test(&self, redis: &Redis, build: &str, log: &Path, seconds: &str) -> Child {
        self.project.history_starting_with("test_slow.py::test_slow");
        let child = self.start(redis, build, 1, log, &[("QUEUE_SLOW", seconds)]);
        wait_for("test_slow to start", Duration::from_secs(30), || {
            starts(log).contains_key("test_slow.py::test_slow")
        });
        child
    }

    fn start_with(
        &self,
        redis: &Redis,
        build: &str,
        workers: usize,
        log: &Path,
        env: &[(&str, &str)],
        extra: &[&str],
    ) -> Child {
        let url = redis.url();
        let count = workers.to_string();
        let mut args = vec!["run", "-n", &count, "--queue", &url, "--build", build, "--machine", &self.name];
        args.extend_from_slice(&["--queue-lease", "1", "--json-report", "machine.json"]);
        args.extend_from_slice(extra);
        let mut command = self.project.shoal_command(&args);
        command.env("QUEUE_LOG", log).env("QUEUE_MACHINE", &self.name).envs(env.iter().copied());
        command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("shoal starts")
    }

    /// The tests this machine's own JSON report holds.
    fn tests_run(&self) -> Vec<String> {
        let text =
            std::fs::read_to_string(self.project.path().join("machine.json")).expect("a machine report");
        let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let tests = json["tests"].as_array().expect("tests");
        tests.iter().map(|test| test["nodeid"].as_str().expect("a node id").to_owned()).collect()
    }
}

fn finish(child: Child) -> Outcome {
    Outcome::of(child.wait_with_output().expect("shoal ends"))
}

/// `shoal report` in `project`, with its JSON report.
fn report(project: &Project, redis: &Redis, build: &str) -> Report {
    let url = redis.url();
    let args = [
        "report",
        "--queue",
        &url,
        "--build",
        build,
        "--json-report",
        "build.json",
        "--junitxml",
        "build.xml",
        "--queue-wait",
        "20",
    ];
    project.report_from("build.json", || project.shoal(&args))
}

/// How many times each test started, by the fixture's log.
fn starts(log: &Path) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let (_, nodeid) = line.split_once(' ').expect("machine and node id");
        *counts.entry(nodeid.to_owned()).or_default() += 1;
    }
    counts
}

fn wait_for(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_path(project: &Project) -> PathBuf {
    project.path().join("starts.log")
}

#[test]
fn three_machines_run_every_test_once_and_the_report_equals_one_machine() {
    let redis = Redis::start();
    let single = Project::fixture("queue");
    let alone = single
        .report_from("single.json", || single.shoal(&["run", "-n", "2", "--json-report", "single.json"]));
    alone.outcome.assert_code(1);
    let log = log_path(&single);
    let machines: Vec<Machine> = ["m1", "m2", "m3"].iter().map(|name| Machine::new(name)).collect();
    let children: Vec<Child> =
        machines.iter().map(|machine| machine.start(&redis, "b1", 2, &log, &[])).collect();
    let codes: Vec<Option<i32>> = children.into_iter().map(|child| finish(child).code).collect();
    let starts = starts(&log);
    assert_eq!(
        starts.len(),
        TESTS - 1,
        "every test that runs started (the skipped one does not): {starts:?}"
    );
    assert!(starts.values().all(|&count| count == 1), "a test ran twice: {starts:?}");
    let mut ran: Vec<String> = machines.iter().flat_map(Machine::tests_run).collect();
    ran.sort();
    let before = ran.len();
    ran.dedup();
    assert_eq!(
        (before, ran.len()),
        (TESTS, TESTS),
        "the machines' reports split the tests: {ran:?} ({codes:?})"
    );
    let build = report(&single, &redis, "b1");
    build.outcome.assert_code(1);
    assert_eq!(build.outcome.closing_counts(), alone.outcome.closing_counts(), "{}", build.outcome.stdout);
    assert_eq!(build.outcomes(), alone.outcomes());
    let junit = std::fs::read_to_string(single.path().join("build.xml")).expect("a JUnit file");
    assert_eq!(junit.matches("<testcase ").count(), TESTS, "{junit}");
    let history = std::fs::read_to_string(single.path().join(".test_durations")).expect("a history");
    assert!(history.contains("test_slow.py::test_slow"), "{history}");
    let ttl: i64 = redis.cli(&["TTL", "shoal:b1:results"]).parse().expect("a TTL");
    assert!(ttl > 0, "the results expire: TTL {ttl}");
    let url = redis.url();
    let merged = single.report_from("merged.json", || {
        single.shoal(&["merge", "--queue", &url, "--build", "b1", "--json-report", "merged.json"])
    });
    merged.outcome.assert_code(1);
    assert_eq!(merged.outcomes(), alone.outcomes(), "shoal merge --queue is shoal report");
}

#[test]
fn a_failed_tests_rerun_goes_back_to_the_queue_and_is_reported_once() {
    let redis = Redis::start();
    let machines = [Machine::new("m1"), Machine::new("m2")];
    let log = log_path(&machines[0].project);
    let marker = machines[0].project.path().join("flaky.marker");
    let env = [("QUEUE_FLAKY", marker.to_str().expect("a UTF-8 path"))];
    let children: Vec<Child> = machines
        .iter()
        .map(|machine| machine.start_with(&redis, "b8", 2, &log, &env, &["--reruns", "1"]))
        .collect();
    children.into_iter().for_each(|child| drop(finish(child)));
    let handed_back = redis.cli(&["HKEYS", "shoal:b8:attempts"]);
    assert!(handed_back.lines().any(|field| field == "1:test_flaky.py::test_flaky_once"), "{handed_back}");
    let build = report(&machines[1].project, &redis, "b8");
    build.outcome.assert_code(1);
    let outcomes = build.outcomes();
    assert_eq!(outcomes.len(), TESTS);
    assert_eq!(outcomes["test_flaky.py::test_flaky_once"], "flaky", "{}", build.outcome.stdout);
    assert_eq!(outcomes["test_steady.py::test_fails"], "failed");
    let starts = starts(&log);
    assert_eq!(starts["test_flaky.py::test_flaky_once"], 2, "{starts:?}");
    assert_eq!(starts["test_steady.py::test_fails"], 2, "{starts:?}");
    let closing = build.outcome.closing_map();
    assert_eq!(
        (closing.get("flaky"), closing.get("rerun")),
        (Some(&1), Some(&2)),
        "{}",
        build.outcome.stdout
    );
}

#[test]
fn a_retried_machine_runs_again_what_it_ran_once_the_build_is_drained() {
    let redis = Redis::start();
    let machine = Machine::new("m1");
    let log = log_path(&machine.project);
    finish(machine.start(&redis, "b7", 2, &log, &[])).assert_code(1);
    let newcomer = Machine::new("m2");
    finish(newcomer.start(&redis, "b7", 2, &log, &[])).assert_code(0);
    assert!(newcomer.tests_run().is_empty(), "the build was drained: {:?}", newcomer.tests_run());
    let retried = finish(machine.start(&redis, "b7", 2, &log, &[]));
    assert!(retried.stderr.contains("retrying the"), "{}", retried.stderr);
    assert_eq!(machine.tests_run().len(), TESTS);
    assert!(starts(&log).values().all(|&count| count == 2), "{:?}", starts(&log));
    let build = report(&newcomer.project, &redis, "b7");
    build.outcome.assert_code(1);
    assert_eq!(build.outcomes().len(), TESTS);
}

#[test]
fn a_machine_killed_mid_test_has_its_unit_finished_by_another() {
    let redis = Redis::start();
    let first = Machine::new("doomed");
    let log = log_path(&first.project);
    let mut doomed = first.start_in_the_slow_test(&redis, "b2", &log, "3");
    kill_tree(doomed.id());
    let _ = doomed.wait();
    let survivor = Machine::new("survivor");
    let outcome = finish(survivor.start(&redis, "b2", 2, &log, &[("QUEUE_SLOW", "0.1")]));
    assert!(outcome.stderr.contains("took over unit"), "{}", outcome.stderr);
    assert!(survivor.tests_run().contains(&"test_slow.py::test_slow".to_owned()));
    let build = report(&survivor.project, &redis, "b2");
    build.outcome.assert_code(1);
    let outcomes = build.outcomes();
    assert_eq!(outcomes.len(), TESTS);
    assert_eq!(outcomes["test_slow.py::test_slow"], "passed");
    assert_eq!(starts(&log)["test_slow.py::test_slow"], 2, "run by both machines");
}

#[test]
fn an_interrupted_machine_leaves_its_unrun_tests_to_another() {
    let redis = Redis::start();
    let quitter = Machine::new("quitter");
    let log = log_path(&quitter.project);
    let child = quitter.start_in_the_slow_test(&redis, "b9", &log, "30");
    // A CI cancelling the job: SIGTERM, then again (no grace).
    for _ in 0..2 {
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        std::thread::sleep(Duration::from_millis(300));
    }
    finish(child).assert_code(2);
    let stored = redis.cli(&["HKEYS", "shoal:b9:results"]);
    assert!(!stored.contains("test_slow"), "an interrupted test is not a result: {stored}");
    let survivor = Machine::new("survivor");
    let outcome = finish(survivor.start(&redis, "b9", 2, &log, &[("QUEUE_SLOW", "0.1")]));
    assert!(survivor.tests_run().contains(&"test_slow.py::test_slow".to_owned()), "{}", outcome.stderr);
    let build = report(&survivor.project, &redis, "b9");
    build.outcome.assert_code(1);
    assert_eq!(build.outcomes()["test_slow.py::test_slow"], "passed");
}

/// SIGKILLs a process and every process under it (a machine dying whole).
fn kill_tree(root: u32) {
    let mut doomed = vec![root];
    let mut index = 0;
    while index < doomed.len() {
        let parent = doomed[index];
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
            if ppid.and_then(|ppid| ppid.parse::<u32>().ok()) == Some(parent) && !doomed.contains(&pid) {
                doomed.push(pid);
            }
        }
        index += 1;
    }
    for pid in doomed {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
}

#[test]
fn a_machine_that_joins_late_takes_work() {
    let redis = Redis::start();
    let early = Machine::new("early");
    let log = log_path(&early.project);
    let first = early.start(&redis, "b3", 1, &log, &[]);
    wait_for("the first tests", Duration::from_secs(30), || !starts(&log).is_empty());
    let late = Machine::new("late");
    let second = late.start(&redis, "b3", 1, &log, &[]);
    finish(first);
    let late_outcome = finish(second);
    assert!(!late.tests_run().is_empty(), "the late machine ran nothing:\n{}", late_outcome.stdout);
    assert_eq!(early.tests_run().len() + late.tests_run().len(), TESTS);
}

#[test]
fn a_machine_whose_collection_differs_is_refused_naming_the_test() {
    let redis = Redis::start();
    let first = Machine::new("first");
    let log = log_path(&first.project);
    finish(first.start(&redis, "b4", 2, &log, &[]));
    let other = Machine::new("other");
    other.project.write("test_extra.py", "def test_extra():\n    pass\n");
    let outcome = finish(other.start(&redis, "b4", 2, &log, &[]));
    outcome.assert_code(3);
    assert!(outcome.stderr.contains("refuses to join"), "{}", outcome.stderr);
    assert!(outcome.stderr.contains("test_extra.py::test_extra"), "{}", outcome.stderr);
}

#[test]
fn an_unreachable_queue_fails_fast_naming_the_url() {
    let project = Project::fixture("queue");
    let url = format!("redis://127.0.0.1:{}/0", free_port());
    let started = Instant::now();
    let outcome = project.shoal(&["run", "--queue", &url, "--build", "b5"]);
    outcome.assert_code(3);
    assert!(outcome.stderr.contains(&format!("cannot reach the queue at {url}")), "{}", outcome.stderr);
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

#[test]
fn the_queue_from_pyproject_fails_fast_when_unreachable() {
    let project = Project::fixture("queue");
    let url = format!("redis://127.0.0.1:{}/0", free_port());
    project.write("pyproject.toml", format!("[tool.shoal]\nqueue = \"{url}\"\n"));
    let outcome = project.shoal(&["run", "--build", "b10"]);
    outcome.assert_code(3);
    assert!(outcome.stderr.contains(&format!("cannot reach the queue at {url}")), "{}", outcome.stderr);
}

#[test]
fn a_machine_waits_for_the_units_a_bounded_time_naming_the_publisher() {
    let redis = Redis::start();
    // A machine won the right to publish and never did.
    redis.cli(&["SET", "shoal:b11:master", "ghost"]);
    let machine = Machine::new("waiting");
    let log = log_path(&machine.project);
    let outcome = finish(machine.start_with(&redis, "b11", 1, &log, &[], &["--queue-wait", "1"]));
    outcome.assert_code(3);
    assert!(outcome.stderr.contains("no units were published within 1s"), "{}", outcome.stderr);
    assert!(outcome.stderr.contains("machine ghost arrived first"), "{}", outcome.stderr);
}

#[test]
fn the_report_gives_up_when_units_are_left_and_no_machine_is_alive() {
    let redis = Redis::start();
    let doomed = Machine::new("doomed");
    let log = log_path(&doomed.project);
    let mut child = doomed.start_in_the_slow_test(&redis, "b12", &log, "30");
    kill_tree(child.id());
    let _ = child.wait();
    let url = redis.url();
    let outcome = doomed.project.shoal(&["report", "--queue", &url, "--build", "b12", "--queue-wait", "2"]);
    outcome.assert_code(3);
    assert!(outcome.stderr.contains("no machine has been alive for 2s"), "{}", outcome.stderr);
}

#[test]
fn redis_stopped_mid_run_is_a_clear_error_and_stored_results_stay() {
    let mut redis = Redis::start();
    let machine = Machine::new("alone");
    let log = log_path(&machine.project);
    let child = machine.start(&redis, "b6", 1, &log, &[("QUEUE_SLOW", "2")]);
    wait_for("a stored result", Duration::from_secs(30), || {
        redis.cli(&["HLEN", "shoal:b6:results"]).parse::<usize>().unwrap_or(0) >= 2
    });
    let stored_before = redis.cli(&["HKEYS", "shoal:b6:results"]);
    redis.stop_saving();
    let outcome = finish(child);
    outcome.assert_code(3);
    assert!(outcome.stderr.contains(&format!("lost the queue at {}", redis.url())), "{}", outcome.stderr);
    redis.restart();
    let stored_after = redis.cli(&["HKEYS", "shoal:b6:results"]);
    for nodeid in stored_before.lines() {
        assert!(stored_after.lines().any(|kept| kept == nodeid), "{nodeid} was lost: {stored_after}");
    }
}
