//! Per-test settings from a profile's overrides: for each test and each
//! key (`timeout`, `reruns`, `slow-timeout`), the most specific override
//! that matches the test and sets the key, else the profile's own value.
//!
//! Specificity: an override with both `markers` and `paths` beats one with
//! only one of them, which beats one with neither; between equals, the one
//! whose matching path is longer (deeper) wins; between those, the first
//! listed (a profile's own overrides come before those it inherits). A
//! test's own marker (`timeout(N)`, `flaky(reruns=N)`) still wins over all
//! of them: that is applied where the scheduler's input is made
//! ([`crate::plan`]).

use super::layer::Override;
use crate::table::Item;

/// One test's limits before its own markers are read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TestLimits {
    /// Seconds it may run.
    pub timeout: Option<f64>,
    /// Reruns when it fails.
    pub reruns: u8,
    /// Seconds after which it is reported slow.
    pub slow_timeout: Option<f64>,
}

/// The overrides of a run and the profile's values they override.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub(super) rules: Vec<Override>,
    pub(super) defaults: TestLimits,
}

impl Overrides {
    /// The limits of `item`.
    pub fn limits_for(&self, item: &Item<'_>) -> TestLimits {
        let mut matching: Vec<((u8, usize), &Override)> =
            self.rules.iter().filter_map(|rule| specificity(rule, item).map(|score| (score, rule))).collect();
        // Stable: among equals the first listed stays first.
        matching.sort_by(|(left, _), (right, _)| right.cmp(left));
        let first = |pick: fn(&Override) -> Option<f64>| matching.iter().find_map(|(_, rule)| pick(rule));
        TestLimits {
            timeout: first(|rule| rule.timeout).or(self.defaults.timeout),
            reruns: matching.iter().find_map(|(_, rule)| rule.reruns).unwrap_or(self.defaults.reruns),
            slow_timeout: first(|rule| rule.slow_timeout).or(self.defaults.slow_timeout),
        }
    }
}

/// How specifically `rule` names `item` (`None`: it does not match): the
/// number of filters it has, then the length of its matching path.
fn specificity(rule: &Override, item: &Item<'_>) -> Option<(u8, usize)> {
    if let Some(markers) = &rule.markers
        && !item.markers().any(|marker| markers.iter().any(|name| name == marker))
    {
        return None;
    }
    let depth = match &rule.paths {
        Some(paths) => {
            paths.iter().filter(|path| is_under(item.nodeid, path)).map(|path| path.len()).max()?
        }
        None => 0,
    };
    Some((u8::from(rule.markers.is_some()) + u8::from(rule.paths.is_some()), depth))
}

/// Whether a node id is `path` or under it: a directory, a file, or a
/// node-id prefix ending where a part of the id ends.
fn is_under(nodeid: &str, path: &str) -> bool {
    let path = path.trim_start_matches("./").trim_end_matches('/');
    nodeid.strip_prefix(path).is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', ':', '[']))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::CollectedItem;
    use crate::table::TestTable;

    fn table(tests: &[(&str, &[&str])]) -> TestTable {
        let mut table = TestTable::default();
        for (nodeid, markers) in tests {
            table.push(CollectedItem {
                nodeid: (*nodeid).to_owned(),
                path: nodeid.split("::").next().unwrap_or(nodeid).to_owned(),
                line: None,
                domain: String::new(),
                markers: markers.iter().map(|marker| (*marker).to_owned()).collect(),
                timeout: None,
                group: None,
                reruns: None,
                ..CollectedItem::default()
            });
        }
        table
    }

    fn rule(
        markers: Option<&str>,
        paths: Option<&str>,
        timeout: Option<f64>,
        reruns: Option<u8>,
    ) -> Override {
        Override {
            markers: markers.map(|name| vec![name.to_owned()]),
            paths: paths.map(|path| vec![path.to_owned()]),
            timeout,
            reruns,
            slow_timeout: None,
        }
    }

    #[test]
    fn the_most_specific_matching_override_wins_key_by_key() {
        let overrides = Overrides {
            rules: vec![
                rule(Some("e2e"), None, Some(120.0), Some(2)),
                rule(None, Some("tests/unit"), Some(5.0), None),
                rule(None, Some("tests/unit/db"), Some(20.0), None),
                rule(Some("e2e"), Some("tests/e2e/test_quick.py"), Some(1.0), None),
            ],
            defaults: TestLimits { timeout: Some(60.0), reruns: 0, slow_timeout: Some(3.0) },
        };
        let table = table(&[
            ("tests/unit/test_a.py::test_x", &[]),
            ("tests/unit/db/test_b.py::test_y", &[]),
            ("tests/unit_other/test_c.py::test_z", &[]),
            ("tests/e2e/test_flow.py::test_pay", &["e2e"]),
            ("tests/e2e/test_quick.py::test_ping", &["e2e"]),
            ("tests/e2e/test_quick.py::test_plain", &[]),
        ]);
        let limits: Vec<(Option<f64>, u8)> = table
            .items()
            .map(|item| overrides.limits_for(&item))
            .map(|limits| (limits.timeout, limits.reruns))
            .collect();
        assert_eq!(
            limits,
            [
                (Some(5.0), 0),
                (Some(20.0), 0),
                (Some(60.0), 0),
                (Some(120.0), 2),
                (Some(1.0), 2),
                (Some(60.0), 0),
            ]
        );
        let slow = table.items().map(|item| overrides.limits_for(&item).slow_timeout).collect::<Vec<_>>();
        assert!(slow.iter().all(|seconds| *seconds == Some(3.0)), "no override sets it: {slow:?}");
    }

    #[test]
    fn paths_match_whole_parts_of_node_ids() {
        assert!(is_under("tests/unit/test_a.py::test_x", "tests/unit"));
        assert!(is_under("tests/unit/test_a.py::test_x", "./tests/unit/"));
        assert!(is_under("tests/unit/test_a.py::test_x", "tests/unit/test_a.py"));
        assert!(is_under("tests/unit/test_a.py::test_x[1]", "tests/unit/test_a.py::test_x"));
        assert!(!is_under("tests/unit_other/test_a.py::test_x", "tests/unit"));
        assert!(!is_under("tests/unit/test_a.py::test_xy", "tests/unit/test_a.py::test_x"));
    }

    #[test]
    fn among_equals_the_first_listed_wins() {
        let overrides = Overrides {
            rules: vec![rule(Some("a"), None, Some(1.0), None), rule(Some("b"), None, Some(2.0), None)],
            defaults: TestLimits::default(),
        };
        let table = table(&[("t.py::test", &["b", "a"])]);
        let item = table.items().next().expect("a test");
        assert_eq!(overrides.limits_for(&item).timeout, Some(1.0));
    }
}
