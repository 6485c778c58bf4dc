//! One layer of settings: what one table of a config file, or the command
//! line, says. Every key `shoal run` understands is a field, `None` when the
//! layer does not say; layers are stacked with [`Layer::over`] (the upper
//! one wins key by key) and the result is read by `super`.
//!
//! The struct's fields are the config keys (kebab-case) and serde reads
//! them: the deserializers below say what each key accepts, with the same
//! parsing functions the command line uses ([`crate::values`]). Serialized,
//! a layer is the map of the keys it sets, which is how `shoal config`
//! tells which layer a value came from.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;

use serde::de::{self, Deserializer, IntoDeserializer, Unexpected, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::values::{
    CollectionMode, Colour, FailureOutput, WorkerCount, WorkerMode, parse_seconds, parse_size_kib,
};

/// Declares [`Layer`] as written and `Layer::each_key_or`, which takes
/// every key from one layer when it sets it, else from another: the keys
/// are listed once, so a key added to the struct is stacked like the rest.
macro_rules! declare_layer {
    (
        $(#[$attribute:meta])*
        pub(super) struct Layer {
            $($(#[$key_attribute:meta])* pub(super) $key:ident: $type:ty,)*
        }
    ) => {
        $(#[$attribute])*
        pub(super) struct Layer {
            $($(#[$key_attribute])* pub(super) $key: $type,)*
        }

        impl Layer {
            /// Each key from this layer when it sets it, else from `lower`.
            fn each_key_or(self, lower: Self) -> Self {
                Self { $($key: self.$key.or(lower.$key)),* }
            }
        }
    };
}

declare_layer! {
/// One layer: `None` for a key it does not set.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", default)]
pub(super) struct Layer {
    /// Another profile this one starts from (profiles only).
    pub(super) inherits: Option<String>,
    /// Paths, directories or node ids to collect.
    pub(super) paths: Option<Vec<String>>,
    /// Selection files.
    pub(super) select: Option<Vec<PathBuf>>,
    /// pytest's `-k`.
    pub(super) keyword: Option<String>,
    /// pytest's `-m`.
    pub(super) marker_expression: Option<String>,
    /// The interpreter to run pytest with.
    pub(super) python: Option<PathBuf>,
    /// Arguments for pytest, before any typed on the command line.
    pub(super) pytest_args: Option<Vec<String>>,
    /// A positive number or `"auto"`.
    #[serde(deserialize_with = "worker_count")]
    pub(super) workers: Option<WorkerCount>,
    /// How workers come to be.
    #[serde(deserialize_with = "choice")]
    pub(super) mode: Option<WorkerMode>,
    /// How fork mode collects.
    #[serde(deserialize_with = "choice")]
    pub(super) collect: Option<CollectionMode>,
    /// Stop after the first failure.
    pub(super) exitfirst: Option<bool>,
    /// Stop after this many failures (0: never).
    #[serde(deserialize_with = "whole_number")]
    pub(super) maxfail: Option<u64>,
    /// Run the other tests when files fail to collect.
    pub(super) continue_on_collection_errors: Option<bool>,
    /// Seconds a test may run.
    #[serde(deserialize_with = "seconds")]
    pub(super) timeout: Option<f64>,
    /// Seconds after which a running test is reported slow.
    #[serde(deserialize_with = "seconds")]
    pub(super) slow_timeout: Option<f64>,
    /// KiB of resident memory past which a worker is replaced.
    #[serde(deserialize_with = "size_kib", serialize_with = "kib_as_size")]
    pub(super) worker_memory_limit: Option<u64>,
    /// How many times a dead worker may be replaced.
    #[serde(deserialize_with = "whole_number")]
    pub(super) max_worker_restarts: Option<u32>,
    /// Reruns of a failed test.
    #[serde(deserialize_with = "whole_number")]
    pub(super) reruns: Option<u8>,
    /// Seconds before a rerun.
    #[serde(deserialize_with = "delay")]
    pub(super) reruns_delay: Option<f64>,
    /// Whether flaky tests fail the run.
    pub(super) flaky_fails: Option<bool>,
    /// `--lf`: only last time's failures.
    pub(super) last_failed: Option<bool>,
    /// `--ff`: last time's failures first.
    pub(super) failed_first: Option<bool>,
    /// `--affected`: run only what a change can affect.
    pub(super) affected: Option<bool>,
    /// `--no-cache-results`: with `affected`, run everything.
    pub(super) no_cache_results: Option<bool>,
    /// Files (globs, rootdir-relative) every test may read: a change to any
    /// runs every test under `affected`.
    pub(super) affected_inputs: Option<Vec<String>>,
    /// Environment variables whose values every test's result may depend on.
    pub(super) affected_env: Option<Vec<String>>,
    /// Seconds the whole run may take.
    #[serde(deserialize_with = "seconds")]
    pub(super) budget: Option<f64>,
    /// pytest's verbosity: `-v` counts up, `-q` down.
    #[serde(deserialize_with = "whole_number")]
    pub(super) verbosity: Option<i8>,
    /// How many slowest phases to list (0: all).
    #[serde(deserialize_with = "whole_number")]
    pub(super) durations: Option<usize>,
    /// Where the durations history lives.
    pub(super) durations_path: Option<PathBuf>,
    /// Where to write the JSON report.
    pub(super) json_report: Option<PathBuf>,
    /// Where to write the JUnit XML report.
    pub(super) junitxml: Option<PathBuf>,
    /// Where to stream events.
    pub(super) events: Option<PathBuf>,
    /// Where to write the HTML timeline.
    pub(super) timeline: Option<PathBuf>,
    /// Whether to colour the terminal report.
    #[serde(deserialize_with = "choice")]
    pub(super) color: Option<Colour>,
    /// When failures are shown.
    #[serde(deserialize_with = "choice")]
    pub(super) failure_output: Option<FailureOutput>,
    /// `K/N` or `auto`.
    #[serde(deserialize_with = "shard")]
    pub(super) shard: Option<String>,
    /// The number of shards for `shard = "auto"` where the CI does not say.
    #[serde(deserialize_with = "whole_number")]
    pub(super) shard_total: Option<usize>,
    /// The work queue's URL (`redis://...`) or `auto`, as `--queue`.
    pub(super) queue: Option<String>,
    /// pytest-cov's `--cov` sources (`""`: a bare `--cov`).
    pub(super) cov: Option<Vec<String>>,
    /// pytest-cov's `--cov-report` types.
    pub(super) cov_report: Option<Vec<String>>,
    /// pytest-cov's `--cov-config`.
    pub(super) cov_config: Option<String>,
    /// pytest-cov's `--cov-branch`.
    pub(super) cov_branch: Option<bool>,
    /// pytest-cov's `--cov-fail-under`.
    pub(super) cov_fail_under: Option<f64>,
    /// pytest-cov's `--cov-append`.
    pub(super) cov_append: Option<bool>,
    /// pytest-cov's `--no-cov-on-fail`.
    pub(super) no_cov_on_fail: Option<bool>,
    /// pytest-cov's `--no-cov`.
    pub(super) no_cov: Option<bool>,
    /// pytest-cov's `--cov-context`.
    pub(super) cov_context: Option<String>,
    /// pytest-cov's `--cov-precision`.
    #[serde(deserialize_with = "whole_number")]
    pub(super) cov_precision: Option<u8>,
    /// Markers that make a test serial.
    pub(super) serial_markers: Option<Vec<String>>,
    /// Per-test settings for tests chosen by marker or path.
    pub(super) overrides: Option<Vec<Override>>,
}
}

/// `[[tool.shoal.profile.NAME.overrides]]`: settings for the tests that
/// have one of `markers` and sit under one of `paths` (each filter that is
/// given must match).
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct Override {
    /// Marker names: a test with any of them matches.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "names")]
    pub(super) markers: Option<Vec<String>>,
    /// Paths relative to the rootdir (files, directories or node-id
    /// prefixes): a test under any of them matches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) paths: Option<Vec<String>>,
    /// Seconds a matching test may run.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "seconds")]
    pub(super) timeout: Option<f64>,
    /// Reruns of a matching test that fails.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole_number")]
    pub(super) reruns: Option<u8>,
    /// Seconds after which a matching test is reported slow.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "seconds")]
    pub(super) slow_timeout: Option<f64>,
}

impl Layer {
    /// This layer over `lower`: each key from this layer when it sets it,
    /// else from `lower`. Overrides add up, this layer's first (the order
    /// breaks ties between equally specific overrides).
    pub(super) fn over(mut self, mut lower: Self) -> Self {
        let overrides = match (self.overrides.take(), lower.overrides.take()) {
            (Some(mut upper), Some(lower)) => {
                upper.extend(lower);
                Some(upper)
            }
            (upper, lower) => upper.or(lower),
        };
        Self { overrides, ..self.each_key_or(lower) }
    }

    /// The keys this layer sets, with their values (in key order).
    pub(super) fn set_keys(&self) -> Vec<(String, serde_json::Value)> {
        let Ok(serde_json::Value::Object(map)) = serde_json::to_value(self) else { return Vec::new() };
        map.into_iter().filter(|(_, value)| !value.is_null()).collect()
    }
}

/// A setting spelled as a number or a string: each function says what
/// that spelling means (`None`: out of range); a spelling with no function
/// is the wrong type.
struct Spelling<T> {
    expecting: &'static str,
    integer: Option<fn(i64) -> Option<T>>,
    float: Option<fn(f64) -> Option<T>>,
    text: Option<fn(&str) -> Option<T>>,
}

impl<T> Spelling<T> {
    /// `value` read by `parse`, if this spelling has one.
    fn read<E: de::Error, V>(
        &self,
        parse: Option<fn(V) -> Option<T>>,
        value: V,
        unexpected: Unexpected<'_>,
    ) -> Result<T, E> {
        match parse {
            Some(parse) => parse(value).ok_or_else(|| E::invalid_value(unexpected, self)),
            None => Err(E::invalid_type(unexpected, self)),
        }
    }
}

impl<'de, T> Visitor<'de> for Spelling<T> {
    type Value = T;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.expecting)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
        self.read(self.integer, value, Unexpected::Signed(value))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<T, E> {
        self.read(self.float, value, Unexpected::Float(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
        self.read(self.text, value, Unexpected::Str(value))
    }
}

/// `workers`: a positive integer, or a string `WorkerCount::parse` reads.
fn worker_count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<WorkerCount>, D::Error> {
    deserializer
        .deserialize_any(Spelling {
            expecting: "a positive number or \"auto\"",
            integer: Some(|n| usize::try_from(n).ok().filter(|&n| n > 0).map(WorkerCount::Fixed)),
            float: None,
            text: Some(WorkerCount::parse),
        })
        .map(Some)
}

/// `timeout`, `slow-timeout`, `budget`: positive seconds, or a duration
/// such as `"2m"`.
fn seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    deserializer
        .deserialize_any(Spelling {
            expecting: "seconds or a duration (e.g. 30 or \"4m30s\")",
            integer: Some(|n| Some(n as f64).filter(|n| *n > 0.0)),
            float: Some(|n| Some(n).filter(|n| *n > 0.0)),
            text: Some(parse_seconds),
        })
        .map(Some)
}

/// `reruns-delay`: seconds, zero or more.
fn delay<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    deserializer
        .deserialize_any(Spelling {
            expecting: "seconds (0 or more)",
            integer: Some(|n| Some(n as f64).filter(|n| *n >= 0.0)),
            float: Some(|n| Some(n).filter(|n| *n >= 0.0)),
            text: None,
        })
        .map(Some)
}

/// `worker-memory-limit`: a size such as `"500M"`, in KiB.
fn size_kib<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    deserializer
        .deserialize_any(Spelling {
            expecting: "a size such as \"500M\"",
            integer: None,
            float: None,
            text: Some(parse_size_kib),
        })
        .map(Some)
}

/// `worker-memory-limit` written back in a spelling it reads (`"2048K"`).
fn kib_as_size<S: Serializer>(kib: &Option<u64>, serializer: S) -> Result<S::Ok, S::Error> {
    match kib {
        Some(kib) => serializer.serialize_str(&format!("{kib}K")),
        None => serializer.serialize_none(),
    }
}

/// `shard`: `"K/N"` (1-based) or `"auto"`.
fn shard<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    deserializer
        .deserialize_any(Spelling {
            expecting: "\"K/N\" (e.g. \"1/4\") or \"auto\"",
            integer: None,
            float: None,
            text: Some(|text| {
                (text == "auto" || crate::shard::ShardSpec::parse(text).is_some()).then(|| text.to_owned())
            }),
        })
        .map(Some)
}

/// An override's `markers`: one name, or a list of names.
fn names<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a marker name or a list of marker names")]
    enum Names {
        One(String),
        Many(Vec<String>),
    }
    Ok(Some(match Names::deserialize(deserializer)? {
        Names::One(name) => vec![name],
        Names::Many(names) => names,
    }))
}

/// An integer type a count setting is kept in.
trait Count: TryFrom<i64> {
    /// What fits, for the message.
    const EXPECTING: &'static str;
}

impl Count for u8 {
    const EXPECTING: &'static str = "a whole number from 0 to 255";
}

impl Count for u32 {
    const EXPECTING: &'static str = "a whole number from 0 to 4294967295";
}

impl Count for u64 {
    const EXPECTING: &'static str = "a whole number, 0 or more";
}

impl Count for usize {
    const EXPECTING: &'static str = "a whole number, 0 or more";
}

impl Count for i8 {
    const EXPECTING: &'static str = "a whole number from -128 to 127 (below 0: quieter)";
}

/// A count: a whole number that fits `T`.
fn whole_number<'de, D: Deserializer<'de>, T: Count>(deserializer: D) -> Result<Option<T>, D::Error> {
    deserializer
        .deserialize_any(Spelling {
            expecting: T::EXPECTING,
            integer: Some(|n| T::try_from(n).ok()),
            float: None,
            text: None,
        })
        .map(Some)
}

/// `mode`, `collect`, `color`, `failure-output`: one of the words `T`'s
/// [`clap::ValueEnum`] declares, read by `T`'s derived [`Deserialize`].
fn choice<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + clap::ValueEnum,
{
    /// Takes a string only, so another type is an error naming the words.
    struct Word<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de> + clap::ValueEnum> Visitor<'de> for Word<T> {
        type Value = T;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            let words: Vec<String> = T::value_variants()
                .iter()
                .filter_map(clap::ValueEnum::to_possible_value)
                .map(|value| format!("`{}`", value.get_name()))
                .collect();
            write!(formatter, "one of {}", words.join(", "))
        }

        fn visit_str<E: de::Error>(self, word: &str) -> Result<T, E> {
            T::deserialize(word.into_deserializer())
        }
    }

    deserializer.deserialize_str(Word(PhantomData)).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upper_layer_wins_key_by_key_and_overrides_add_up() {
        let rule = |seconds| Override { timeout: Some(seconds), ..Override::default() };
        let upper = Layer { timeout: Some(5.0), overrides: Some(vec![rule(1.0)]), ..Layer::default() };
        let lower = Layer {
            timeout: Some(9.0),
            reruns: Some(2),
            overrides: Some(vec![rule(2.0)]),
            ..Layer::default()
        };
        let stacked = upper.over(lower);
        assert_eq!((stacked.timeout, stacked.reruns), (Some(5.0), Some(2)));
        assert_eq!(stacked.overrides, Some(vec![rule(1.0), rule(2.0)]));
    }

    #[test]
    fn a_layer_serializes_to_the_keys_it_sets() {
        let layer = Layer {
            workers: Some(WorkerCount::Auto),
            worker_memory_limit: Some(2048),
            slow_timeout: Some(2.5),
            ..Layer::default()
        };
        let keys: Vec<String> =
            layer.set_keys().into_iter().map(|(key, value)| format!("{key}={value}")).collect();
        assert_eq!(keys, ["slow-timeout=2.5", "worker-memory-limit=\"2048K\"", "workers=\"auto\""]);
    }
}
