//! What the user typed: clap definitions and nothing else.
//!
//! Every value is kept as typed (mostly `Option`s) so that
//! [`crate::settings`] can layer it over `[tool.shoal]` and defaults; an
//! enumerated option's words are the enum [`crate::values`] declares for
//! both. No I/O and no decisions here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::values::{CollectionMode, Colour, FailureOutput, WorkerMode};

mod coverage;

pub use coverage::CoverageArgs;

/// shoal: run a pytest suite on every core.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about, long_about = None)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// shoal's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the selected tests in parallel, with pytest's output and exit
    /// codes; every pytest option is accepted (`shoal pytest` is the same).
    #[command(alias = "pytest")]
    Run(Box<RunArgs>),
    /// Print the collected node ids, one a line, without running anything.
    List(ListArgs),
    /// Show how `--shard K/N` would split the tests over N machines
    /// (collects, runs nothing).
    Plan(PlanArgs),
    /// Combine the JSON reports of a sharded run's shards into one JSON
    /// report, one JUnit file and one durations history.
    Merge(MergeArgs),
    /// Wait until a `--queue` build is drained, then write what one machine
    /// would have: the closing line, JUnit, JSON, GitHub summary, durations
    /// history; the exit code is the build's.
    Report(ReportArgs),
    /// Rerun one test in one pytest process after the tests its worker ran
    /// before it in a run (read from that run's `--json-report`), to
    /// reproduce an outcome that depends on test order.
    Replay(ReplayArgs),
    /// Say why each test would run or be cached under `shoal run
    /// --affected` (which file and which function changed): collects the
    /// tests, runs none.
    Why(WhyArgs),
    /// Print the settings `shoal run` would use with these options, each
    /// with where it came from (flag, environment, profile and file line,
    /// default); `--profiles` lists the config file's profiles.
    Config(Box<ConfigArgs>),
}

/// `shoal config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// List the profiles (name, what each inherits, file and line) instead.
    #[arg(long)]
    pub profiles: bool,

    /// The options a `shoal run` would be given.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Which tests, and with which Python: shared by `run` and `list`.
#[derive(Debug, Args)]
pub struct SelectionArgs {
    /// Paths, directories or node ids to collect (pytest's own defaults,
    /// such as `testpaths`, apply when none are given).
    #[arg(value_name = "PATHS")]
    pub paths: Vec<String>,

    /// A selection file: one path, directory or node id a line, `#` comments.
    /// May be given several times; entries named twice run once.
    #[arg(long = "select", value_name = "FILE")]
    pub select: Vec<PathBuf>,

    /// Only run tests matching pytest's keyword expression.
    #[arg(short = 'k', value_name = "EXPR")]
    pub keyword: Option<String>,

    /// Only run tests matching pytest's marker expression.
    #[arg(short = 'm', value_name = "EXPR")]
    pub markers: Option<String>,

    /// The profile of the config file to run with (`[tool.shoal.profile.NAME]`
    /// or shoal.toml's `[profile.NAME]`); also `SHOAL_PROFILE`.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,

    /// The Python interpreter to run pytest with (default: $VIRTUAL_ENV,
    /// the environment shoal is installed in, ./.venv, python3 on PATH).
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,

    /// Arguments after `--` go to pytest unchanged (`-p plugin`, `-W`, ...).
    #[arg(last = true, value_name = "PYTEST_ARGS")]
    pub pytest_args: Vec<String>,
}

/// `shoal run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// What to run.
    #[command(flatten)]
    pub selection: SelectionArgs,

    /// The work queue shared by the build's machines.
    #[command(flatten)]
    pub queue: QueueArgs,

    /// Number of workers: a number (may exceed the cores) or `auto`, the CPUs
    /// this process may use (affinity and cgroup quota aware).
    #[arg(short = 'n', long = "workers", alias = "numprocesses", value_name = "N|auto")]
    pub workers: Option<String>,

    /// pytest-xdist's cap on `-n auto`: at most this many workers.
    #[arg(long, value_name = "N")]
    pub maxprocesses: Option<usize>,

    /// pytest-xdist's scheduling mode, accepted for a migration and noted:
    /// shoal schedules by past durations and keeps `xdist_group` tests on
    /// one worker whatever it says.
    #[arg(long, value_name = "MODE")]
    pub dist: Option<String>,

    /// How workers start: `fork` (collect once, fork warm workers; Linux),
    /// `spawn` (each worker is a fresh pytest that collects), or `auto`
    /// (fork where safe, else spawn with a notice).
    #[arg(long, value_enum, value_name = "fork|spawn|auto", hide_possible_values = true)]
    pub mode: Option<WorkerMode>,

    /// How fork mode collects: `auto` (default: split where history says
    /// importing the test files, or else building their tests, is a large
    /// share of the run, else full), `split` (the collecting process stops
    /// at the test files and each worker imports its share of them),
    /// `items` (the collecting process imports every test file and each
    /// worker builds the tests of its share) or `full` (everything is
    /// collected before forking, as pytest and pytest-xdist's workers do).
    #[arg(long, value_enum, value_name = "auto|split|items|full", hide_possible_values = true)]
    pub collect: Option<CollectionMode>,

    /// Stop after the first failure (same as --maxfail 1).
    #[arg(short = 'x', long = "exitfirst")]
    pub exit_first: bool,

    /// Stop after N failures: nothing new starts, the rest are reported not run.
    #[arg(long, value_name = "N")]
    pub maxfail: Option<u64>,

    /// Run the other tests when some files fail to collect (exit 1, not 2).
    #[arg(long)]
    pub continue_on_collection_errors: bool,

    /// Stop a test after this many seconds (also `30s`, `2m`): its worker's
    /// stacks are dumped, its process group killed, and a new worker takes
    /// over. `@pytest.mark.timeout(N)` sets it per test.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<String>,

    /// Print `SLOW [>Ns] NODEID` for a test still running after this many
    /// seconds (also `30s`, `2m`), and mark it in the live footer.
    #[arg(long, value_name = "SECONDS")]
    pub slow_timeout: Option<String>,

    /// Replace a worker whose resident memory passes SIZE after a test
    /// (e.g. `500M`, `2G`), before it runs another.
    #[arg(long, value_name = "SIZE")]
    pub worker_memory_limit: Option<String>,

    /// Rerun a failed test up to N times, each time on a freshly started
    /// worker; one that then passes is `flaky` (pytest-rerunfailures' flag;
    /// `@pytest.mark.flaky(reruns=N)` sets it per test).
    #[arg(long, value_name = "N")]
    pub reruns: Option<u8>,

    /// Seconds to wait before a rerun.
    #[arg(long, value_name = "SECONDS")]
    pub reruns_delay: Option<f64>,

    /// Make flaky tests (failed, then passed on a rerun) fail the run.
    #[arg(long)]
    pub flaky_fails: bool,

    /// Run only the tests that failed last time (pytest's cache; all tests
    /// when none failed).
    #[arg(long = "lf", alias = "last-failed")]
    pub last_failed: bool,

    /// Run the tests that failed last time first, then the rest.
    #[arg(long = "ff", alias = "failed-first")]
    pub failed_first: bool,

    /// Run only the tests a change can affect: those whose recorded
    /// dependencies changed, that failed last time, are new or have no
    /// record; the others report their last outcome, marked cached (see
    /// docs/affected.md).
    #[arg(long)]
    pub affected: bool,

    /// With --affected: run every test (and record them all afresh).
    #[arg(long, alias = "force")]
    pub no_cache_results: bool,

    /// With --affected: say why this test runs or is cached (which file
    /// and which function changed).
    #[arg(long, value_name = "NODEID")]
    pub explain: Vec<String>,

    /// A time budget for the whole run (`4m30s`, `270`): no test is started
    /// that history says cannot end within it; the rest are reported
    /// `not run (budget)`.
    #[arg(long, value_name = "DURATION")]
    pub budget: Option<String>,

    /// How many times a worker that dies before finishing any test, with
    /// no test running (a broken start-up), may be replaced during the run.
    #[arg(long, alias = "max-worker-restart", value_name = "N")]
    pub max_worker_restarts: Option<u32>,

    /// Less output (pytest's -q); repeat for even less.
    #[arg(short = 'q', long = "quiet", action = clap::ArgAction::Count)]
    pub quiet: u8,

    /// More output (pytest's -v): one line per test.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Show the N slowest setup/call/teardown durations (pytest's flag; 0 for all).
    #[arg(long, value_name = "N")]
    pub durations: Option<usize>,

    /// Where the durations history lives (default: `.test_durations` at
    /// the rootdir, pytest-split's format).
    #[arg(long, value_name = "PATH")]
    pub durations_path: Option<PathBuf>,

    /// Write a JUnit XML report (pytest's flag; pytest's `--junitxml` in
    /// addopts or after `--` is honoured too).
    #[arg(long, alias = "junit-xml", value_name = "PATH")]
    pub junitxml: Option<PathBuf>,

    /// Stream the run as JSON lines to this file (`-` for stdout): run
    /// started, test finished, attempt retried, worker replaced, run finished.
    #[arg(long, value_name = "PATH")]
    pub events: Option<PathBuf>,

    /// Colour the terminal report: `auto` (on a terminal, unless `NO_COLOR`
    /// is set), `always` (or `yes`) or `never` (or `no`).
    #[arg(long = "color", value_enum, value_name = "auto|always|never", hide_possible_values = true)]
    pub color: Option<Colour>,

    /// When failures are shown: `final` (after the run, as pytest does) or
    /// `immediate` (as each test fails; not repeated at the end).
    #[arg(long = "failure-output", value_enum, value_name = "immediate|final", hide_possible_values = true)]
    pub failure_output: Option<FailureOutput>,

    /// Write a self-contained HTML timeline of the run: a lane per worker,
    /// a bar per test attempt, the lower bound marked.
    #[arg(long, value_name = "PATH.html")]
    pub timeline: Option<PathBuf>,

    /// Write a JSON report of the run to this file.
    #[arg(long, value_name = "PATH")]
    pub json_report: Option<PathBuf>,

    /// Run only shard K of N (1-based), split by expected duration; `auto`
    /// reads the CI's own variables (GitLab, CircleCI, Buildkite, Bazel,
    /// Kubernetes).
    #[arg(long, value_name = "K/N|auto")]
    pub shard: Option<String>,

    /// The number of shards, for `--shard auto` where the CI does not say
    /// (a Kubernetes Indexed Job's completions).
    #[arg(long, value_name = "N")]
    pub shard_total: Option<usize>,

    /// pytest-cov's options.
    #[command(flatten)]
    pub coverage: CoverageArgs,
}

/// `shoal list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// What to collect.
    #[command(flatten)]
    pub selection: SelectionArgs,

    /// Print JSON lines with markers and locations instead of bare node ids.
    #[arg(long)]
    pub json: bool,
}

/// `shoal plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// What to collect.
    #[command(flatten)]
    pub selection: SelectionArgs,

    /// The number of shards to plan for.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub shards: u32,

    /// Where the durations history lives (default: `.test_durations` at
    /// the rootdir).
    #[arg(long, value_name = "PATH")]
    pub durations_path: Option<PathBuf>,
}

/// `shoal why`.
#[derive(Debug, Args)]
pub struct WhyArgs {
    /// The tests to explain: node ids, files or directories (each test
    /// collected from them gets a line).
    #[arg(value_name = "NODEID", required = true)]
    pub nodeids: Vec<String>,

    /// The profile `shoal run` would use (its `affected-inputs`,
    /// `affected-env` and `pytest-args` count); also `SHOAL_PROFILE`.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,

    /// The Python interpreter (as for `shoal run`).
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,

    /// pytest's arguments, after `--`, as `shoal run` is given them (they
    /// are part of every test's key).
    #[arg(last = true, value_name = "PYTEST_ARGS")]
    pub pytest_args: Vec<String>,
}

/// `shoal merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The shards' `--json-report` files, one per shard.
    #[arg(value_name = "REPORT.json", required_unless_present = "queue", conflicts_with = "queue")]
    pub reports: Vec<PathBuf>,

    /// Instead of reports, a `--queue` build (as `shoal report`).
    #[command(flatten)]
    pub queue: QueueArgs,

    /// What to write.
    #[command(flatten)]
    pub outputs: OutputArgs,
}

/// What `shoal merge` and `shoal report` write for the whole run.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Write the whole run's JUnit XML file here.
    #[arg(long, alias = "junit-xml", value_name = "PATH")]
    pub junitxml: Option<PathBuf>,

    /// Write the whole run's JSON report here.
    #[arg(long, value_name = "PATH")]
    pub json_report: Option<PathBuf>,

    /// Fold the measured durations into this history (created when
    /// missing), as a run does; default: `.test_durations` here for a
    /// `--queue` build, none when merging reports.
    #[arg(long, value_name = "PATH")]
    pub durations_path: Option<PathBuf>,
}

/// `shoal replay`'s arguments.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The run's `--json-report` file.
    #[arg(value_name = "REPORT.json")]
    pub report: PathBuf,

    /// The test whose outcome to reproduce.
    #[arg(value_name = "NODEID")]
    pub nodeid: String,

    /// Python interpreter with pytest (as for `shoal run`).
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,

    /// Print the pytest command instead of running it.
    #[arg(long)]
    pub print: bool,

    /// Arguments for pytest, after `--`.
    #[arg(last = true, value_name = "PYTEST_ARGS")]
    pub pytest_args: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn merge_and_report_take_the_same_output_flags() {
        let outputs = ["--junit-xml", "j.xml", "--json-report", "r.json", "--durations-path", "d"];
        let merge = Cli::parse_from(["shoal", "merge", "a.json"].into_iter().chain(outputs));
        let report = Cli::parse_from(
            ["shoal", "report", "--queue", "auto", "--build", "1"].into_iter().chain(outputs),
        );
        let (
            Command::Merge(MergeArgs { outputs: merged, .. }),
            Command::Report(ReportArgs { outputs: reported, .. }),
        ) = (merge.command, report.command)
        else {
            panic!("not merge and report")
        };
        for written in [merged, reported] {
            assert_eq!(
                (written.junitxml, written.json_report, written.durations_path),
                (Some("j.xml".into()), Some("r.json".into()), Some("d".into()))
            );
        }
    }

    #[test]
    fn arguments_after_double_dash_go_to_pytest() {
        let cli = Cli::parse_from(["shoal", "run", "tests", "-n", "3", "--", "-p", "x", "-W", "error"]);
        let Command::Run(run) = cli.command else { panic!("not run") };
        assert_eq!(run.selection.paths, vec!["tests"]);
        assert_eq!(run.workers.as_deref(), Some("3"));
        assert_eq!(run.selection.pytest_args, vec!["-p", "x", "-W", "error"]);
    }

    #[test]
    fn xdists_worker_options_are_accepted() {
        let cli = Cli::parse_from([
            "shoal",
            "run",
            "--numprocesses",
            "3",
            "--maxprocesses",
            "2",
            "--dist",
            "loadfile",
        ]);
        let Command::Run(run) = cli.command else { panic!("not run") };
        assert_eq!(run.workers.as_deref(), Some("3"));
        assert_eq!((run.maxprocesses, run.dist.as_deref()), (Some(2), Some("loadfile")));
        let cli = Cli::parse_from(["shoal", "run", "--max-worker-restart", "4"]);
        let Command::Run(run) = cli.command else { panic!("not run") };
        assert_eq!(run.max_worker_restarts, Some(4));
    }

    #[test]
    fn a_bare_cov_takes_no_value_and_cov_report_may_be_empty() {
        let cli = Cli::parse_from(["shoal", "run", "--cov", "--cov=pkg", "--cov-report=", "tests"]);
        let Command::Run(run) = cli.command else { panic!("not run") };
        assert_eq!(run.coverage.sources, vec!["", "pkg"]);
        assert_eq!(run.coverage.reports, vec![""]);
        assert_eq!(run.selection.paths, vec!["tests"]);
    }

    /// `shoal run` parsed from `arguments` (after `run`).
    fn run(arguments: &[&str]) -> Result<RunArgs, clap::Error> {
        let cli = Cli::try_parse_from(["shoal", "run"].iter().chain(arguments))?;
        let Command::Run(run) = cli.command else { panic!("not run") };
        Ok(*run)
    }

    #[test]
    fn each_word_of_the_enumerated_options_is_accepted() {
        use clap::ValueEnum;
        for mode in WorkerMode::value_variants() {
            let word = mode.to_possible_value().expect("a word");
            assert_eq!(run(&["--mode", word.get_name()]).unwrap().mode, Some(*mode));
        }
        for collect in CollectionMode::value_variants() {
            let word = collect.to_possible_value().expect("a word");
            assert_eq!(run(&["--collect", word.get_name()]).unwrap().collect, Some(*collect));
        }
        for colour in Colour::value_variants() {
            let word = colour.to_possible_value().expect("a word");
            assert_eq!(run(&["--color", word.get_name()]).unwrap().color, Some(*colour));
        }
        assert_eq!(run(&["--color", "yes"]).unwrap().color, Some(Colour::Always));
        assert_eq!(run(&["--color=no"]).unwrap().color, Some(Colour::Never));
        for output in FailureOutput::value_variants() {
            let word = output.to_possible_value().expect("a word");
            assert_eq!(run(&["--failure-output", word.get_name()]).unwrap().failure_output, Some(*output));
        }
    }

    #[test]
    fn a_wrong_word_is_an_error_naming_the_flag_and_the_words() {
        for (flag, words) in [
            ("--mode", "fork, spawn, auto"),
            ("--collect", "auto, split, items, full"),
            ("--color", "auto, always, never"),
            ("--failure-output", "immediate, final"),
        ] {
            let error = run(&[flag, "sometimes"]).unwrap_err();
            assert_eq!(error.kind(), clap::error::ErrorKind::InvalidValue);
            let message = error.to_string();
            assert!(message.contains(&format!("invalid value 'sometimes' for '{flag} ")), "{message}");
            assert!(message.contains(&format!("[possible values: {words}]")), "{message}");
        }
    }
}

/// A work queue on Redis that the machines of one build drain together.
#[derive(Debug, Args)]
#[command(next_help_heading = "Work queue (Redis, shared by a build's machines)")]
pub struct QueueArgs {
    /// Pull tests from a queue on Redis shared by the build's machines:
    /// `redis://HOST:PORT/DB`, or `auto` (`$SHOAL_QUEUE`, else `$REDIS_URL`).
    #[arg(long, value_name = "URL|auto")]
    pub queue: Option<String>,

    /// The build's id, the same on every machine (default: the CI's run
    /// id: `$GITHUB_RUN_ID`, `$CI_PIPELINE_ID`, ...).
    #[arg(long, value_name = "ID")]
    pub build: Option<String>,

    /// This machine's name in the build (default: the CI's node index,
    /// else host and pid); a retried job with the same name re-runs what
    /// that name ran once the build is drained.
    #[arg(long, value_name = "NAME")]
    pub machine: Option<String>,

    /// Seconds a machine's units stay leased without its heartbeat
    /// (default 30); then another machine takes them.
    #[arg(long, value_name = "SECONDS")]
    pub queue_lease: Option<f64>,

    /// Seconds to wait for the first machine to publish the units (default 600).
    #[arg(long, value_name = "SECONDS")]
    pub queue_wait: Option<f64>,

    /// Seconds the build's keys live in Redis (default 86400).
    #[arg(long, value_name = "SECONDS")]
    pub queue_ttl: Option<u64>,
}

/// `shoal report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The queue and the build to report on (`--queue` and `--build` are required).
    #[command(flatten)]
    pub queue: QueueArgs,

    /// What to write.
    #[command(flatten)]
    pub outputs: OutputArgs,
}

impl QueueArgs {
    /// The flags as the queue module takes them.
    pub fn request(&self) -> crate::queue::QueueRequest {
        crate::queue::QueueRequest {
            queue: self.queue.clone(),
            build: self.build.clone(),
            machine: self.machine.clone(),
            lease: self.queue_lease,
            wait: self.queue_wait,
            ttl: self.queue_ttl,
        }
    }
}
