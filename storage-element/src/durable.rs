//! The few file-system moves the write protocol is made of: temp files that delete
//! themselves unless kept, fsync of files and folders, and atomic replace by rename.
//!
//! All temp files live in the element's `tmp/` (same file system as `data/`), so a crash
//! leaves nothing half-written anywhere else and start-up can clear `tmp/` whole.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The file-system seam for fault drills: `ARTSTORE_FAULT_FSYNC_AFTER=N` makes every fsync
/// after the first N fail with an I/O error, as a dying disk does (read once at start).
/// Unset, every fsync is the file system's own.
fn fault_check() -> std::io::Result<()> {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static BUDGET: OnceLock<Option<AtomicU64>> = OnceLock::new();
    let budget = BUDGET.get_or_init(|| {
        std::env::var("ARTSTORE_FAULT_FSYNC_AFTER").ok().and_then(|v| v.parse().ok()).map(AtomicU64::new)
    });
    match budget {
        Some(left) if left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_err() => {
            Err(std::io::Error::other("injected fsync failure (ARTSTORE_FAULT_FSYNC_AFTER)"))
        }
        _ => Ok(()),
    }
}

static SYNC_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether an fsync failed in this process. After a failed fsync the kernel may have
/// dropped the dirty pages it could not write, so nothing written since can be trusted to
/// be durable: the element refuses writes until it is restarted (and recovers from its WAL).
pub fn sync_failed() -> bool {
    SYNC_FAILED.load(std::sync::atomic::Ordering::SeqCst)
}

fn note(r: std::io::Result<()>) -> std::io::Result<()> {
    if let Err(e) = &r
        && !SYNC_FAILED.swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        tracing::error!(error = %e, "fsync failed: this element refuses writes until it is restarted");
    }
    r
}

/// `fsync` of a file (data and metadata), through the fault seam.
pub fn sync_all(f: &File) -> std::io::Result<()> {
    note(fault_check().and_then(|()| f.sync_all()))
}

/// `fdatasync` of a file, through the fault seam.
pub fn sync_data(f: &File) -> std::io::Result<()> {
    note(fault_check().and_then(|()| f.sync_data()))
}

/// Fsyncs a directory so renames and creations inside it are durable.
pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    sync_all(&File::open(dir)?)
}

/// Creates `dir` and any missing parents, fsyncing each parent that gained an entry.
pub fn create_dir_durable(dir: &Path) -> std::io::Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(std::io::Error::other(format!("{} exists and is not a folder", dir.display())));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent() {
        create_dir_durable(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

/// A file in `tmp/` that is removed when dropped unless [`TempFile::persist`] moved it.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    /// Creates a new, empty temp file with a random name in `tmp_dir`.
    pub fn create(tmp_dir: &Path, what: &str) -> std::io::Result<(TempFile, File)> {
        let path = tmp_dir.join(format!("{}.{what}.tmp", Uuid::new_v4().simple()));
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
        Ok((TempFile { path, armed: true }, file))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the (already fsynced) temp file to `dest` and fsyncs `dest`'s folder.
    pub fn persist(mut self, dest: &Path) -> std::io::Result<()> {
        std::fs::rename(&self.path, dest)?;
        self.armed = false;
        if let Some(dir) = dest.parent() {
            fsync_dir(dir)?;
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Atomically replaces `dest` with `bytes`: temp file in `tmp_dir`, fsync, rename, fsync
/// of `dest`'s folder. Readers see the old or the new file, never a mix.
pub fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let (tmp, mut f) = TempFile::create(tmp_dir, "sidecar")?;
    f.write_all(bytes)?;
    sync_all(&f)?;
    drop(f);
    tmp.persist(dest)
}

/// Removes a file if it is there; `Ok(false)` if it was not.
pub fn remove_if_present(path: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes a file if it is there and fsyncs its folder so the removal is durable.
pub fn remove_durable(path: &Path) -> std::io::Result<()> {
    if remove_if_present(path)?
        && let Some(dir) = path.parent()
    {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// Copies `src` to `dest` durably through `tmp_dir` (fsync, rename, fsync folder).
pub fn copy_durable(src: &Path, tmp_dir: &Path, dest: &Path) -> std::io::Result<u64> {
    let (tmp, mut out) = TempFile::create(tmp_dir, "copy")?;
    let mut input = File::open(src)?;
    let n = std::io::copy(&mut input, &mut out)?;
    sync_all(&out)?;
    drop(out);
    if let Some(dir) = dest.parent() {
        create_dir_durable(dir)?;
    }
    tmp.persist(dest)?;
    Ok(n)
}

/// Removes everything in a temp folder (start-up: nothing in it was acknowledged).
pub fn clear_dir(dir: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        if e.file_type()?.is_dir() {
            std::fs::remove_dir_all(e.path())?;
        } else {
            std::fs::remove_file(e.path())?;
        }
        n += 1;
    }
    if n > 0 {
        fsync_dir(dir)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_file_is_removed_unless_persisted() {
        let d = tempfile::tempdir().unwrap();
        let (t, _f) = TempFile::create(d.path(), "x").unwrap();
        let p = t.path().to_owned();
        drop(t);
        assert!(std::fs::metadata(&p).is_err());
        write_atomic(d.path(), &d.path().join("out"), b"hello").unwrap();
        assert_eq!(std::fs::read(d.path().join("out")).unwrap(), b"hello");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
