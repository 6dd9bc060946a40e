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
        let sc = match Sidecar::read(&sidecar_path) {
            Ok(sc) => sc,
            Err(e) => {
                report.unreadable.push(e.to_string());
                continue;
            }
        };
        let rel = sidecar_path.strip_prefix(root).unwrap_or(&sidecar_path).with_file_name(&sc.stored_name);
        let content = match sc.content.location {
            Tier::Hot => root.join(&rel),
            Tier::Cold => cold_root.join(&rel),
            Tier::None => {
                report.tombstones += 1;
                continue;
            }
        };
        match digest_file(&content, on_bytes) {
            Ok((digest, size)) => {
                report.checked += 1;
                report.bytes += size;
                if digest != sc.sha256 {
                    report.mismatched.push((content, format!("sha-256 is {digest}, sidecar says {}", sc.sha256)));
                } else if size != sc.size {
                    report.mismatched.push((content, format!("size is {size}, sidecar says {}", sc.size)));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => report.missing.push(content),
            Err(e) => report.unreadable.push(format!("{}: {e}", content.display())),
        }
    }
    Ok(report)
}
