//! Fixity: recompute every content digest and compare it with the sidecar's.

use crate::sidecar::{SIDECAR_SUFFIX, Sidecar, Tier};
use std::io::Read;
use std::path::{Path, PathBuf};

/// What a fixity run found.
#[derive(Debug, Default)]
pub struct FixityReport {
    pub checked: u64,
    pub bytes: u64,
    pub tombstones: u64,
    /// `(content file, reason)` for digests or sizes that differ.
    pub mismatched: Vec<(PathBuf, String)>,
    /// Content files a sidecar names that are not there.
    pub missing: Vec<PathBuf>,
    /// Sidecars that cannot be read, with the reason.
    pub unreadable: Vec<String>,
}

impl FixityReport {
    pub fn is_clean(&self) -> bool {
        self.mismatched.is_empty() && self.missing.is_empty() && self.unreadable.is_empty()
    }
}

/// Lists every sidecar under `root/data` (sorted, for a stable report).
pub fn sidecar_paths(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = vec![];
    for e in walkdir::WalkDir::new(root.join("data")).sort_by_file_name() {
        let e = e.map_err(std::io::Error::other)?;
        if e.file_type().is_file() && e.file_name().to_string_lossy().ends_with(SIDECAR_SUFFIX) {
            out.push(e.into_path());
        }
    }
    Ok(out)
}

fn digest_file(path: &Path, on_bytes: &dyn Fn(u64)) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let r = f.read(&mut buf)?;
        if r == 0 {
            break;
        }
        ctx.update(&buf[..r]);
        n += r as u64;
        on_bytes(r as u64);
    }
    Ok((crate::audit::hex(ctx.finish().as_ref()), n))
}

/// What checking one sidecar's content found.
#[derive(Debug)]
pub enum Fixity {
    /// Digest and size match; the content's size.
    Good(u64),
    /// A tombstone: no content to check.
    Tombstone,
    /// The content differs from what the sidecar says: the content file, why, and the
    /// bytes read.
    Mismatched(PathBuf, String, u64),
    /// The content file the sidecar names is not there.
    Missing(PathBuf),
    /// The sidecar or its content cannot be read: why.
    Unreadable(String),
}

/// Checks one sidecar's content against its digest and size. `on_bytes` is called per chunk
/// read.
pub fn check(root: &Path, cold_root: &Path, sidecar_path: &Path, on_bytes: &dyn Fn(u64)) -> Fixity {
    let sc = match Sidecar::read(sidecar_path) {
        Ok(sc) => sc,
        Err(e) => return Fixity::Unreadable(e.to_string()),
    };
    let rel = sidecar_path.strip_prefix(root).unwrap_or(sidecar_path).with_file_name(&sc.stored_name);
    let content = match sc.content.location {
        Tier::Hot => root.join(&rel),
        Tier::Cold => cold_root.join(&rel),
        Tier::None => return Fixity::Tombstone,
    };
    match digest_file(&content, on_bytes) {
        Ok((digest, size)) if digest != sc.sha256 => {
            Fixity::Mismatched(content, format!("sha-256 is {digest}, sidecar says {}", sc.sha256), size)
        }
        Ok((_, size)) if size != sc.size => {
            Fixity::Mismatched(content, format!("size is {size}, sidecar says {}", sc.size), size)
        }
        Ok((_, size)) => Fixity::Good(size),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Fixity::Missing(content),
        Err(e) => Fixity::Unreadable(format!("{}: {e}", content.display())),
    }
}

/// Recomputes every digest. `on_file` is called per sidecar, `on_bytes` per chunk read.
pub fn verify(
    root: &Path,
    cold_root: &Path,
    on_file: &dyn Fn(&Path),
    on_bytes: &dyn Fn(u64),
) -> std::io::Result<FixityReport> {
    let mut report = FixityReport::default();
    for sidecar_path in sidecar_paths(root)? {
        on_file(&sidecar_path);
        match check(root, cold_root, &sidecar_path, on_bytes) {
            Fixity::Good(size) => {
                report.checked += 1;
                report.bytes += size;
            }
            Fixity::Tombstone => report.tombstones += 1,
            Fixity::Mismatched(content, why, size) => {
                report.checked += 1;
                report.bytes += size;
                report.mismatched.push((content, why));
            }
            Fixity::Missing(content) => report.missing.push(content),
            Fixity::Unreadable(why) => report.unreadable.push(why),
        }
    }
    Ok(report)
}
