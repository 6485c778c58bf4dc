//! The command line as the top [`Layer`]: each flag typed becomes the key
//! a config file would spell, read with the same parsing functions, so a
//! flag and a key can never mean different things. A value that does not
//! parse is a usage error naming the flag.

use super::layer::Layer;
use crate::cli::{CoverageArgs, RunArgs, SelectionArgs};
use crate::errors::ShoalError;
use crate::values::{WorkerCount, parse_seconds, parse_size_kib};

/// The layer of `shoal list`'s and `shoal plan`'s flags.
pub(super) fn selection_layer(args: &SelectionArgs) -> Layer {
    Layer {
        paths: (!args.paths.is_empty()).then(|| args.paths.clone()),
        select: (!args.select.is_empty()).then(|| args.select.clone()),
        keyword: args.keyword.clone(),
        marker_expression: args.markers.clone(),
        python: args.python.clone(),
        pytest_args: (!args.pytest_args.is_empty()).then(|| args.pytest_args.clone()),
        ..Layer::default()
    }
}

/// The layer of `shoal run`'s flags.
pub(super) fn run_layer(args: &RunArgs) -> Result<Layer, ShoalError> {
    let seconds = "seconds (e.g. `30`, `2.5`, `2m`)";
    let verbosity =
        i8::try_from(args.verbose).unwrap_or(i8::MAX) - i8::try_from(args.quiet).unwrap_or(i8::MAX);
    let switch = |given: bool| given.then_some(true);
    let layer = Layer {
        workers: parsed(
            ("-n/--workers", "a positive number or `auto`"),
            args.workers.as_deref(),
            WorkerCount::parse,
        )?,
        mode: args.mode,
        collect: args.collect,
        exitfirst: switch(args.exit_first),
        maxfail: args.maxfail,
        continue_on_collection_errors: switch(args.continue_on_collection_errors),
        timeout: parsed(("--timeout", seconds), args.timeout.as_deref(), parse_seconds)?,
        slow_timeout: parsed(("--slow-timeout", seconds), args.slow_timeout.as_deref(), parse_seconds)?,
        worker_memory_limit: parsed(
            ("--worker-memory-limit", "a size (e.g. `500M`, `2G`)"),
            args.worker_memory_limit.as_deref(),
            parse_size_kib,
        )?,
        max_worker_restarts: args.max_worker_restarts,
        reruns: args.reruns,
        reruns_delay: args.reruns_delay,
        flaky_fails: switch(args.flaky_fails),
        last_failed: switch(args.last_failed),
        failed_first: switch(args.failed_first),
        affected: switch(args.affected),
        no_cache_results: switch(args.no_cache_results),
        budget: parsed(
            ("--budget", "a duration (e.g. `4m30s`, `270`)"),
            args.budget.as_deref(),
            parse_seconds,
        )?,
        verbosity: (args.verbose > 0 || args.quiet > 0).then_some(verbosity),
        durations: args.durations,
        durations_path: args.durations_path.clone(),
        json_report: args.json_report.clone(),
        junitxml: args.junitxml.clone(),
        events: args.events.clone(),
        timeline: args.timeline.clone(),
        color: args.color,
        failure_output: args.failure_output,
        shard: args.shard.clone(),
        shard_total: args.shard_total,
        queue: args.queue.queue.clone(),
        ..selection_layer(&args.selection)
    };
    coverage_layer(&args.coverage, layer)
}

/// pytest-cov's flags added to `layer`.
fn coverage_layer(coverage: &CoverageArgs, layer: Layer) -> Result<Layer, ShoalError> {
    let list = |values: &Vec<String>| (!values.is_empty()).then(|| values.clone());
    let switch = |given: bool| given.then_some(true);
    Ok(Layer {
        cov: list(&coverage.sources),
        cov_report: list(&coverage.reports),
        cov_config: coverage.config.clone(),
        cov_branch: switch(coverage.branch),
        cov_fail_under: parsed(
            ("--cov-fail-under", "a percentage"),
            coverage.fail_under.as_deref(),
            |text| text.trim().parse::<f64>().ok(),
        )?,
        cov_append: switch(coverage.append),
        no_cov_on_fail: switch(coverage.no_cov_on_fail),
        no_cov: switch(coverage.no_cov),
        cov_context: coverage.context.clone(),
        cov_precision: parsed(
            ("--cov-precision", "a whole number"),
            coverage.precision.as_deref(),
            |text| text.trim().parse::<u8>().ok(),
        )?,
        ..layer
    })
}

/// A flag's value read by `parse`: a usage error naming `flag` and what it
/// `expects` if it does not.
fn parsed<T>(
    (flag, expected): (&str, &str),
    typed: Option<&str>,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, ShoalError> {
    typed
        .map(|text| {
            parse(text).ok_or_else(|| ShoalError::Usage(format!("{flag}: expected {expected}, got `{text}`")))
        })
        .transpose()
}

/// The flag that sets a key, as `shoal config` names a value's source.
pub(super) fn flag_of(key: &str) -> String {
    match key {
        "paths" => "PATHS".to_owned(),
        "keyword" => "-k".to_owned(),
        "marker-expression" => "-m".to_owned(),
        "workers" => "-n".to_owned(),
        "exitfirst" => "-x".to_owned(),
        "last-failed" => "--lf".to_owned(),
        "failed-first" => "--ff".to_owned(),
        "verbosity" => "-q/-v".to_owned(),
        "pytest-args" => "pytest options".to_owned(),
        other => format!("--{other}"),
    }
}
