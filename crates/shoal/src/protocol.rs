//! The JSON-lines protocol between shoal and its pytest workers.
//!
//! One message a line on a socket the worker inherits (its descriptor number is
//! in `SHOAL_CHANNEL_FD`), never on the test's stdout. The Python side lives in
//! `python/shoal_worker/` (`protocol.py` for the channel and messages); keep
//! both in step and bump [`PROTOCOL_VERSION`] on any incompatible change.
//!
//! Worker to shoal, in order: `hello`, then any `collect_report`s and
//! `collected` chunks, `collection_finished`, then one `finished` per test it
//! ran (carrying that test's phase reports, or just their three durations
//! for a plainly passing test) interleaved with `warning`s,
//! `want_work` when it reaches the teardown of its last known test, and a
//! `stopped` when told to stop early. shoal to worker: `run` (append node ids to
//! the worker's queue), `continue` (after a failure the worker waits on under
//! `-x`/`--maxfail`), `stop` (drop the queue and end after the current test;
//! it overrides an earlier `shutdown`) and `shutdown` (run what is queued,
//! then end).
//!
//! Fork mode adds a zygote: a worker that collects, says `zygote_ready`, and
//! then forks a worker for every [`ZygoteCommand::Fork`] it receives on a
//! separate packet socket (which carries the new worker's descriptors); it
//! reports each reaped child with `child_exited`. A forked worker's first
//! message is `ready`.
//!
//! A forked worker writes the `finished` messages of passing tests that
//! `run` marked `batch` (expected quick from history, sharing one timeout)
//! together: up to 64, for up to 50 ms; any other message, the start of a
//! test not so marked, and any wait for a command write them first. It
//! counts the tests it started and finished in memory it shares with the
//! zygote, which adds both counts to `child_exited`: when a worker dies,
//! shoal tells the finished tests whose results never came (run again,
//! blamed for nothing) from the test it died in. A spawned worker has no
//! zygote to count for it and sends each result at once.
//!
//! Size: over 600 lines, because every message and command of both
//! directions is here, in one place, as the one description of the wire
//! format that `protocol.py` mirrors.

use serde::{Deserialize, Serialize};

/// pytest-cov's options as a worker parsed them (`cov_source`,
/// `cov_report`, ...); shoal hands them back to the report unchanged.
pub type CoverageOptions = serde_json::Map<String, serde_json::Value>;

/// The version both sides must agree on in the `hello` handshake.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest protocol line shoal accepts; a longer one is a protocol error. The
/// worker cuts long texts well below this.
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// A message from a worker.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMessage {
    /// First message: who the worker is and what it runs on.
    Hello(Box<Hello>),
    /// A collector that failed or was skipped (passed ones are not sent).
    CollectReport(CollectReport),
    /// A chunk of collected items, in collection order.
    Collected {
        /// The items of this chunk.
        items: Vec<CollectedItem>,
    },
    /// Collection is over; the worker now waits for commands.
    CollectionFinished {
        /// Node ids that `-k`, `-m` or plugins deselected.
        deselected: Vec<String>,
        /// Seconds each test file took to import and collect, by its node id.
        #[serde(default)]
        file_seconds: std::collections::BTreeMap<String, f64>,
        /// Seconds each test module took to import, by its node id (a
        /// part of its `file_seconds`, or, split keeping the imports, the
        /// zygote's part of the file's cost).
        #[serde(default)]
        import_seconds: std::collections::BTreeMap<String, f64>,
        /// Seconds of this collection that a split divides among the
        /// workers even when it keeps the imports: all of it but the walk
        /// to the test files (directories, conftest files, packages) and
        /// the test modules' imports.
        #[serde(default)]
        divisible_seconds: f64,
    },
    /// Split collection: the test files the zygote found and did not
    /// import, in collection order (node ids).
    TestFiles {
        /// Their node ids.
        nodeids: Vec<String>,
        /// Groups of files (indexes into `nodeids`) that pytest imports
        /// under one module name: one worker must collect them, in order.
        #[serde(default)]
        same_name: Vec<Vec<usize>>,
    },
    /// A test's protocol (setup, call, teardown) completed.
    Finished(Finished),
    /// A warning pytest recorded.
    Warning(WarningMessage),
    /// The worker holds no test after its current one and pytest needs to
    /// know the next (at teardown): shoal answers with `run` or an end.
    WantWork,
    /// The worker stopped early (on request, or over its memory limit);
    /// these queued tests did not run.
    Stopped {
        /// Node ids sent to the worker that it did not start.
        dropped: Vec<String>,
        /// It stopped itself because its memory passed the limit.
        #[serde(default)]
        over_memory: bool,
    },

    /// Fork mode: the zygote collected and waits for fork requests.
    ZygoteReady {
        /// Whether forking is safe (no other thread alive, fork exists).
        fork_safe: bool,
        /// Why not, when it is not.
        reason: Option<String>,
    },
    /// Fork mode: a forked worker is set up and waits for tests.
    Ready {
        /// The worker's process id (and process group id).
        pid: u32,
        /// The `config.workerinput` it got (with what controller-side
        /// plugins added), kept for a replacement spawned in its slot.
        #[serde(default)]
        workerinput: Option<serde_json::Value>,
    },
    /// Fork mode: the zygote reaped a worker it forked.
    ChildExited {
        /// The worker's process id.
        pid: u32,
        /// The raw wait status.
        status: i32,
        /// Tests the worker started, and tests it finished, as it counted
        /// them in memory shared with the zygote (a worker sends quick
        /// tests' results in batches: see `worker::Progress`).
        #[serde(default)]
        started: Option<u64>,
        #[serde(default)]
        finished: Option<u64>,
    },
}

/// The worker's handshake.
#[derive(Debug, Clone, Deserialize)]
pub struct Hello {
    /// The worker's [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// Process id of the worker.
    pub pid: u32,
    /// What the worker runs on (its keys sit in the message itself).
    #[serde(flatten)]
    pub environment: Environment,
    /// `--maxfail` (or `-x`) as pytest parsed it, from the command line or
    /// addopts; 0 when unset. Workers themselves never stop on it.
    pub maxfail: u64,
    /// Whether `--continue-on-collection-errors` was given.
    pub continue_on_collection_errors: bool,
    /// pytest's cache directory (`.pytest_cache`), unless the cache plugin
    /// is off.
    #[serde(default)]
    pub cache_dir: Option<String>,
    /// An absolute `--junitxml` path from addopts or the arguments after
    /// `--` (workers write none; shoal writes it for the run).
    #[serde(default)]
    pub junitxml: Option<String>,
    /// pytest-cov's options, when the worker measures coverage (`--cov`);
    /// see `python/shoal_coverage.py`.
    #[serde(default)]
    pub coverage: Option<CoverageOptions>,
    /// pytest-html's `--html` path, which workers do not write: the report
    /// is built in one process from every test's report.
    #[serde(default)]
    pub html_report: Option<String>,
    /// pytest-benchmark is active and its benchmarks were disabled in the
    /// workers, as pytest-xdist disables them.
    #[serde(default)]
    pub benchmarks_disabled: bool,
}

/// What the tests run on, as the worker's `hello` says it; a run's header
/// and a queued build's info carry it on.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Environment {
    /// `sys.platform`.
    pub platform: String,
    /// Python version, e.g. `3.11.7`.
    pub python: String,
    /// pytest version.
    pub pytest: String,
    /// pluggy version.
    pub pluggy: String,
    /// pytest's rootdir.
    pub rootdir: String,
    /// The ini file pytest read, if any.
    pub inifile: Option<String>,
    /// Installed pytest plugins as `name-version`, in the order pytest lists them.
    pub plugins: Vec<String>,
    /// The interpreter running the tests (`-v` shows it in the header).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub executable: String,
    /// What `pytest_report_header` adds to the session header (rootdir,
    /// configfile, plugins, a plugin's seed or settings), in pytest's order;
    /// empty when not known (a report read back).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub header_lines: Vec<String>,
    /// How pytest's terminal was asked to lay the report out.
    #[serde(flatten)]
    pub summary: SummaryOptions,
}

impl Environment {
    /// Whether the workers run pytest 7, whose terminal shapes a few lines
    /// differently.
    pub fn is_pytest_7(&self) -> bool {
        self.pytest_major() == 7
    }

    /// pytest's major version (0 when unknown).
    pub fn pytest_major(&self) -> u32 {
        self.pytest_version().0
    }

    /// pytest's (major, minor) version (zeros when unknown).
    pub fn pytest_version(&self) -> (u32, u32) {
        let mut numbers = self.pytest.split('.').map(|number| number.parse().unwrap_or(0));
        (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
    }
}

/// pytest's options for its terminal report, as the worker read them; the
/// default is pytest's defaults (also for a stored report from before they
/// were kept).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct SummaryOptions {
    /// What `-r` asks the short test summary for, resolved as pytest's
    /// terminal resolves it (`fEw` by default; `a` is `sxXEf`; `w`, the
    /// warnings summary, unless `--disable-warnings`).
    #[serde(default = "default_report_chars")]
    pub report_chars: String,
    /// `--show-capture`: which captured sections the failures, errors and
    /// passes show.
    #[serde(default)]
    pub show_capture: ShowCapture,
    /// `--no-fold-skipped` (pytest 8.3 on): `-r s` lists each skip.
    #[serde(default)]
    pub no_fold_skipped: bool,
    /// `--tb`: `no` leaves out the failures, errors and passes sections;
    /// `line` shows each failure as its crash line.
    #[serde(default = "default_tb_style")]
    pub tb_style: String,
    /// `--durations-min`: phases shorter than this are not listed among
    /// the slowest (pytest 8 on: unset is 5 ms, none under `-vv`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durations_min: Option<f64>,
    /// `--no-summary`: pytest's own summary sections are left out (from
    /// pytest 9.2 on, plugins' sections are still shown).
    #[serde(default)]
    pub no_summary: bool,
    /// `--no-header`: the session header has no platform and plugin lines.
    #[serde(default)]
    pub no_header: bool,
    /// How progress is shown after the letters: `progress` (` [ 50%]`),
    /// `count` (` [ 5/10]`), `times` (shown as `progress`) or `none`
    /// (`console_output_style = classic`, `-s`, `--setup-show`).
    #[serde(default = "default_progress_style")]
    pub progress_style: String,
}

impl SummaryOptions {
    /// Whether pytest's own summary sections are shown (`--no-summary`).
    pub fn shows_own_sections(&self) -> bool {
        !self.no_summary
    }

    /// Whether the failures, errors and passes sections are shown
    /// (`--no-summary`, `--tb=no`).
    pub fn shows_tracebacks(&self) -> bool {
        self.shows_own_sections() && self.tb_style != "no"
    }

    /// `--tb=line`: each failure as its crash line.
    pub fn failures_as_lines(&self) -> bool {
        self.tb_style == "line"
    }
}

impl Default for SummaryOptions {
    fn default() -> Self {
        Self {
            report_chars: default_report_chars(),
            show_capture: ShowCapture::All,
            no_fold_skipped: false,
            tb_style: default_tb_style(),
            durations_min: None,
            no_summary: false,
            no_header: false,
            progress_style: default_progress_style(),
        }
    }
}

/// pytest's `--show-capture`: the captured sections shown with a report
/// (all of them by default, none, or one kind).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ShowCapture {
    #[default]
    All,
    No,
    Stdout,
    Stderr,
    Log,
}

impl ShowCapture {
    /// Whether a section titled `title` (`Captured stdout call`, `Captured
    /// log teardown`, ...) is shown, as pytest's `_outrep_summary` decides.
    pub fn shows(self, title: &str) -> bool {
        match self {
            Self::All => true,
            Self::No => false,
            Self::Stdout => title.contains("stdout"),
            Self::Stderr => title.contains("stderr"),
            Self::Log => title.contains("log"),
        }
    }
}

/// pytest's default `-r`: failures, errors and the warnings summary.
fn default_report_chars() -> String {
    "fEw".to_owned()
}

fn default_tb_style() -> String {
    "auto".to_owned()
}

fn default_progress_style() -> String {
    "progress".to_owned()
}

/// A collector report that did not pass.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct CollectReport {
    /// The collector's node id (e.g. the module path).
    pub nodeid: String,
    /// `failed` or `skipped`.
    pub outcome: String,
    /// The category pytest's terminal counts it under (`error`, `skipped`).
    pub category: String,
    /// pytest's full failure text.
    pub longrepr: Option<String>,
    /// The one-line crash message, or the skip reason.
    pub message: Option<String>,
    /// Of a skip: where, as `-rs` shows it (see [`SkipPlace`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_at: Option<SkipPlace>,
}

/// Where a skip happened, as pytest's `-rs` summary folds skips: the file
/// relative to the invocation directory and the 1-based line (none for a
/// `skip` marker on the test itself, folded by file alone). Sent as
/// `[path, line]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SkipPlace(pub String, pub Option<u64>);

/// One collected test.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct CollectedItem {
    /// pytest's node id: an opaque key, never parsed or rewritten.
    pub nodeid: String,
    /// File of the test, relative to the rootdir.
    pub path: String,
    /// 0-based line of the test's definition, when pytest knows it.
    pub line: Option<u64>,
    /// The test's name within its file (e.g. `TestClass.test_x[1]`).
    pub domain: String,
    /// Names of the markers on the test.
    pub markers: Vec<String>,
    /// Seconds from `@pytest.mark.timeout(N)`, if the test has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Its test group, from `xdist_group(name)` or `shoal_group(name)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Reruns from `@pytest.mark.flaky(reruns=N)`, if it has the marker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reruns: Option<u8>,
    /// The node id of the test file that collected it (which may differ
    /// from `path`, for a test inherited from another file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// Of a spread test file (collected in parts by several workers): the
    /// part that holds it, and its position among the whole file's tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
    /// Under `--lf` only: a direct child of its test file's collector (not
    /// in a class), which pytest's `--lf` drops at collection when it did
    /// not fail and others in its file did.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub file_child: bool,
    /// Under `--lf` only: its file was named on the command line (one of
    /// pytest's initial paths), so `--lf` keeps all its tests at collection.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub file_named: bool,
}

/// A test whose protocol ended, with the facts pytest reported.
#[derive(Debug, Clone, Deserialize)]
pub struct Finished {
    /// The test's node id.
    pub nodeid: String,
    /// The test's duration as pytest measures it: its phases' durations
    /// added up, in seconds (the protocol's wall time when pytest reported
    /// no phase).
    pub duration: f64,
    /// The rest of its protocol's wall time, in seconds: pytest making and
    /// logging its reports and the hooks around its phases (its plugins',
    /// shoal's among them), which a sequential pytest run spends too.
    #[serde(default)]
    pub between_phases: f64,
    /// Every report pytest logged, in order: setup, call (and subtests),
    /// teardown, or fewer when a phase was skipped. On the wire a plainly
    /// passing test's three reports are their three durations (see
    /// [`phase_reports`]).
    #[serde(deserialize_with = "phase_reports")]
    pub reports: Vec<PhaseReport>,
    /// CPU seconds the worker process has used so far. Only in a message
    /// the worker wrote at once, not in one it batched with others: the
    /// latest figure is the one that counts.
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
    /// Peak resident memory of the worker process so far, in KiB (when
    /// `cpu_seconds` is given).
    #[serde(default)]
    pub max_rss_kib: Option<u64>,
    /// Resident memory of the worker process now, in KiB: after every test
    /// when there is a memory limit, else with `cpu_seconds` (the peak).
    #[serde(default)]
    pub rss_kib: u64,
    /// With a worker's last test: child processes still running, by the
    /// test that started them (shoal kills them with the worker's group).
    #[serde(default)]
    pub leaked: std::collections::BTreeMap<String, Vec<u32>>,
    /// When the test ended, in seconds of the machine's monotonic clock
    /// (`CLOCK_MONOTONIC`, Python's `time.monotonic()`), as the worker read
    /// it: exact where the time its message is handled is not (messages
    /// that arrive together).
    #[serde(default)]
    pub ended: Option<f64>,
}

/// A `finished` message's `reports`: a list of phase reports, or, for a
/// test whose setup, call and teardown passed as they plainly do (the
/// statuses pytest's terminal gives them unless a plugin says otherwise,
/// nothing else to show), the three phases' durations. Most tests of most
/// suites are such; the worker spares itself three objects a test, and
/// every report still gets the same [`PhaseReport`]s.
fn phase_reports<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<PhaseReport>, D::Error> {
    struct Reports;

    impl<'de> serde::de::Visitor<'de> for Reports {
        type Value = Vec<PhaseReport>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("a list of phase reports, or of a passing test's three phase durations")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut sequence: A) -> Result<Self::Value, A::Error> {
            let mut reports = Vec::with_capacity(3);
            while let Some(report) = sequence.next_element_seed(PhaseAt(reports.len()))? {
                reports.push(report);
            }
            Ok(reports)
        }
    }

    deserializer.deserialize_seq(Reports)
}

/// The element at this place in a `finished` message's `reports`: a full
/// report, or the duration of a phase that passed plainly (its place says
/// which phase).
struct PhaseAt(usize);

impl<'de> serde::de::DeserializeSeed<'de> for PhaseAt {
    type Value = PhaseReport;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<PhaseReport, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for PhaseAt {
    type Value = PhaseReport;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a phase report or a duration")
    }

    fn visit_f64<E: serde::de::Error>(self, duration: f64) -> Result<PhaseReport, E> {
        let Some(&when) = Phase::ALL.get(self.0) else {
            return Err(E::custom("more than three phase durations"));
        };
        Ok(PhaseReport::plain_pass(when, duration))
    }

    fn visit_u64<E: serde::de::Error>(self, duration: u64) -> Result<PhaseReport, E> {
        self.visit_f64(duration as f64)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<PhaseReport, A::Error> {
        PhaseReport::deserialize(serde::de::value::MapAccessDeserializer::new(map))
    }
}

/// Seconds of the machine's monotonic clock (`CLOCK_MONOTONIC`), the clock
/// a worker's [`Finished::ended`] is read from.
pub fn monotonic_seconds() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_or(0.0, |now| now.tv_sec() as f64 + now.tv_nsec() as f64 / 1e9)
}

/// A phase of a test's protocol, as pytest's reports name it (`when`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Fixtures are set up.
    Setup,
    /// The test body runs.
    Call,
    /// Fixtures are torn down.
    Teardown,
}

impl Phase {
    /// Every phase, in the order they run.
    pub const ALL: [Self; 3] = [Self::Setup, Self::Call, Self::Teardown];

    /// pytest's name for it (`setup`, `call`, `teardown`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Setup => "setup",
            Self::Call => "call",
            Self::Teardown => "teardown",
        }
    }

    /// Its place in [`Phase::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Phase {
    /// pytest's name, padded as the format asks (`{:<8}`).
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.pad(self.as_str())
    }
}

/// How one phase ended (pytest's `report.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PhaseOutcome {
    /// The phase passed.
    Passed,
    /// The phase failed: in `call` the test failed, in `setup` or
    /// `teardown` it is an error.
    Failed,
    /// The phase was skipped (a skip, or an xfail).
    Skipped,
}

/// One `TestReport` as pytest logged it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct PhaseReport {
    /// The phase it reports on.
    pub when: Phase,
    /// How that phase ended.
    pub outcome: PhaseOutcome,
    /// The status category from `pytest_report_teststatus`, as pytest's
    /// terminal counts it (`passed`, `error`, `xfailed`, `subtests passed`,
    /// or empty for a passing setup/teardown).
    pub category: String,
    /// The short letter pytest prints for progress (`.`, `F`, `E`, `s`, ...).
    pub letter: String,
    /// The verbose word (`PASSED`, `FAILED`, ...).
    pub word: String,
    /// Seconds the phase took.
    pub duration: f64,
    /// The subtest description, for a subtest report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtest: Option<String>,
    /// The xfail reason, for xfailed and xpassed tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasxfail: Option<String>,
    /// pytest's section heading for a failure (e.g. `TestClass.test_x`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_line: Option<String>,
    /// pytest's full failure text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longrepr: Option<String>,
    /// One-line crash message of a failure, or the reason of a skip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Captured output and log sections of a failure: `(title, content)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sections: Vec<(String, String)>,
    /// Where a failure happened: the file of the failing line (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_path: Option<String>,
    /// The failing line (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_line: Option<u64>,
    /// Of a skip: where (see [`SkipPlace`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_at: Option<SkipPlace>,
    /// Of a failure under `--tb=line`: its one line (`path:line: message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_text: Option<String>,
}

impl PhaseReport {
    /// A phase that passed as a plain passing test's phases do: the
    /// status pytest's terminal gives it (`passed`, `.`, `PASSED` for the
    /// call; nothing for setup and teardown), no text. The worker sends
    /// such phases as durations only (`_PLAIN_STATUS` in `protocol.py`).
    fn plain_pass(when: Phase, duration: f64) -> Self {
        let (category, letter, word) =
            if when == Phase::Call { ("passed", ".", "PASSED") } else { ("", "", "") };
        Self {
            when,
            outcome: PhaseOutcome::Passed,
            category: category.into(),
            letter: letter.into(),
            word: word.into(),
            duration,
            subtest: None,
            wasxfail: None,
            head_line: None,
            longrepr: None,
            message: None,
            sections: Vec::new(),
            crash_path: None,
            crash_line: None,
            skip_at: None,
            crash_text: None,
        }
    }
}

#[cfg(test)]
impl PhaseReport {
    /// A bare report for unit tests: no texts, no letter.
    pub(crate) fn bare(when: Phase, outcome: PhaseOutcome, category: &str, duration: f64) -> Self {
        Self {
            outcome,
            category: category.into(),
            letter: String::new(),
            word: String::new(),
            ..Self::plain_pass(when, duration)
        }
    }
}

/// A warning recorded by pytest.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct WarningMessage {
    /// `config`, `collect` or `runtest`.
    pub when: String,
    /// The test it happened in, or empty.
    pub nodeid: String,
    /// The warning as `warnings.formatwarning` renders it.
    pub text: String,
}

/// A command to a worker.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerCommand {
    /// Append these node ids to the worker's queue.
    Run {
        /// Node ids, run in this order.
        nodeids: Vec<String>,
        /// `SHOAL_ATTEMPT` of reruns (every other test is attempt 1).
        #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        attempts: std::collections::BTreeMap<String, usize>,
        /// Split collection: test files (node ids) to import and collect
        /// before running these tests.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        load: Vec<String>,
        /// Split collection: parts of spread files to collect, too.
        #[serde(skip_serializing_if = "FileParts::is_empty")]
        parts: FileParts,
        /// `-x`/`--maxfail` is on: after a test with a failed report, wait
        /// for `continue` (or `stop`) before starting the next, so nothing
        /// starts once shoal has seen the limit reached.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        confirm_failures: bool,
        /// Every one of these tests is expected to be quick: a forked worker
        /// may send their results together (see the module docs).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        batch: bool,
    },
    /// The answer to a failure the worker waits on (`confirm_failures`):
    /// go on with the queue.
    Continue,
    /// To the zygote, after its `hello`: how to collect.
    CollectMode {
        /// Record the test files without collecting them: forked workers
        /// collect them, each its share.
        split: bool,
        /// Split, the zygote imports each test module it records, in
        /// collection order, and the workers only build its items.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        keep_imports: bool,
    },
    /// Split collection: to a worker forked for it, first, its share of the
    /// test files; to the zygote, once it has listed them, those to collect
    /// itself before forking (none, or all).
    Share {
        /// Node ids of the test files.
        nodeids: Vec<String>,
        /// Parts of spread files to collect, too.
        #[serde(skip_serializing_if = "FileParts::is_empty")]
        parts: FileParts,
    },
    /// Drop the queue; finish after the running test and report the rest.
    Stop,
    /// Run what is queued, then end the session.
    Shutdown,
}

/// Parts of spread test files to collect.
pub type FileParts = Vec<FilePart>;

/// One part of a spread test file, sent as `[node id, index, count,
/// assigned]`: the file's tests `assigned` (node id to part, balanced by
/// expected time) to part `index`, and of the others those at positions
/// `index`, `index + count`, ... of the whole.
#[derive(Debug, Clone, PartialEq)]
pub struct FilePart(pub String, pub usize, pub usize, pub std::sync::Arc<PartAssignment>);

/// The part each test of a spread file belongs to, by node id: tests not
/// in it go by their position (every `count`-th test).
pub type PartAssignment = std::collections::BTreeMap<String, usize>;

impl Serialize for FilePart {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut tuple = serializer.serialize_tuple(4)?;
        tuple.serialize_element(&self.0)?;
        tuple.serialize_element(&self.1)?;
        tuple.serialize_element(&self.2)?;
        tuple.serialize_element(&*self.3)?;
        tuple.end()
    }
}

/// A request to the zygote, sent on its packet socket together with the new
/// worker's channel, stdout and stderr descriptors.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ZygoteCommand {
    /// Fork a worker for this slot.
    Fork {
        /// The slot (`gw<slot>`).
        slot: usize,
        /// Total workers, for `SHOAL_WORKER_COUNT`.
        worker_count: usize,
        /// The worker's own basetemp.
        basetemp: String,
        /// Split collection: the worker's first command is its share.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        collect: bool,
    },
    /// Fork no more; end once every child has been reaped.
    Shutdown,
}

/// How every `finished` line starts (the worker writes `type` first).
const FINISHED_PREFIX: &[u8] = br#"{"type": "finished""#;

/// Parses one protocol line.
///
/// A `finished` line, one per test, is parsed straight into [`Finished`]:
/// serde's tagged-enum path first buffers the whole message, which costs
/// more than the test when tests are tiny.
pub fn parse_message(line: &[u8]) -> Result<WorkerMessage, serde_json::Error> {
    if line.starts_with(FINISHED_PREFIX) {
        return serde_json::from_slice(line).map(WorkerMessage::Finished);
    }
    serde_json::from_slice(line)
}

/// Encodes a command as one protocol line, newline included.
pub fn encode_command(command: &WorkerCommand) -> Vec<u8> {
    let mut line = serde_json::to_vec(command).expect("commands always serialize");
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_capture_lets_through_the_sections_pytest_shows() {
        let titles = ["Captured stdout call", "Captured stderr teardown", "Captured log setup"];
        let shown = |show: ShowCapture| titles.iter().filter(|title| show.shows(title)).count();
        assert_eq!(shown(ShowCapture::All), 3);
        assert_eq!(shown(ShowCapture::No), 0);
        assert!(ShowCapture::Stdout.shows(titles[0]) && !ShowCapture::Stdout.shows(titles[1]));
        assert!(ShowCapture::Stderr.shows(titles[1]) && !ShowCapture::Stderr.shows(titles[2]));
        assert!(ShowCapture::Log.shows(titles[2]) && !ShowCapture::Log.shows(titles[0]));
        assert_eq!(serde_json::from_str::<ShowCapture>(r#""stderr""#).unwrap(), ShowCapture::Stderr);
    }

    #[test]
    fn parses_a_finished_message_with_phase_reports() {
        let line = br#"{"type":"finished","nodeid":"t.py::test[a b]","duration":0.5,
            "reports":[{"when":"setup","outcome":"passed","category":"","letter":"","word":"","duration":0.1},
                       {"when":"call","outcome":"failed","category":"failed","letter":"F","word":"FAILED",
                        "duration":0.2,"longrepr":"boom","message":"assert 1 == 2",
                        "sections":[["Captured stdout call","hi\n"]],"head_line":"test[a b]"}]}"#;
        let WorkerMessage::Finished(finished) = parse_message(line).unwrap() else {
            panic!("wrong variant");
        };
        assert_eq!(finished.nodeid, "t.py::test[a b]");
        assert_eq!(finished.reports.len(), 2);
        assert_eq!(
            (finished.reports[0].when, finished.reports[0].outcome),
            (Phase::Setup, PhaseOutcome::Passed)
        );
        assert_eq!(
            (finished.reports[1].when, finished.reports[1].outcome),
            (Phase::Call, PhaseOutcome::Failed)
        );
        assert_eq!(finished.reports[1].sections[0].0, "Captured stdout call");
        assert_eq!(finished.reports[1].message.as_deref(), Some("assert 1 == 2"));
    }

    #[test]
    fn a_plainly_passing_tests_three_durations_read_as_its_three_reports() {
        let full = br#"{"type": "finished", "nodeid": "t.py::x", "duration": 0.6, "reports": [
            {"when": "setup", "outcome": "passed", "category": "", "letter": "", "word": "", "duration": 0.1},
            {"when": "call", "outcome": "passed", "category": "passed", "letter": ".", "word": "PASSED", "duration": 0.2},
            {"when": "teardown", "outcome": "passed", "category": "", "letter": "", "word": "", "duration": 0.3}]}"#;
        let compact =
            br#"{"type": "finished", "nodeid": "t.py::x", "duration": 0.6, "reports": [0.1, 0.2, 0.3]}"#;
        let [WorkerMessage::Finished(full), WorkerMessage::Finished(compact)] =
            [parse_message(full).unwrap(), parse_message(compact).unwrap()]
        else {
            panic!("not finished");
        };
        assert_eq!(compact.reports, full.reports);
        assert_eq!(
            (compact.cpu_seconds, compact.max_rss_kib),
            (None, None),
            "a batched message has no usage"
        );
        let whole_seconds =
            br#"{"type": "finished", "nodeid": "t.py::x", "duration": 1, "reports": [0, 1, 0]}"#;
        let WorkerMessage::Finished(whole) = parse_message(whole_seconds).unwrap() else {
            panic!("not finished")
        };
        assert_eq!(whole.reports[1].duration, 1.0);
        let four =
            br#"{"type": "finished", "nodeid": "t.py::x", "duration": 0.6, "reports": [0.1, 0.2, 0.3, 0.4]}"#;
        assert!(parse_message(four).is_err(), "a test has three phases");
    }

    #[test]
    fn phases_and_their_outcomes_keep_pytest_names_on_the_wire() {
        for phase in Phase::ALL {
            assert_eq!(serde_json::to_string(&phase).unwrap(), format!("\"{phase}\""));
            assert_eq!(Phase::ALL[phase.index()], phase);
        }
        let outcomes: Vec<PhaseOutcome> = serde_json::from_str(r#"["passed","failed","skipped"]"#).unwrap();
        assert_eq!(outcomes, [PhaseOutcome::Passed, PhaseOutcome::Failed, PhaseOutcome::Skipped]);
        assert!(serde_json::from_str::<Phase>(r#""collect""#).is_err());
    }

    #[test]
    fn encodes_commands_as_tagged_lines() {
        let run = WorkerCommand::Run {
            nodeids: vec!["a.py::t".into()],
            attempts: Default::default(),
            load: Vec::new(),
            parts: Vec::new(),
            confirm_failures: false,
            batch: false,
        };
        assert_eq!(encode_command(&run), b"{\"type\":\"run\",\"nodeids\":[\"a.py::t\"]}\n");
        assert_eq!(encode_command(&WorkerCommand::Stop), b"{\"type\":\"stop\"}\n");
    }

    #[test]
    fn the_fast_path_for_finished_lines_gives_the_same_message() {
        let line =
            br#"{"type": "finished", "nodeid": "t.py::x", "duration": 0.1, "reports": [], "rss_kib": 7}"#;
        let WorkerMessage::Finished(fast) = parse_message(line).unwrap() else { panic!("not finished") };
        let WorkerMessage::Finished(slow) = serde_json::from_slice::<WorkerMessage>(line).unwrap() else {
            panic!("not finished")
        };
        assert_eq!((fast.nodeid.as_str(), fast.rss_kib), (slow.nodeid.as_str(), slow.rss_kib));
    }

    #[test]
    fn parses_the_hello_handshake_as_the_worker_sends_it() {
        let line = br#"{"type": "hello", "protocol": 1, "pid": 42, "platform": "linux", "python": "3.12.3",
            "pytest": "8.3.2", "pluggy": "1.5.0", "rootdir": "/project", "inifile": null,
            "plugins": ["timeout-2.3.1"], "maxfail": 0, "cache_dir": "/project/.pytest_cache",
            "junitxml": null, "continue_on_collection_errors": false, "coverage": null,
            "html_report": null, "benchmarks_disabled": false}"#;
        let WorkerMessage::Hello(hello) = parse_message(line).unwrap() else { panic!("not hello") };
        assert_eq!((hello.protocol, hello.pid, hello.maxfail), (1, 42, 0));
        let expected = Environment {
            platform: "linux".into(),
            python: "3.12.3".into(),
            pytest: "8.3.2".into(),
            pluggy: "1.5.0".into(),
            rootdir: "/project".into(),
            inifile: None,
            plugins: vec!["timeout-2.3.1".into()],
            ..Environment::default()
        };
        assert_eq!(hello.environment, expected);
        assert_eq!(hello.cache_dir.as_deref(), Some("/project/.pytest_cache"));
    }

    #[test]
    fn rejects_unknown_message_types() {
        assert!(parse_message(br#"{"type":"nonsense"}"#).is_err());
    }
}
