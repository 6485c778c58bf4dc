//! `--shard auto`: which shard this machine is, from the variables the CI
//! system sets on its own parallel jobs (pure: the environment is passed in
//! as a lookup).
//!
//! Looked for in this order; the first whose index variable is set wins:
//!
//! | system | index | total | base |
//! |---|---|---|---|
//! | Bazel (`shard_count`) | `TEST_SHARD_INDEX` | `TEST_TOTAL_SHARDS` | 0 |
//! | GitLab (`parallel:`) | `CI_NODE_INDEX` | `CI_NODE_TOTAL` | 1 |
//! | CircleCI (`parallelism:`) | `CIRCLE_NODE_INDEX` | `CIRCLE_NODE_TOTAL` | 0 |
//! | Buildkite (`parallelism:`) | `BUILDKITE_PARALLEL_JOB` | `BUILDKITE_PARALLEL_JOB_COUNT` | 0 |
//! | Kubernetes Indexed Job | `JOB_COMPLETION_INDEX` | `--shard-total` | 0 |
//!
//! Bazel is first because it sets its variables for the test runner
//! itself, whatever CI runs Bazel. GitHub Actions sets none: its workflows
//! pass `--shard ${{ matrix.shard }}/N`.

use std::path::PathBuf;

use crate::errors::ShoalError;
use crate::shard::{ShardRequest, ShardSpec};

/// One CI system's shard variables.
struct Provider {
    name: &'static str,
    index: &'static str,
    /// `None`: the total comes from `--shard-total`.
    total: Option<&'static str>,
    one_based: bool,
}

const PROVIDERS: &[Provider] = &[
    Provider { name: "Bazel", index: "TEST_SHARD_INDEX", total: Some("TEST_TOTAL_SHARDS"), one_based: false },
    Provider { name: "GitLab", index: "CI_NODE_INDEX", total: Some("CI_NODE_TOTAL"), one_based: true },
    Provider {
        name: "CircleCI",
        index: "CIRCLE_NODE_INDEX",
        total: Some("CIRCLE_NODE_TOTAL"),
        one_based: false,
    },
    Provider {
        name: "Buildkite",
        index: "BUILDKITE_PARALLEL_JOB",
        total: Some("BUILDKITE_PARALLEL_JOB_COUNT"),
        one_based: false,
    },
    Provider { name: "Kubernetes", index: "JOB_COMPLETION_INDEX", total: None, one_based: false },
];

/// Bazel's file a sharding-aware runner touches to say so.
const BAZEL_STATUS_FILE: &str = "TEST_SHARD_STATUS_FILE";

/// Resolves `--shard` and `--shard-total` against the environment.
pub fn resolve(
    shard: Option<&str>,
    shard_total: Option<usize>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<ShardRequest>, ShoalError> {
    let usage = |message: String| ShoalError::Usage(message);
    match shard {
        None if shard_total.is_some() => Err(usage("--shard-total goes with --shard auto".to_owned())),
        None => Ok(None),
        Some("auto") => detect(shard_total, env).map(Some),
        Some(_) if shard_total.is_some() => {
            Err(usage("--shard-total goes with --shard auto; --shard K/N names the total itself".to_owned()))
        }
        Some(text) => {
            let spec = ShardSpec::parse(text).ok_or_else(|| {
                usage(format!("--shard: expected K/N (1 <= K <= N) or `auto`, got `{text}`"))
            })?;
            Ok(Some(ShardRequest { spec, source: None, status_file: None }))
        }
    }
}

fn detect(
    shard_total: Option<usize>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<ShardRequest, ShoalError> {
    let usage = |message: String| ShoalError::Usage(format!("--shard auto: {message}"));
    let value = |name: &str| env(name).map(|text| text.trim().to_owned()).filter(|text| !text.is_empty());
    let number = |name: &str, text: &str| {
        text.parse::<usize>().map_err(|_| usage(format!("{name}={text} is not a whole number")))
    };
    for provider in PROVIDERS {
        let Some(index_text) = value(provider.index) else { continue };
        let index = number(provider.index, &index_text)?;
        let mut used = vec![format!("{}={index_text}", provider.index)];
        let total = match provider.total.and_then(|name| value(name).map(|text| (name, text))) {
            Some((name, text)) => {
                let total = number(name, &text)?;
                if shard_total.is_some_and(|given| given != total) {
                    return Err(usage(format!(
                        "{name}={text} disagrees with --shard-total {}",
                        shard_total.unwrap_or_default()
                    )));
                }
                used.push(format!("{name}={text}"));
                total
            }
            None => {
                let total = shard_total.ok_or_else(|| {
                    let missing = provider.total.unwrap_or("the total");
                    usage(format!(
                        "{} is set but {missing} is not: pass --shard-total N (for a Kubernetes Indexed \
                         Job, its `completions`)",
                        provider.index
                    ))
                })?;
                used.push(format!("--shard-total {total}"));
                total
            }
        };
        let zero_based = if provider.one_based { index.checked_sub(1) } else { Some(index) };
        let spec = zero_based.filter(|&index| index < total).map(|index| ShardSpec { index, total });
        let Some(spec) = spec else {
            let range = if provider.one_based { format!("1..={total}") } else { format!("0..{total}") };
            return Err(usage(format!("{}={index_text} is outside {range}", provider.index)));
        };
        let base = if provider.one_based { "1-based" } else { "0-based" };
        let source = format!("{} {} ({base})", provider.name, used.join(", "));
        let status_file =
            (provider.name == "Bazel").then(|| value(BAZEL_STATUS_FILE).map(PathBuf::from)).flatten();
        return Ok(ShardRequest { spec, source: Some(source), status_file });
    }
    let names: Vec<&str> = PROVIDERS.iter().map(|provider| provider.index).collect();
    Err(usage(format!(
        "none of {} is set; name the shard with --shard K/N (on GitHub Actions: \
         --shard ${{{{ matrix.shard }}}}/N)",
        names.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto(pairs: &[(&str, &str)], shard_total: Option<usize>) -> Result<ShardRequest, String> {
        let pairs: Vec<(String, String)> =
            pairs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect();
        let env = move |name: &str| pairs.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
        resolve(Some("auto"), shard_total, env)
            .map(|request| request.expect("auto gives a shard"))
            .map_err(|error| error.to_string())
    }

    /// Environment variables as `(name, value)` pairs.
    type Variables<'a> = &'a [(&'a str, &'a str)];

    fn spec(index: usize, total: usize) -> ShardSpec {
        ShardSpec { index, total }
    }

    #[test]
    fn each_ci_system_is_recognised_and_converted_to_zero_based() {
        let cases: &[(Variables, Option<usize>, ShardSpec, &str)] = &[
            (&[("CI_NODE_INDEX", "2"), ("CI_NODE_TOTAL", "4")], None, spec(1, 4), "GitLab"),
            (&[("CIRCLE_NODE_INDEX", "0"), ("CIRCLE_NODE_TOTAL", "3")], None, spec(0, 3), "CircleCI"),
            (
                &[("BUILDKITE_PARALLEL_JOB", "4"), ("BUILDKITE_PARALLEL_JOB_COUNT", "5")],
                None,
                spec(4, 5),
                "Buildkite",
            ),
            (&[("TEST_SHARD_INDEX", "1"), ("TEST_TOTAL_SHARDS", "2")], None, spec(1, 2), "Bazel"),
            (&[("JOB_COMPLETION_INDEX", "3")], Some(4), spec(3, 4), "Kubernetes"),
        ];
        for (env, shard_total, expected, name) in cases {
            let request = auto(env, *shard_total).unwrap_or_else(|error| panic!("{name}: {error}"));
            assert_eq!(request.spec, *expected, "{name}");
            let source = request.source.expect("auto says where the shard came from");
            assert!(source.starts_with(name), "{source}");
            for (variable, value) in *env {
                assert!(source.contains(&format!("{variable}={value}")), "{source}");
            }
        }
    }

    #[test]
    fn bazel_wins_and_its_status_file_is_named() {
        let request = auto(
            &[
                ("CI_NODE_INDEX", "1"),
                ("CI_NODE_TOTAL", "2"),
                ("TEST_SHARD_INDEX", "0"),
                ("TEST_TOTAL_SHARDS", "3"),
                ("TEST_SHARD_STATUS_FILE", "/tmp/status"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(request.spec, spec(0, 3));
        assert_eq!(request.status_file, Some(PathBuf::from("/tmp/status")));
        let gitlab =
            auto(&[("CI_NODE_INDEX", "1"), ("CI_NODE_TOTAL", "2"), ("TEST_SHARD_STATUS_FILE", "/x")], None);
        assert_eq!(gitlab.unwrap().status_file, None, "only Bazel's own shards touch Bazel's file");
    }

    #[test]
    fn wrong_or_missing_values_are_usage_errors_naming_the_variable() {
        let error = auto(&[("CI_NODE_INDEX", "0"), ("CI_NODE_TOTAL", "4")], None).unwrap_err();
        assert!(error.contains("CI_NODE_INDEX=0 is outside 1..=4"), "{error}");
        let error = auto(&[("CIRCLE_NODE_INDEX", "4"), ("CIRCLE_NODE_TOTAL", "4")], None).unwrap_err();
        assert!(error.contains("outside 0..4"), "{error}");
        let error = auto(&[("JOB_COMPLETION_INDEX", "1")], None).unwrap_err();
        assert!(error.contains("--shard-total"), "{error}");
        let error = auto(&[("BUILDKITE_PARALLEL_JOB", "x")], Some(2)).unwrap_err();
        assert!(error.contains("BUILDKITE_PARALLEL_JOB=x"), "{error}");
        let error = auto(&[("CI_NODE_INDEX", "1"), ("CI_NODE_TOTAL", "2")], Some(3)).unwrap_err();
        assert!(error.contains("disagrees"), "{error}");
        let error = auto(&[("CI_NODE_TOTAL", "1")], None).unwrap_err();
        assert!(error.contains("none of") && error.contains("--shard K/N"), "{error}");
    }

    #[test]
    fn explicit_shards_are_one_based_and_checked() {
        let none = |_: &str| None;
        assert_eq!(resolve(Some("2/4"), None, none).unwrap().unwrap().spec, spec(1, 4));
        for wrong in ["0/4", "5/4", "2", "a/b", "1/0"] {
            assert!(resolve(Some(wrong), None, none).is_err(), "{wrong}");
        }
        assert!(resolve(Some("1/2"), Some(2), none).is_err(), "--shard-total only goes with auto");
        assert!(resolve(None, Some(2), none).is_err());
        assert!(resolve(None, None, none).unwrap().is_none());
    }
}
