//! Atomic file writes: everything goes to a hidden temporary file in the
//! target's directory, is flushed and synced, and is renamed over the final
//! name only when the writer succeeded. A failing or panicking writer leaves
//! no file under the final name (and no temporary file either).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes through a seekable buffered file (TIFF writers need `Seek`), then
/// renames the temporary file over `path`.
pub(crate) fn write_atomic_seek(path: &Path, f: impl FnOnce(&mut BufWriter<File>) -> Result<()>) -> Result<()> {
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(Error::file(path, format!("cannot write: directory {} does not exist", dir.display())));
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(|e| Error::file(path, format!("cannot create a temporary file in {}: {e}", dir.display())))?;
    let mut w = BufWriter::new(
        tmp.as_file().try_clone().map_err(|e| Error::file(path, format!("cannot open temporary file: {e}")))?,
    );
    // On error the NamedTempFile is dropped, which deletes the temporary file.
    f(&mut w)?;
    w.flush().map_err(|e| Error::file(path, format!("write failed: {e}")))?;
    drop(w);
    tmp.as_file().sync_all().map_err(|e| Error::file(path, format!("sync failed: {e}")))?;
    let f = tmp
        .persist(path)
        .map_err(|e| Error::file(path, format!("cannot rename temporary file into place: {}", e.error)))?;
    readable_by_all(&f);
    Ok(())
}

/// Temporary files are created owner-only (0600); a finished output gets the
/// usual 0644 so colleagues and other jobs can read it.
pub fn readable_by_all(f: &File) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = f.set_permissions(std::fs::Permissions::from_mode(0o644));
    }
    #[cfg(not(unix))]
    let _ = f;
}

/// Atomic write of any file: the closure writes to a temporary file in the
/// target's directory, which is renamed to `path` only if the closure
/// returns `Ok`. On error nothing is left under `path` (an existing file
/// there is untouched).
pub fn write_atomic(path: &Path, f: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    write_atomic_seek(path, |w| f(w))
}
