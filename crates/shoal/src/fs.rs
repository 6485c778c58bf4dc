//! Files shoal writes for others to read (reports, the durations history,
//! pytest's last-failed record): written whole or not at all, so a reader
//! never sees half a file, even when shoal is killed while writing.

use std::path::{Path, PathBuf};

use crate::errors::ShoalError;

/// Writes `contents` to `path` atomically: a temp file beside it, renamed.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), ShoalError> {
    write_atomically_with(path, |writer| writer.write_all(contents))
}

/// Writes a file atomically, streaming: `write` fills a buffered temp file
/// beside `path`, which then replaces `path` (readers never see half).
pub fn write_atomically_with(
    path: &Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<(), ShoalError> {
    let context = || format!("writing {}", path.display());
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&directory).map_err(|error| ShoalError::io(context(), error))?;
    let temporary =
        tempfile::NamedTempFile::new_in(&directory).map_err(|error| ShoalError::io(context(), error))?;
    // Temp files are private; what shoal writes is an ordinary file.
    std::fs::set_permissions(temporary.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(|error| ShoalError::io(context(), error))?;
    let mut writer = std::io::BufWriter::new(temporary);
    write(&mut writer)
        .and_then(|()| std::io::Write::flush(&mut writer))
        .map_err(|error| ShoalError::io(context(), error))?;
    let temporary = writer.into_inner().map_err(|error| ShoalError::io(context(), error.into_error()))?;
    temporary.persist(path).map_err(|error| ShoalError::io(context(), error.error))?;
    Ok(())
}
