//! What a worker process is started with: the interpreter, the plugin, the
//! pytest arguments (a user's `--basetemp` becomes the root of one directory
//! per worker), the shared hash seed and run id, and the run's temporary
//! directory.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::errors::ShoalError;
use crate::settings::CollectSettings;
use crate::worker::WorkerSpec;

/// Builds the worker command line and environment for these settings.
pub(crate) fn worker_spec(
    collect: &CollectSettings,
    worker_count: usize,
    memory_limit_kib: Option<u64>,
    serial_markers: &[String],
    run_directory: &std::path::Path,
) -> Result<WorkerSpec, ShoalError> {
    let plugin_dir = crate::python::install_worker_plugin()?;
    let (user_args, basetemp) = take_basetemp(&collect.pytest_args);
    let basetemp = basetemp.map(|directory| collect.cwd.join(directory));
    if let Some(directory) = &basetemp {
        // pytest creates a given basetemp itself, but not its parents: each
        // worker's is one level down.
        std::fs::create_dir_all(directory)
            .map_err(|error| ShoalError::io(format!("creating --basetemp {}", directory.display()), error))?;
    }
    let pytest_args = collect.pytest_arguments(&user_args);
    let hash_seed = std::env::var("PYTHONHASHSEED")
        .ok()
        .filter(|value| !value.is_empty() && value != "random")
        .unwrap_or_else(|| (u64::from(std::process::id()) ^ (now_nanos() % 4_294_967_295)).to_string());
    Ok(WorkerSpec {
        python: collect.interpreter.path.clone(),
        plugin_dir,
        pytest_args,
        basetemp_root: basetemp.unwrap_or_else(|| run_directory.to_owned()),
        working_directory: collect.cwd.clone(),
        hash_seed,
        worker_count,
        memory_limit_kib,
        echo_output: crate::settings::capture_is_off(&collect.pytest_args),
        serial_markers: serial_markers.to_vec(),
        run_id: format!("{:x}{:x}", std::process::id(), now_nanos()),
        coverage_directory: run_directory.join("coverage"),
        affected_directory: None,
        last_failed_only: false,
        mainargv: std::env::args().collect(),
        workerinputs: HashMap::new(),
        controller_output: run_directory.join("workerinput.json"),
    })
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_nanos() % u128::from(u64::MAX)).unwrap_or(0))
}

/// Removes a user's `--basetemp` from the pytest arguments: each worker gets
/// its own directory below it instead of sharing (and wiping) one.
fn take_basetemp(arguments: &[String]) -> (Vec<String>, Option<PathBuf>) {
    let mut kept = Vec::new();
    let mut basetemp = None;
    let mut iterator = arguments.iter();
    while let Some(argument) = iterator.next() {
        if argument == "--basetemp" {
            basetemp = iterator.next().map(PathBuf::from);
        } else if let Some(value) = argument.strip_prefix("--basetemp=") {
            basetemp = Some(PathBuf::from(value));
        } else {
            kept.push(argument.clone());
        }
    }
    (kept, basetemp)
}

/// The run's temporary directory (workers' base temp, coverage data).
pub(crate) fn run_directory() -> Result<tempfile::TempDir, ShoalError> {
    tempfile::Builder::new()
        .prefix("shoal-run-")
        .tempdir()
        .map_err(|error| ShoalError::io("creating the run's temporary directory", error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_basetemp_becomes_the_root_of_per_worker_ones() {
        let arguments = ["-p".to_owned(), "x".to_owned(), "--basetemp".to_owned(), "/tmp/b".to_owned()];
        let (kept, basetemp) = take_basetemp(&arguments);
        assert_eq!(kept, ["-p", "x"]);
        assert_eq!(basetemp, Some(PathBuf::from("/tmp/b")));
        let (_, basetemp) = take_basetemp(&["--basetemp=/x".to_owned()]);
        assert_eq!(basetemp, Some(PathBuf::from("/x")));
    }
}
