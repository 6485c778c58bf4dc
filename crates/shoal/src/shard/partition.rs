//! The deterministic, duration-balanced partition of a collection into N
//! shards (pure: no I/O).
//!
//! Every machine of a CI matrix computes its own shard, so the partition
//! must depend on nothing but the set of tests and what history says about
//! them: not on collection order, not on a hash that changes between
//! releases. Tests are taken in node-id order, and every tie is broken by
//! node id, then by shard index.
//!
//! The cost model is the scheduler's: a module whose module-scoped set-up
//! costs [`LOCALITY_MIN_SETUP`] or more is one unit that pays its set-up
//! once; a test group (`xdist_group`) is one unit; every other test is a
//! unit of its own. A module unit bigger than a fair share is halved (each
//! half pays the set-up again) as long as each half's tests are worth at
//! least one more set-up, the rule the scheduler uses to split a module
//! between workers.
//!
//! Units go, longest expected first (ties: smallest node id first), to the
//! shard with the least expected work so far (ties: fewest tests, then
//! lowest index): LPT. When there are at least as many tests as shards, no
//! shard is left empty: an empty shard takes the cheapest unit of the shard
//! with the most tests, or half of that shard's only unit (a group is split
//! only then, when keeping it whole would leave a machine idle).

use shoal_scheduler::{LOCALITY_MIN_SETUP, TestId, Workload};

/// What each shard gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    /// The shard (0-based) of each test, by test index.
    pub shard_of: Vec<usize>,
    /// Each shard's share.
    pub shards: Vec<ShardLoad>,
    /// Expected seconds of all the work: every test once, and the set-up of
    /// each module kept together once.
    pub total_seconds: f64,
    /// Expected seconds of the longest test.
    pub longest_test_seconds: f64,
}

/// One shard's share of the work.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShardLoad {
    /// Number of tests.
    pub tests: usize,
    /// Expected seconds, module set-ups included.
    pub expected_seconds: f64,
}

impl Partition {
    /// `max(total / shards, longest test)`: no partition can beat it.
    pub fn lower_bound(&self) -> f64 {
        (self.total_seconds / self.shards.len().max(1) as f64).max(self.longest_test_seconds)
    }

    /// Expected seconds of the shard with the most work.
    pub fn largest_seconds(&self) -> f64 {
        self.shards.iter().map(|shard| shard.expected_seconds).fold(0.0, f64::max)
    }

    /// Expected seconds of the mean shard.
    pub fn mean_seconds(&self) -> f64 {
        let sum: f64 = self.shards.iter().map(|shard| shard.expected_seconds).sum();
        sum / self.shards.len().max(1) as f64
    }
}

/// How a unit may be cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A single test: never cut.
    Single,
    /// A module kept together for its set-up: halved when that pays.
    Module,
    /// A test group: cut only so that no shard is empty.
    Group,
}

/// Tests that go to one shard together.
#[derive(Debug, Clone)]
struct Unit {
    /// Its tests, in node-id order.
    tests: Vec<TestId>,
    /// Set-up paid once by the shard that runs it.
    setup: f64,
    /// Expected seconds of its tests.
    tests_seconds: f64,
    kind: Kind,
}

impl Unit {
    fn cost(&self) -> f64 {
        self.setup + self.tests_seconds
    }

    /// Cuts the unit where its front half (by expected time, in node-id
    /// order) ends; each part keeps the set-up. Needs two tests or more.
    fn halve(self, expected: &[f64]) -> (Unit, Unit) {
        let (mut cut, mut front) = (0, 0.0);
        while cut < self.tests.len() - 1 && (cut == 0 || front < self.tests_seconds / 2.0) {
            front += expected[self.tests[cut]];
            cut += 1;
        }
        let part = |tests: &[TestId]| Unit {
            tests: tests.to_vec(),
            setup: self.setup,
            tests_seconds: sum_in_order(tests, expected),
            kind: self.kind,
        };
        (part(&self.tests[..cut]), part(&self.tests[cut..]))
    }
}

/// Sums expected seconds in the order given (floating-point sums depend on
/// order; the order here is node-id order, the same on every machine).
fn sum_in_order(tests: &[TestId], expected: &[f64]) -> f64 {
    tests.iter().map(|&test| expected[test]).sum()
}

/// Splits the tests of `workload` (named by `nodeids`, at the same indexes)
/// into `shards` shards. See the module docs.
///
/// # Panics
/// When `shards` is 0 or `nodeids` and the workload disagree in length.
pub fn partition(workload: &Workload, nodeids: &[&str], shards: usize) -> Partition {
    assert!(shards > 0, "at least one shard");
    assert_eq!(workload.len(), nodeids.len(), "a node id per test");
    let expected = &workload.expected;
    let mut by_nodeid: Vec<TestId> = (0..nodeids.len()).collect();
    by_nodeid.sort_unstable_by(|&a, &b| nodeids[a].cmp(nodeids[b]));
    let first_nodeid = |unit: &Unit| nodeids[unit.tests[0]];

    let mut units = form_units(workload, &by_nodeid);
    // Summed in node-id order, so every machine gets the same total.
    units.sort_by(|a, b| first_nodeid(a).cmp(first_nodeid(b)));
    let total_seconds: f64 = units.iter().map(Unit::cost).sum();
    let longest_test_seconds = expected.iter().copied().fold(0.0, f64::max);
    units = split_big_modules(units, total_seconds, shards, expected, nodeids);
    units.sort_by(|a, b| b.cost().total_cmp(&a.cost()).then_with(|| first_nodeid(a).cmp(first_nodeid(b))));

    // LPT: each unit to the least-loaded shard.
    let mut assigned: Vec<Vec<Unit>> = vec![Vec::new(); shards];
    let mut loads = vec![0.0f64; shards];
    let mut counts = vec![0usize; shards];
    for unit in units {
        let shard = (0..shards)
            .min_by(|&a, &b| loads[a].total_cmp(&loads[b]).then(counts[a].cmp(&counts[b])).then(a.cmp(&b)))
            .expect("at least one shard");
        loads[shard] += unit.cost();
        counts[shard] += unit.tests.len();
        assigned[shard].push(unit);
    }
    fill_empty_shards(&mut assigned, expected, nodeids);

    let mut shard_of = vec![0; nodeids.len()];
    let shards = assigned
        .iter()
        .enumerate()
        .map(|(shard, units)| {
            for unit in units {
                for &test in &unit.tests {
                    shard_of[test] = shard;
                }
            }
            ShardLoad {
                tests: units.iter().map(|unit| unit.tests.len()).sum(),
                expected_seconds: units.iter().map(Unit::cost).sum(),
            }
        })
        .collect();
    Partition { shard_of, shards, total_seconds, longest_test_seconds }
}

/// Groups, modules with costly set-up, and single tests; `by_nodeid` is
/// every test in node-id order, so each unit's tests are too.
fn form_units(workload: &Workload, by_nodeid: &[TestId]) -> Vec<Unit> {
    let group_of = |test: TestId| workload.group.get(test).copied().flatten();
    let serial = |test: TestId| workload.serial.get(test).copied().unwrap_or(false);
    let mut groups: std::collections::BTreeMap<u32, Vec<TestId>> = std::collections::BTreeMap::new();
    let mut modules: Vec<Vec<TestId>> = vec![Vec::new(); workload.module_setup.len()];
    let mut units = Vec::new();
    for &test in by_nodeid {
        let module = workload.module[test];
        if let Some(group) = group_of(test) {
            groups.entry(group).or_default().push(test);
        } else if !serial(test) && workload.module_setup[module] >= LOCALITY_MIN_SETUP {
            modules[module].push(test);
        } else {
            units.push(Unit {
                tests: vec![test],
                setup: 0.0,
                tests_seconds: workload.expected[test],
                kind: Kind::Single,
            });
        }
    }
    let whole = |tests: Vec<TestId>, setup: f64, kind: Kind| Unit {
        tests_seconds: sum_in_order(&tests, &workload.expected),
        tests,
        setup,
        kind,
    };
    units.extend(groups.into_values().map(|tests| whole(tests, 0.0, Kind::Group)));
    units.extend(
        modules
            .into_iter()
            .enumerate()
            .filter(|(_, tests)| !tests.is_empty())
            .map(|(module, tests)| whole(tests, workload.module_setup[module], Kind::Module)),
    );
    units
}

/// Halves the biggest module unit while it is bigger than a fair share
/// (which grows by the set-up each cut adds) and each half's tests are
/// still worth paying the set-up again.
fn split_big_modules(
    mut units: Vec<Unit>,
    mut total_seconds: f64,
    shards: usize,
    expected: &[f64],
    nodeids: &[&str],
) -> Vec<Unit> {
    loop {
        let biggest = (0..units.len())
            .filter(|&unit| {
                let unit = &units[unit];
                unit.kind == Kind::Module && unit.tests.len() >= 2 && unit.tests_seconds >= 2.0 * unit.setup
            })
            .max_by(|&a, &b| {
                let (a, b) = (&units[a], &units[b]);
                a.cost().total_cmp(&b.cost()).then_with(|| nodeids[b.tests[0]].cmp(nodeids[a.tests[0]]))
            });
        let Some(biggest) = biggest.filter(|&unit| units[unit].cost() > total_seconds / shards as f64) else {
            return units;
        };
        let (front, back) = units.swap_remove(biggest).halve(expected);
        total_seconds += front.setup;
        units.push(front);
        units.push(back);
    }
}

/// Gives every empty shard work while some shard has two tests or more.
fn fill_empty_shards(assigned: &mut [Vec<Unit>], expected: &[f64], nodeids: &[&str]) {
    let count = |units: &[Unit]| units.iter().map(|unit| unit.tests.len()).sum::<usize>();
    let load = |units: &[Unit]| units.iter().map(Unit::cost).sum::<f64>();
    while let Some(empty) = assigned.iter().position(Vec::is_empty) {
        let donor = (0..assigned.len())
            .max_by(|&a, &b| {
                count(&assigned[a])
                    .cmp(&count(&assigned[b]))
                    .then(load(&assigned[a]).total_cmp(&load(&assigned[b])))
                    .then(b.cmp(&a))
            })
            .expect("at least one shard");
        if count(&assigned[donor]) < 2 {
            // Fewer tests than shards: some shards stay empty.
            return;
        }
        let given = if assigned[donor].len() >= 2 {
            let cheapest = (0..assigned[donor].len())
                .min_by(|&a, &b| {
                    let (a, b) = (&assigned[donor][a], &assigned[donor][b]);
                    a.cost().total_cmp(&b.cost()).then_with(|| nodeids[b.tests[0]].cmp(nodeids[a.tests[0]]))
                })
                .expect("two units");
            assigned[donor].remove(cheapest)
        } else {
            let only = assigned[donor].pop().expect("one unit");
            let (front, back) = only.halve(expected);
            assigned[donor].push(front);
            back
        };
        assigned[empty].push(given);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Tests of one module with these estimates, behind `setup` seconds of
    /// module set-up.
    fn one_module(expected: &[f64], setup: f64) -> Workload {
        Workload {
            expected: expected.to_vec(),
            module: vec![0; expected.len()],
            module_setup: vec![setup],
            ..Workload::default()
        }
    }

    /// Tests with these estimates and no shared set-up.
    fn singles(expected: &[f64]) -> Workload {
        one_module(expected, 0.0)
    }

    fn names(count: usize) -> Vec<String> {
        (0..count).map(|test| format!("t.py::test_{test:03}")).collect()
    }

    fn refs(names: &[String]) -> Vec<&str> {
        names.iter().map(String::as_str).collect()
    }

    #[test]
    fn longest_first_to_the_least_loaded_shard() {
        let nodeids = names(5);
        let result = partition(&singles(&[5.0, 4.0, 3.0, 2.0, 2.0]), &refs(&nodeids), 2);
        // 5 -> 0; 4 -> 1; 3 -> 1 (7); 2 -> 0 (7); the last 2 meets equal
        // loads and equal counts: the lower index, shard 0.
        assert_eq!(result.shard_of, vec![0, 1, 1, 0, 0]);
        assert_eq!(result.shards[0], ShardLoad { tests: 3, expected_seconds: 9.0 });
        assert_eq!(result.shards[1], ShardLoad { tests: 2, expected_seconds: 7.0 });
        assert_eq!(result.lower_bound(), 8.0);
    }

    #[test]
    fn equal_estimates_split_by_node_id_not_by_collection_order() {
        let nodeids = ["b.py::t", "a.py::t", "c.py::t", "d.py::t"];
        let result = partition(&singles(&[1.0; 4]), &nodeids, 2);
        // a, b, c, d in turn: a -> 0, b -> 1, c -> 0, d -> 1.
        assert_eq!(result.shard_of, vec![1, 0, 0, 1]);
    }

    #[test]
    fn a_module_with_costly_setup_stays_together_unless_cutting_pays() {
        // Module 0: 1 s set-up, four 0.1 s tests; module 1: no set-up.
        let workload = Workload {
            expected: vec![0.1, 0.1, 0.1, 0.1, 0.5, 0.5],
            module: vec![0, 0, 0, 0, 1, 1],
            module_setup: vec![1.0, 0.0],
            ..Workload::default()
        };
        let nodeids = ["m.py::a", "m.py::b", "m.py::c", "m.py::d", "n.py::a", "n.py::b"];
        let result = partition(&workload, &nodeids, 2);
        assert!(result.shard_of[..4].iter().all(|&shard| shard == result.shard_of[0]), "{result:?}");
        assert!((result.total_seconds - 2.4).abs() < 1e-9, "one set-up: {}", result.total_seconds);
        // Module 0 again, but ten 1 s tests: worth two set-ups.
        let workload = one_module(&[1.0; 10], 1.0);
        let nodeids = names(10);
        let result = partition(&workload, &refs(&nodeids), 2);
        assert_eq!(result.shards[0].tests, 5);
        assert_eq!(result.shards[0].expected_seconds, 6.0);
        assert_eq!(result.shards[1].expected_seconds, 6.0);
    }

    #[test]
    fn a_group_is_cut_only_to_keep_a_shard_from_being_empty() {
        let workload = Workload { group: vec![Some(0); 3], ..singles(&[1.0; 3]) };
        let nodeids = names(3);
        let two = partition(&workload, &refs(&nodeids), 2);
        assert!(two.shards.iter().all(|shard| shard.tests > 0), "{two:?}");
        let workload = Workload { group: vec![Some(0), Some(0), None, None], ..singles(&[1.0; 4]) };
        let nodeids = names(4);
        let result = partition(&workload, &refs(&nodeids), 2);
        assert_eq!(result.shard_of[0], result.shard_of[1], "{result:?}");
    }

    #[test]
    fn more_shards_than_tests_leaves_some_empty() {
        let nodeids = names(2);
        let result = partition(&singles(&[1.0, 1.0]), &refs(&nodeids), 3);
        assert_eq!(result.shards.iter().filter(|shard| shard.tests == 0).count(), 1);
        let result = partition(&singles(&[]), &[], 3);
        assert!(result.shards.iter().all(|shard| shard.tests == 0));
    }

    fn workload_strategy() -> impl Strategy<Value = (Workload, Vec<String>)> {
        (1usize..120).prop_flat_map(|count| {
            (
                proptest::collection::vec(prop_oneof![Just(0.0), Just(1.0), 0.0f64..5.0], count),
                proptest::collection::vec(0usize..6, count),
                proptest::collection::vec(prop_oneof![Just(0.0), 0.0f64..2.0], 6),
                proptest::collection::vec(proptest::option::of(0u32..3), count),
                proptest::bool::weighted(0.3),
            )
                .prop_map(move |(expected, module, module_setup, group, with_groups)| {
                    let nodeids = (0..count).map(|test| format!("m{}.py::t{test}", module[test])).collect();
                    let group = if with_groups { group } else { Vec::new() };
                    (Workload { expected, module, module_setup, group, ..Workload::default() }, nodeids)
                })
        })
    }

    /// The same tests, listed in another order.
    fn reorder(workload: &Workload, nodeids: &[String], order: &[usize]) -> (Workload, Vec<String>) {
        let pick = |values: &[f64]| order.iter().map(|&test| values[test]).collect();
        let mut reordered = workload.clone();
        reordered.expected = pick(&workload.expected);
        reordered.module = order.iter().map(|&test| workload.module[test]).collect();
        if !workload.group.is_empty() {
            reordered.group = order.iter().map(|&test| workload.group[test]).collect();
        }
        (reordered, order.iter().map(|&test| nodeids[test].clone()).collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Every test lands in exactly one shard; no shard is empty while
        /// there are enough tests; loads add up.
        #[test]
        fn every_test_in_one_shard_and_no_shard_empty(
            (workload, nodeids) in workload_strategy(),
            shards in 1usize..9,
        ) {
            let result = partition(&workload, &refs(&nodeids), shards);
            prop_assert_eq!(result.shard_of.len(), nodeids.len());
            prop_assert!(result.shard_of.iter().all(|&shard| shard < shards));
            for (shard, load) in result.shards.iter().enumerate() {
                prop_assert_eq!(load.tests, result.shard_of.iter().filter(|&&s| s == shard).count());
                if nodeids.len() >= shards {
                    prop_assert!(load.tests > 0, "shard {} is empty: {:?}", shard, result.shards);
                }
            }
            let summed: f64 = result.shards.iter().map(|shard| shard.expected_seconds).sum();
            prop_assert!(summed + 1e-6 >= result.total_seconds, "{} < {}", summed, result.total_seconds);
        }

        /// Collection order does not matter: the same tests give the same
        /// shard to each node id.
        #[test]
        fn the_partition_ignores_collection_order(
            (workload, nodeids) in workload_strategy(),
            shards in 1usize..9,
            seed in any::<u64>(),
        ) {
            let mut order: Vec<usize> = (0..nodeids.len()).collect();
            // A deterministic shuffle from the seed.
            let mut state = seed | 1;
            for index in (1..order.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                order.swap(index, (state % (index as u64 + 1)) as usize);
            }
            let (reordered, renamed) = reorder(&workload, &nodeids, &order);
            let original = partition(&workload, &refs(&nodeids), shards);
            let shuffled = partition(&reordered, &refs(&renamed), shards);
            for (position, &test) in order.iter().enumerate() {
                prop_assert_eq!(original.shard_of[test], shuffled.shard_of[position]);
            }
            prop_assert_eq!(original.shards, shuffled.shards);
        }

        /// Without shared set-up or groups, LPT's bound holds: the largest
        /// shard is within one longest test of the mean.
        #[test]
        fn single_tests_balance_within_one_longest_test(
            expected in proptest::collection::vec(0.0f64..5.0, 1..150),
            shards in 1usize..9,
        ) {
            let nodeids = names(expected.len());
            let result = partition(&singles(&expected), &refs(&nodeids), shards);
            let bound = result.total_seconds / shards as f64 + result.longest_test_seconds;
            prop_assert!(result.largest_seconds() <= bound + 1e-9, "{:?}", result.shards);
        }
    }
}
