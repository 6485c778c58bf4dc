//! Finding the Python interpreter and installing the embedded worker plugin.
//!
//! The plugin (the package `python/shoal_worker/`, with
//! `python/shoal_coverage.py` for `--cov`) is compiled into the binary, so a
//! `pip install` and a `cargo install` carry a worker that matches the
//! binary's protocol. At start it is written, once per content, to a cache
//! directory that goes on the workers' `PYTHONPATH`. The worker plugin is a
//! package so its submodules' names cannot clash with a user's modules.

use std::path::{Path, PathBuf};

use crate::errors::ShoalError;

/// The module name workers load with `-p`: the plugin's package.
pub const WORKER_PLUGIN_MODULE: &str = "shoal_worker";

/// The module that measures and reports coverage (`python -m` after a run).
pub const COVERAGE_MODULE: &str = "shoal_coverage";

/// The plugin's files: path in the plugin directory (`/`-separated) and
/// source. Every file under `python/` is here (a unit test checks it).
const PLUGIN_FILES: [(&str, &str); 11] = [
    ("shoal_worker/__init__.py", include_str!("../python/shoal_worker/__init__.py")),
    ("shoal_worker/collection.py", include_str!("../python/shoal_worker/collection.py")),
    ("shoal_worker/descriptors.py", include_str!("../python/shoal_worker/descriptors.py")),
    ("shoal_worker/environment.py", include_str!("../python/shoal_worker/environment.py")),
    ("shoal_worker/protocol.py", include_str!("../python/shoal_worker/protocol.py")),
    ("shoal_worker/running.py", include_str!("../python/shoal_worker/running.py")),
    ("shoal_worker/session.py", include_str!("../python/shoal_worker/session.py")),
    ("shoal_worker/xdist_surface.py", include_str!("../python/shoal_worker/xdist_surface.py")),
    ("shoal_worker/zygote.py", include_str!("../python/shoal_worker/zygote.py")),
    ("shoal_coverage.py", include_str!("../python/shoal_coverage.py")),
    ("shoal_affected.py", include_str!("../python/shoal_affected.py")),
];

/// An interpreter and how shoal chose it (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    /// The executable.
    pub path: PathBuf,
    /// Which rule picked it, e.g. `--python` or `$VIRTUAL_ENV`.
    pub origin: &'static str,
}

impl Interpreter {
    /// Runs `python -m pytest ARGS` in `cwd`, in this terminal (its output
    /// is pytest's own), and returns pytest's exit code.
    pub fn run_pytest_here(&self, arguments: &[String], cwd: &Path) -> Result<u8, ShoalError> {
        let status = std::process::Command::new(&self.path)
            .args(["-m", "pytest"])
            .args(arguments)
            .current_dir(cwd)
            .status()
            .map_err(|source| ShoalError::PythonNotStartable {
                python: self.path.clone(),
                origin: self.origin,
                source,
            })?;
        Ok(status
            .code()
            .and_then(|code| u8::try_from(code).ok())
            .unwrap_or(crate::errors::exit_code::INTERNAL_ERROR))
    }
}

/// Picks the interpreter: `--python` (or `[tool.shoal] python`), else
/// `$VIRTUAL_ENV`, else the environment shoal itself is installed in, else
/// `./.venv`, else `python3` on `PATH`.
pub fn locate_interpreter(explicit: Option<&Path>, cwd: &Path) -> Interpreter {
    if let Some(path) = explicit {
        return Interpreter { path: path.to_owned(), origin: "--python" };
    }
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|value| !value.is_empty()) {
        return Interpreter { path: venv_python(Path::new(&venv)), origin: "$VIRTUAL_ENV" };
    }
    // A pip-installed shoal sits in the venv's bin directory beside python.
    if let Some(bin) = std::env::current_exe().ok().as_deref().and_then(Path::parent) {
        for name in ["python", "python3"] {
            let candidate = bin.join(name);
            if candidate.is_file() && bin.parent().is_some_and(|env| env.join("pyvenv.cfg").is_file()) {
                return Interpreter { path: candidate, origin: "the environment shoal is installed in" };
            }
        }
    }
    let local = cwd.join(".venv");
    if local.join("pyvenv.cfg").is_file() {
        return Interpreter { path: venv_python(&local), origin: "./.venv" };
    }
    Interpreter { path: PathBuf::from("python3"), origin: "python3 on PATH" }
}

fn venv_python(venv: &Path) -> PathBuf {
    venv.join("bin").join("python")
}

/// Writes the plugin's files to the cache (if not already there) and
/// returns the directory to put on `PYTHONPATH`.
pub fn install_worker_plugin() -> Result<PathBuf, ShoalError> {
    let digest =
        fnv1a64(PLUGIN_FILES.map(|(path, source)| format!("{path}\0{source}\0")).concat().as_bytes());
    let directory = cache_root().join(format!("plugin-{}-{digest:016x}", env!("CARGO_PKG_VERSION")));
    let context = |what: &str| format!("{what} {}", directory.display());
    for (path, source) in PLUGIN_FILES {
        let target = directory.join(path);
        if std::fs::read_to_string(&target).is_ok_and(|existing| existing == source) {
            continue;
        }
        let parent = target.parent().unwrap_or(&directory);
        std::fs::create_dir_all(parent)
            .map_err(|error| ShoalError::io(context("creating the plugin directory"), error))?;
        let mut temporary = tempfile::NamedTempFile::new_in(parent)
            .map_err(|error| ShoalError::io(context("writing the worker plugin to"), error))?;
        std::io::Write::write_all(&mut temporary, source.as_bytes())
            .map_err(|error| ShoalError::io(context("writing the worker plugin to"), error))?;
        temporary
            .persist(&target)
            .map_err(|error| ShoalError::io(context("writing the worker plugin to"), error.error))?;
    }
    Ok(directory)
}

/// `PYTHONPATH` for a process that loads the plugin: its directory first,
/// then the user's own entries.
pub(crate) fn python_path(plugin_dir: &Path) -> std::ffi::OsString {
    let mut value = plugin_dir.as_os_str().to_owned();
    if let Some(existing) = std::env::var_os("PYTHONPATH").filter(|value| !value.is_empty()) {
        value.push(":");
        value.push(existing);
    }
    value
}

pub(crate) fn cache_root() -> PathBuf {
    if let Some(cache) = std::env::var_os("XDG_CACHE_HOME").filter(|value| !value.is_empty()) {
        return PathBuf::from(cache).join("shoal");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|value| !value.is_empty()) {
        return PathBuf::from(home).join(".cache").join("shoal");
    }
    std::env::temp_dir().join("shoal-cache")
}

/// FNV-1a: a stable content hash for the cache directory name (std's hasher
/// may change between releases).
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_interpreter_wins() {
        let found = locate_interpreter(Some(Path::new("/opt/py/bin/python")), Path::new("/"));
        assert_eq!(found, Interpreter { path: "/opt/py/bin/python".into(), origin: "--python" });
    }

    #[test]
    fn the_plugin_is_installed_once_per_content() {
        let first = install_worker_plugin().unwrap();
        let second = install_worker_plugin().unwrap();
        assert_eq!(first, second);
        for (path, source) in PLUGIN_FILES {
            let text = std::fs::read_to_string(first.join(path)).unwrap();
            assert_eq!(text, source);
        }
    }

    #[test]
    fn every_plugin_file_is_embedded() {
        fn python_files(directory: &Path, root: &Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(directory).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    python_files(&path, root, found);
                } else if path.extension().is_some_and(|extension| extension == "py") {
                    let relative = path.strip_prefix(root).unwrap();
                    found.push(relative.to_str().unwrap().replace(std::path::MAIN_SEPARATOR, "/"));
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
        let mut on_disk = Vec::new();
        python_files(&root, &root, &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = PLUGIN_FILES.iter().map(|(path, _)| (*path).to_owned()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
        assert!(embedded.contains(&format!("{WORKER_PLUGIN_MODULE}/__init__.py")));
        assert!(embedded.contains(&format!("{COVERAGE_MODULE}.py")));
    }
}
