//! `shoal list`: the collected node ids, as pytest collects them, one a line
//! or as JSON lines with locations and markers.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::harness::Project;

#[test]
fn lists_the_node_ids_pytest_collects_in_its_order() {
    let project = Project::fixture("ids");
    let expected = project.pytest_node_ids(&[]);
    assert_eq!(expected.len(), 34);
    let outcome = project.shoal(&["list"]);
    outcome.assert_code(0);
    let listed: Vec<&str> = outcome.stdout.lines().collect();
    assert_eq!(listed, expected);
}

#[test]
fn listing_applies_marker_expressions_like_pytest() {
    let project = Project::fixture("markers");
    let expected = project.pytest_node_ids(&["-m", "slow"]);
    assert_eq!(expected.len(), 3, "{expected:#?}");
    let outcome = project.shoal(&["list", "-m", "slow"]);
    outcome.assert_code(0);
    assert_eq!(outcome.stdout.lines().collect::<Vec<_>>(), expected);
}

/// Each item's location `(path, line, domain)` as pytest itself reports it.
fn pytest_locations(project: &Project) -> BTreeMap<String, (String, Option<u64>, String)> {
    const SCRIPT: &str = r#"
import json, sys, pytest

class Locations:
    def pytest_collection_finish(self, session):
        for item in session.items:
            print("LOCATION " + json.dumps([item.nodeid, *item.location]))

sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:randomly"], plugins=[Locations()]))
"#;
    let output = project.python_command().args(["-c", SCRIPT]).output().expect("python runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("LOCATION "))
        .map(|json| {
            let (nodeid, path, line, domain): (String, String, Option<u64>, String) =
                serde_json::from_str(json).expect("a location");
            (nodeid, (path, line, domain))
        })
        .collect()
}

/// `shoal list --json`'s items, one JSON line each.
fn listed_json(project: &Project) -> Vec<serde_json::Value> {
    let outcome = project.shoal(&["list", "--json"]);
    outcome.assert_code(0);
    outcome
        .stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not a JSON line ({error}): {line:?}"))
        })
        .collect()
}

#[test]
fn json_lines_carry_location_and_markers() {
    let project = Project::fixture("markers");
    let locations = pytest_locations(&project);
    // The markers of each test, from fixtures/README.md.
    let markers: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("test_select.py::test_alpha_one", &[][..]),
        ("test_select.py::test_alpha_two", &["slow"][..]),
        ("test_select.py::test_beta_one", &["db"][..]),
        ("test_select.py::test_beta_two", &["db", "slow"][..]),
        ("test_select.py::TestGamma::test_gamma_one", &[][..]),
        ("test_select.py::TestGamma::test_gamma_two", &[][..]),
        ("test_select.py::TestGamma::test_gamma_three", &["slow"][..]),
    ]);
    let mut seen = Vec::new();
    for item in listed_json(&project) {
        let nodeid = item["nodeid"].as_str().expect("a nodeid");
        let (path, line_number, _) = &locations[nodeid];
        assert_eq!(item["path"], path.as_str(), "{item}");
        assert_eq!(item["line"], line_number.expect("a line"), "{item}");
        let mut listed: Vec<&str> = item["markers"]
            .as_array()
            .unwrap_or_else(|| panic!("markers is a list: {item}"))
            .iter()
            .map(|marker| marker.as_str().expect("a marker name"))
            .collect();
        listed.sort_unstable();
        assert_eq!(listed, markers[nodeid], "{item}");
        seen.push(nodeid.to_owned());
    }
    assert_eq!(seen, project.pytest_node_ids(&[]));
}

#[test]
fn every_location_is_the_one_pytest_computes() {
    // shoal works out the file and line once per test function, not once
    // per item: every shape of test must still get pytest's own location.
    let project = Project::empty();
    project.write("pytest.ini", "[pytest]\naddopts = --doctest-modules\n");
    project.write(
        "conftest.py",
        r#"
import pytest


class CheckItem(pytest.Item):
    def runtest(self):
        pass

    def reportinfo(self):
        return self.path, 3, f"check {self.name}"


class CheckFile(pytest.File):
    def collect(self):
        for name in ("first", "second"):
            yield CheckItem.from_parent(self, name=name)


def pytest_collect_file(parent, file_path):
    if file_path.suffix == ".check":
        return CheckFile.from_parent(parent, path=file_path)
"#,
    );
    project.write("rules.check", "");
    project.write(
        "test_shapes.py",
        r#"
import functools
import unittest

import pytest


def decorate(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        return function(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("n", range(3))
def test_numbers(n):
    """
    >>> 1 + 1
    2
    """


test_alias = test_numbers


@decorate
def test_decorated():
    pass


def make(offset):
    @pytest.mark.parametrize("n", [offset, offset + 1])
    def test_made(n):
        pass

    return test_made


test_made_one = make(0)
test_made_two = make(10)


@pytest.mark.parametrize("n", [1, 2])
class TestClass:
    def test_method(self, n):
        pass

    @pytest.mark.parametrize("m", ["a", "b"])
    def test_both(self, n, m):
        pass

    class TestNested:
        @pytest.mark.parametrize("k", [1, 2])
        def test_inner(self, n, k):
            pass


class TestCase(unittest.TestCase):
    def test_one(self):
        pass

    def test_two(self):
        pass
"#,
    );
    let locations = pytest_locations(&project);
    assert!(locations.len() >= 25, "every shape is collected: {locations:#?}");
    let mut seen = Vec::new();
    for item in listed_json(&project) {
        let nodeid = item["nodeid"].as_str().expect("a nodeid");
        let (path, line_number, domain) = &locations[nodeid];
        assert_eq!(item["path"], path.as_str(), "{item}");
        assert_eq!(item["line"].as_u64(), *line_number, "{item}");
        assert_eq!(item["domain"], domain.as_str(), "{item}");
        seen.push(nodeid.to_owned());
    }
    seen.sort_unstable();
    assert_eq!(seen, locations.keys().cloned().collect::<Vec<_>>(), "shoal lists what pytest collects");
}

#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    // Enough long node ids to overflow a pipe's buffer, so shoal is still
    // writing when the reader goes away, as with `shoal list | head -1`.
    let project = Project::empty();
    project.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n");
    project.write(
        "test_many.py",
        "import pytest\n\n\n@pytest.mark.parametrize('i', range(2000), ids=lambda i: f'{i:0120d}')\ndef test_many(i):\n    pass\n",
    );
    let mut command = project.shoal_command(&["list"]);
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("shoal starts");
    let mut reader = BufReader::new(child.stdout.take().expect("a stdout pipe"));
    let mut first = String::new();
    reader.read_line(&mut first).expect("a first line");
    assert!(first.starts_with("test_many.py::test_many[000"), "{first:?}");
    drop(reader);
    let output = child.wait_with_output().expect("shoal ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr:\n{stderr}");
    assert!(!stderr.contains("error"), "a closed pipe is reported as an error:\n{stderr}");
}
