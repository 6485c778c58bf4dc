//! The run's side of the collection phase: whether collection is split,
//! and how (the selection names whole files, no plugin needs the whole
//! collection, and the history says importing, or building the items, is a
//! large share of the run), and each worker's share of the test files.

use std::collections::HashSet;
use std::path::Path;

use crate::history::{History, HistoryPaths};
use crate::plan::{self, SplitKind};
use crate::pool::CollectionPlanner;
use crate::protocol::Hello;
use crate::settings::{CollectSettings, CollectionMode, RunSettings};

/// The run's answers to the collection phase: whether to split collection
/// (asked once the zygote's `hello` names the plugins and the rootdir) and
/// each worker's share of the test files, from the durations history, read
/// here once for the whole run.
pub(super) struct RunPlanner<'a> {
    settings: &'a RunSettings,
    history: Option<History>,
    /// How collection is split, once decided.
    kind: Option<SplitKind>,
}

impl<'a> RunPlanner<'a> {
    pub(super) fn new(settings: &'a RunSettings) -> Self {
        Self { settings, history: None, kind: None }
    }

    /// The history, read now if collection did not need it.
    pub(super) fn into_history(mut self, rootdir: &str) -> History {
        self.history(rootdir);
        self.history.take().expect("just read")
    }

    fn history(&mut self, rootdir: &str) -> &History {
        let durations = self.settings.durations_path.as_deref();
        self.history.get_or_insert_with(|| History::load(&HistoryPaths::new(Path::new(rootdir), durations)))
    }
}

impl CollectionPlanner for RunPlanner<'_> {
    fn split(&mut self, hello: &Hello) -> Option<SplitKind> {
        let settings = self.settings;
        let history = self.history(&hello.environment.rootdir);
        if settings.collection == CollectionMode::Full || names_tests(&settings.collect) {
            return None;
        }
        let kind = match plugin_needing_whole_collection(&hello.environment.plugins) {
            Some(plugin) => {
                crate::output::notice(&format!(
                    "collecting every test file before forking: {plugin} works on the whole collection"
                ));
                None
            }
            None if settings.collection == CollectionMode::Split => Some(SplitKind::DividingImports),
            None if settings.collection == CollectionMode::Items => Some(SplitKind::KeepingImports),
            None => plan::split_pays(history, settings.workers).map(|(kind, reason)| {
                crate::output::notice(&reason);
                kind
            }),
        };
        self.kind = kind;
        kind
    }

    fn shares(&mut self, files: &[String], together: &[Vec<usize>], workers: usize) -> plan::Shares {
        let history = self.history.as_ref().expect("split was decided, with the history, before shares");
        let kind = self.kind.expect("shares are asked for a split collection");
        plan::file_shares(files, together, history, kind, workers)
    }
}

/// Whether the selection names tests inside files (`file.py::test`): split
/// collection hands whole files to the workers, so such a run collects in
/// full.
fn names_tests(collect: &CollectSettings) -> bool {
    // `--deselect ID` names a test too, but to leave it out: split
    // collection applies it in the workers.
    let deselected =
        collect.pytest_args.windows(2).filter(|pair| pair[0] == "--deselect").map(|pair| &pair[1]);
    let deselected: HashSet<&String> = deselected.collect();
    collect.selection.entries.iter().any(|entry| entry.argument.contains("::"))
        || collect.pytest_args.iter().any(|argument| {
            !argument.starts_with('-') && argument.contains("::") && !deselected.contains(argument)
        })
}

/// pytest plugins whose `pytest_collection_modifyitems` works on the whole
/// collection at once (selecting a part of it, or ordering tests across
/// files): under split collection each worker would apply them to its share.
const WHOLE_COLLECTION_PLUGINS: &[&str] = &["split", "test-groups", "order", "ordering", "depends"];

/// The first active plugin (as `name-version`) that needs the whole
/// collection, if any.
fn plugin_needing_whole_collection(plugins: &[String]) -> Option<&str> {
    plugins.iter().map(String::as_str).find(|plugin| {
        plugin.rsplit_once('-').is_some_and(|(name, _)| WHOLE_COLLECTION_PLUGINS.contains(&name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugins_that_need_the_whole_collection_are_recognised_by_name() {
        let plugins = |names: &[&str]| names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            plugin_needing_whole_collection(&plugins(&["xdist-3.8.0", "split-0.10.0"])),
            Some("split-0.10.0")
        );
        assert_eq!(plugin_needing_whole_collection(&plugins(&["order-1.3.0"])), Some("order-1.3.0"));
        assert_eq!(plugin_needing_whole_collection(&plugins(&["cov-7.1.0", "randomly-3.16.0"])), None);
    }
}
