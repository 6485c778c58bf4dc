//! `shoal config`: the settings a `shoal run` with the same options would
//! use, one a line with where each came from, or (`--profiles`) the config
//! file's profiles.

use std::io::Write;
use std::path::PathBuf;

use crate::cli::ConfigArgs;
use crate::errors::{ShoalError, exit_code};
use crate::settings::{ProfileInfo, RunSettings};

/// Prints the resolved settings, or the profiles, to `out`.
pub fn config(args: ConfigArgs, cwd: PathBuf, out: &mut dyn Write) -> Result<u8, ShoalError> {
    let write_error = |error| ShoalError::io("writing the settings", error);
    if args.profiles {
        let (path, profiles) = crate::settings::profiles(&cwd)?;
        return print_profiles(path, &profiles, out).map_err(write_error);
    }
    let settings = RunSettings::resolve(args.run, cwd)?;
    let resolution = &settings.resolution;
    if let Some(path) = &resolution.config_file {
        writeln!(out, "config file: {}", path.display()).map_err(write_error)?;
    }
    let width = resolution.settings.iter().map(|setting| setting.key.len()).max().unwrap_or(0);
    for setting in &resolution.settings {
        let value = match &setting.value {
            serde_json::Value::Null => "-".to_owned(),
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        writeln!(out, "{:width$}  {value}  ({})", setting.key, setting.source).map_err(write_error)?;
    }
    Ok(exit_code::OK)
}

/// One line per profile: its name, what it inherits, where it is.
fn print_profiles(
    path: Option<PathBuf>,
    profiles: &[ProfileInfo],
    out: &mut dyn Write,
) -> std::io::Result<u8> {
    let Some(path) = path else {
        writeln!(out, "no config file (shoal.toml, or [tool.shoal] in pyproject.toml) here or above")?;
        return Ok(exit_code::OK);
    };
    if profiles.is_empty() {
        writeln!(out, "{}: no profiles", path.display())?;
    }
    let width = profiles.iter().map(|profile| profile.name.len()).max().unwrap_or(0);
    for profile in profiles {
        let inherits =
            profile.inherits.as_deref().map_or_else(String::new, |name| format!("  inherits {name}"));
        writeln!(out, "{:width$}  {}{inherits}", profile.name, profile.location)?;
    }
    Ok(exit_code::OK)
}
