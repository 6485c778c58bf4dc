//! pytest's command line inside shoal's: which arguments of `shoal run` are
//! shoal's own and which are pytest's.
//!
//! A team migrates by replacing `pytest -n auto` with `shoal run` and keeping
//! every other argument, in any order. shoal's own options are the ones clap
//! defines for the command; every other option goes to pytest, in the order
//! typed, with its value. Whether a pytest option takes a value is decided by
//! the installed pytest's own option table (its plugins' options included),
//! asked only when the command line leaves it open (`--tb short`, not
//! `--tb=short`) and cached per environment. Paths stay paths, and `--` still
//! ends shoal's options. The result is the argument vector clap parses:
//! shoal's options and the paths, then `--` and pytest's arguments.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What shoal's own options look like: for each name, whether it takes a
/// value (`Some(true)` required, `Some(false)` optional, absent: a flag).
#[derive(Debug, Default)]
pub struct OwnOptions {
    long: HashMap<String, Option<bool>>,
    short: HashMap<char, Option<bool>>,
}

impl OwnOptions {
    /// The options of one of shoal's commands, as clap defines them.
    pub fn of(command: &clap::Command) -> Self {
        let mut options = Self::default();
        for argument in command.get_arguments() {
            let value = argument
                .get_action()
                .takes_values()
                .then(|| argument.get_num_args().is_none_or(|range| range.min_values() > 0));
            for long in
                argument.get_long().into_iter().chain(argument.get_all_aliases().into_iter().flatten())
            {
                options.long.insert(long.to_owned(), value);
            }
            for short in
                argument.get_short().into_iter().chain(argument.get_all_short_aliases().into_iter().flatten())
            {
                options.short.insert(short, value);
            }
        }
        options
    }
}

/// Whether a pytest option takes a value: `Some` from pytest's table, `None`
/// for an option pytest does not know (pytest will say so).
pub type PytestTakesValue<'a> = dyn FnMut(&str) -> Option<bool> + 'a;

/// Reorders `shoal run`'s arguments (after the command name) into shoal's
/// options and paths, then `--`, then pytest's arguments in the order typed
/// (those given after a `--` last, as before).
pub fn split(
    arguments: &[String],
    own: &OwnOptions,
    pytest_takes_value: &mut PytestTakesValue<'_>,
) -> Vec<String> {
    let mut shoal = Vec::new();
    let mut pytest = Vec::new();
    let mut rest = arguments.iter();
    while let Some(argument) = rest.next() {
        if argument == "--" {
            pytest.extend(rest.by_ref().cloned());
            break;
        }
        if let Some(long) = argument.strip_prefix("--") {
            let (name, inline_value) =
                long.split_once('=').map_or((long, None), |(name, value)| (name, Some(value)));
            match own.long.get(name) {
                Some(takes) => {
                    shoal.push(argument.clone());
                    if inline_value.is_none() {
                        take_value(*takes, &mut rest, &mut shoal);
                    }
                }
                None => {
                    pytest.push(argument.clone());
                    if inline_value.is_none() {
                        let takes =
                            pytest_takes_value(argument).or_else(|| unknown_option_value(rest.as_slice()));
                        take_value(takes.and_then(|takes| takes.then_some(true)), &mut rest, &mut pytest);
                    }
                }
            }
        } else if argument.len() > 1 && argument.starts_with('-') {
            split_short_cluster(argument, own, pytest_takes_value, &mut rest, &mut shoal, &mut pytest);
        } else {
            shoal.push(argument.clone());
        }
    }
    if !pytest.is_empty() {
        shoal.push("--".to_owned());
        shoal.extend(pytest);
    }
    shoal
}

/// `-xvs`, `-rA`, `-n2`, `-k EXPR`: each letter goes to its owner; a letter
/// that takes a value takes the rest of the cluster, or the next argument.
fn split_short_cluster(
    argument: &str,
    own: &OwnOptions,
    pytest_takes_value: &mut PytestTakesValue<'_>,
    rest: &mut std::slice::Iter<'_, String>,
    shoal: &mut Vec<String>,
    pytest: &mut Vec<String>,
) {
    let letters: Vec<char> = argument[1..].chars().collect();
    for (index, &letter) in letters.iter().enumerate() {
        let remainder: String = letters[index + 1..].iter().collect();
        let (takes, target) = match own.short.get(&letter) {
            Some(takes) => (*takes, &mut *shoal),
            None => (
                pytest_takes_value(&format!("-{letter}")).and_then(|takes| takes.then_some(true)),
                &mut *pytest,
            ),
        };
        if takes.is_none() {
            target.push(format!("-{letter}"));
            continue;
        }
        if remainder.is_empty() {
            target.push(format!("-{letter}"));
            take_value(takes, rest, target);
        } else {
            target.push(format!("-{letter}{remainder}"));
        }
        return;
    }
}

/// Moves an option's value (the next argument) where the option went: a
/// required value always, an optional one unless the next argument is an
/// option itself (as clap and argparse read it).
fn take_value(takes: Option<bool>, rest: &mut std::slice::Iter<'_, String>, target: &mut Vec<String>) {
    let Some(required) = takes else { return };
    let next = rest.as_slice().first();
    if next.is_some_and(|next| next != "--" && (required || !next.starts_with('-'))) {
        target.extend(rest.next().cloned());
    }
}

/// For an option neither shoal nor the installed pytest knows (pytest will
/// reject it): whether the next argument looks like its value rather than a
/// path, so the path is not taken for a missing selection.
fn unknown_option_value(rest: &[String]) -> Option<bool> {
    let next = rest.first()?;
    let looks_like_path = next.contains("::") || Path::new(next.split("::").next().unwrap_or(next)).exists();
    Some(!next.starts_with('-') && !looks_like_path)
}

/// pytest's options that run no test: pytest's own output is the answer.
const NON_RUNNING: [&str; 14] = [
    "--co",
    "--collect-only",
    "--collectonly",
    "--fixtures",
    "--funcargs",
    "--fixtures-per-test",
    "--markers",
    "--setup-plan",
    "--setup-only",
    "--cache-show",
    "--version",
    "-V",
    "--help",
    "-h",
];

/// pytest's options that need one pytest process: a debugger in the
/// terminal, set-up tracing in one stream, or stepwise's one sequence.
const ONE_PROCESS: [&str; 8] =
    ["--pdb", "--trace", "--pdbcls", "--setup-show", "--sw", "--stepwise", "--sw-skip", "--stepwise-skip"];

/// Why pytest must run in place of shoal's workers, for these pytest
/// arguments: a mode that runs no test, or one that needs one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InPlace {
    /// `--co`, `--fixtures`, `--markers`, `--version`, ...
    NoTestRun,
    /// `-h`/`--help`: pytest's help, then shoal's.
    Help,
    /// `--pdb`, `--trace`, `--pdbcls`, `--setup-show`, `--sw`: one pytest
    /// process in this terminal.
    OneProcess(&'static str),
}

/// Whether these pytest arguments ask for something only pytest itself, in
/// this terminal, can do.
///
/// # Examples
/// `--co` runs no test; `--pdb` stops in a debugger that needs this
/// terminal; `--sw` continues one sequence from its last failure.
pub fn in_place(pytest_args: &[String]) -> Option<InPlace> {
    let names = pytest_args
        .iter()
        .map(|argument| argument.split_once('=').map_or(argument.as_str(), |(name, _)| name));
    let mut found = None;
    for name in names {
        if matches!(name, "-h" | "--help") {
            return Some(InPlace::Help);
        }
        if NON_RUNNING.contains(&name) {
            found = Some(InPlace::NoTestRun);
        } else if let Some(option) = ONE_PROCESS.iter().find(|option| **option == name) {
            found = found.or(Some(InPlace::OneProcess(option)));
        }
    }
    found
}

/// pytest's option table for one interpreter: every option string of the
/// installed pytest and its plugins, and whether it takes a value.
#[derive(Debug, Default)]
pub struct PytestOptions {
    takes_value: HashMap<String, bool>,
}

/// Prints pytest's argparse option table (built-in options and those of the
/// plugins pytest loads from entry points) as JSON. (pytest 9 builds its
/// argparse parser up front as `optparser`; earlier ones on demand.)
const OPTION_TABLE_SCRIPT: &str = r#"
import json, os
from _pytest.config import get_config
config = get_config()
if not os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
    config.pluginmanager.load_setuptools_entrypoints("pytest11")
parser = getattr(config._parser, "optparser", None) or config._parser._getparser()
print(json.dumps({name: action.nargs != 0 for action in parser._actions for name in action.option_strings}))
"#;

impl PytestOptions {
    /// The table for `python`: from the cache when the environment has not
    /// changed since, else asked from pytest itself (and cached). An empty
    /// table when pytest cannot answer (every option is then unknown).
    pub fn load(python: &Path, cache_root: &Path) -> Self {
        let cache = cache_root.join(format!("pytest-options-{:016x}.json", environment_key(python)));
        if let Some(takes_value) =
            std::fs::read(&cache).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok())
        {
            return Self { takes_value };
        }
        let answer = Command::new(python).args(["-c", OPTION_TABLE_SCRIPT]).output();
        let takes_value: HashMap<String, bool> = answer
            .ok()
            .filter(|output| output.status.success())
            .and_then(|output| serde_json::from_slice(&output.stdout).ok())
            .unwrap_or_default();
        if !takes_value.is_empty() {
            let _ =
                crate::fs::write_atomically(&cache, &serde_json::to_vec(&takes_value).unwrap_or_default());
        }
        Self { takes_value }
    }

    /// Whether `option` (`--tb`, `-r`) takes a value; `None` when pytest
    /// does not know it.
    pub fn takes_value(&self, option: &str) -> Option<bool> {
        self.takes_value.get(option).copied()
    }
}

/// Identifies an environment: the interpreter's path and when its
/// `site-packages` directories last changed (installing or removing a
/// plugin changes them).
fn environment_key(python: &Path) -> u64 {
    let mut key = python.to_string_lossy().into_owned();
    let prefix = python.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
    for library in ["lib", "lib64"] {
        let Ok(entries) = std::fs::read_dir(prefix.join(library)) else { continue };
        let mut site_packages: Vec<PathBuf> = entries
            .flatten()
            .map(|entry| entry.path().join("site-packages"))
            .filter(|path| path.is_dir())
            .collect();
        site_packages.sort();
        for directory in site_packages {
            let modified = std::fs::metadata(&directory).and_then(|metadata| metadata.modified()).ok();
            key.push_str(&format!("|{}|{modified:?}", directory.display()));
        }
    }
    crate::python::fnv1a64(key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn own() -> OwnOptions {
        let cli = crate::cli::Cli::command();
        OwnOptions::of(cli.find_subcommand("run").expect("a run command"))
    }

    /// pytest's options as the tests need them.
    fn pytest_table(option: &str) -> Option<bool> {
        match option {
            "--tb" | "-r" | "-p" | "-W" | "-c" | "-o" | "--deselect" | "--ignore" | "--rootdir"
            | "--basetemp" | "--import-mode" | "--confcutdir" => Some(true),
            "-s" | "--runxfail" | "--strict-markers" | "--co" | "--collect-only" | "--pdb" | "-l"
            | "--sw" => Some(false),
            _ => None,
        }
    }

    fn split_words(line: &str) -> Vec<String> {
        let arguments: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        split(&arguments, &own(), &mut pytest_table).iter().map(|word| (*word).clone()).collect()
    }

    #[test]
    fn pytest_options_move_behind_a_double_dash_with_their_values_in_order() {
        assert_eq!(
            split_words("-n 2 --tb short tests -rA -q --ignore=tests/slow -W error"),
            ["-n", "2", "tests", "-q", "--", "--tb", "short", "-rA", "--ignore=tests/slow", "-W", "error"]
        );
    }

    #[test]
    fn short_clusters_are_split_between_shoal_and_pytest() {
        assert_eq!(split_words("-xvs tests"), ["-x", "-v", "tests", "--", "-s"]);
        assert_eq!(split_words("-n2 -kfoo"), ["-n2", "-kfoo"]);
        let arguments = ["-k", "a or b", "-p", "no:cacheprovider"].map(str::to_owned);
        assert_eq!(
            split(&arguments, &own(), &mut pytest_table),
            ["-k", "a or b", "--", "-p", "no:cacheprovider"]
        );
    }

    #[test]
    fn arguments_after_double_dash_stay_last_and_untouched() {
        assert_eq!(split_words("--tb=line tests -- -k x"), ["tests", "--", "--tb=line", "-k", "x"]);
        assert_eq!(split_words("tests -n 3"), ["tests", "-n", "3"]);
    }

    #[test]
    fn an_option_pytest_does_not_know_keeps_a_path_after_it_a_path() {
        let cwd = std::env::current_dir().expect("a cwd");
        let existing = cwd.join("Cargo.toml");
        let existing = existing.to_str().expect("UTF-8");
        assert_eq!(split_words(&format!("--bogus {existing}")), [existing, "--", "--bogus"]);
        assert_eq!(split_words("--bogus value"), ["--", "--bogus", "value"]);
    }

    #[test]
    fn shoal_options_keep_their_values_and_optional_ones_take_no_option() {
        assert_eq!(split_words("--cov --tb short"), ["--cov", "--", "--tb", "short"]);
        assert_eq!(split_words("--timeout 30 --maxfail 2"), ["--timeout", "30", "--maxfail", "2"]);
    }
}
