//! The pending work, in the order it should go out.
//!
//! Work is grouped into units: a module whose module-scoped set-up is worth
//! paying once ([`LOCALITY_MIN_SETUP`] or more) stays one unit, in
//! collection order, so one worker pays for its fixtures; every other test
//! is a unit of its own. Units go out longest expected first (LPT), so a
//! long test started last cannot make everyone wait. A worker drains its
//! current unit before taking a new one. When no unit is left unstarted, an
//! idle worker splits the unit with the most work left, if the half it takes
//! is worth paying that module's set-up again.

use std::collections::VecDeque;

use crate::{TestId, WorkerId};

/// Module-scoped set-up below this many seconds is not worth keeping a
/// module together for.
pub const LOCALITY_MIN_SETUP: f64 = 0.005;

/// What the scheduler knows about the tests before the run.
#[derive(Debug, Clone, PartialEq)]
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
}

impl Workload {
    /// `count` tests with nothing known: equal estimates, no shared set-up,
    /// dispatched in collection order.
    pub fn uniform(count: usize, estimate: f64) -> Self {
        Self {
            expected: vec![estimate; count],
            module: vec![0; count],
            module_setup: vec![0.0],
            timeouts: Vec::new(),
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
    /// Units nobody has started, longest first.
    unstarted: VecDeque<usize>,
    /// The unit each worker is draining.
    current: Vec<Option<usize>>,
    remaining: f64,
    count: usize,
}

impl WorkQueue {
    pub(crate) fn new(workload: &Workload, workers: usize) -> Self {
        // Tests of a module worth keeping together become one unit, in
        // collection order; every other test is a unit of its own.
        let mut members: Vec<Vec<TestId>> = vec![Vec::new(); workload.module_setup.len()];
        let mut singles: Vec<TestId> = Vec::new();
        for (test, &module) in workload.module.iter().enumerate() {
            if workload.module_setup[module] >= LOCALITY_MIN_SETUP {
                members[module].push(test);
            } else {
                singles.push(test);
            }
        }
        let mut order = Vec::with_capacity(workload.len());
        let mut units = Vec::new();
        let mut push_unit = |tests: &[TestId], setup: f64, order: &mut Vec<TestId>| {
            let start = position(order.len());
            order.extend_from_slice(tests);
            let remaining = tests.iter().map(|&test| workload.expected[test]).sum();
            units.push(Unit { start, end: position(order.len()), remaining, setup });
        };
        for (module, tests) in members.iter().enumerate().filter(|(_, tests)| !tests.is_empty()) {
            push_unit(tests, workload.module_setup[module], &mut order);
        }
        for &test in &singles {
            push_unit(&[test], 0.0, &mut order);
        }
        let mut by_cost: Vec<usize> = (0..units.len()).collect();
        // Longest first; ties keep collection order, so equal estimates
        // (no history) dispatch in the order pytest collected.
        by_cost.sort_by(|&a, &b| {
            let cost = |unit: usize| units[unit].remaining + units[unit].setup;
            let first = |unit: usize| order[units[unit].start as usize];
            cost(b).total_cmp(&cost(a)).then(first(a).cmp(&first(b)))
        });
        Self {
            expected: workload.expected.clone(),
            remaining: units.iter().map(|unit| unit.remaining).sum(),
            count: workload.len(),
            order,
            units,
            unstarted: by_cost.into(),
            current: vec![None; workers],
        }
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

    /// The next test for `worker`, if any is worth giving it.
    pub(crate) fn take_for(&mut self, worker: WorkerId) -> Option<TestId> {
        let unit = match self.current[worker].filter(|&unit| self.units[unit].len() > 0) {
            Some(unit) => unit,
            None => {
                let unit = loop {
                    let candidate = self.unstarted.pop_front().or_else(|| self.split_for_thief())?;
                    if self.units[candidate].len() > 0 {
                        break candidate;
                    }
                };
                self.current[worker] = Some(unit);
                unit
            }
        };
        let test = self.order[self.units[unit].start as usize];
        self.units[unit].start += 1;
        self.units[unit].remaining -= self.expected[test];
        self.remaining -= self.expected[test];
        self.count -= 1;
        Some(test)
    }

    /// Splits the started unit with the most work left when the half taken
    /// is worth its set-up; returns the new unit (the back of the old one).
    fn split_for_thief(&mut self) -> Option<usize> {
        let victim = (0..self.units.len())
            .filter(|&unit| self.units[unit].len() >= 2)
            .max_by(|&a, &b| self.units[a].remaining.total_cmp(&self.units[b].remaining))?;
        let unit = &self.units[victim];
        if unit.remaining < 2.0 * unit.setup {
            return None;
        }
        let (mut cut, mut taken) = (unit.end, 0.0);
        while cut - unit.start > 1 && taken < unit.remaining / 2.0 {
            cut -= 1;
            taken += self.expected[self.order[cut as usize]];
        }
        let new = Unit { start: cut, end: unit.end, remaining: taken, setup: unit.setup };
        let unit = &mut self.units[victim];
        unit.end = cut;
        unit.remaining -= taken;
        self.units.push(new);
        Some(self.units.len() - 1)
    }

    /// Puts tests back (a dead worker's queue) to go out first.
    pub(crate) fn requeue_front(&mut self, tests: &[TestId], setup: f64) {
        if tests.is_empty() {
            return;
        }
        let start = position(self.order.len());
        self.order.extend_from_slice(tests);
        let remaining: f64 = tests.iter().map(|&test| self.expected[test]).sum();
        self.units.push(Unit { start, end: position(self.order.len()), remaining, setup });
        self.unstarted.push_front(self.units.len() - 1);
        self.remaining += remaining;
        self.count += tests.len();
    }

    /// A worker is gone: the rest of its unit goes to whoever comes next.
    pub(crate) fn release(&mut self, worker: WorkerId) {
        if let Some(unit) = self.current[worker].take()
            && self.units[unit].len() > 0
        {
            self.unstarted.push_front(unit);
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
        self.unstarted.clear();
        self.remaining = 0.0;
        self.count = 0;
        tests
    }

    /// The set-up cost of the unit a worker is draining (0 when none).
    pub(crate) fn current_setup(&self, worker: WorkerId) -> f64 {
        self.current[worker].map_or(0.0, |unit| self.units[unit].setup)
    }
}

/// A position in the flat order, stored in 32 bits.
fn position(index: usize) -> u32 {
    u32::try_from(index).expect("fewer than 4 billion tests")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tests_without_shared_setup_go_out_longest_first() {
        let workload = Workload {
            expected: vec![1.0, 4.0, 2.0],
            module: vec![0, 0, 0],
            module_setup: vec![0.0],
            timeouts: Vec::new(),
        };
        let mut queue = WorkQueue::new(&workload, 1);
        let order: Vec<TestId> = std::iter::from_fn(|| queue.take_for(0)).collect();
        assert_eq!(order, vec![1, 2, 0]);
    }

    #[test]
    fn a_module_with_costly_setup_stays_on_one_worker_until_splitting_pays() {
        // Module 0: 0.4 s of set-up and four 0.02 s tests; module 1 likewise.
        let workload = Workload {
            expected: vec![0.02; 8],
            module: vec![0, 0, 0, 0, 1, 1, 1, 1],
            module_setup: vec![0.4, 0.4],
            timeouts: Vec::new(),
        };
        let mut queue = WorkQueue::new(&workload, 2);
        let first: Vec<TestId> = (0..4).filter_map(|_| queue.take_for(0)).collect();
        assert_eq!(first, vec![0, 1, 2, 3]);
        let second: Vec<TestId> = (0..4).filter_map(|_| queue.take_for(1)).collect();
        assert_eq!(second, vec![4, 5, 6, 7]);
        assert!(queue.is_empty());
    }

    #[test]
    fn an_idle_worker_splits_a_long_module_when_it_pays() {
        // One module, 0.1 s set-up, ten 1 s tests: worth splitting.
        let workload = Workload {
            expected: vec![1.0; 10],
            module: vec![0; 10],
            module_setup: vec![0.1],
            timeouts: Vec::new(),
        };
        let mut queue = WorkQueue::new(&workload, 2);
        assert_eq!(queue.take_for(0), Some(0));
        let stolen = queue.take_for(1).expect("worker 1 splits the module");
        assert!(stolen >= 5, "the thief takes from the back half, got {stolen}");
        // Not worth it: ten 0.01 s tests behind a 0.4 s set-up.
        let workload = Workload {
            expected: vec![0.01; 10],
            module: vec![0; 10],
            module_setup: vec![0.4],
            timeouts: Vec::new(),
        };
        let mut queue = WorkQueue::new(&workload, 2);
        assert_eq!(queue.take_for(0), Some(0));
        assert_eq!(queue.take_for(1), None);
    }

    #[test]
    fn the_lower_bound_is_total_over_workers_or_the_longest_test() {
        let workload = Workload {
            expected: vec![4.0, 1.0, 1.0],
            module: vec![0, 0, 0],
            module_setup: vec![0.0],
            timeouts: Vec::new(),
        };
        assert_eq!(workload.lower_bound(2), 4.0);
        assert_eq!(workload.lower_bound(1), 6.0);
    }
}
