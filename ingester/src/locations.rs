//! Which element holds which file: a hint recorded at ingest (`locations.log`, one
//! `<file id> <element id>` line each, appended), consulted before asking every element.
//! It is only a hint: a wrong or lost entry costs one parallel lookup, never a wrong answer.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use uuid::Uuid;

/// The location hints, in memory and appended to a file.
#[derive(Debug)]
pub struct LocationHints {
    map: Mutex<HashMap<Uuid, String>>,
    file: Mutex<Option<std::fs::File>>,
    path: PathBuf,
}

impl LocationHints {
    /// Loads the hints in `dir/locations.log` (unreadable lines are skipped).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join("locations.log");
        let mut map = HashMap::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for line in text.lines() {
                    if let Some((id, el)) = line.split_once(' ')
                        && let Ok(id) = Uuid::parse_str(id)
                    {
                        map.insert(id, el.to_owned());
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Self { map: Mutex::new(map), file: Mutex::new(Some(file)), path })
    }

    /// Records where a file was stored.
    pub fn record(&self, file_id: Uuid, element_id: &str) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).insert(file_id, element_id.to_owned());
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = f.as_mut()
            && let Err(e) = writeln!(file, "{file_id} {element_id}")
        {
            tracing::warn!(error = %e, file = %self.path.display(), "location hint not written");
        }
    }

    /// Where a file was stored, if recorded here.
    pub fn get(&self, file_id: Uuid) -> Option<String> {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).get(&file_id).cloned()
    }
}
