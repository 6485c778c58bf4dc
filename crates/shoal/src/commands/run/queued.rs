//! `shoal run --queue`: the run's side of the shared queue. After
//! collection the machine joins the build (the first one publishes the
//! units its scheduler would start, longest first; the others must have
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
use crate::queue::{BuildInfo, Heartbeat, Joined, Reservation, Session, StoredResult};
use crate::results::{RunHeader, TestView};
use crate::table::TestTable;

use super::drive::{Finals, Results, WorkSource};

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
        let units = || {
            let units = workload.units();
            units
                .into_iter()
                .map(|unit| unit.into_iter().map(|test| table.nodeid(test).to_owned()).collect())
                .collect()
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
        self.session.store(&results, self.retry.is_some())?;
        let mut still_leased = Vec::new();
        for (_, tests) in &mut self.leased {
            tests.retain(|test| !handed_back.contains(test));
        }
        for (unit, tests) in std::mem::take(&mut self.leased) {
            if tests.iter().all(|&test| finals.is_final[test] && !self.abandoned.contains(&test)) {
                self.session.acknowledge(&unit)?;
            } else {
                still_leased.push((unit, tests));
            }
        }
        self.leased = still_leased;
        Ok(())
    }

    /// The next unit's tests still to run here, `None` when there is none
    /// now (waiting, or drained).
    fn next_unit(&mut self, table: &TestTable) -> Result<Option<Released>, ShoalError> {
        loop {
            if let Some(retry) = self.retry.as_mut() {
                let Some(unit) = retry.pop_front() else {
                    self.drained = true;
                    return Ok(None);
                };
                let nodeids = self.session.unit(&unit)?;
                return Ok(Some(Released { tests: self.take(table, &nodeids)?, rerun_attempts: None }));
            }
            let reserved = match self.session.reserve()? {
                Reservation::Unit(reserved) => reserved,
                Reservation::Wait => {
                    self.poll_at = Some(Instant::now() + POLL);
                    return Ok(None);
                }
                Reservation::Drained => {
                    self.drained = true;
                    return Ok(None);
                }
            };
            self.poll_at = None;
            let mut nodeids = reserved.nodeids;
            if reserved.reclaimed {
                // A vanished machine's unit: what it recorded stays recorded.
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
                self.session.acknowledge(&reserved.unit)?;
                continue;
            }
            let tests = self.take(table, &nodeids)?;
            let rerun_attempts = rerun_attempts(&reserved.unit);
            self.leased.push((reserved.unit, tests.clone()));
            return Ok(Some(Released { tests, rerun_attempts }));
        }
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
        if self.poll_at.is_some_and(|at| Instant::now() < at) {
            return Ok(actions);
        }
        while !self.drained && scheduler.wants_tests() > 0 {
            match self.next_unit(finals.table)? {
                Some(released) => {
                    actions.extend(released.events().flat_map(|event| scheduler.handle(finals.now, event)))
                }
                None if self.drained => actions.extend(scheduler.handle(finals.now, Event::NoMoreTests)),
                None => {
                    actions.extend(scheduler.handle(finals.now, Event::NothingToRelease));
                    break;
                }
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

/// Narrows the run's results to the tests this machine ran; the whole
/// collection is kept aside, as `--shard` keeps it.
pub(super) fn narrow(results: &mut Results, taken: &[bool]) {
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
