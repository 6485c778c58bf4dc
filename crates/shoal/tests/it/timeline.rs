//! `--timeline`: a self-contained HTML picture with one bar per test attempt
//! in its worker's lane, and the run's lower bound drawn across the lanes.

use crate::harness::Project;

/// The numeric value of `name="…"` in an SVG element.
fn attribute(element: &str, name: &str) -> f64 {
    let start = element.find(&format!(" {name}=\"")).unwrap_or_else(|| panic!("no {name} in {element}"))
        + name.len()
        + 3;
    let end = start + element[start..].find('"').expect("a closing quote");
    element[start..end].parse().unwrap_or_else(|_| panic!("{name} is a number in {element}"))
}

#[test]
fn every_attempt_is_a_bar_in_its_workers_lane() {
    let project = Project::fixture("reruns");
    let path = project.path().join("timeline.html");
    project
        .shoal_with_env(
            &[("SHOAL_FIXTURE_FLAKY", "1")],
            &["run", "-n", "2", "--reruns", "1", "--timeline", path.to_str().expect("a UTF-8 path")],
        )
        .assert_code(1);
    let html = std::fs::read_to_string(&path).expect("the timeline is written");
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    let bars: Vec<&str> = html.split("<rect class=\"test\"").skip(1).collect();
    assert_eq!(bars.len(), 7, "four tests, three of them retried once:\n{html}");
    assert_eq!(bars.iter().filter(|bar| bar.contains("(attempt 2)")).count(), 3, "{html}");
    assert!(html.contains(">gw0<") && html.contains(">gw1<"), "one lane per worker:\n{html}");
    assert!(html.contains("class=\"bound\""), "the lower bound is drawn:\n{html}");
    // Bars stay on the canvas: 60 px for lane names, then 1200 px.
    // (Bars of one lane are not checked for overlap: a start is the result's
    // arrival minus the test's duration, which a loaded machine blurs by
    // a few milliseconds.)
    let mut lanes = std::collections::BTreeSet::new();
    for bar in &bars {
        let (x, width) = (attribute(bar, "x"), attribute(bar, "width"));
        assert!(width >= 0.0 && x >= 60.0 && x + width <= 1260.5, "{bar}");
        lanes.insert(attribute(bar, "y") as i64);
    }
    assert!(lanes.len() <= 2, "bars sit in the two worker lanes: {lanes:?}");
}
