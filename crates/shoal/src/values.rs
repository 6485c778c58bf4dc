//! What each setting accepts, declared once for every place it is typed.
//!
//! An enumerated option is one enum deriving [`clap::ValueEnum`] (the words
//! the command line accepts) and, where `[tool.shoal]` has the key too,
//! [`serde::Deserialize`] with the same kebab-case words. Counts, durations
//! and sizes are spelled the same way on the command line and in the file:
//! one parsing function each.

/// How workers come to be (see [`crate::worker`]): `--mode`,
/// `[tool.shoal] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerMode {
    /// One process collects, then forks warm workers (the default on Linux).
    Fork,
    /// Every worker is its own pytest process that collects on its own.
    Spawn,
    /// Fork where it is safe, else spawn with a notice saying why.
    Auto,
}

/// How fork mode collects (see [`crate::pool`]): `--collect`,
/// `[tool.shoal] collect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CollectionMode {
    /// Split (dividing the imports or keeping them) where history says it
    /// pays, else full (the default; see [`crate::plan::split_pays`]).
    Auto,
    /// The zygote stops at the test files; each worker imports and collects
    /// its share of them.
    Split,
    /// The zygote imports every test module; each worker builds the items
    /// of its share of them.
    Items,
    /// The zygote imports and collects everything before forking.
    Full,
}

/// `--color`, `color`: whether to colour the terminal report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Colour {
    /// On a terminal, unless the environment says otherwise.
    Auto,
    /// Always (`yes` too).
    #[value(alias = "yes")]
    #[serde(alias = "yes")]
    Always,
    /// Never (`no` too).
    #[value(alias = "no")]
    #[serde(alias = "no")]
    Never,
}

/// `--failure-output`, `failure-output`: when failures are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureOutput {
    /// As each test fails; not repeated at the end.
    Immediate,
    /// After the run, as pytest does (the default).
    Final,
}

/// A worker count as typed: `-n`, `[tool.shoal] workers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WorkerCount {
    /// The CPUs this process may use.
    Auto,
    /// This many.
    Fixed(usize),
}

impl serde::Serialize for WorkerCount {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => serializer.serialize_str("auto"),
            Self::Fixed(count) => serializer.serialize_u64(*count as u64),
        }
    }
}

/// One setting as a run resolved it: its key (as spelt in `[tool.shoal]`),
/// its value, and where the value came from (`flag --timeout`,
/// `environment SHOAL_PROFILE`, `pyproject.toml:12 [tool.shoal.profile.ci]`,
/// `default`). `shoal config` prints these; the JSON report records them.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedSetting {
    /// The key, e.g. `timeout`.
    pub key: String,
    /// The value (null when the setting is off or unset).
    pub value: serde_json::Value,
    /// Where it came from.
    pub source: String,
}

impl WorkerCount {
    /// `auto` or a positive number.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        if text == "auto" {
            return Some(Self::Auto);
        }
        text.parse::<usize>().ok().filter(|&n| n > 0).map(Self::Fixed)
    }
}

/// Seconds from `30`, `2.5` or a duration such as `2m` / `1m30s`.
pub(crate) fn parse_seconds(text: &str) -> Option<f64> {
    let seconds = match text.trim().parse::<f64>() {
        Ok(seconds) => seconds,
        Err(_) => humantime::parse_duration(text.trim()).ok()?.as_secs_f64(),
    };
    (seconds.is_finite() && seconds > 0.0).then_some(seconds)
}

/// KiB from a size such as `512M`, `2G`, `1.5GiB`, `800MB` or plain bytes.
pub(crate) fn parse_size_kib(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.trim().parse().ok()?;
    let multiplier = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0 / 1024.0,
        "k" | "kb" | "kib" => 1.0,
        "m" | "mb" | "mib" => 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0,
        _ => return None,
    };
    let kib = number * multiplier;
    (kib.is_finite() && kib >= 1.0).then_some(kib as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_and_sizes_parse_in_the_usual_spellings() {
        assert_eq!(parse_seconds("30"), Some(30.0));
        assert_eq!(parse_seconds("2.5"), Some(2.5));
        assert_eq!(parse_seconds("1m30s"), Some(90.0));
        assert_eq!(parse_seconds("0"), None);
        assert_eq!(parse_seconds("soon"), None);
        assert_eq!(parse_size_kib("500M"), Some(500 * 1024));
        assert_eq!(parse_size_kib("2G"), Some(2 * 1024 * 1024));
        assert_eq!(parse_size_kib("1.5GiB"), Some(1536 * 1024));
        assert_eq!(parse_size_kib("1048576"), Some(1024));
        assert_eq!(parse_size_kib("12 parsecs"), None);
    }

    #[test]
    fn worker_counts_parse_auto_and_positive_numbers() {
        assert_eq!(WorkerCount::parse("auto"), Some(WorkerCount::Auto));
        assert_eq!(WorkerCount::parse("12"), Some(WorkerCount::Fixed(12)));
        assert_eq!(WorkerCount::parse("0"), None);
        assert_eq!(WorkerCount::parse("-2"), None);
    }
}
