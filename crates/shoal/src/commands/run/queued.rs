//! `shoal run --queue`: the run's side of the shared queue. After
//! collection the machine joins the build (the first one publishes the
//! units its scheduler would start, in its order; the others must have
//! collected the same tests); while the run drives, it reserves a unit
//! whenever its workers wait, stores every final record as it comes and
//! acknowledges a unit once all its tests are recorded or handed back (a
//! failed test with reruns left goes back to the queue, for any machine).
//! At the end, the run's results are narrowed to the tests this machine
//! ended.

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use shoal_scheduler::{Action, Event, Scheduler, TestId, Workload};

use crate::errors::ShoalError;
use crate::protocol::{CollectReport, WarningMessage};
use crate::queue::session::{POLL, rerun_attempts};
use crate::queue::stored::attempt_of;
use crate::queue::{BuildInfo, Heartbeat, Joined, Reservation, Reserved, Session, StoredResult};
use crate::results::{RunHeader, TestView};
use crate::table::TestTable;

use super::drive::{Finals, Results, WorkSource};

/// Expected seconds of work a reservation takes for each waiting worker:
/// enough that tiny tests do not cost a round trip each, little enough to
/// keep the machines' ends together.
const RESERVE_SECONDS: f64 = 0.25;

/// A machine of a queued build, while it runs.
pub(super) struct QueueFeed {
    session: Session,
    heartbeat: Heartbeat,
    /// Units reserved and not yet acknowledged, with their tests.
    leased: Vec<(String, Vec<TestId>)>,
    /// Retry mode: the units this machine's name ran, still to run again.
    retry: Option<VecDeque<String>>,
    /// The tests this machine was given and did not hand back.
    taken: Vec<bool>,
    /// Tests it left unrun when interrupted: not stored, for another
    /// machine to run.
    abandoned: HashSet<TestId>,
    /// Every unit is acknowledged (or, in retry mode, re-run).
    drained: bool,
    /// Other machines hold the rest: look again at this time.
    poll_at: Option<Instant>,
    /// This machine published the build (its collection's warnings are the
    /// build's).
    published: bool,
}

impl QueueFeed {
    /// Joins the build: publishes the workload's units when first, else
    /// checks this machine's collection against the published one.
    pub(super) fn join(
        mut session: Session,
        table: &TestTable,
        collect_reports: &[CollectReport],
        header: &RunHeader,
        workload: &Workload,
        workers: usize,
    ) -> Result<Self, ShoalError> {
        let info = BuildInfo::new(table, collect_reports, header);
        // Without history nothing is known of the tests: a reservation then
        // takes one unit for each waiting worker.
        let known = header.expectation.is_some();
        let units = || {
            let units = workload.units();
            let cost = |unit: &[TestId]| {
                if known {
                    unit.iter().map(|&test| workload.expected[test]).sum::<f64>()
                } else {
                    RESERVE_SECONDS
                }
            };
            let nodeids = |unit: &[TestId]| unit.iter().map(|&test| table.nodeid(test).to_owned()).collect();
            units.iter().map(|unit| (nodeids(unit), cost(unit))).collect()
        };
        let joined = session.join(&info, workers, units)?;
        let settings = session.settings();
        let published = joined == Joined::Published;
        let retry = match joined {
            Joined::Published => {
                crate::output::notice(&format!(
                    "queue: machine {} published build {} ({} tests)",
                    settings.machine,
                    settings.build,
                    table.len()
                ));
                None
            }
            Joined::Found => {
                crate::output::notice(&format!(
                    "queue: machine {} joined build {}",
                    settings.machine, settings.build
                ));
                None
            }
            Joined::Retry(units) => {
                crate::output::notice(&format!(
                    "queue: build {} is drained; retrying the {} units machine {} ran",
                    settings.build,
                    units.len(),
                    settings.machine
                ));
                Some(units.into())
            }
        };
        let heartbeat = session.heartbeat()?;
        Ok(Self {
            session,
            heartbeat,
            leased: Vec::new(),
            retry,
            taken: vec![false; table.len()],
            abandoned: HashSet::new(),
            drained: false,
            poll_at: None,
            published,
        })
    }

    /// Stores the run's warnings (the collection's only from the machine
    /// that published), then ends the heartbeat: leases still held go back
    /// to the queue at once. Returns which tests this machine ran.
    pub(super) fn finish(mut self, warnings: &[WarningMessage]) -> Result<Vec<bool>, ShoalError> {
        let published = self.published;
        let warnings: Vec<WarningMessage> =
            warnings.iter().filter(|warning| published || warning.when == "runtest").cloned().collect();
        let stored = self.session.store_warnings(&warnings);
        self.heartbeat.stop();
        stored?;
        Ok(self.taken)
    }

    /// Hands the scheduler's failed tests with reruns left back to the
    /// queue; returns them.
    fn hand_back(
        &mut self,
        scheduler: &mut Scheduler,
        finals: &Finals<'_>,
    ) -> Result<Vec<TestId>, ShoalError> {
        let handed_back = scheduler.take_handed_back();
        for &(test, attempts) in &handed_back {
            let failed =
                finals.attempts.get(&test).and_then(|attempts| attempts.last()).ok_or_else(|| {
                    ShoalError::Internal(format!(
                        "{} was handed back without a failed attempt",
                        finals.table.nodeid(test)
                    ))
                })?;
            self.session.hand_back(finals.table.nodeid(test), attempts, &attempt_of(failed))?;
            self.taken[test] = false;
        }
        Ok(handed_back.into_iter().map(|(test, _)| test).collect())
    }

    /// Stores the new final records, except tests left unrun because this
    /// machine was interrupted (Ctrl-C, a CI's SIGTERM on cancel or
    /// preemption): their unit is not acknowledged, and goes to another
    /// machine once this one's heartbeat stops.
    fn store(&mut self, finals: &Finals<'_>, handed_back: &[TestId]) -> Result<(), ShoalError> {
        let machine = self.session.settings().machine.clone();
        let interrupted = |test: TestId| {
            finals.records[test].not_run_reason == Some(crate::results::StopReason::Interrupted)
        };
        self.abandoned.extend(finals.newly.iter().map(|(test, _)| *test).filter(|&test| interrupted(test)));
        let results: Vec<StoredResult> = finals
            .newly
            .iter()
            .filter(|(test, _)| !interrupted(*test))
            .map(|(test, reports)| {
                let view = TestView { item: finals.table.item(*test), record: &finals.records[*test] };
                StoredResult::new(&machine, view, reports)
            })
            .collect();
        let mut still_leased = Vec::new();
        for (_, tests) in &mut self.leased {
            tests.retain(|test| !handed_back.contains(test));
        }
        let mut done = Vec::new();
        for (unit, tests) in std::mem::take(&mut self.leased) {
            if tests.iter().all(|&test| finals.is_final[test] && !self.abandoned.contains(&test)) {
                done.push(unit);
            } else {
                still_leased.push((unit, tests));
            }
        }
        // One round trip: the results, then the units they complete.
        self.session.store(&results, self.retry.is_some(), &done)?;
        self.leased = still_leased;
        Ok(())
    }

    /// The next units' tests still to run here, about `budget` expected
    /// seconds of them; none when there are none now (waiting, or drained).
    fn next_units(&mut self, table: &TestTable, budget: f64) -> Result<Vec<Released>, ShoalError> {
        loop {
            if let Some(retry) = self.retry.as_mut() {
                let Some(unit) = retry.pop_front() else {
                    self.drained = true;
                    return Ok(Vec::new());
                };
                let nodeids = self.session.unit(&unit)?;
                return Ok(vec![Released { tests: self.take(table, &nodeids)?, rerun_attempts: None }]);
            }
            let units = match self.session.reserve(budget)? {
                Reservation::Units(units) => units,
                Reservation::Wait => {
                    self.poll_at = Some(Instant::now() + POLL);
                    return Ok(Vec::new());
                }
                Reservation::Drained => {
                    self.drained = true;
                    return Ok(Vec::new());
                }
            };
            self.poll_at = None;
            let mut released = Vec::new();
            let mut empty = Vec::new();
            for reserved in units {
                match self.lease(table, reserved)? {
                    Ok(unit) => released.push(unit),
                    Err(id) => empty.push(id),
                }
            }
            self.session.acknowledge(&empty)?;
            if !released.is_empty() {
                return Ok(released);
            }
        }
    }

    /// Holds a reserved unit's tests still to run (those a vanished
    /// machine recorded stay recorded); the unit's id when none is left.
    fn lease(
        &mut self,
        table: &TestTable,
        reserved: Reserved,
    ) -> Result<Result<Released, String>, ShoalError> {
        let mut nodeids = reserved.nodeids;
        if reserved.reclaimed {
            let recorded = self.session.recorded(&nodeids)?;
            let mut flags = recorded.into_iter();
            nodeids.retain(|_| !flags.next().unwrap_or(false));
            crate::output::notice(&format!(
                "queue: took over unit {} from a machine whose heartbeat stopped ({} tests left)",
                reserved.unit,
                nodeids.len()
            ));
        }
        if nodeids.is_empty() {
            return Ok(Err(reserved.unit));
        }
        let tests = self.take(table, &nodeids)?;
        let rerun_attempts = rerun_attempts(&reserved.unit);
        self.leased.push((reserved.unit, tests.clone()));
        Ok(Ok(Released { tests, rerun_attempts }))
    }

    fn take(&mut self, table: &TestTable, nodeids: &[String]) -> Result<Vec<TestId>, ShoalError> {
        let tests = nodeids
            .iter()
            .map(|nodeid| {
                table.find(nodeid).ok_or_else(|| {
                    ShoalError::Queue(format!(
                        "the queue handed out {nodeid}, which this machine did not collect"
                    ))
                })
            })
            .collect::<Result<Vec<TestId>, _>>()?;
        for &test in &tests {
            self.taken[test] = true;
        }
        Ok(tests)
    }
}

impl WorkSource for QueueFeed {
    fn pump(&mut self, scheduler: &mut Scheduler, finals: Finals<'_>) -> Result<Vec<Action>, ShoalError> {
        if let Some(failure) = self.heartbeat.failure() {
            return Err(failure.into());
        }
        if self.retry.is_none() {
            // A retried machine reruns its own units' failures itself.
            scheduler.hand_reruns_back();
        }
        let handed_back = self.hand_back(scheduler, &finals)?;
        self.store(&finals, &handed_back)?;
        let mut actions = Vec::new();
        if let Some(at) = self.poll_at {
            if Instant::now() < at {
                return Ok(actions);
            }
            // Due: the loop below looks again, or nobody waits; either way
            // the drive loop must not keep waking for it.
            self.poll_at = None;
        }
        while !self.drained && scheduler.wants_tests() > 0 {
            let budget = scheduler.wants_tests() as f64 * RESERVE_SECONDS;
            let released = self.next_units(finals.table, budget)?;
            if released.is_empty() {
                let event = if self.drained { Event::NoMoreTests } else { Event::NothingToRelease };
                actions.extend(scheduler.handle(finals.now, event));
                break;
            }
            for unit in released {
                actions.extend(unit.events().flat_map(|event| scheduler.handle(finals.now, event)));
            }
        }
        Ok(actions)
    }

    fn poll_at(&self) -> Option<Instant> {
        self.poll_at
    }
}

/// A unit's tests, released to this machine.
struct Released {
    tests: Vec<TestId>,
    /// For a rerun unit, the failed attempts its test has made.
    rerun_attempts: Option<u8>,
}

impl Released {
    fn events(self) -> impl Iterator<Item = Event> {
        let (reruns, tests) = match self.rerun_attempts {
            Some(attempts) => {
                (self.tests.into_iter().map(|test| Event::RerunReleased { test, attempts }).collect(), None)
            }
            None => (Vec::new(), Some(Event::TestsReleased { tests: self.tests })),
        };
        reruns.into_iter().chain(tests)
    }
}

/// Ends the machine's part of the build (its warnings stored, its
/// heartbeat stopped) and narrows the run's results to the tests it ended.
pub(super) fn conclude(feed: QueueFeed, results: &mut Results) -> Result<(), ShoalError> {
    let taken = feed.finish(&results.warnings)?;
    narrow(results, &taken);
    Ok(())
}

/// Narrows the run's results to the tests this machine ran; the whole
/// collection is kept aside, as `--shard` keeps it.
fn narrow(results: &mut Results, taken: &[bool]) {
    let (kept, _) = results.table.retain(|test| taken[test]);
    let mut new_index = vec![None; taken.len()];
    let mut next = 0u32;
    for (test, &was_taken) in taken.iter().enumerate() {
        if was_taken {
            new_index[test] = Some(next);
            next += 1;
        }
    }
    let records = std::mem::take(&mut results.records);
    results.records =
        records.into_iter().zip(taken).filter(|(_, taken)| **taken).map(|(record, _)| record).collect();
    results.execution_order = results
        .execution_order
        .iter()
        .filter_map(|&(slot, test)| new_index[test as usize].map(|test| (slot, test)))
        .collect();
    let whole = std::mem::replace(&mut results.table, kept);
    results.whole_collection.get_or_insert(whole);
}
