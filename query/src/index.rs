//! The tantivy index: opening (and discarding an index of another schema version),
//! the one writer, and the (file id → revision) map that makes indexing idempotent.

use crate::doc::{DocInput, Stored, stored, to_document};
use crate::schema::{self, Fields, SCHEMA_VERSION};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tantivy::collector::TopDocs;
use tantivy::query::TermQuery;
use tantivy::schema::IndexRecordOption;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Term};
use uuid::Uuid;

/// The file beside tantivy's that names the schema version.
pub const META_FILE: &str = "artstore-index.json";

/// Why the index cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// tantivy refused (the message names the operation).
    #[error("index {0}: {1}")]
    Tantivy(String, tantivy::TantivyError),
    /// Reading or writing the index folder.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

fn tv(what: &str) -> impl FnOnce(tantivy::TantivyError) -> IndexError + '_ {
    move |e| IndexError::Tantivy(what.to_owned(), e)
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    schema_version: u32,
    created_at: chrono::DateTime<chrono::Utc>,
    /// Names this index (caches shared through Redis key on it).
    #[serde(default)]
    id: Option<Uuid>,
}

/// How an index was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// An index of this version was there.
    Existing,
    /// There was none: an empty one was made.
    Created,
    /// One of another version was there: it was discarded and an empty one made.
    Replaced { found: u32 },
}

/// An open index: the reader side, shared by searches; the writer is taken once by
/// [`SearchIndex::writer`].
pub struct SearchIndex {
    pub dir: PathBuf,
    pub index: Index,
    pub reader: IndexReader,
    pub fields: Fields,
    /// Committed-or-pending revision of every file in the index.
    revisions: RwLock<HashMap<Uuid, u64>>,
    /// The opstamp of the last commit: grows with every commit, survives restarts (caches
    /// key on it).
    generation: AtomicU64,
    /// This index's id (from `artstore-index.json`).
    pub id: Uuid,
    /// The payload of the last commit (a reindex checkpoint, say).
    payload: RwLock<Option<String>>,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn read_meta(dir: &Path) -> Option<Meta> {
    serde_json::from_slice(&std::fs::read(dir.join(META_FILE)).ok()?).ok()
}

fn write_meta(dir: &Path) -> Result<(), IndexError> {
    let meta = Meta { schema_version: SCHEMA_VERSION, created_at: chrono::Utc::now(), id: Some(Uuid::new_v4()) };
    let tmp = dir.join(format!("{META_FILE}.tmp"));
    let io = |e| IndexError::Io(tmp.clone(), e);
    std::fs::write(&tmp, serde_json::to_vec_pretty(&meta).unwrap_or_default()).map_err(io)?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, dir.join(META_FILE)).map_err(io)?;
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(|e| IndexError::Io(dir.to_owned(), e))
}

impl SearchIndex {
    /// Opens the index in `dir`, making an empty one when there is none or when the one
    /// there was written with another schema version (it is a cache: it gets rebuilt).
    pub fn open(dir: &Path) -> Result<(Arc<SearchIndex>, Opened), IndexError> {
        std::fs::create_dir_all(dir).map_err(|e| IndexError::Io(dir.to_owned(), e))?;
        let (schema, fields) = schema::build();
        let meta_json = dir.join("meta.json");
        let has_index = std::fs::exists(&meta_json).map_err(|e| IndexError::Io(meta_json.clone(), e))?;
        let meta = read_meta(dir);
        let opened = match (has_index, meta) {
            (true, Some(m)) if m.schema_version == SCHEMA_VERSION => Opened::Existing,
            (false, _) => Opened::Created,
            (true, m) => {
                let found = m.map_or(0, |m| m.schema_version);
                tracing::warn!(dir = %dir.display(), found, want = SCHEMA_VERSION, "index of another schema version: discarding it");
                for entry in std::fs::read_dir(dir).map_err(|e| IndexError::Io(dir.to_owned(), e))? {
                    let p = entry.map_err(|e| IndexError::Io(dir.to_owned(), e))?.path();
                    let r = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
                    r.map_err(|e| IndexError::Io(p.clone(), e))?;
                }
                Opened::Replaced { found }
            }
        };
        let index = if opened == Opened::Existing {
            Index::open_in_dir(dir).map_err(tv("open"))?
        } else {
            let index = Index::create_in_dir(dir, schema).map_err(tv("create"))?;
            write_meta(dir)?;
            index
        };
        schema::register_analyzers(&index);
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(tv("reader"))?;
        let metas = index.load_metas().ok();
        let payload = metas.as_ref().and_then(|m| m.payload.clone());
        let opstamp = metas.map_or(0, |m| m.opstamp);
        let id = read_meta(dir).and_then(|m| m.id).unwrap_or_else(Uuid::new_v4);
        let this = SearchIndex {
            dir: dir.to_owned(),
            index,
            reader,
            fields,
            revisions: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(opstamp),
            id,
            payload: RwLock::new(payload),
        };
        this.load_revisions()?;
        Ok((Arc::new(this), opened))
    }

    fn load_revisions(&self) -> Result<(), IndexError> {
        let searcher = self.reader.searcher();
        let mut map = HashMap::new();
        for seg in searcher.segment_readers() {
            let ff = seg.fast_fields();
            let ids = ff.str("file_id").map_err(tv("file_id column"))?;
            let revs = ff.u64("revision").map_err(tv("revision column"))?;
            let Some(ids) = ids else { continue };
            let mut buf = String::new();
            for doc in seg.doc_ids_alive() {
                let Some(ord) = ids.term_ords(doc).next() else { continue };
                buf.clear();
                if ids.ord_to_str(ord, &mut buf).is_err() {
                    continue;
                }
                if let (Ok(id), Some(rev)) = (buf.parse::<Uuid>(), revs.first(doc)) {
                    map.insert(id, rev);
                }
            }
        }
        *self.revisions.write().unwrap_or_else(|p| p.into_inner()) = map;
        Ok(())
    }

    /// The revision the index holds (or is about to commit) for a file.
    pub fn revision_of(&self, id: Uuid) -> Option<u64> {
        self.revisions.read().unwrap_or_else(|p| p.into_inner()).get(&id).copied()
    }

    /// Every file id and its revision.
    pub fn revisions(&self) -> HashMap<Uuid, u64> {
        self.revisions.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Documents visible to searches now.
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Changes on every commit.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The payload of the last commit.
    pub fn payload(&self) -> Option<String> {
        self.payload.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The stored fields of a file as last committed.
    pub fn get(&self, id: Uuid) -> Option<Stored> {
        let searcher = self.reader.searcher();
        let q = TermQuery::new(Term::from_field_text(self.fields.file_id, &id.to_string()), IndexRecordOption::Basic);
        let top = searcher.search(&q, &TopDocs::with_limit(1).order_by_score()).ok()?;
        let (_, addr) = top.first()?;
        let doc = searcher.doc(*addr).ok()?;
        Some(stored(&self.fields, &doc))
    }

    /// Takes the writer. There is one per index: a second call (or another process holding
    /// the index) fails.
    pub fn writer(self: &Arc<Self>, heap_bytes: usize) -> Result<Writer, IndexError> {
        let writer =
            self.index.writer(heap_bytes.max(15 << 20)).map_err(tv("writer (is another process using this index?)"))?;
        Ok(Writer { index: self.clone(), writer, analyzer: schema::multi_analyzer(), pending: 0 })
    }
}

/// What applying one document did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Added or replaced.
    Indexed,
    /// The index already holds this revision or a newer one.
    UpToDate,
}

/// The index's one writer.
pub struct Writer {
    index: Arc<SearchIndex>,
    writer: IndexWriter,
    analyzer: tantivy::tokenizer::TextAnalyzer,
    pending: usize,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("pending", &self.pending).finish_non_exhaustive()
    }
}

impl Writer {
    /// The index written to.
    pub fn index(&self) -> &Arc<SearchIndex> {
        &self.index
    }

    /// Documents added or removed since the last commit.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Adds or replaces a document unless the index holds its revision or a newer one.
    pub fn apply(&mut self, d: &DocInput) -> Applied {
        let id = d.sidecar.file_id;
        if self.index.revision_of(id).is_some_and(|r| r >= d.sidecar.revision) {
            return Applied::UpToDate;
        }
        let f = &self.index.fields;
        let (doc, _) = to_document(f, &mut self.analyzer, d);
        self.writer.delete_term(Term::from_field_text(f.file_id, &id.to_string()));
        // add_document only fails when the writer died; the next commit reports that.
        let _ = self.writer.add_document(doc);
        self.index.revisions.write().unwrap_or_else(|p| p.into_inner()).insert(id, d.sidecar.revision);
        self.pending += 1;
        Applied::Indexed
    }

    /// Removes a file that no element holds any more (drift repair).
    pub fn remove(&mut self, id: Uuid) {
        self.writer.delete_term(Term::from_field_text(self.index.fields.file_id, &id.to_string()));
        self.index.revisions.write().unwrap_or_else(|p| p.into_inner()).remove(&id);
        self.pending += 1;
    }

    /// Commits (with an optional payload, e.g. a resume checkpoint) and makes the commit
    /// visible to searches before returning.
    pub fn commit(&mut self, payload: Option<String>) -> Result<(), IndexError> {
        let mut prepared = self.writer.prepare_commit().map_err(tv("commit"))?;
        if let Some(p) = &payload {
            prepared.set_payload(p);
        }
        let opstamp = prepared.commit().map_err(tv("commit"))?;
        self.index.reader.reload().map_err(tv("reload"))?;
        if payload.is_some() {
            *self.index.payload.write().unwrap_or_else(|p| p.into_inner()) = payload;
        }
        self.index.generation.store(opstamp, Ordering::Release);
        self.pending = 0;
        Ok(())
    }

    /// Drops every document (a full rebuild into this index starts here).
    pub fn clear(&mut self) -> Result<(), IndexError> {
        self.writer.delete_all_documents().map_err(tv("clear"))?;
        self.index.revisions.write().unwrap_or_else(|p| p.into_inner()).clear();
        self.pending += 1;
        Ok(())
    }

    /// Waits for background merges and releases the index lock.
    pub fn close(self) -> Result<(), IndexError> {
        self.writer.wait_merging_threads().map_err(tv("merge"))
    }
}

/// The live index of a query role's index folder: `DIR/live`, with an online rebuild
/// written to `DIR/next` and swapped in by two renames. A crash between them is finished
/// on the next open.
pub mod layout {
    use super::*;

    /// The folder of the index that answers.
    pub fn live(root: &Path) -> PathBuf {
        root.join("live")
    }

    /// The folder a rebuild fills.
    pub fn next(root: &Path) -> PathBuf {
        root.join("next")
    }

    fn old(root: &Path) -> PathBuf {
        root.join("old")
    }

    fn io(p: &Path) -> impl FnOnce(std::io::Error) -> IndexError + '_ {
        move |e| IndexError::Io(p.to_owned(), e)
    }

    fn there(p: &Path) -> Result<bool, IndexError> {
        std::fs::exists(p).map_err(io(p))
    }

    fn sync_dir(p: &Path) -> Result<(), IndexError> {
        std::fs::File::open(p).and_then(|f| f.sync_all()).map_err(io(p))
    }

    /// Opens (or creates) the live index, finishing an interrupted swap first.
    pub fn open_live(root: &Path) -> Result<(Arc<SearchIndex>, Opened), IndexError> {
        std::fs::create_dir_all(root).map_err(io(root))?;
        let (live, next, old) = (live(root), next(root), old(root));
        if !there(&live)? && there(&old)? && there(&next)? {
            // Killed between the two renames: the rebuilt index was complete.
            std::fs::rename(&next, &live).map_err(io(&next))?;
            sync_dir(root)?;
        }
        if there(&old)? {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        if there(&next)? {
            // An unfinished rebuild: the live index still answers; the rebuild starts over
            // when asked again.
            std::fs::remove_dir_all(&next).map_err(io(&next))?;
        }
        SearchIndex::open(&live)
    }

    /// A fresh, empty index in `DIR/next`.
    pub fn create_next(root: &Path) -> Result<Arc<SearchIndex>, IndexError> {
        let next = next(root);
        if there(&next)? {
            std::fs::remove_dir_all(&next).map_err(io(&next))?;
        }
        Ok(SearchIndex::open(&next)?.0)
    }

    /// Makes `DIR/next` the live index and opens it.
    pub fn swap(root: &Path) -> Result<Arc<SearchIndex>, IndexError> {
        let (live, next, old) = (live(root), next(root), old(root));
        if there(&live)? {
            std::fs::rename(&live, &old).map_err(io(&live))?;
        }
        std::fs::rename(&next, &live).map_err(io(&next))?;
        sync_dir(root)?;
        if there(&old)? {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        Ok(SearchIndex::open(&live)?.0)
    }
}
