//! The pending work, in the order it should go out.
//!
//! Work is grouped into units: a module whose module-scoped set-up is worth
//! paying once ([`LOCALITY_MIN_SETUP`] or more) stays one unit, in
//! collection order, so one worker pays for its fixtures; every other test
//! is a unit of its own. A test group (`xdist_group`) is one unit that is
//! never split, so its tests run on one worker in collection order. Units
//! go out longest expected first (LPT), so a long test started last cannot
//! make everyone wait, by [`duration_class`]: units within a factor of two
//! of each other (all those under [`SHORT_UNIT_SECONDS`] alike) go in
//! collection order, which keeps pytest's set-up of classes and modules;
//! tests that failed last time go before all others. A
//! worker drains its current unit before taking a new one. When no unit is
//! left unstarted, an idle worker splits the unit with the most work left,
//! if the half it takes is worth paying that module's set-up again.
//!
//! Serial tests are kept apart, one unit each, for the serial phase the
//! scheduler runs once everything else is done. Under a time budget only
//! tests expected to end in time are taken.
//!
//! With split collection, a worker has imported only some test modules (its
//! share, then whatever it took since); running a test of another module
//! costs that module's import first. A worker takes, longest first, the
//! units it can start at little cost ([`CHEAP_LOAD_FRACTION`] of the unit);
//! when none is left it takes on the module whose pending work gains most
//! from one more worker, if that gain exceeds the import (a module nobody
//! alive has imported always qualifies); otherwise it gets nothing.
//!
//! With a shared queue across machines, the queue starts empty and takes
//! units as they are released, each keeping the shape (set-up, wholeness)
//! its tests were planned with.
//!
//! Size: over 600 lines, because the unit bookkeeping (taking, splitting,
//! requeueing, releasing) shares one representation, ranges of one flat
//! list, and reads best beside it; its tests are at the end.

use std::collections::VecDeque;

use crate::{TestId, WorkerId};

/// Module-scoped set-up below this many seconds is not worth keeping a
/// module together for.
pub const LOCALITY_MIN_SETUP: f64 = 0.005;

/// Units expected to take less than this are one [`duration_class`], the
/// last to go out.
pub(crate) const SHORT_UNIT_SECONDS: f64 = 0.01;

/// Units go out by class of expected duration, longest first, and within a
/// class in collection order: the classes double from
/// [`SHORT_UNIT_SECONDS`] (everything shorter is class 0). Ordering units
/// of about the same length by their exact estimates would order them by
/// noise, scattering a module's or a class's tests: each would tear down and
/// set up again its module and class (their fixtures, `setUpClass`,
/// `setup_module`), which can cost more than the tests. Worse, with those
/// set-ups in every test's recorded time no run learns that they are the
/// module's: the `fixtures` reference suite, its history of module set-ups
/// lost, stayed at 72 s a run (9 s with it). Within a factor of two the
/// order barely moves the end of the run.
pub(crate) fn duration_class(seconds: f64) -> u32 {
    if seconds < SHORT_UNIT_SECONDS {
        return 0;
    }
    // At most 64 classes: 2^63 × 10 ms is beyond any test.
    (seconds / SHORT_UNIT_SECONDS).log2().floor().clamp(0.0, 62.0) as u32 + 1
}

/// With split collection, a unit whose modules cost at most this fraction
/// of its own expected time to import is taken as if they were imported.
pub(crate) const CHEAP_LOAD_FRACTION: f64 = 0.1;

/// What the scheduler knows about the tests before the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Workload {
    /// Expected seconds of each test (from history, or estimated).
    pub expected: Vec<f64>,
    /// The module of each test, an index into `module_setup`.
    pub module: Vec<usize>,
    /// Expected seconds of each module's module-scoped set-up, paid once by
    /// every worker that runs any of its tests.
    pub module_setup: Vec<f64>,
    /// Seconds each test may run before it is stopped (`None`: no limit);
    /// empty when no test has a timeout.
    pub timeouts: Vec<Option<f64>>,
    /// The test group of each test (tests of a group run on one worker, in
    /// order); empty when there are no groups.
    pub group: Vec<Option<u32>>,
    /// Whether each test must run while nothing else runs; empty: none.
    pub serial: Vec<bool>,
    /// Whether each test goes before the others (it failed last time);
    /// empty: none.
    pub first: Vec<bool>,
    /// How many times each test may be rerun after a failed attempt;
    /// empty: never.
    pub reruns: Vec<u8>,
    /// Split collection: the test file that collects each test, an index
    /// into `file_load` (usually its module; another file for a test it
    /// inherits). Empty with full collection.
    pub file: Vec<usize>,
    /// Split collection: seconds each test file costs to import and
    /// collect in a worker that has not yet. Empty: every worker has
    /// collected every file (full collection).
    pub file_load: Vec<f64>,
    /// Split collection: the files each worker slot collected before the
    /// run (its share). Replacements start with none.
    pub initially_loaded: Vec<Vec<usize>>,
}

/// A test expected to take less than this (seconds) is quick: see
/// [`Workload::batchable`].
pub(crate) const QUICK_TEST_SECONDS: f64 = 0.005;

impl Workload {
    /// Which tests a forked worker may send the results of together: those
    /// expected quick that share one timeout (none, or the most common one,
    /// such as a global `--timeout`). While results wait, shoal takes the
    /// first of them for the running test, with its timeout: it must be the
    /// running test's. The worker sends what waits before starting any
    /// other test.
    pub fn batchable(&self) -> Vec<bool> {
        let timeout_of = |test: usize| self.timeouts.get(test).copied().flatten().map(f64::to_bits);
        let expected_quick = |test: usize| self.expected[test] < QUICK_TEST_SECONDS;
        let mut counts: std::collections::HashMap<Option<u64>, usize> = std::collections::HashMap::new();
        for test in (0..self.expected.len()).filter(|&test| expected_quick(test)) {
            *counts.entry(timeout_of(test)).or_default() += 1;
        }
        let shared = counts
            .into_iter()
            .max_by_key(|&(timeout, count)| (count, timeout.is_none()))
            .map(|(timeout, _)| timeout);
        (0..self.expected.len())
            .map(|test| expected_quick(test) && Some(timeout_of(test)) == shared)
            .collect()
    }

    /// The tests grouped into units (a group, a module worth keeping on
    /// one worker, or one test), in the order the scheduler would start
    /// them: last time's failures, then longest first by
    /// class of duration (doubling from 10 ms, each in collection order), serial tests last.
    /// What a shared queue publishes.
    pub fn units(&self) -> Vec<Vec<TestId>> {
        WorkQueue::new(self, 1).units_in_order()
    }

    /// `count` tests with nothing known: equal estimates, no shared set-up,
    /// dispatched in collection order.
    pub fn uniform(count: usize, estimate: f64) -> Self {
        Self {
            expected: vec![estimate; count],
            module: vec![0; count],
            module_setup: vec![0.0],
            timeouts: Vec::new(),
            group: Vec::new(),
            serial: Vec::new(),
            first: Vec::new(),
            reruns: Vec::new(),
            file: Vec::new(),
            file_load: Vec::new(),
            initially_loaded: Vec::new(),
        }
    }

    /// Tests of one module with these estimates, behind `setup` seconds of
    /// module set-up (for unit tests).
    #[cfg(test)]
    pub(crate) fn one_module(expected: &[f64], setup: f64) -> Self {
        Self {
            expected: expected.to_vec(),
            module: vec![0; expected.len()],
            module_setup: vec![setup],
            ..Self::default()
        }
    }

    /// Number of tests.
    pub fn len(&self) -> usize {
        self.expected.len()
    }

    /// Whether there are no tests.
    pub fn is_empty(&self) -> bool {
        self.expected.is_empty()
    }

    /// `max(total / workers, longest test)`: no schedule can beat it.
    pub fn lower_bound(&self, workers: usize) -> f64 {
        let total: f64 = self.expected.iter().sum();
        let longest = self.expected.iter().copied().fold(0.0, f64::max);
        (total / workers.max(1) as f64).max(longest)
    }
}

/// A run of tests in [`WorkQueue::order`]: `order[start..end]` still to go.
#[derive(Debug, Clone)]
struct Unit {
    start: u32,
    end: u32,
    /// Expected seconds of the tests still in the unit.
    remaining: f64,
    /// Set-up a new worker pays to run any of them.
    setup: f64,
    /// May be shared between workers (not a test group).
    splittable: bool,
}

impl Unit {
    fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    fn range(&self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// Pending tests, grouped into units. See the module docs.
///
/// Units are ranges of one flat list, so a queue of 100,000 single-test
/// units costs no allocation per test.
#[derive(Debug, Clone)]
pub(crate) struct WorkQueue {
    expected: Vec<f64>,
    order: Vec<TestId>,
    units: Vec<Unit>,
    /// Units nobody has started, in the order they go out.
    unstarted: VecDeque<usize>,
    /// Serial tests' units, for the serial phase.
    serial: VecDeque<usize>,
    /// Which tests are serial (empty when none is).
    is_serial: Vec<bool>,
    /// The unit each worker is draining.
    current: Vec<Option<usize>>,
    /// Split collection, per worker: how many units at the front of
    /// `unstarted` are known not to be cheap for it, so a worker that has
    /// not imported the modules of the longest units does not look at them
    /// again at every take. Reset when units go back to the front or the
    /// worker imports a module: nothing else makes an unstarted unit cheaper.
    not_cheap_prefix: Vec<usize>,
    remaining: f64,
    count: usize,
    /// Split collection (see the module docs); `None` with full collection.
    split: Option<SplitCollection>,
    /// With tests withheld (a shared queue hands them out): each test's
    /// set-up and whether its unit may be shared, as first planned.
    shape: Vec<(f64, bool)>,
}

/// Which worker has imported which module, with split collection.
#[derive(Debug, Clone)]
struct SplitCollection {
    /// The test file of each test.
    file: Vec<u32>,
    /// Import seconds of each module.
    load: Vec<f64>,
    /// Per worker, per module: imported.
    loaded: Vec<Vec<bool>>,
    /// Per worker: modules marked imported but not yet sent as a load.
    unsent: Vec<Vec<usize>>,
    /// Expected seconds of each module's tests not yet taken.
    pending: Vec<f64>,
}

impl SplitCollection {
    /// The imports state of a workload with split collection (`None` with
    /// full collection): each worker starts with the modules it collected.
    fn new(workload: &Workload, workers: usize) -> Option<Self> {
        if workload.file_load.is_empty() {
            return None;
        }
        let mut loaded = vec![vec![false; workload.file_load.len()]; workers];
        for (worker, modules) in workload.initially_loaded.iter().enumerate().take(workers) {
            for &module in modules {
                loaded[worker][module] = true;
            }
        }
        let mut pending = vec![0.0; workload.file_load.len()];
        for (test, &file) in workload.file.iter().enumerate() {
            pending[file] += workload.expected[test];
        }
        Some(SplitCollection {
            file: workload.file.iter().map(|&file| position(file)).collect(),
            load: workload.file_load.clone(),
            loaded,
            unsent: vec![Vec::new(); workers],
            pending,
        })
    }

    /// Seconds `worker` must spend importing before it can run `tests`.
    fn load_for(&self, worker: WorkerId, tests: &[TestId]) -> f64 {
        let unloaded =
            |module: u32| if self.loaded[worker][module as usize] { 0.0 } else { self.load[module as usize] };
        // Most units are one test, or tests of one file: no list to build.
        let Some(&first) = tests.first() else { return 0.0 };
        let first = self.file[first];
        if tests.iter().all(|&test| self.file[test] == first) {
            return unloaded(first);
        }
        let mut modules: Vec<u32> = tests.iter().map(|&test| self.file[test]).collect();
        modules.sort_unstable();
        modules.dedup();
        modules.into_iter().map(unloaded).sum()
    }

    /// Marks the modules of `tests` imported by `worker`; the new ones are
    /// remembered for the next [`WorkQueue::take_loads`]. Returns whether
    /// any was new.
    fn mark(&mut self, worker: WorkerId, tests: &[TestId]) -> bool {
        let mut any_new = false;
        for &test in tests {
            let module = self.file[test] as usize;
            if !self.loaded[worker][module] {
                self.loaded[worker][module] = true;
                self.unsent[worker].push(module);
                any_new = true;
            }
        }
        any_new
    }

    /// The module whose pending work gains most from `worker` importing it,
    /// if that gain exceeds the import: with `k` workers holding it, its
    /// pending work `p` takes about `p / k`, and `p / (k + 1)` plus the
    /// import with one more. A module no worker holds always qualifies.
    fn worth_importing(&self, worker: WorkerId) -> Option<usize> {
        let holders = |module: usize| self.loaded.iter().filter(|loaded| loaded[module]).count();
        let gain = |module: usize| match holders(module) {
            0 => f64::INFINITY,
            k => self.pending[module] / k as f64 - self.pending[module] / (k + 1) as f64 - self.load[module],
        };
        (0..self.load.len())
            .filter(|&module| self.pending[module] > 0.0 && !self.loaded[worker][module])
            .map(|module| (module, gain(module)))
            .filter(|&(_, gain)| gain > 0.0)
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
            .map(|(module, _)| module)
    }
}

impl WorkQueue {
    pub(crate) fn new(workload: &Workload, workers: usize) -> Self {
        let flag = |flags: &[bool], test: TestId| flags.get(test).copied().unwrap_or(false);
        let group_of = |test: TestId| workload.group.get(test).copied().flatten();
        // Tests of a group, or of a module worth keeping together, become
        // one unit each, in collection order; every other test is a unit of
        // its own, serial ones apart.
        let mut groups: std::collections::BTreeMap<u32, Vec<TestId>> = std::collections::BTreeMap::new();
        let mut members: Vec<Vec<TestId>> = vec![Vec::new(); workload.module_setup.len()];
        let mut singles: Vec<TestId> = Vec::new();
        let mut serial_tests: Vec<TestId> = Vec::new();
        for (test, &module) in workload.module.iter().enumerate() {
            if flag(&workload.serial, test) {
                serial_tests.push(test);
            } else if let Some(group) = group_of(test) {
                groups.entry(group).or_default().push(test);
            } else if workload.module_setup[module] >= LOCALITY_MIN_SETUP {
                members[module].push(test);
            } else {
                singles.push(test);
            }
        }
        let mut order = Vec::with_capacity(workload.len());
        let mut units = Vec::new();
        let mut push_unit = |tests: &[TestId], setup: f64, splittable: bool, order: &mut Vec<TestId>| {
            let start = position(order.len());
            order.extend_from_slice(tests);
            let remaining = tests.iter().map(|&test| workload.expected[test]).sum();
            units.push(Unit { start, end: position(order.len()), remaining, setup, splittable });
            units.len() - 1
        };
        let mut parallel = Vec::new();
        for tests in groups.values() {
            parallel.push(push_unit(tests, 0.0, false, &mut order));
        }
        for (module, tests) in members.iter().enumerate().filter(|(_, tests)| !tests.is_empty()) {
            parallel.push(push_unit(tests, workload.module_setup[module], true, &mut order));
        }
        for &test in &singles {
            parallel.push(push_unit(&[test], 0.0, true, &mut order));
        }
        let serial: Vec<usize> =
            serial_tests.iter().map(|&test| push_unit(&[test], 0.0, false, &mut order)).collect();
        // Failed last time first, then longest first by class of duration,
        // each class in collection order (so equal estimates, without
        // history, go in pytest's order).
        let any_first = |unit: &Unit| {
            order[unit.start as usize..unit.end as usize].iter().any(|&t| flag(&workload.first, t))
        };
        let sort = |list: &mut Vec<usize>| {
            list.sort_by(|&a, &b| {
                let class = |unit: usize| duration_class(units[unit].remaining + units[unit].setup);
                let first_test = |unit: usize| order[units[unit].start as usize];
                any_first(&units[b])
                    .cmp(&any_first(&units[a]))
                    .then(class(b).cmp(&class(a)))
                    .then(first_test(a).cmp(&first_test(b)))
            });
        };
        let (mut parallel, mut serial) = (parallel, serial);
        sort(&mut parallel);
        sort(&mut serial);
        let split = SplitCollection::new(workload, workers);
        Self {
            expected: workload.expected.clone(),
            remaining: units.iter().map(|unit| unit.remaining).sum(),
            count: workload.len(),
            order,
            units,
            unstarted: parallel.into(),
            serial: serial.into(),
            is_serial: workload.serial.clone(),
            current: vec![None; workers],
            not_cheap_prefix: vec![0; workers],
            split,
            shape: Vec::new(),
        }
    }

    /// The units in the order they would go out: longest first by
    /// [`duration_class`], serial ones last.
    pub(crate) fn units_in_order(&self) -> Vec<Vec<TestId>> {
        self.unstarted
            .iter()
            .chain(&self.serial)
            .map(|&unit| self.order[self.units[unit].range()].to_vec())
            .collect()
    }

    /// Empties the queue, remembering each test's unit shape for
    /// [`Self::add_unit`].
    pub(crate) fn withhold_all(&mut self) {
        self.shape = vec![(0.0, true); self.expected.len()];
        for unit in &self.units {
            for &test in &self.order[unit.range()] {
                self.shape[test] = (unit.setup, unit.splittable);
            }
        }
        self.drain_all();
    }

    /// Queues tests released by a shared queue as one unit, last (serial
    /// tests each apart, for the serial phase). The unit keeps the set-up
    /// and the wholeness its tests were planned with.
    pub(crate) fn add_unit(&mut self, tests: &[TestId]) {
        let (serial, parallel): (Vec<TestId>, Vec<TestId>) =
            tests.iter().partition(|&&test| self.is_serial(test));
        self.add_pending(tests);
        for test in serial {
            let unit = self.push_released(&[test], 0.0, false);
            self.serial.push_back(unit);
        }
        if !parallel.is_empty() {
            let shape = |test: &TestId| self.shape.get(*test).copied().unwrap_or((0.0, true));
            let setup = parallel.iter().map(|test| shape(test).0).fold(0.0, f64::max);
            let splittable = parallel.iter().all(|test| shape(test).1);
            let unit = self.push_released(&parallel, setup, splittable);
            self.unstarted.push_back(unit);
        }
    }

    fn push_released(&mut self, tests: &[TestId], setup: f64, splittable: bool) -> usize {
        let start = position(self.order.len());
        self.order.extend_from_slice(tests);
        let remaining: f64 = tests.iter().map(|&test| self.expected[test]).sum();
        self.count += tests.len();
        self.remaining += remaining;
        self.units.push(Unit { start, end: position(self.order.len()), remaining, setup, splittable });
        self.units.len() - 1
    }

    /// The modules `worker` must import before it runs `tests` (now marked
    /// imported), with those marked earlier by [`Self::take_for`] and not
    /// yet sent. Always empty with full collection.
    pub(crate) fn take_loads(&mut self, worker: WorkerId, tests: &[TestId]) -> Vec<usize> {
        let Some(split) = self.split.as_mut() else { return Vec::new() };
        if split.mark(worker, tests) {
            self.not_cheap_prefix[worker] = 0;
        }
        std::mem::take(&mut split.unsent[worker])
    }

    /// A worker process ended: its replacement has imported nothing.
    pub(crate) fn forget_imports(&mut self, worker: WorkerId) {
        if let Some(split) = self.split.as_mut() {
            split.loaded[worker].iter_mut().for_each(|loaded| *loaded = false);
            split.unsent[worker].clear();
        }
    }

    /// Seconds of imports `worker` needs before it can start `unit`.
    fn load_for(&self, worker: WorkerId, unit: usize) -> f64 {
        self.split.as_ref().map_or(0.0, |split| split.load_for(worker, &self.order[self.units[unit].range()]))
    }

    /// Whether `worker` can start `unit` at little import cost.
    fn cheap_for(&self, worker: WorkerId, unit: usize) -> bool {
        let cost = self.units[unit].remaining + self.units[unit].setup;
        self.split.is_none() || self.load_for(worker, unit) <= CHEAP_LOAD_FRACTION * cost
    }

    /// The first unstarted unit (in the order they go out) that fits and that `worker`
    /// should take: one it can start cheaply, else one of the module most
    /// worth importing; when `alone` (no other worker can take work), any
    /// that fits, since what nobody takes never runs. See the module docs.
    /// Also returns the new length of the worker's not-cheap prefix when
    /// it was looked at (split collection, not `alone`).
    fn choose_unstarted(
        &self,
        worker: WorkerId,
        alone: bool,
        fits: impl Fn(usize) -> bool,
    ) -> (Option<usize>, Option<usize>) {
        let Some(split) = self.split.as_ref() else {
            return (self.unstarted.iter().position(|&unit| fits(unit)), None);
        };
        let known = if alone { 0 } else { self.not_cheap_prefix[worker] };
        let mut prefix = known;
        let position = self.unstarted.iter().enumerate().skip(known).position(|(index, &unit)| {
            let cheap = alone || self.cheap_for(worker, unit);
            if !cheap && prefix == index {
                prefix = index + 1;
            }
            cheap && fits(unit)
        });
        let prefix = (!alone).then_some(prefix);
        if let Some(position) = position {
            return (Some(known + position), prefix);
        }
        let Some(module) = split.worth_importing(worker) else { return (None, prefix) };
        let position = self.unstarted.iter().position(|&unit| {
            fits(unit)
                && self.order[self.units[unit].range()]
                    .iter()
                    .any(|&test| split.file[test] as usize == module)
        });
        (position, prefix)
    }

    /// Takes the unit at `position` out of the unstarted list.
    fn remove_unstarted(&mut self, position: usize) -> usize {
        for prefix in &mut self.not_cheap_prefix {
            if position < *prefix {
                *prefix -= 1;
            }
        }
        self.unstarted.remove(position).expect("a found position")
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Expected seconds of everything pending.
    pub(crate) fn remaining_seconds(&self) -> f64 {
        self.remaining.max(0.0)
    }

    pub(crate) fn expected(&self, test: TestId) -> f64 {
        self.expected[test]
    }

    /// Whether only serial tests are left.
    pub(crate) fn only_serial_left(&self) -> bool {
        self.count > 0 && self.serial.iter().map(|&unit| self.units[unit].len()).sum::<usize>() == self.count
    }

    /// The next test for `worker`, if any is worth giving it and (with a
    /// budget) is expected to take at most `limit` seconds. When `alone`,
    /// no other worker can take work, and any test that fits is worth it.
    pub(crate) fn take_for(&mut self, worker: WorkerId, limit: Option<f64>, alone: bool) -> Option<TestId> {
        let fits = |queue: &Self, unit: usize| {
            let unit = &queue.units[unit];
            unit.len() > 0
                && limit.is_none_or(|limit| {
                    queue.expected[queue.order[unit.start as usize]] + unit.setup <= limit
                })
        };
        let unit = match self.current[worker].filter(|&unit| fits(self, unit)) {
            Some(unit) => unit,
            None => {
                // A group's rest stays with its worker even when its next
                // test does not fit now: a group never spreads.
                if let Some(unit) = self.current[worker]
                    && self.units[unit].len() > 0
                    && !self.units[unit].splittable
                {
                    return None;
                }
                self.release(worker);
                let (chosen, prefix) = self.choose_unstarted(worker, alone, |unit| fits(self, unit));
                if let Some(prefix) = prefix {
                    self.not_cheap_prefix[worker] = prefix;
                }
                let unit = match chosen {
                    Some(position) => self.remove_unstarted(position),
                    None => self.split_for_thief(worker).filter(|&unit| fits(self, unit))?,
                };
                self.current[worker] = Some(unit);
                unit
            }
        };
        let test = self.pop_front(unit);
        if let Some(split) = self.split.as_mut()
            && split.mark(worker, &[test])
        {
            self.not_cheap_prefix[worker] = 0;
        }
        Some(test)
    }

    /// Whether a test runs in the serial phase.
    pub(crate) fn is_serial(&self, test: TestId) -> bool {
        self.is_serial.get(test).copied().unwrap_or(false)
    }

    /// The next serial test, if one fits `limit`.
    pub(crate) fn take_serial(&mut self, limit: Option<f64>) -> Option<TestId> {
        let position = self.serial.iter().position(|&unit| {
            let unit = &self.units[unit];
            unit.len() > 0
                && limit.is_none_or(|limit| self.expected[self.order[unit.start as usize]] <= limit)
        })?;
        let unit = self.serial.remove(position).expect("a found position");
        Some(self.pop_front(unit))
    }

    fn pop_front(&mut self, unit: usize) -> TestId {
        let test = self.order[self.units[unit].start as usize];
        self.units[unit].start += 1;
        self.units[unit].remaining -= self.expected[test];
        self.remaining -= self.expected[test];
        self.count -= 1;
        if let Some(split) = self.split.as_mut() {
            split.pending[split.file[test] as usize] -= self.expected[test];
        }
        test
    }

    /// Counts tests back into their modules' pending work.
    fn add_pending(&mut self, tests: &[TestId]) {
        if let Some(split) = self.split.as_mut() {
            for &test in tests {
                split.pending[split.file[test] as usize] += self.expected[test];
            }
        }
    }

    /// Splits the started unit with the most work left when the half taken
    /// is worth its set-up (and its import, for `thief`); returns the new
    /// unit (the back of the old one).
    fn split_for_thief(&mut self, thief: WorkerId) -> Option<usize> {
        let victim = (0..self.units.len())
            .filter(|&unit| self.units[unit].splittable && self.units[unit].len() >= 2)
            .max_by(|&a, &b| self.units[a].remaining.total_cmp(&self.units[b].remaining))?;
        let load = self.load_for(thief, victim);
        let unit = &self.units[victim];
        if unit.remaining < 2.0 * (unit.setup + load) {
            return None;
        }
        let (mut cut, mut taken) = (unit.end, 0.0);
        while cut - unit.start > 1 && taken < unit.remaining / 2.0 {
            cut -= 1;
            taken += self.expected[self.order[cut as usize]];
        }
        let new = Unit { start: cut, end: unit.end, remaining: taken, setup: unit.setup, splittable: true };
        let unit = &mut self.units[victim];
        unit.end = cut;
        unit.remaining -= taken;
        self.units.push(new);
        Some(self.units.len() - 1)
    }

    /// A worker is gone (or retired) holding `held` tests it never started:
    /// they go out first, together with the rest of its unit, as one unit
    /// of the same shape (a group stays one group). Serial tests go back to
    /// the serial phase.
    pub(crate) fn requeue_from(&mut self, worker: WorkerId, held: &[TestId]) {
        let (serial, held): (Vec<TestId>, Vec<TestId>) = held.iter().partition(|&&test| self.is_serial(test));
        self.add_pending(&serial);
        self.add_pending(&held);
        for &test in serial.iter().rev() {
            let start = position(self.order.len());
            self.order.push(test);
            self.units.push(Unit {
                start,
                end: start + 1,
                remaining: self.expected[test],
                setup: 0.0,
                splittable: false,
            });
            self.serial.push_front(self.units.len() - 1);
            self.count += 1;
            self.remaining += self.expected[test];
        }
        let held = held.as_slice();
        let current = self.current[worker].take();
        let (setup, splittable) =
            current.map_or((0.0, true), |unit| (self.units[unit].setup, self.units[unit].splittable));
        let start = position(self.order.len());
        self.order.extend_from_slice(held);
        let mut remaining: f64 = held.iter().map(|&test| self.expected[test]).sum();
        self.count += held.len();
        self.remaining += remaining;
        if let Some(unit) = current {
            // The rest of the unit moves along (it keeps being counted).
            let rest = self.units[unit].range();
            let rest_tests: Vec<TestId> = self.order[rest].to_vec();
            self.order.extend_from_slice(&rest_tests);
            remaining += self.units[unit].remaining;
            let emptied = &mut self.units[unit];
            emptied.start = emptied.end;
            emptied.remaining = 0.0;
        }
        if position(self.order.len()) > start {
            self.units.push(Unit { start, end: position(self.order.len()), remaining, setup, splittable });
            self.unstarted.push_front(self.units.len() - 1);
            self.not_cheap_prefix.fill(0);
        }
    }

    /// A worker is gone: the rest of its unit goes to whoever comes next.
    pub(crate) fn release(&mut self, worker: WorkerId) {
        if let Some(unit) = self.current[worker].take()
            && self.units[unit].len() > 0
        {
            self.unstarted.push_front(unit);
            self.not_cheap_prefix.fill(0);
        }
    }

    /// Removes and returns everything pending.
    pub(crate) fn drain_all(&mut self) -> Vec<TestId> {
        let mut tests: Vec<TestId> = Vec::with_capacity(self.count);
        for unit in &mut self.units {
            tests.extend_from_slice(&self.order[unit.range()]);
            unit.start = unit.end;
            unit.remaining = 0.0;
        }
        tests.sort_unstable();
        if let Some(split) = self.split.as_mut() {
            split.pending.iter_mut().for_each(|pending| *pending = 0.0);
        }
        self.unstarted.clear();
        self.not_cheap_prefix.fill(0);
        self.serial.clear();
        self.remaining = 0.0;
        self.count = 0;
        tests
    }
}

/// A position in the flat order, stored in 32 bits.
fn position(index: usize) -> u32 {
    u32::try_from(index).expect("fewer than 4 billion tests")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two modules of ten tests each, worker `m` having imported module `m`.
    fn split_workload(expected: [f64; 2], load: [f64; 2]) -> Workload {
        Workload {
            expected: [vec![expected[0]; 10], vec![expected[1]; 10]].concat(),
            module: [vec![0; 10], vec![1; 10]].concat(),
            module_setup: vec![0.0, 0.0],
            file: [vec![0; 10], vec![1; 10]].concat(),
            file_load: load.to_vec(),
            initially_loaded: vec![vec![0], vec![1]],
            ..Workload::default()
        }
    }

    #[test]
    fn with_split_collection_a_worker_keeps_to_its_modules_when_imports_cost_more_than_they_save() {
        // Ten 1 ms tests per module behind a 0.25 s import: never worth it.
        let mut queue = WorkQueue::new(&split_workload([0.001, 0.001], [0.25, 0.25]), 2);
        let own: Vec<TestId> = std::iter::from_fn(|| queue.take_for(0, None, false)).collect();
        assert_eq!(own, (0..10).collect::<Vec<_>>());
        assert_eq!(queue.take_loads(0, &own), Vec::<usize>::new(), "its own module needs no import");
        assert_eq!(queue.take_for(1, None, false), Some(10));
    }

    #[test]
    fn a_backlog_worth_an_import_is_shared_and_the_import_is_sent_once() {
        // Module 1 holds 10 s of work behind a 0.5 s import; worker 0 has
        // none of its own: importing pays (10/1 - 10/2 > 0.5).
        let mut queue = WorkQueue::new(&split_workload([0.001, 1.0], [0.5, 0.5]), 2);
        let own: Vec<TestId> = (0..10).filter_map(|_| queue.take_for(0, None, false)).collect();
        assert_eq!(own.len(), 10);
        let stolen = queue.take_for(0, None, false).expect("worker 0 takes module 1's work");
        assert!(stolen >= 10);
        assert_eq!(queue.take_loads(0, &[stolen]), vec![1]);
        let next = queue.take_for(0, None, false).expect("more of module 1");
        assert_eq!(queue.take_loads(0, &[next]), Vec::<usize>::new());
    }

    #[test]
    fn a_worker_passing_over_units_it_has_not_imported_still_gets_each_of_its_own_in_order() {
        // Module 0's tests are the longest, so they lead the queue; worker 1
        // passes over them at every take (remembering how many it passed).
        let mut queue = WorkQueue::new(&split_workload([0.002, 0.001], [0.25, 0.25]), 2);
        let mut taken = [Vec::new(), Vec::new()];
        for round in 0..12 {
            for worker in [1, 0] {
                if let Some(test) = queue.take_for(worker, None, false) {
                    taken[worker].push(test);
                }
            }
            if round == 3 {
                // Worker 0 dies holding nothing: its module's rest is
                // requeued at the front; worker 1 still skips it.
                queue.requeue_from(0, &[]);
                queue.forget_imports(0);
                queue.take_loads(0, &[0]);
            }
        }
        assert_eq!(taken[1], (10..20).collect::<Vec<_>>());
        assert_eq!(taken[0], (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_cheap_import_does_not_change_longest_first() {
        // Module 1's tests are long, its import 1 ms: worker 0 starts the
        // longest test first, as with full collection.
        let mut queue = WorkQueue::new(&split_workload([0.01, 2.0], [0.001, 0.001]), 2);
        let first = queue.take_for(0, None, false).expect("a test");
        assert!(first >= 10, "worker 0 took {first}, not one of the longest");
    }

    #[test]
    fn a_module_no_live_worker_holds_goes_to_whoever_asks() {
        let mut queue = WorkQueue::new(&split_workload([0.001, 0.001], [0.25, 0.25]), 2);
        let own: Vec<TestId> = (0..10).filter_map(|_| queue.take_for(0, None, false)).collect();
        assert_eq!(own.len(), 10);
        assert_eq!(queue.take_for(0, None, false), None, "module 1 is worker 1's");
        queue.forget_imports(1);
        let orphan = queue.take_for(0, None, false).expect("nobody holds module 1 now");
        assert_eq!(queue.take_loads(0, &[orphan]), vec![1]);
    }

    #[test]
    fn quick_tests_share_one_timeout_the_most_common() {
        let workload = Workload {
            expected: vec![0.001, 0.001, 0.001, 0.5, 0.002],
            timeouts: vec![Some(30.0), Some(30.0), Some(1.0), Some(30.0), Some(30.0)],
            ..Workload::default()
        };
        assert_eq!(workload.batchable(), [true, true, false, false, true]);
        let no_timeouts = Workload { expected: vec![0.001, 0.01], ..Workload::default() };
        assert_eq!(no_timeouts.batchable(), [true, false]);
        let one_marked =
            Workload { expected: vec![0.001, 0.001], timeouts: vec![None, Some(1.0)], ..Workload::default() };
        assert_eq!(one_marked.batchable(), [true, false], "a tie goes to no timeout");
    }

    #[test]
    fn tests_without_shared_setup_go_out_longest_first() {
        let workload = Workload {
            expected: vec![1.0, 4.0, 2.0],
            module: vec![0, 0, 0],
            module_setup: vec![0.0],
            timeouts: Vec::new(),
            ..Workload::default()
        };
        let mut queue = WorkQueue::new(&workload, 1);
        let order: Vec<TestId> = std::iter::from_fn(|| queue.take_for(0, None, false)).collect();
        assert_eq!(order, vec![1, 2, 0]);
    }

    #[test]
    fn short_tests_follow_the_long_ones_in_collection_order() {
        // Two classes' worth of sub-millisecond tests with two long ones
        // among them: the long ones first, longest first; then the short
        // ones as pytest collected them, not by their noisy durations.
        let workload = Workload {
            expected: vec![0.0004, 0.0009, 0.5, 0.0002, 0.0007, 2.0, 0.0001],
            module: vec![0; 7],
            module_setup: vec![0.0],
            timeouts: Vec::new(),
            ..Workload::default()
        };
        let mut queue = WorkQueue::new(&workload, 1);
        let order: Vec<TestId> = std::iter::from_fn(|| queue.take_for(0, None, false)).collect();
        assert_eq!(order, vec![5, 2, 0, 1, 3, 4, 6]);
    }

    #[test]
    fn tests_of_about_the_same_length_go_in_collection_order() {
        // Two modules whose set-up is in every test's history (their tests
        // were scattered last time): ordered by these estimates' noise they
        // would interleave again; within a factor of two they keep pytest's
        // order, after the one twice as long.
        let workload = Workload {
            expected: vec![0.41, 0.43, 0.42, 0.40, 0.9],
            module: vec![0, 0, 1, 1, 1],
            module_setup: vec![0.0, 0.0],
            timeouts: Vec::new(),
            ..Workload::default()
        };
        let mut queue = WorkQueue::new(&workload, 1);
        let order: Vec<TestId> = std::iter::from_fn(|| queue.take_for(0, None, false)).collect();
        assert_eq!(order, vec![4, 0, 1, 2, 3]);
        assert_eq!(duration_class(0.009), 0);
        assert_eq!([duration_class(0.01), duration_class(0.019), duration_class(0.02)], [1, 1, 2]);
    }

    #[test]
    fn a_module_with_costly_setup_stays_on_one_worker_until_splitting_pays() {
        // Module 0: 0.4 s of set-up and four 0.02 s tests; module 1 likewise.
        let workload = Workload {
            expected: vec![0.02; 8],
            module: vec![0, 0, 0, 0, 1, 1, 1, 1],
            module_setup: vec![0.4, 0.4],
            timeouts: Vec::new(),
            ..Workload::default()
        };
        let mut queue = WorkQueue::new(&workload, 2);
        let first: Vec<TestId> = (0..4).filter_map(|_| queue.take_for(0, None, false)).collect();
        assert_eq!(first, vec![0, 1, 2, 3]);
        let second: Vec<TestId> = (0..4).filter_map(|_| queue.take_for(1, None, false)).collect();
        assert_eq!(second, vec![4, 5, 6, 7]);
        assert!(queue.is_empty());
    }

    #[test]
    fn an_idle_worker_splits_a_long_module_when_it_pays() {
        // One module, 0.1 s set-up, ten 1 s tests: worth splitting.
        let workload = Workload::one_module(&[1.0; 10], 0.1);
        let mut queue = WorkQueue::new(&workload, 2);
        assert_eq!(queue.take_for(0, None, false), Some(0));
        let stolen = queue.take_for(1, None, false).expect("worker 1 splits the module");
        assert!(stolen >= 5, "the thief takes from the back half, got {stolen}");
        // Not worth it: ten 0.01 s tests behind a 0.4 s set-up.
        let workload = Workload::one_module(&[0.01; 10], 0.4);
        let mut queue = WorkQueue::new(&workload, 2);
        assert_eq!(queue.take_for(0, None, false), Some(0));
        assert_eq!(queue.take_for(1, None, false), None);
    }

    #[test]
    fn the_lower_bound_is_total_over_workers_or_the_longest_test() {
        let workload = Workload {
            expected: vec![4.0, 1.0, 1.0],
            module: vec![0, 0, 0],
            module_setup: vec![0.0],
            timeouts: Vec::new(),
            ..Workload::default()
        };
        assert_eq!(workload.lower_bound(2), 4.0);
        assert_eq!(workload.lower_bound(1), 6.0);
    }
}
