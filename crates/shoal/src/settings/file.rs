//! The config file: `shoal.toml`, else `[tool.shoal]` in pyproject.toml,
//! whichever is nearer (the current directory or its ancestors; in one
//! directory `shoal.toml` wins and a `[tool.shoal]` beside it is ignored
//! with a warning). Its top-level table and each
//! `profile.NAME` table are read into a [`Layer`], and a profile's chain of
//! layers (the profile, what it `inherits`, ..., the top level) is what
//! `super` stacks.
//!
//! The document is parsed with its spans kept: a key no layer declares is a
//! warning naming the file, the line, the table and the key; a value that
//! does not fit is an error naming the same and what was expected; each
//! key's line is kept, for `shoal config` to say where a value came from.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::layer::Layer;
use crate::errors::ShoalError;

/// The standalone config file's name.
pub(super) const SHOAL_TOML: &str = "shoal.toml";

/// One table of the file, read.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Table {
    /// What it says.
    pub(super) layer: Layer,
    /// How to name it: `[tool.shoal]`, `[tool.shoal.profile.ci]`, `[profile.ci]`, `shoal.toml's top level`.
    pub(super) label: String,
    /// The line of its header (or its key, for an inline table).
    pub(super) line: usize,
    /// The line of each key it sets.
    pub(super) lines: HashMap<String, usize>,
}

/// The config file, read.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ConfigFile {
    /// Where it is.
    pub(super) path: PathBuf,
    /// Its top level: `[tool.shoal]`, or all of shoal.toml.
    pub(super) top: Table,
    /// Its profiles by name.
    pub(super) profiles: BTreeMap<String, Table>,
}

impl ConfigFile {
    /// The layers of `profile` (none: the top level alone), the most
    /// specific first: the profile, the profile it `inherits`, ..., the top
    /// level. `default` names the top level unless a profile has that name.
    pub(super) fn chain(&self, profile: Option<&str>) -> Result<Vec<&Table>, ShoalError> {
        let mut chain = Vec::new();
        let mut next = profile.filter(|name| *name != "default" || self.profiles.contains_key(*name));
        let mut inherited_at: Option<&Table> = None;
        while let Some(name) = next {
            let Some(table) = self.profiles.get(name) else {
                let known = self.known_profiles();
                let message = match inherited_at {
                    Some(from) => format!(
                        "line {}: {} inherits `{name}`, which is not a profile ({known})",
                        from.lines.get("inherits").copied().unwrap_or(from.line),
                        from.label
                    ),
                    None => format!("no profile `{name}` ({known})"),
                };
                return Err(ShoalError::Config { path: self.path.clone(), message });
            };
            if chain.iter().any(|seen: &&Table| std::ptr::eq(*seen, table)) {
                let names: Vec<&str> =
                    chain.iter().map(|table: &&Table| profile_name(&table.label)).collect();
                return Err(ShoalError::Config {
                    path: self.path.clone(),
                    message: format!(
                        "line {}: profiles inherit in a circle: {} -> {name}",
                        table.line,
                        names.join(" -> ")
                    ),
                });
            }
            chain.push(table);
            inherited_at = Some(table);
            next = table.layer.inherits.as_deref();
        }
        chain.push(&self.top);
        Ok(chain)
    }

    /// `known profiles: a, b`, or that there are none.
    fn known_profiles(&self) -> String {
        if self.profiles.is_empty() {
            return "no profiles are defined".to_owned();
        }
        let names: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
        format!("known profiles: {}", names.join(", "))
    }
}

/// A profile's name from its table's label.
fn profile_name(label: &str) -> &str {
    label.trim_end_matches(']').rsplit('.').next().unwrap_or(label)
}

/// Finds the nearest config file from `cwd` upwards and reads it, handing
/// each warning to `warn`. `None`: no file (a pyproject.toml without
/// `[tool.shoal]` still ends the search, as the nearest project's).
pub(super) fn load(cwd: &Path, warn: &mut dyn FnMut(String)) -> Result<Option<ConfigFile>, ShoalError> {
    for directory in cwd.ancestors() {
        let standalone = directory.join(SHOAL_TOML);
        let pyproject = directory.join("pyproject.toml");
        if standalone.is_file() {
            let config = parse(&read(&standalone)?, &standalone, true, warn)?;
            if pyproject.is_file()
                && parse(&read(&pyproject)?, &pyproject, false, &mut |_| {}).ok().flatten().is_some()
            {
                warn(format!(
                    "{}: [tool.shoal] is ignored: {} beside it is read instead",
                    pyproject.display(),
                    standalone.display()
                ));
            }
            return Ok(config);
        }
        if pyproject.is_file() {
            return parse(&read(&pyproject)?, &pyproject, false, warn);
        }
    }
    Ok(None)
}

fn read(path: &Path) -> Result<String, ShoalError> {
    std::fs::read_to_string(path)
        .map_err(|error| ShoalError::io(format!("reading {}", path.display()), error))
}

/// The config in `text`, the file at `path`: all of it when `standalone`
/// (shoal.toml), else its `[tool.shoal]` (`None` when it has none).
pub(super) fn parse(
    text: &str,
    path: &Path,
    standalone: bool,
    warn: &mut dyn FnMut(String),
) -> Result<Option<ConfigFile>, ShoalError> {
    let config_error = |message: String| ShoalError::Config { path: path.to_owned(), message };
    let document = DeTable::parse(text).map_err(|error| config_error(format!("not valid TOML: {error}")))?;
    let (top, prefix) = if standalone {
        let span = document.span();
        (toml::Spanned::new(span, DeValue::Table(document.get_ref().clone())), "")
    } else {
        let Some(table) = document.get_ref().get("tool").and_then(|tool| tool.get_ref().get("shoal")) else {
            return Ok(None);
        };
        (table.clone(), "tool.shoal.")
    };
    let reader = Reader { text, path, warn };
    let top_label = if standalone { format!("{SHOAL_TOML}'s top level") } else { "[tool.shoal]".to_owned() };
    let mut reader = reader;
    let top_table = reader.table(&top, top_label, &["profile"])?;
    if top_table.layer.inherits.is_some() {
        let line = top_table.lines.get("inherits").copied().unwrap_or(top_table.line);
        return Err(config_error(format!(
            "line {line}: {}: `inherits` is for profiles only",
            top_table.label
        )));
    }
    let mut profiles = BTreeMap::new();
    if let Some(section) = top.get_ref().as_table().and_then(|entries| entries.get("profile")) {
        let Some(entries) = section.get_ref().as_table() else {
            let line = line_of(text, section.span().start);
            return Err(config_error(format!("line {line}: [{prefix}profile] must be a table of profiles")));
        };
        for (name, table) in entries {
            let label = format!("[{prefix}profile.{}]", name.get_ref());
            let mut profile = reader.table(table, label, &[])?;
            profile.line = line_of(text, name.span().start);
            profiles.insert(name.get_ref().to_string(), profile);
        }
    }
    Ok(Some(ConfigFile { path: path.to_owned(), top: top_table, profiles }))
}

/// Reads tables of one file.
struct Reader<'a, 'w> {
    text: &'a str,
    path: &'a Path,
    warn: &'w mut dyn FnMut(String),
}

impl Reader<'_, '_> {
    /// One table as a [`Layer`]; `also_known`: keys that are not settings
    /// but belong there (the top level's `profile`).
    fn table(
        &mut self,
        table: &toml::Spanned<DeValue<'_>>,
        label: String,
        also_known: &[&str],
    ) -> Result<Table, ShoalError> {
        let line = line_of(self.text, table.span().start);
        let Some(entries) = table.get_ref().as_table() else {
            return Err(ShoalError::Config {
                path: self.path.to_owned(),
                message: format!("line {line}: {label} must be a table"),
            });
        };
        let known: Vec<&str> = declared_fields::<Layer>().iter().chain(also_known).copied().collect();
        for message in unknown_keys(entries, &known, self.text, self.path, &label) {
            (self.warn)(message);
        }
        let layer = Layer::deserialize(ValueDeserializer::from(table.clone())).map_err(|error| {
            ShoalError::Config {
                path: self.path.to_owned(),
                message: describe(&error, entries, self.text, &label),
            }
        })?;
        let lines = entries
            .keys()
            .map(|key| (key.get_ref().to_string(), line_of(self.text, key.span().start)))
            .collect();
        Ok(Table { layer, label, line, lines })
    }
}

/// A warning for each key of a table that is not `known`, in the order of
/// the file.
fn unknown_keys(entries: &DeTable<'_>, known: &[&str], text: &str, path: &Path, label: &str) -> Vec<String> {
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
                "{}: line {line}: {label} has an unknown key `{key}` (known: {})",
                path.display(),
                known.join(", ")
            )
        })
        .collect()
}

/// A deserialisation error as `line N: TABLE KEY: MESSAGE`, the key being
/// the entry whose value holds the error's span.
fn describe(error: &toml::de::Error, entries: &DeTable<'_>, text: &str, label: &str) -> String {
    let Some(span) = error.span() else {
        return format!("{label}: {}", error.message());
    };
    let line = line_of(text, span.start);
    let key =
        entries.iter().find(|(_, value)| value.span().contains(&span.start)).map(|(key, _)| key.get_ref());
    match key {
        Some(key) => format!("line {line}: {label} {key}: {}", error.message()),
        None => format!("line {line}: {label}: {}", error.message()),
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
pub(super) fn declared_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::{CollectionMode, WorkerCount, WorkerMode};

    /// The config read from `text` as a pyproject.toml, and the warnings.
    fn parse_with_warnings(text: &str) -> (Result<Option<ConfigFile>, String>, Vec<String>) {
        let mut warnings = Vec::new();
        let config = parse(text, Path::new("pyproject.toml"), false, &mut |warning| warnings.push(warning));
        (config.map_err(|error| error.to_string()), warnings)
    }

    fn parse_ok(text: &str) -> Layer {
        let (config, warnings) = parse_with_warnings(text);
        assert_eq!(warnings, Vec::<String>::new());
        config.unwrap().map(|config| config.top.layer).unwrap_or_default()
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
        let expected = Layer {
            workers: Some(WorkerCount::Fixed(4)),
            collect: Some(CollectionMode::Full),
            timeout: Some(2.5),
            worker_memory_limit: Some(2 * 1024 * 1024),
            serial_markers: Some(vec!["serial".to_owned(), "db".to_owned()]),
            budget: Some(270.0),
            reruns: Some(2),
            reruns_delay: Some(1.0),
            flaky_fails: Some(true),
            ..Layer::default()
        };
        assert_eq!(settings, expected);
        assert_eq!(parse_ok("[tool.shoal]\ntimeout = '2m'\nbudget = 30\n").timeout, Some(120.0));
        assert_eq!(parse_ok("[tool]\nshoal = { reruns = 1 }\n").reruns, Some(1));
    }

    #[test]
    fn every_run_option_has_a_key() {
        use clap::CommandFactory;
        let command = crate::cli::Cli::command();
        let run = command.find_subcommand("run").expect("a run command");
        let keys = declared_fields::<Layer>();
        for argument in run.get_arguments().filter(|argument| !argument.is_positional()) {
            let key = match (argument.get_short(), argument.get_long()) {
                (Some('k'), _) => "keyword",
                (Some('m'), _) => "marker-expression",
                (Some('q' | 'v'), _) => "verbosity",
                (_, Some("lf")) => "last-failed",
                (_, Some("ff")) => "failed-first",
                // The profile itself, and pytest-xdist's options accepted
                // for a migration, have no key.
                (_, Some("profile" | "maxprocesses" | "dist" | "help")) => continue,
                // A queued build's machine and its queue's timings belong
                // to the CI job (its variables), not to a profile.
                (_, Some("build" | "machine" | "queue-lease" | "queue-wait" | "queue-ttl")) => continue,
                // A question about one test, for one run.
                (_, Some("explain")) => continue,
                (_, Some(long)) => long,
                (Some(_), None) => panic!("-{:?} has no long name", argument.get_short()),
                (None, None) => continue,
            };
            assert!(keys.contains(&key), "{:?} has no key in a profile", argument.get_id());
        }
    }

    #[test]
    fn no_table_means_no_config() {
        assert_eq!(parse_ok("[tool.other]\nx = 1\n"), Layer::default());
        assert_eq!(parse_ok("tool = 3\n"), Layer::default());
    }

    #[test]
    fn unknown_keys_are_warnings_with_file_line_table_and_key() {
        let (config, warnings) = parse_with_warnings(
            "[tool.shoal]\nwokers = 3\nreruns = 1\n\n[tool.shoal.extra]\nx = 1\n\n[tool.shoal.profile.ci]\ntimout = 3\n",
        );
        assert_eq!(config.unwrap().unwrap().top.layer.reruns, Some(1), "the known keys are still read");
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].starts_with(
            "pyproject.toml: line 2: [tool.shoal] has an unknown key `wokers` (known: inherits, paths,"
        ));
        assert!(warnings[1].starts_with("pyproject.toml: line 5: [tool.shoal] has an unknown key `extra`"));
        assert!(
            warnings[2]
                .starts_with("pyproject.toml: line 9: [tool.shoal.profile.ci] has an unknown key `timout`")
        );
    }

    #[test]
    fn bad_values_name_the_file_line_table_key_and_what_was_expected() {
        assert_eq!(
            parse_err("[tool.shoal]\nworkers = 0\n"),
            "pyproject.toml: line 2: [tool.shoal] workers: invalid value: integer `0`, expected a positive number or \"auto\""
        );
        assert!(parse_err("[tool.shoal\n").starts_with("pyproject.toml: not valid TOML"));
        assert_eq!(
            parse_err("[tool]\nshoal = 'fast'\n"),
            "pyproject.toml: line 2: [tool.shoal] must be a table"
        );
        assert_eq!(
            parse_err("[tool.shoal]\n\n[tool.shoal.profile.ci]\nreruns = 'two'\n"),
            "pyproject.toml: line 4: [tool.shoal.profile.ci] reruns: invalid type: string \"two\", expected a whole number from 0 to 255"
        );
        let error = parse_err("[[tool.shoal.profile.ci.overrides]]\nmarkers = 'e2e'\ntimout = 3\n");
        assert!(
            error.starts_with(
                "pyproject.toml: line 3: [tool.shoal.profile.ci]: unknown field `timout`, expected one of"
            ),
            "{error}"
        );
        assert_eq!(
            parse_err("[tool.shoal]\ninherits = 'ci'\n"),
            "pyproject.toml: line 2: [tool.shoal]: `inherits` is for profiles only"
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
            ("mode = 1", "mode: invalid type: integer `1`, expected one of `fork`, `spawn`, `auto`"),
            (
                "color = 'sometimes'",
                "color: unknown variant `sometimes`, expected one of `auto`, `always`, `yes`, `never`, `no`",
            ),
            (
                "worker-memory-limit = 500",
                "worker-memory-limit: invalid type: integer `500`, expected a size such as \"500M\"",
            ),
            (
                "serial-markers = 'serial'",
                "serial-markers: invalid type: string \"serial\", expected a sequence",
            ),
            (
                "shard = '5/4'",
                "shard: invalid value: string \"5/4\", expected \"K/N\" (e.g. \"1/4\") or \"auto\"",
            ),
            ("reruns-delay = -1", "reruns-delay: invalid value: integer `-1`, expected seconds (0 or more)"),
            ("flaky-fails = 'yes'", "flaky-fails: invalid type: string \"yes\", expected a boolean"),
        ];
        for (line, message) in cases {
            let error =
                parse_err(&format!("[project]\nname = 'x'\n\n[tool.shoal]\n# how shoal runs\n{line}\n"));
            assert_eq!(error, format!("pyproject.toml: line 6: [tool.shoal] {message}"), "{line}");
        }
    }

    /// The config of a pyproject.toml with these profiles.
    fn config(text: &str) -> ConfigFile {
        parse(text, Path::new("pyproject.toml"), false, &mut |_| {}).unwrap().unwrap()
    }

    /// The labels of a profile's chain.
    fn chain(config: &ConfigFile, profile: Option<&str>) -> Result<Vec<String>, String> {
        config
            .chain(profile)
            .map(|tables| tables.iter().map(|table| table.label.clone()).collect())
            .map_err(|error| error.to_string())
    }

    #[test]
    fn a_profile_chain_runs_through_what_it_inherits_to_the_top_level() {
        let config = config(
            "[tool.shoal]\ntimeout = 1\n[tool.shoal.profile.base]\nreruns = 1\n\
             [tool.shoal.profile.ci]\ninherits = 'base'\nworkers = 2\n",
        );
        assert_eq!(
            chain(&config, Some("ci")).unwrap(),
            ["[tool.shoal.profile.ci]", "[tool.shoal.profile.base]", "[tool.shoal]"]
        );
        assert_eq!(chain(&config, None).unwrap(), ["[tool.shoal]"]);
        assert_eq!(chain(&config, Some("default")).unwrap(), ["[tool.shoal]"]);
        assert_eq!(config.profiles["ci"].line, 5);
        assert_eq!(config.profiles["ci"].lines["workers"], 7);
    }

    #[test]
    fn unknown_profiles_and_circles_are_errors_naming_what_is_known() {
        let config = config(
            "[tool.shoal.profile.a]\ninherits = 'b'\n[tool.shoal.profile.b]\ninherits = 'a'\n\
             [tool.shoal.profile.c]\ninherits = 'nope'\n",
        );
        assert_eq!(
            chain(&config, Some("x")).unwrap_err(),
            "pyproject.toml: no profile `x` (known profiles: a, b, c)"
        );
        assert_eq!(
            chain(&config, Some("a")).unwrap_err(),
            "pyproject.toml: line 1: profiles inherit in a circle: a -> b -> a"
        );
        assert_eq!(
            chain(&config, Some("c")).unwrap_err(),
            "pyproject.toml: line 6: [tool.shoal.profile.c] inherits `nope`, which is not a profile (known profiles: a, b, c)"
        );
    }

    #[test]
    fn the_nearest_file_is_read_and_shoal_toml_wins_beside_a_pyproject() {
        let root = tempfile::tempdir().expect("a temporary directory");
        let nested = root.path().join("sub");
        std::fs::create_dir(&nested).expect("mkdir");
        std::fs::write(
            root.path().join("pyproject.toml"),
            "[tool.shoal]
reruns = 1
",
        )
        .expect("write");
        std::fs::write(
            root.path().join(SHOAL_TOML),
            "reruns = 2
",
        )
        .expect("write");
        let mut warnings = Vec::new();
        let config = load(&nested, &mut |warning| warnings.push(warning)).unwrap().expect("a config");
        assert_eq!((config.path.file_name(), config.top.layer.reruns), (Some(SHOAL_TOML.as_ref()), Some(2)));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("[tool.shoal] is ignored"), "{warnings:?}");
        std::fs::write(
            nested.join("pyproject.toml"),
            "[project]
name = 'x'
",
        )
        .expect("write");
        assert_eq!(load(&nested, &mut |_| {}).unwrap(), None, "the nearer pyproject.toml is the project's");
    }

    #[test]
    fn shoal_toml_has_the_same_keys_without_the_prefix() {
        let text =
            "timeout = 3\n[profile.ci]\nreruns = 2\n[[profile.ci.overrides]]\nmarkers = 'e2e'\ntimeout = 9\n";
        let config = parse(text, Path::new("shoal.toml"), true, &mut |_| {}).unwrap().unwrap();
        assert_eq!(config.top.layer.timeout, Some(3.0));
        assert_eq!(config.top.label, "shoal.toml's top level");
        let ci = &config.profiles["ci"];
        assert_eq!((ci.label.as_str(), ci.layer.reruns), ("[profile.ci]", Some(2)));
        let overrides = ci.layer.overrides.as_ref().expect("overrides");
        assert_eq!(overrides[0].markers, Some(vec!["e2e".to_owned()]));
        assert_eq!(overrides[0].timeout, Some(9.0));
    }
}
