//! Atomic file writes: everything goes to a hidden temporary file in the
//! target's directory, is flushed and synced, and is renamed over the final
//! name only when the writer succeeded. A failing or panicking writer leaves
//! no file under the final name (and no temporary file either). A
//! [`FileGroup`] does the same for several files that belong together.

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

/// Whether `a` and `b` name one file: the same path, or two paths to one
/// existing file (links, `./`, `..`).
pub fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

/// Refuses to write `out` when it names one of `inputs`, so no output
/// replaces what the user gave; the error names both.
pub fn refuse_input(out: &Path, inputs: &[&Path]) -> Result<()> {
    match inputs.iter().find(|i| same_file(out, i)) {
        Some(i) => Err(Error::file(
            out,
            format!("is also an input ({}); refusing to overwrite it: choose another output name", i.display()),
        )),
        None => Ok(()),
    }
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

/// Files that appear together or not at all (one input's labels, criteria
/// and probability maps). [`FileGroup::add`] writes each to a hidden
/// temporary file beside its final name; [`FileGroup::commit`] renames them
/// all into place. If a write or a rename fails, the temporary files are
/// removed and so is every file this group already renamed into place;
/// dropping a group without committing removes its temporary files.
#[derive(Default)]
pub struct FileGroup {
    staged: Vec<(tempfile::TempPath, PathBuf)>,
}

impl FileGroup {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes the member `path`: `write` gets the temporary path to write
    /// (with any writer of this module, or any other). Errors that name the
    /// temporary file name `path` instead.
    pub fn add(&mut self, path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        let dir = parent_dir(path);
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(|e| Error::file(path, format!("cannot create a temporary file in {}: {e}", dir.display())))?
            .into_temp_path();
        write(&tmp).map_err(|e| match e {
            Error::File { path: p, message } if p == *tmp => Error::file(path, message),
            e => e,
        })?;
        self.staged.push((tmp, path.to_path_buf()));
        Ok(())
    }

    /// Renames every member into place, in the order added.
    pub fn commit(mut self) -> Result<()> {
        let mut done: Vec<PathBuf> = Vec::new();
        for (tmp, path) in self.staged.drain(..) {
            if let Err(e) = tmp.persist(&path) {
                // The temporary files not yet renamed are removed as the drain drops them.
                for p in &done {
                    let _ = std::fs::remove_file(p);
                }
                return Err(Error::file(&path, format!("cannot rename temporary file into place: {}", e.error)));
            }
            if let Ok(f) = File::open(&path) {
                readable_by_all(&f);
            }
            done.push(path);
        }
        Ok(())
    }
}
