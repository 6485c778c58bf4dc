//! The second phase: what the scheduler is given and what the reporters are
//! told first. The workload has each test's expected duration from the
//! history, its timeout, serial tests and groups, reruns (the profile's,
//! or its overrides' for the test: [`crate::settings::Overrides`]), last time's
//! failures first and, with split collection, which file each test needs
//! imported; the header says what was collected and selected, and what the
//! history expects of the run.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use shoal_scheduler::Workload;

use crate::errors::ShoalError;
use crate::history::History;
use crate::plan;
use crate::pool::Collected;
use crate::results::{Expectation, RunHeader};
use crate::settings::{LastFailedMode, RunSettings, TestLimits};

use super::Learned;
use super::select::Selected;

/// When and how the run started.
pub(super) struct RunStart {
    /// The run's clock: the scheduler's seconds count from here.
    pub(super) clock: Instant,
    /// The wall-clock time, for reports.
    pub(super) started_at: SystemTime,
    /// `PYTHONHASHSEED` of every worker.
    pub(super) hash_seed: String,
    /// Worker processes started.
    pub(super) workers: usize,
}

/// What the run is about to do.
pub(super) struct Prepared {
    pub(super) header: RunHeader,
    pub(super) workload: Workload,
    /// Split collection: the test files the workload's imports index.
    pub(super) test_files: Vec<plan::LoadTarget>,
    /// Seconds from the start until tests could start.
    pub(super) startup_seconds: f64,
    /// Each test's slow timeout (empty when no test has one).
    pub(super) slow_timeouts: Vec<Option<f64>>,
}

pub(super) fn prepare(
    settings: &RunSettings,
    learned: &Learned,
    collected: &Collected,
    selected: &Selected,
    history: &History,
    start: &RunStart,
) -> Result<Prepared, ShoalError> {
    let table = &selected.table;
    let limits: Vec<TestLimits> = table.items().map(|item| settings.overrides.limits_for(&item)).collect();
    let mut workload = plan::workload(table, history, &|test| limits[test].timeout);
    let test_files = match &collected.split {
        Some(split) => {
            let oversubscription = start.workers as f64 / crate::settings::usable_cpus() as f64;
            let building: HashMap<&str, f64> = collected.building_seconds(table).into_iter().collect();
            plan::set_split_collection(
                &mut workload,
                table,
                split,
                &building,
                &collected.import_seconds,
                oversubscription,
            )?
        }
        None => Vec::new(),
    };
    plan::mark_serial_and_groups(&mut workload, table, &settings.serial_markers);
    plan::set_reruns(&mut workload, table, &|test| limits[test].reruns);
    let mut slow_timeouts: Vec<Option<f64>> = limits.iter().map(|limits| limits.slow_timeout).collect();
    if slow_timeouts.iter().all(Option::is_none) {
        slow_timeouts = Vec::new();
    }
    // --ff, and any budget, put last time's failures first.
    if (settings.last_failed == LastFailedMode::First || settings.budget.is_some())
        && let Some(record) = &learned.last_failed
    {
        workload.first = (0..table.len()).map(|test| record.contains(table.nodeid(test))).collect();
    }
    let startup_seconds = start.clock.elapsed().as_secs_f64();
    let expectation = (!history.is_empty()).then(|| Expectation {
        wall_seconds: startup_seconds + shoal_scheduler::simulate(&workload, start.workers),
        lower_bound_seconds: startup_seconds + workload.lower_bound(start.workers),
    });
    if let (Some(budget), Some(expectation)) = (settings.budget, expectation)
        && expectation.wall_seconds > budget
    {
        crate::output::warn(&format!(
            "history expects {:.1}s, over the {budget}s budget: tests that cannot end in time will not be started",
            expectation.wall_seconds
        ));
    }
    let header = header(settings, learned, collected, selected, start, expectation);
    Ok(Prepared { header, workload, test_files, startup_seconds, slow_timeouts })
}

fn header(
    settings: &RunSettings,
    learned: &Learned,
    collected: &Collected,
    selected: &Selected,
    start: &RunStart,
    expectation: Option<Expectation>,
) -> RunHeader {
    let collect_errors = collected.collect_errors();
    RunHeader {
        environment: collected.hello.environment.clone(),
        workers: start.workers,
        mode: collected.mode,
        selected: selected.table.len(),
        deselected: collected.deselected.len() as u64 + selected.left_out,
        collect_errors,
        collect_skipped: collected.collect_reports.len() - collect_errors,
        collection_notes: selected.last_failed_status.iter().cloned().collect(),
        hash_seed: start.hash_seed.clone(),
        max_failures: learned.max_failures,
        budget: settings.budget,
        started_at: start.started_at,
        expectation,
        shard: selected.shard.clone(),
        profile: settings.profile().map(str::to_owned),
        settings: settings.resolution.settings.clone(),
    }
}
