//! `--affected`'s settings, resolved from the stacked [`Layer`]: on or off,
//! whether cached results are used, the tests to explain, and what every
//! test may read that shoal cannot see (`affected-inputs`, `affected-env`);
//! and `shoal why`'s settings, which are a run's with `--affected`.

use std::path::PathBuf;

use super::layer::Layer;
use super::{CollectSettings, Resolution, coverage_arguments, flags};
use crate::cli::{SelectionArgs, WhyArgs};
use crate::errors::ShoalError;

/// `--affected`'s settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffectedSettings {
    /// False with `--no-cache-results`/`--force`: everything runs (and is
    /// recorded afresh).
    pub use_cache: bool,
    /// `--explain NODEID`: tests to say the verdict of.
    pub explain: Vec<String>,
    /// `affected-inputs`: glob patterns of files every test may read.
    pub inputs: Vec<String>,
    /// `affected-env`: variables every test may read.
    pub environment_variables: Vec<String>,
}

impl AffectedSettings {
    /// The settings when `affected` is on, else `None`.
    pub(super) fn from_layer(layer: &Layer, explain: &[String]) -> Option<Self> {
        (layer.affected == Some(true)).then(|| Self::on(layer, explain))
    }

    /// The settings of a run with `--affected` (`shoal why` asks as one
    /// would, whether or not the file turns it on).
    pub(super) fn on(layer: &Layer, explain: &[String]) -> Self {
        Self {
            use_cache: layer.no_cache_results != Some(true),
            explain: explain.to_vec(),
            inputs: layer.affected_inputs.clone().unwrap_or_default(),
            environment_variables: layer.affected_env.clone().unwrap_or_default(),
        }
    }
}

impl CollectSettings {
    /// Resolves `shoal why`'s settings: what to collect, with pytest's
    /// arguments as a run would give them (pytest-cov's included), and
    /// `--affected`'s settings from the file.
    pub fn resolve_for_why(args: WhyArgs, cwd: PathBuf) -> Result<(Self, AffectedSettings), ShoalError> {
        let selection = SelectionArgs {
            paths: args.nodeids,
            select: Vec::new(),
            keyword: None,
            markers: None,
            profile: args.profile,
            python: args.python,
            pytest_args: args.pytest_args,
        };
        let resolution = Resolution::gather(
            flags::selection_layer(&selection),
            selection.profile,
            &cwd,
            &mut |warning| crate::output::warn(&warning),
        )?;
        let layer = &resolution.stacked;
        let mut collect = Self::from_layer(layer, 0, cwd)?;
        collect.pytest_args.extend(coverage_arguments(layer));
        Ok((collect, AffectedSettings::on(layer, &[])))
    }
}
