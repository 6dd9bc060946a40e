//! Synthetic stores for benchmarks and tests: sidecars written straight in the documented
//! format (docs/storage-format.md), spread over day folders like a store that grew for
//! years. No content files are written; rebuilds read sidecars only.

use crate::layout::{self, Layout};
use crate::sidecar::{ContentLocation, DocState, Retention, RetentionMode, SCHEMA_V1, Sidecar, Tier};
use chrono::{Duration, TimeZone, Utc};
use rayon::prelude::*;
use serde_json::{Map, json};
use std::path::Path;

/// Writes `count` sidecars under `root/data`, `per_day` to a day folder, starting on
/// 2015-01-01. Returns the number of day folders.
pub fn write_store(root: &Path, count: u64, per_day: u64) -> std::io::Result<u64> {
    let per_day = per_day.max(1);
    let days = count.div_ceil(per_day);
    let start = Utc.with_ymd_and_hms(2015, 1, 1, 8, 0, 0).single().unwrap_or_default();
    (0..days).into_par_iter().try_for_each(|d| -> std::io::Result<()> {
        let day_start = start + Duration::days(d as i64);
        let first = d * per_day;
        let n = per_day.min(count - first);
        let mut dir_made = false;
        for i in 0..n {
            let at = day_start + Duration::milliseconds(i as i64 * 7);
            let id = layout::new_file_id(at);
            let k = first + i;
            let sc = Sidecar {
                schema: SCHEMA_V1.to_owned(),
                file_id: id,
                document_id: id,
                version: 1,
                revision: 1 + k % 3,
                state: DocState::Active,
                original_name: format!("record-{k:08}.pdf"),
                stored_name: layout::stored_name(&format!("record-{k:08}.pdf"), id),
                content_type: "application/pdf".to_owned(),
                size: 20_000 + k % 5000,
                sha256: format!("{:064x}", k as u128 * 0x9e37_79b9_7f4a_7c15),
                created_at: at,
                created_by: "bench".to_owned(),
                updated_at: at,
                updated_by: "bench".to_owned(),
                description: Some(format!("synthetic record {k}")),
                tags: vec!["synthetic".to_owned(), format!("batch-{}", k % 16)],
                metadata: json!({"department": format!("dept-{}", k % 12), "pages": k % 40})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                retention: Retention {
                    mode: if k.is_multiple_of(4) { RetentionMode::Compliance } else { RetentionMode::Governance },
                    retain_until: Some(at + Duration::days(3650)),
                    legal_hold: k.is_multiple_of(97),
                    ..Default::default()
                },
                content: ContentLocation { location: Tier::Hot, restore: None, extra: Map::new() },
                tombstone: None,
                extra: Map::new(),
            };
            let dir = root.join(Layout::day_dir_rel(id));
            if !dir_made {
                std::fs::create_dir_all(&dir)?;
                dir_made = true;
            }
            std::fs::write(dir.join(sc.sidecar_name()), sc.to_bytes())?;
        }
        Ok(())
    })?;
    Ok(days)
}
