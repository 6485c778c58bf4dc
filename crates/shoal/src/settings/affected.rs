//! `--affected`'s settings, resolved from the stacked [`Layer`]: on or off,
//! whether cached results are used, the tests to explain, and what every
//! test may read that shoal cannot see (`affected-inputs`, `affected-env`).

use super::layer::Layer;

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
