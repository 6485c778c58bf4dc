//! `[tool.shoal]` in the nearest pyproject.toml, read by serde into
//! [`FileSettings`]: the struct's fields are the keys and their types say
//! what each accepts.
//!
//! The document is parsed with its spans kept, so that a key the struct does
//! not declare is a warning naming the file, the line and the key, and a
//! value that does not fit is an error naming the file, the line, the key
//! and what was expected.

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, IntoDeserializer, Unexpected, Visitor};
use toml::de::{DeTable, ValueDeserializer};

use crate::errors::ShoalError;
use crate::values::{CollectionMode, WorkerCount, WorkerMode, parse_seconds, parse_size_kib};

/// `[tool.shoal]`, as found: `None` for a key not given.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct FileSettings {
    /// A positive number or `"auto"`.
    #[serde(default, deserialize_with = "worker_count")]
    pub(super) workers: Option<WorkerCount>,
    /// The interpreter to run pytest with.
    pub(super) python: Option<PathBuf>,
    /// How many times a dead worker may be replaced.
    #[serde(default, deserialize_with = "whole_number")]
    pub(super) max_worker_restarts: Option<u32>,
    /// How workers come to be.
    #[serde(default, deserialize_with = "choice")]
    pub(super) mode: Option<WorkerMode>,
    /// How fork mode collects.
    #[serde(default, deserialize_with = "choice")]
    pub(super) collect: Option<CollectionMode>,
    /// Seconds a test may run.
    #[serde(default, deserialize_with = "seconds")]
    pub(super) timeout: Option<f64>,
    /// KiB of resident memory past which a worker is replaced.
    #[serde(default, deserialize_with = "size_kib")]
    pub(super) worker_memory_limit: Option<u64>,
    /// Markers that make a test serial.
    pub(super) serial_markers: Option<Vec<String>>,
    /// Seconds the whole run may take.
    #[serde(default, deserialize_with = "seconds")]
    pub(super) budget: Option<f64>,
    /// Reruns of a failed test.
    #[serde(default, deserialize_with = "whole_number")]
    pub(super) reruns: Option<u8>,
    /// Seconds before a rerun.
    #[serde(default, deserialize_with = "delay")]
    pub(super) reruns_delay: Option<f64>,
    /// Whether flaky tests fail the run.
    pub(super) flaky_fails: Option<bool>,
    /// The work queue's URL (`redis://...` or `auto`), as `--queue`.
    pub(super) queue: Option<String>,
}

/// Finds the nearest pyproject.toml from `cwd` upwards and reads its
/// `[tool.shoal]` table, handing each warning to `warn`; no file or no table
/// means no settings.
pub(super) fn load(cwd: &Path, warn: &mut dyn FnMut(String)) -> Result<FileSettings, ShoalError> {
    for directory in cwd.ancestors() {
        let path = directory.join("pyproject.toml");
        if path.is_file() {
            let text = std::fs::read_to_string(&path)
                .map_err(|error| ShoalError::io(format!("reading {}", path.display()), error))?;
            return parse(&text, &path, warn);
        }
    }
    Ok(FileSettings::default())
}

/// `[tool.shoal]` from the text of the pyproject.toml at `path`.
pub(super) fn parse(
    text: &str,
    path: &Path,
    warn: &mut dyn FnMut(String),
) -> Result<FileSettings, ShoalError> {
    let config_error = |message: String| ShoalError::Config { path: path.to_owned(), message };
    let document = DeTable::parse(text).map_err(|error| config_error(format!("not valid TOML: {error}")))?;
    let Some(table) = document.get_ref().get("tool").and_then(|tool| tool.get_ref().get("shoal")) else {
        return Ok(FileSettings::default());
    };
    let Some(entries) = table.get_ref().as_table() else {
        let line = line_of(text, table.span().start);
        return Err(config_error(format!("line {line}: [tool.shoal] must be a table")));
    };
    for message in unknown_keys(entries, text, path) {
        warn(message);
    }
    FileSettings::deserialize(ValueDeserializer::from(table.clone()))
        .map_err(|error| config_error(describe(&error, entries, text)))
}

/// A warning for each key of `[tool.shoal]` that [`FileSettings`] does not
/// declare, in the order of the file.
fn unknown_keys(entries: &DeTable<'_>, text: &str, path: &Path) -> Vec<String> {
    let known = declared_fields::<FileSettings>();
    let mut unknown: Vec<(usize, &str)> = entries
        .keys()
        .filter(|key| !known.contains(&key.get_ref().as_ref()))
        .map(|key| (line_of(text, key.span().start), key.get_ref().as_ref()))
        .collect();
    unknown.sort_unstable();
    unknown
        .into_iter()
        .map(|(line, key)| {
            format!(
                "{}: line {line}: [tool.shoal] has an unknown key `{key}` (known: {})",
                path.display(),
                known.join(", ")
            )
        })
        .collect()
}

/// A deserialisation error as `line N: [tool.shoal] KEY: MESSAGE`, the key
/// being the entry whose value holds the error's span.
fn describe(error: &toml::de::Error, entries: &DeTable<'_>, text: &str) -> String {
    let Some(span) = error.span() else {
        return format!("[tool.shoal]: {}", error.message());
    };
    let line = line_of(text, span.start);
    let key =
        entries.iter().find(|(_, value)| value.span().contains(&span.start)).map(|(key, _)| key.get_ref());
    match key {
        Some(key) => format!("line {line}: [tool.shoal] {key}: {}", error.message()),
        None => format!("line {line}: [tool.shoal]: {}", error.message()),
    }
}

/// The 1-based line of a byte offset into `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let before = text.as_bytes().get(..offset).unwrap_or(text.as_bytes());
    before.iter().filter(|&&byte| byte == b'\n').count() + 1
}

/// The field names `T`'s derived [`Deserialize`] accepts: serde hands them
/// to `deserialize_struct`, where a deserializer that reads nothing catches
/// them.
fn declared_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    /// The one thing [`FieldCatcher`] returns, as its error.
    #[derive(Debug)]
    struct Fields(&'static [&'static str]);

    impl fmt::Display for Fields {
        fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(formatter, "fields {:?}", self.0)
        }
    }

    impl std::error::Error for Fields {}

    impl de::Error for Fields {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Self(&[])
        }
    }

    struct FieldCatcher;

    impl<'de> Deserializer<'de> for FieldCatcher {
        type Error = Fields;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Fields> {
            Err(Fields(&[]))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Fields> {
            Err(Fields(fields))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    T::deserialize(FieldCatcher).err().map_or(&[], |Fields(fields)| fields)
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

/// `timeout`, `budget`: positive seconds, or a duration such as `"2m"`.
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

/// An unsigned integer type a count setting is kept in.
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

/// `max-worker-restarts`, `reruns`: a whole number that fits `T`.
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

/// `mode`, `collect`: one of the words `T`'s [`clap::ValueEnum`] declares,
/// read by `T`'s derived [`Deserialize`].
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

    /// `[tool.shoal]` read from `text`, and the warnings.
    fn parse_with_warnings(text: &str) -> (Result<FileSettings, String>, Vec<String>) {
        let mut warnings = Vec::new();
        let settings = parse(text, Path::new("pyproject.toml"), &mut |warning| warnings.push(warning));
        (settings.map_err(|error| error.to_string()), warnings)
    }

    fn parse_ok(text: &str) -> FileSettings {
        let (settings, warnings) = parse_with_warnings(text);
        assert_eq!(warnings, Vec::<String>::new());
        settings.unwrap()
    }

    fn parse_err(text: &str) -> String {
        parse_with_warnings(text).0.unwrap_err()
    }

    #[test]
    fn reads_the_tool_shoal_table() {
        let settings = parse_ok(
            "[project]\nname='x'\n[tool.shoal]\nworkers = 3\npython = '.venv/bin/python'\nmax-worker-restarts = 2\nmode = 'spawn'\n",
        );
        assert_eq!(settings.workers, Some(WorkerCount::Fixed(3)));
        assert_eq!(settings.python, Some(PathBuf::from(".venv/bin/python")));
        assert_eq!(settings.max_worker_restarts, Some(2));
        assert_eq!(settings.mode, Some(WorkerMode::Spawn));
        assert_eq!(parse_ok("[tool.shoal]\nworkers = 'auto'\n").workers, Some(WorkerCount::Auto));
    }

    #[test]
    fn reads_every_key_in_every_spelling_it_had() {
        let settings = parse_ok(
            "[tool.shoal]\nworkers = '4'\ncollect = 'full'\ntimeout = 2.5\nworker-memory-limit = '2G'\n\
             serial-markers = ['serial', 'db']\nbudget = '4m30s'\nreruns = 2\nreruns-delay = 1\nflaky-fails = true\n",
        );
        let expected = FileSettings {
            workers: Some(WorkerCount::Fixed(4)),
            collect: Some(CollectionMode::Full),
            timeout: Some(2.5),
            worker_memory_limit: Some(2 * 1024 * 1024),
            serial_markers: Some(vec!["serial".to_owned(), "db".to_owned()]),
            budget: Some(270.0),
            reruns: Some(2),
            reruns_delay: Some(1.0),
            flaky_fails: Some(true),
            ..FileSettings::default()
        };
        assert_eq!(settings, expected);
        assert_eq!(parse_ok("[tool.shoal]\ntimeout = '2m'\nbudget = 30\n").timeout, Some(120.0));
        assert_eq!(parse_ok("[tool]\nshoal = { reruns = 1 }\n").reruns, Some(1));
    }

    #[test]
    fn the_keys_are_the_struct_fields() {
        assert_eq!(
            declared_fields::<FileSettings>(),
            [
                "workers",
                "python",
                "max-worker-restarts",
                "mode",
                "collect",
                "timeout",
                "worker-memory-limit",
                "serial-markers",
                "budget",
                "reruns",
                "reruns-delay",
                "flaky-fails",
                "queue",
            ]
        );
    }

    #[test]
    fn no_table_means_defaults() {
        assert_eq!(parse_ok("[tool.other]\nx = 1\n"), FileSettings::default());
        assert_eq!(parse_ok("tool = 3\n"), FileSettings::default());
    }

    #[test]
    fn unknown_keys_are_warnings_with_file_line_and_key() {
        let (settings, warnings) =
            parse_with_warnings("[tool.shoal]\nwokers = 3\nreruns = 1\n\n[tool.shoal.extra]\nx = 1\n");
        assert_eq!(settings.unwrap().reruns, Some(1), "the known keys are still read");
        let known = "known: workers, python, max-worker-restarts, mode, collect, timeout, \
                     worker-memory-limit, serial-markers, budget, reruns, reruns-delay, flaky-fails, queue";
        assert_eq!(
            warnings,
            [
                format!("pyproject.toml: line 2: [tool.shoal] has an unknown key `wokers` ({known})"),
                format!("pyproject.toml: line 5: [tool.shoal] has an unknown key `extra` ({known})"),
            ]
        );
    }

    #[test]
    fn bad_values_name_the_file_line_key_and_what_was_expected() {
        assert_eq!(
            parse_err("[tool.shoal]\nworkers = 0\n"),
            "pyproject.toml: line 2: [tool.shoal] workers: invalid value: integer `0`, expected a positive number or \"auto\""
        );
        assert!(parse_err("[tool.shoal\n").starts_with("pyproject.toml: not valid TOML"));
        assert_eq!(
            parse_err("[tool]\nshoal = 'fast'\n"),
            "pyproject.toml: line 2: [tool.shoal] must be a table"
        );
    }

    #[test]
    fn wrong_types_name_the_file_line_key_and_expected_type() {
        let cases = [
            (
                "workers = 2.5",
                "workers: invalid type: floating point `2.5`, expected a positive number or \"auto\"",
            ),
            ("python = 3", "python: invalid type: integer `3`, expected path string"),
            (
                "max-worker-restarts = '8'",
                "max-worker-restarts: invalid type: string \"8\", expected a whole number from 0 to 4294967295",
            ),
            ("mode = 1", "mode: invalid type: integer `1`, expected one of `fork`, `spawn`, `auto`"),
            (
                "collect = true",
                "collect: invalid type: boolean `true`, expected one of `auto`, `split`, `full`",
            ),
            (
                "timeout = false",
                "timeout: invalid type: boolean `false`, expected seconds or a duration (e.g. 30 or \"4m30s\")",
            ),
            (
                "worker-memory-limit = 500",
                "worker-memory-limit: invalid type: integer `500`, expected a size such as \"500M\"",
            ),
            (
                "serial-markers = 'serial'",
                "serial-markers: invalid type: string \"serial\", expected a sequence",
            ),
            ("serial-markers = ['a', 2]", "serial-markers: invalid type: integer `2`, expected a string"),
            (
                "budget = 'soon'",
                "budget: invalid value: string \"soon\", expected seconds or a duration (e.g. 30 or \"4m30s\")",
            ),
            ("reruns = 300", "reruns: invalid value: integer `300`, expected a whole number from 0 to 255"),
            ("reruns-delay = -1", "reruns-delay: invalid value: integer `-1`, expected seconds (0 or more)"),
            ("flaky-fails = 'yes'", "flaky-fails: invalid type: string \"yes\", expected a boolean"),
        ];
        for (line, message) in cases {
            let error =
                parse_err(&format!("[project]\nname = 'x'\n\n[tool.shoal]\n# how shoal runs\n{line}\n"));
            assert_eq!(error, format!("pyproject.toml: line 6: [tool.shoal] {message}"), "{line}");
        }
    }

    #[test]
    fn each_word_of_mode_and_collect_is_read_from_the_file() {
        use clap::ValueEnum;
        for mode in WorkerMode::value_variants() {
            let word = mode.to_possible_value().expect("a word");
            let text = format!("[tool.shoal]\nmode = '{}'\n", word.get_name());
            assert_eq!(parse_ok(&text).mode, Some(*mode));
        }
        for collect in CollectionMode::value_variants() {
            let word = collect.to_possible_value().expect("a word");
            let text = format!("[tool.shoal]\ncollect = '{}'\n", word.get_name());
            assert_eq!(parse_ok(&text).collect, Some(*collect));
        }
        assert_eq!(
            parse_err("[tool.shoal]\nmode = 'forks'\n"),
            "pyproject.toml: line 2: [tool.shoal] mode: unknown variant `forks`, expected one of `fork`, `spawn`, `auto`"
        );
    }
}
