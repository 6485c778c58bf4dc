//! The shape of the `--json-report` file, written down once: the types the
//! writer ([`super::JsonReporter`]) serializes, `shoal merge` reads back,
//! and `docs/json-report.schema.json` is generated from ([`schema`]; the
//! doc comments here are its descriptions).
//!
//! Strings are `Cow`s: the writer borrows them from the run's records, a
//! reader owns them. The tests are a type parameter: the writer streams
//! them from the records one [`TestEntry`] at a time (a report may hold
//! 100,000), a reader holds a `Vec` of them.
//!
//! The schema says what shoal writes: every field it always writes is
//! required and no other is allowed. Reading is more forgiving, for reports
//! of earlier shoal versions: unknown fields are ignored, and the fields
//! `shoal merge` can do without (`#[serde(default)]`) default when absent.

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::generate::SchemaSettings;
use schemars::transform::{RecursiveTransform, Transform};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::results::{Outcome, ShardInfo, StopReason};

/// The version of the report's shape; bump it on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

/// The pattern of a worker's name, xdist-style.
const WORKER_PATTERN: &str = "^gw[0-9]+$";

/// The file `shoal run --json-report PATH` writes (atomically) when the run
/// ends: a versioned, machine-readable record of the run in which every
/// selected test appears exactly once, in the shape of `format_version` 1.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "shoal JSON report", deny_unknown_fields)]
pub struct Document<'a, Tests = Vec<TestEntry<'a>>> {
    /// The version of the report's shape; it changes only on incompatible
    /// changes.
    #[schemars(extend("const" = FORMAT_VERSION))]
    pub format_version: u32,
    /// The run as a whole: versions, workers, timings and resource use.
    pub run: RunSection<'a>,
    /// How many tests ended with each final outcome; only outcomes that
    /// occurred appear.
    #[serde(default)]
    #[schemars(schema_with = "summary_schema")]
    pub summary: BTreeMap<Cow<'a, str>, u64>,
    /// Every selected test, once each, in collection order.
    pub tests: Tests,
    /// The collectors (usually files) pytest failed to collect.
    pub collect_errors: Vec<CollectError<'a>>,
    /// Things the run had to deal with, one sentence each: workers replaced
    /// over the memory limit, processes tests left running.
    #[serde(default)]
    #[schemars(transform = items_described("One notice, as the terminal summary shows it."))]
    pub notices: Cow<'a, [String]>,
}

/// The run as a whole: versions, workers, timings and resource use.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RunSection<'a> {
    /// The version of shoal that wrote the report.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub shoal: Cow<'a, str>,
    /// The workers' Python version, e.g. `3.12.4`.
    pub python: Cow<'a, str>,
    /// The workers' pytest version, e.g. `9.2.0`.
    pub pytest: Cow<'a, str>,
    /// The number of worker processes.
    pub workers: usize,
    /// How workers came to be: `fork` (forked from a zygote that collected
    /// once) or `spawn` (each worker a fresh interpreter that collected
    /// itself).
    #[schemars(extend("enum" = ["fork", "spawn"]))]
    pub mode: Cow<'a, str>,
    /// When the run started: an RFC 3339 UTC timestamp with millisecond
    /// precision, e.g. `2024-05-01T12:00:00.123Z`.
    #[schemars(
        regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$"),
        extend("format" = "date-time")
    )]
    pub started_at: Cow<'a, str>,
    /// Wall seconds of the whole run.
    #[schemars(range(min = 0))]
    pub wall_seconds: f64,
    /// The exit code shoal returned (pytest's: 0 all passed, 1 tests failed,
    /// 2 interrupted or collection errors, 3 internal error, 4 usage error,
    /// 5 no tests collected).
    pub exit_code: u8,
    /// The `PYTHONHASHSEED` given to every worker: the caller's, else one
    /// shoal chose; set it to reproduce the run.
    #[schemars(length(min = 1))]
    pub hash_seed: Cow<'a, str>,
    /// Sum of the tests' own durations, in seconds.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub test_seconds: f64,
    /// The lower bound for this run from the measured durations plus the
    /// start-up: `max(test_seconds / workers, longest test) +
    /// startup_seconds`; no schedule can beat it.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub lower_bound_seconds: f64,
    /// Seconds from shoal's start until the first worker was ready.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub startup_seconds: f64,
    /// The tests' protocol time outside their phases, added up, in seconds
    /// (of the attempt each test's outcome is from, as `test_seconds`):
    /// pytest making and logging reports and the hooks around the phases
    /// (its plugins', shoal's among them). In no test's duration, yet a
    /// sequential pytest run spends it too. 0 where unknown (`shoal report`
    /// of a shared queue's build).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub between_phases_seconds: f64,
    /// CPU seconds (user and system) used by the worker processes.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub workers_cpu_seconds: f64,
    /// Peak resident memory of the largest worker, in KiB (shared pages of
    /// forked workers count in each).
    #[serde(default)]
    pub peak_rss_largest_kib: u64,
    /// Sum of the workers' peak resident memory, in KiB.
    #[serde(default)]
    pub peak_rss_total_kib: u64,
    /// CPU seconds (user and system) used by shoal itself, without its
    /// workers.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub shoal_cpu_seconds: f64,
    /// Peak resident memory of shoal itself, without its workers, in KiB.
    #[serde(default)]
    pub shoal_peak_rss_kib: u64,
    /// Present only for a `--shard` run: which shard it was and what was
    /// partitioned, so `shoal merge` can refuse reports of different runs or
    /// overlapping shards.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "ShardInfo")]
    pub shard: Option<Cow<'a, ShardInfo>>,
    /// The profile the run was given (`--profile` or `SHOAL_PROFILE`);
    /// null when none was.
    #[serde(default)]
    pub profile: Option<Cow<'a, str>>,
    /// Every setting the run resolved, by key as spelt in the config file
    /// (`timeout`, `reruns`, ...), with where its value came from; empty in
    /// a merged report.
    #[serde(default)]
    pub settings: BTreeMap<Cow<'a, str>, SettingEntry<'a>>,
}

/// One resolved setting.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SettingEntry<'a> {
    /// Its value as the config file would spell it (seconds as numbers,
    /// sizes as `"2048K"`); null when unset.
    pub value: serde_json::Value,
    /// Where it came from: `flag --timeout`, `environment SHOAL_PROFILE`,
    /// `FILE:LINE [TABLE]` (e.g. `pyproject.toml:12 [tool.shoal.profile.ci]`)
    /// or `default`.
    #[schemars(length(min = 1))]
    pub source: Cow<'a, str>,
}

/// One test and how it ended.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[schemars(
    deny_unknown_fields,
    extend(
        "if" = { "required": ["reason"] },
        "then" = { "properties": { "outcome": { "const": Outcome::NotRun.as_str() } } },
    )
)]
pub struct TestEntry<'a> {
    /// pytest's node id, exactly as pytest wrote it.
    #[schemars(length(min = 1))]
    pub nodeid: Cow<'a, str>,
    /// The test's final outcome.
    pub outcome: Outcome,
    /// Present only for a `not_run` test that has a reason: `max-fail`,
    /// `interrupted`, `worker restarts exhausted`, `collection errors` or
    /// `budget`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "stop_reason_schema")]
    pub reason: Option<Cow<'a, str>>,
    /// Wall seconds of its whole protocol on the worker (0 when it did not
    /// run).
    #[schemars(range(min = 0))]
    pub duration: f64,
    /// When its last attempt started, in seconds after the run started (0
    /// when it did not run).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub started: f64,
    /// Seconds of its setup phase (0 when the phase did not run).
    #[schemars(range(min = 0))]
    pub setup_duration: f64,
    /// Seconds of its call phase (0 when the phase did not run).
    #[schemars(range(min = 0))]
    pub call_duration: f64,
    /// Seconds of its teardown phase (0 when the phase did not run).
    #[schemars(range(min = 0))]
    pub teardown_duration: f64,
    /// The worker that ran its last attempt, xdist-style (`gw0`, `gw1`,
    /// ...); null when it did not run.
    #[schemars(regex(pattern = WORKER_PATTERN))]
    pub worker: Option<String>,
    /// Its file, relative to pytest's rootdir.
    pub path: Cow<'a, str>,
    /// The 0-based line of its definition in `path`; null when pytest does
    /// not know it.
    pub line: Option<u32>,
    /// Present only when it has a test group: the name from
    /// `xdist_group(name)` or `shoal_group(name)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub group: Option<Cow<'a, str>>,
    /// The names of its markers (possibly none).
    #[schemars(inner(length(min = 1)), transform = items_described("One marker name, e.g. `slow`."))]
    pub markers: Vec<Cow<'a, str>>,
    /// Present only when it was rerun: every attempt, oldest first, the
    /// last being the one its final outcome comes from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 2))]
    pub attempts: Vec<AttemptEntry>,
    /// Absent unless its last attempt failed: pytest's longrepr of every
    /// failed phase (subtests included), joined by newlines; for a crash or
    /// a timeout, how the worker ended followed by the tail of its output.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub failure: Option<String>,
    /// Present (`true`) only when it did not run: `--affected` found
    /// nothing it depends on changed and replayed its last outcome.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
}

/// One attempt of a rerun test.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AttemptEntry {
    /// The attempt's number, from 1.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub attempt: usize,
    /// How this attempt ended: any final outcome but `flaky` (the passing
    /// attempt of a flaky test is `passed`).
    #[schemars(extend("not" = { "const": Outcome::Flaky.as_str() }))]
    pub outcome: Outcome,
    /// Wall seconds of this attempt's protocol (0 when it did not run).
    #[schemars(range(min = 0))]
    pub duration: f64,
    /// The worker that ran this attempt, e.g. `gw1`; null when it did not
    /// run.
    #[schemars(regex(pattern = WORKER_PATTERN))]
    pub worker: Option<String>,
    /// What this attempt's failure looked like, as a test's `failure`;
    /// absent when it did not fail.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub failure: Option<String>,
}

/// A collector pytest failed to collect.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CollectError<'a> {
    /// The failing collector's node id, usually a file such as
    /// `tests/test_broken.py`.
    pub nodeid: Cow<'a, str>,
    /// pytest's one-line account of the error; null when pytest gave none.
    pub message: Option<Cow<'a, str>>,
    /// pytest's full error text, e.g. the ImportError and its traceback;
    /// null when pytest gave none.
    pub longrepr: Option<Cow<'a, str>>,
}

/// `summary`'s schema: outcomes' names to counts of at least 1.
fn summary_schema(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "propertyNames": generator.subschema_for::<Outcome>(),
        "additionalProperties": {
            "description": "The number of tests with this outcome.",
            "type": "integer",
            "minimum": 1,
        },
    })
}

/// `reason`'s schema: the names of [`StopReason`]s.
fn stop_reason_schema(_: &mut SchemaGenerator) -> Schema {
    let names: Vec<&str> = StopReason::ALL.into_iter().map(StopReason::as_str).collect();
    json_schema!({ "type": "string", "enum": names })
}

/// A field's transform that describes the items of its array.
fn items_described(description: &'static str) -> impl Fn(&mut Schema) {
    move |schema: &mut Schema| {
        if let Some(items) = schema.get_mut("items").and_then(serde_json::Value::as_object_mut) {
            items.insert("description".to_owned(), description.into());
        }
    }
}

/// Every subschema of the generated schema made to read as written: no
/// `default` (a default is how a reader takes an old report, not something
/// shoal writes), and descriptions without the doc comments' line breaks.
fn tidy(schema: &mut Schema) {
    schema.remove("default");
    if let Some(serde_json::Value::String(description)) = schema.get_mut("description") {
        *description = description
            .split("\n\n")
            .map(|paragraph| paragraph.replace('\n', " "))
            .collect::<Vec<_>>()
            .join("\n\n");
    }
}

/// The JSON Schema (draft 2020-12) of the report, as
/// `docs/json-report.schema.json` holds it: pretty-printed, ending in a
/// newline.
pub fn schema() -> String {
    let generator = SchemaSettings::draft2020_12().for_serialize().into_generator();
    let mut schema = generator.into_root_schema_for::<Document<'static>>();
    RecursiveTransform(tidy).transform(&mut schema);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed schema, from this crate's directory.
    const SCHEMA_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/json-report.schema.json");

    #[test]
    fn a_written_report_reads_back_and_writes_again_byte_for_byte() {
        let run = crate::report::sample::SampleRun::new();
        let written = run.written_by(super::super::JsonReporter::new);
        let document: Document<'static> = serde_json::from_str(&written).expect("the report reads back");
        assert_eq!(document.format_version, FORMAT_VERSION);
        assert_eq!(document.tests.len(), run.records.len());
        let mut again = serde_json::to_string_pretty(&document).expect("serializes");
        again.push('\n');
        assert_eq!(again, written);
    }

    #[test]
    fn the_committed_schema_is_the_generated_one() {
        let generated = schema();
        if std::env::var_os("SHOAL_UPDATE_SCHEMA").is_some_and(|value| value == "1") {
            std::fs::write(SCHEMA_FILE, &generated).expect("docs/json-report.schema.json is writable");
            return;
        }
        let committed = std::fs::read_to_string(SCHEMA_FILE).unwrap_or_default();
        let first_difference = committed
            .lines()
            .zip(generated.lines())
            .position(|(committed, generated)| committed != generated)
            .unwrap_or(committed.lines().count().min(generated.lines().count()));
        assert!(
            committed == generated,
            "docs/json-report.schema.json is not the schema of the types in \
             crates/shoal/src/report/json/format.rs (first difference at line {}: {:?} there, {:?} \
             generated); regenerate it with\n  SHOAL_UPDATE_SCHEMA=1 cargo test -p shoal --lib \
             report::json::format",
            first_difference + 1,
            committed.lines().nth(first_difference).unwrap_or(""),
            generated.lines().nth(first_difference).unwrap_or(""),
        );
    }
}
