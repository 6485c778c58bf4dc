//! Fork isolation (`fixtures/fork_hazards`, docs/fork-isolation.md): what
//! the collecting process holds is either made the worker's own (checked
//! from inside the tests) or found before forking, and then `--mode auto`
//! runs in spawn mode with a notice naming it, `--mode fork` warns and
//! forks, and `--mode spawn` never meets it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use crate::harness::{Outcome, Project, in_parallel};

const TESTS: u64 = 14;

fn run(project: &Project, env: &[(&str, &str)], mode: &str) -> Outcome {
    project.shoal_with_env(env, &["run", "-n", "2", "--mode", mode])
}

/// The line shoal prints when `--mode auto` falls back to spawn mode.
fn fell_back(outcome: &Outcome) -> Option<&str> {
    outcome.stderr.lines().find(|line| line.contains("spawn mode: forking is unsafe here"))
}

fn all_passed(outcome: &Outcome, what: &str) {
    let counts = outcome.closing_map();
    assert_eq!(outcome.code, Some(0), "{what}\n{}\n{}", outcome.stdout, outcome.stderr);
    assert_eq!(
        counts.get("passed").copied().unwrap_or(0) + counts.get("skipped").copied().unwrap_or(0),
        TESTS
    );
}

#[test]
fn without_hazards_workers_fork_and_own_their_tmpdir_factory_and_after_fork_runs_in_each() {
    in_parallel(&["fork", "auto", "spawn"], |mode| {
        let project = Project::fixture("fork_hazards");
        let forked = if *mode == "spawn" { "0" } else { "1" };
        let outcome = run(&project, &[("HAZARD_EXPECT_FORKED", forked)], mode);
        all_passed(&outcome, mode);
        assert_eq!(fell_back(&outcome), None, "{mode}: {}", outcome.stderr);
        let header = if *mode == "spawn" { "(spawn mode)" } else { "(fork mode)" };
        assert!(outcome.stdout.contains(header), "{mode}: {}", outcome.stdout);
    });
}

/// A local server that records, per accepted connection, the pids sent on it.
struct Server {
    port: u16,
    pids_per_connection: Arc<Mutex<Vec<BTreeSet<String>>>>,
}

impl Server {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("its address").port();
        let pids_per_connection = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&pids_per_connection);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let record = Arc::clone(&record);
                std::thread::spawn(move || {
                    let index = {
                        let mut all = record.lock().expect("lock");
                        all.push(BTreeSet::new());
                        all.len() - 1
                    };
                    for line in BufReader::new(stream).lines().map_while(Result::ok) {
                        record.lock().expect("lock")[index].insert(line);
                    }
                });
            }
        });
        Self { port, pids_per_connection }
    }

    /// Connections on which more than one process wrote.
    fn shared(&self) -> Vec<BTreeSet<String>> {
        self.pids_per_connection.lock().expect("lock").iter().filter(|pids| pids.len() > 1).cloned().collect()
    }
}

#[test]
fn each_hazard_is_found_before_forking_and_auto_mode_runs_in_spawn_mode() {
    let server = Server::start();
    let port = server.port.to_string();
    let hazards: Vec<(&str, String, &str)> = vec![
        ("HAZARD_SOCKET", port.clone(), "a connection to 127.0.0.1:"),
        ("HAZARD_THREAD", "1".to_owned(), "hazard-poller"),
        ("HAZARD_BUFFERED", "buffered.txt".to_owned(), "buffered.txt open for writing"),
        ("HAZARD_SQLITE", "hazard.sqlite".to_owned(), "hazard.sqlite open for writing"),
        ("HAZARD_LOG", "hazard.log".to_owned(), "hazard.log open for writing"),
    ];
    let results: Vec<BTreeMap<&str, Outcome>> = in_parallel(&hazards, |(name, value, _)| {
        ["auto", "fork", "spawn"]
            .into_iter()
            .map(|mode| {
                let project = Project::fixture("fork_hazards");
                (mode, run(&project, &[(name, value.as_str())], mode))
            })
            .collect()
    });
    for ((name, _, named), outcomes) in hazards.iter().zip(&results) {
        let auto = &outcomes["auto"];
        all_passed(auto, &format!("{name} auto"));
        let notice =
            fell_back(auto).unwrap_or_else(|| panic!("{name}: no fallback to spawn\n{}", auto.stderr));
        assert!(notice.contains(named), "{name}: the notice does not name it: {notice}");
        assert!(auto.stdout.contains("(spawn mode)"), "{name}: {}", auto.stdout);

        let fork = &outcomes["fork"];
        assert!(
            fork.stderr.contains("forking as asked with --mode fork, though") && fork.stderr.contains(named),
            "{name}: --mode fork does not say what it shares\n{}",
            fork.stderr
        );
        assert!(fork.stdout.contains("(fork mode)"), "{name}: {}", fork.stdout);

        let spawn = &outcomes["spawn"];
        all_passed(spawn, &format!("{name} spawn"));
        assert!(!spawn.stderr.contains("forking"), "{name}: {}", spawn.stderr);
    }
    // Only --mode fork shared the connection between workers.
    let shared = server.shared();
    assert!(shared.len() <= 1, "more runs than --mode fork shared a connection: {shared:?}");
}

#[test]
fn a_connection_closed_before_the_fork_and_reopened_after_it_is_each_workers_own() {
    let server = Server::start();
    let port = server.port.to_string();
    let project = Project::fixture("fork_hazards");
    let env =
        [("HAZARD_SOCKET", port.as_str()), ("HAZARD_CLOSE_BEFORE_FORK", "1"), ("HAZARD_EXPECT_FORKED", "1")];
    let outcome = run(&project, &env, "auto");
    all_passed(&outcome, "closed before the fork");
    assert_eq!(fell_back(&outcome), None, "{}", outcome.stderr);
    assert!(outcome.stdout.contains("(fork mode)"), "{}", outcome.stdout);
    assert_eq!(server.shared(), Vec::<BTreeSet<String>>::new(), "a connection was shared");
    // The collecting process's connection (closed before the fork), then
    // one per forked worker (reopened after it).
    let connections = server.pids_per_connection.lock().expect("lock").len();
    assert!(connections >= 3, "{connections} connections: the workers did not reopen their own");
}
