//! The PostgreSQL sidecar cache (sqlx). Same contract as the embedded cache, plus a WAL
//! checkpoint so it can catch up after an outage, and the bookkeeping of a resumable
//! rebuild. Being rebuildable, its connections run with `synchronous_commit = off`, except
//! the checkpoint's commit, which is synchronous and so makes every row before it durable.

use crate::cache::{CacheError, CacheStats, CachedSidecar, ListFilter, Page, RetentionFilter, SidecarCache};
use crate::sidecar::{DocState, Sidecar};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder};
use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// The schema, applied at start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Translates a sqlx error by SQLSTATE. Database text is logged, never returned.
pub fn cache_err(e: sqlx::Error) -> CacheError {
    tracing::warn!(error = %e, "postgresql cache error");
    match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            // 08: connection exception, 53: insufficient resources, 57P: operator intervention.
            if code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") {
                CacheError::Unavailable(format!("postgresql refused the connection (sqlstate {code})"))
            } else {
                CacheError::Query(code)
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => CacheError::Unavailable("postgresql is unreachable".into()),
        _ => CacheError::Query("client".into()),
    }
}

/// Connects a pool with the cache's session settings.
pub async fn connect(url: &str) -> Result<PgPool, CacheError> {
    let opts = PgConnectOptions::from_str(url)
        .map_err(|_| CacheError::Unavailable("the cache URL is not a valid postgres:// URL".into()))?
        .options([("synchronous_commit", "off")]);
    PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(2))
        .connect_with(opts)
        .await
        .map_err(cache_err)
}

/// The PostgreSQL cache of one element.
#[derive(Clone)]
pub struct PgCache {
    pool: PgPool,
    element_id: Uuid,
    migrated: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for PgCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCache").field("element_id", &self.element_id).finish_non_exhaustive()
    }
}

const TOMBSTONES: &str = "('deleted','disposed')";

fn rows_to_entries(rows: Vec<(String, String)>) -> Result<Vec<CachedSidecar>, CacheError> {
    rows.into_iter()
        .map(|(doc, path)| {
            let sc = Sidecar::parse(doc.as_bytes(), std::path::Path::new(&path)).map_err(|e| {
                tracing::error!(error = %e, "cached sidecar does not parse");
                CacheError::Corrupt(path.clone())
            })?;
            Ok(CachedSidecar { sidecar: Arc::new(sc), path })
        })
        .collect()
}

fn state_str(s: DocState) -> &'static str {
    s.as_str()
}

impl PgCache {
    /// Connects and applies migrations now (for the command-line tools).
    pub async fn open(url: &str, element_id: Uuid) -> Result<PgCache, CacheError> {
        let pool = connect(url).await?;
        let c = PgCache { pool, element_id, migrated: Default::default() };
        c.migrate().await?;
        Ok(c)
    }

    /// A cache whose connections are made on first use, so an element starts (degraded)
    /// while PostgreSQL is down. Migrations run with the first checkpoint read.
    pub fn open_lazy(url: &str, element_id: Uuid) -> Result<PgCache, CacheError> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|_| CacheError::Unavailable("the cache URL is not a valid postgres:// URL".into()))?
            .options([("synchronous_commit", "off")]);
        let pool =
            PgPoolOptions::new().max_connections(8).acquire_timeout(Duration::from_secs(2)).connect_lazy_with(opts);
        Ok(PgCache { pool, element_id, migrated: Default::default() })
    }

    async fn migrate(&self) -> Result<(), CacheError> {
        if self.migrated.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        MIGRATOR.run(&self.pool).await.map_err(|e| {
            tracing::error!(error = %e, "cache migrations failed");
            match e {
                sqlx::migrate::MigrateError::Execute(e) => cache_err(e),
                _ => CacheError::Query("migration".into()),
            }
        })?;
        self.migrated.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn fetch(&self, mut qb: QueryBuilder<Postgres>) -> Result<Vec<CachedSidecar>, CacheError> {
        self.migrate().await?;
        let rows: Vec<(String, String)> = qb.build_query_as().fetch_all(&self.pool).await.map_err(cache_err)?;
        rows_to_entries(rows)
    }

    fn select(&self) -> QueryBuilder<Postgres> {
        let mut qb = QueryBuilder::new("SELECT doc::text, path FROM sidecars WHERE element_id = ");
        qb.push_bind(self.element_id);
        qb
    }

    /// Writes a batch inside `tx` (revision-guarded; duplicates in the batch collapse to
    /// the highest revision).
    async fn write_batch(&self, tx: &mut sqlx::PgConnection, entries: Vec<CachedSidecar>) -> Result<(), CacheError> {
        let mut newest: HashMap<Uuid, CachedSidecar> = HashMap::with_capacity(entries.len());
        for e in entries {
            match newest.get(&e.sidecar.file_id) {
                Some(o) if o.sidecar.revision > e.sidecar.revision => {}
                _ => {
                    newest.insert(e.sidecar.file_id, e);
                }
            }
        }
        if newest.is_empty() {
            return Ok(());
        }
        let n = newest.len();
        let mut c = Columns::with_capacity(n);
        for e in newest.into_values() {
            c.push(&e);
        }
        sqlx::query(
            "INSERT INTO sidecars (element_id, file_id, document_id, version, revision, state, content_type, size, sha256, day, \
             created_at, updated_at, tags, retention_mode, retain_until, legal_hold, disposition, location, has_restore, path, doc) \
             SELECT $1, u.file_id, u.document_id, u.version, u.revision, u.state, u.content_type, u.size, u.sha256, u.day, \
             u.created_at, u.updated_at, ARRAY(SELECT json_array_elements_text(u.tags::json)), u.retention_mode, u.retain_until, \
             u.legal_hold, u.disposition, u.location, u.has_restore, u.path, u.doc::json \
             FROM UNNEST($2::uuid[], $3::uuid[], $4::int4[], $5::int8[], $6::text[], $7::text[], $8::int8[], $9::text[], $10::date[], \
             $11::timestamptz[], $12::timestamptz[], $13::text[], $14::text[], $15::timestamptz[], $16::bool[], $17::text[], \
             $18::text[], $19::bool[], $20::text[], $21::text[]) \
             AS u(file_id, document_id, version, revision, state, content_type, size, sha256, day, created_at, updated_at, tags, \
             retention_mode, retain_until, legal_hold, disposition, location, has_restore, path, doc) \
             ON CONFLICT (element_id, file_id) DO UPDATE SET document_id = EXCLUDED.document_id, version = EXCLUDED.version, \
             revision = EXCLUDED.revision, state = EXCLUDED.state, content_type = EXCLUDED.content_type, size = EXCLUDED.size, \
             sha256 = EXCLUDED.sha256, day = EXCLUDED.day, created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, \
             tags = EXCLUDED.tags, retention_mode = EXCLUDED.retention_mode, retain_until = EXCLUDED.retain_until, \
             legal_hold = EXCLUDED.legal_hold, disposition = EXCLUDED.disposition, location = EXCLUDED.location, \
             has_restore = EXCLUDED.has_restore, path = EXCLUDED.path, doc = EXCLUDED.doc \
             WHERE sidecars.revision <= EXCLUDED.revision",
        )
        .bind(self.element_id)
        .bind(c.file_id)
        .bind(c.document_id)
        .bind(c.version)
        .bind(c.revision)
        .bind(c.state)
        .bind(c.content_type)
        .bind(c.size)
        .bind(c.sha256)
        .bind(c.day)
        .bind(c.created_at)
        .bind(c.updated_at)
        .bind(c.tags)
        .bind(c.retention_mode)
        .bind(c.retain_until)
        .bind(c.legal_hold)
        .bind(c.disposition)
        .bind(c.location)
        .bind(c.has_restore)
        .bind(c.path)
        .bind(c.doc)
        .execute(&mut *tx)
        .await
        .map_err(cache_err)?;
        Ok(())
    }
}

/// One column array per field, for the UNNEST insert.
struct Columns {
    file_id: Vec<Uuid>,
    document_id: Vec<Uuid>,
    version: Vec<i32>,
    revision: Vec<i64>,
    state: Vec<&'static str>,
    content_type: Vec<String>,
    size: Vec<i64>,
    sha256: Vec<String>,
    day: Vec<NaiveDate>,
    created_at: Vec<DateTime<Utc>>,
    updated_at: Vec<DateTime<Utc>>,
    tags: Vec<String>,
    retention_mode: Vec<String>,
    retain_until: Vec<Option<DateTime<Utc>>>,
    legal_hold: Vec<bool>,
    disposition: Vec<String>,
    location: Vec<String>,
    has_restore: Vec<bool>,
    path: Vec<String>,
    doc: Vec<String>,
}

fn enum_str<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

impl Columns {
    fn with_capacity(n: usize) -> Self {
        Columns {
            file_id: Vec::with_capacity(n),
            document_id: Vec::with_capacity(n),
            version: Vec::with_capacity(n),
            revision: Vec::with_capacity(n),
            state: Vec::with_capacity(n),
            content_type: Vec::with_capacity(n),
            size: Vec::with_capacity(n),
            sha256: Vec::with_capacity(n),
            day: Vec::with_capacity(n),
            created_at: Vec::with_capacity(n),
            updated_at: Vec::with_capacity(n),
            tags: Vec::with_capacity(n),
            retention_mode: Vec::with_capacity(n),
            retain_until: Vec::with_capacity(n),
            legal_hold: Vec::with_capacity(n),
            disposition: Vec::with_capacity(n),
            location: Vec::with_capacity(n),
            has_restore: Vec::with_capacity(n),
            path: Vec::with_capacity(n),
            doc: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, e: &CachedSidecar) {
        let s = &*e.sidecar;
        self.file_id.push(s.file_id);
        self.document_id.push(s.document_id);
        self.version.push(s.version as i32);
        self.revision.push(s.revision as i64);
        self.state.push(state_str(s.state));
        self.content_type.push(s.content_type.clone());
        self.size.push(s.size as i64);
        self.sha256.push(s.sha256.clone());
        self.day.push(crate::layout::id_time(s.file_id).date_naive());
        self.created_at.push(s.created_at);
        self.updated_at.push(s.updated_at);
        self.tags.push(serde_json::to_string(&s.tags).unwrap_or_else(|_| "[]".into()));
        self.retention_mode.push(enum_str(&s.retention.mode));
        self.retain_until.push(s.retention.retain_until);
        self.legal_hold.push(s.retention.legal_hold);
        self.disposition.push(enum_str(&s.retention.disposition));
        self.location.push(enum_str(&s.content.location));
        self.has_restore.push(s.content.restore.is_some());
        self.path.push(e.path.clone());
        self.doc.push(serde_json::to_string(s).unwrap_or_default());
    }
}

#[async_trait]
impl SidecarCache for PgCache {
    async fn upsert(&self, entry: CachedSidecar) -> Result<(), CacheError> {
        self.upsert_many(vec![entry]).await
    }

    async fn upsert_many(&self, entries: Vec<CachedSidecar>) -> Result<(), CacheError> {
        self.migrate().await?;
        let mut conn = self.pool.acquire().await.map_err(cache_err)?;
        self.write_batch(&mut conn, entries).await
    }

    async fn get(&self, file_id: Uuid) -> Result<Option<CachedSidecar>, CacheError> {
        let mut qb = self.select();
        qb.push(" AND file_id = ").push_bind(file_id);
        Ok(self.fetch(qb).await?.pop())
    }

    async fn list(&self, after: Option<Uuid>, limit: usize, f: &ListFilter) -> Result<Page, CacheError> {
        let mut qb = self.select();
        if let Some(a) = after {
            qb.push(" AND file_id > ").push_bind(a);
        }
        if let Some(s) = f.state {
            qb.push(" AND state = ").push_bind(state_str(s));
        }
        if let Some(d) = f.day_from {
            qb.push(" AND day >= ").push_bind(d);
        }
        if let Some(d) = f.day_to {
            qb.push(" AND day <= ").push_bind(d);
        }
        if let Some(c) = &f.content_type {
            qb.push(" AND content_type = ").push_bind(c.clone());
        }
        if let Some(t) = &f.tag {
            qb.push(" AND tags @> ARRAY[").push_bind(t.clone()).push("]::text[]");
        }
        if let Some(d) = f.document_id {
            qb.push(" AND document_id = ").push_bind(d);
        }
        if let Some((r, now)) = f.retention {
            match r {
                RetentionFilter::UnderRetention => {
                    qb.push(format!(" AND state NOT IN {TOMBSTONES} AND retention_mode <> 'none' AND retain_until > "))
                        .push_bind(now);
                }
                RetentionFilter::OnHold => {
                    qb.push(format!(" AND state NOT IN {TOMBSTONES} AND legal_hold"));
                }
                RetentionFilter::ReviewDue => {
                    qb.push(format!(
                        " AND state NOT IN {TOMBSTONES} AND disposition = 'review' AND NOT legal_hold AND retention_mode <> 'none' AND retain_until <= "
                    ))
                    .push_bind(now);
                }
                RetentionFilter::Disposed => {
                    qb.push(" AND state = 'disposed'");
                }
            }
        }
        qb.push(" ORDER BY file_id LIMIT ").push_bind(limit as i64 + 1);
        Ok(Page::from_overfetch(self.fetch(qb).await?, limit))
    }

    async fn versions(&self, document_id: Uuid) -> Result<Vec<CachedSidecar>, CacheError> {
        let mut qb = self.select();
        qb.push(" AND document_id = ").push_bind(document_id).push(" ORDER BY version");
        self.fetch(qb).await
    }

    async fn due_for_disposition(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<CachedSidecar>, CacheError> {
        let mut qb = self.select();
        qb.push(format!(
            " AND state NOT IN {TOMBSTONES} AND disposition = 'dispose' AND NOT legal_hold AND retention_mode <> 'none' AND retain_until <= "
        ))
        .push_bind(now)
        .push(" ORDER BY file_id LIMIT ")
        .push_bind(limit as i64);
        self.fetch(qb).await
    }

    async fn with_restore(&self) -> Result<Vec<CachedSidecar>, CacheError> {
        let mut qb = self.select();
        qb.push(" AND has_restore ORDER BY file_id");
        self.fetch(qb).await
    }

    async fn hot_documents(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<CachedSidecar>, CacheError> {
        let mut qb = self.select();
        if let Some(a) = after {
            qb.push(" AND file_id > ").push_bind(a);
        }
        qb.push(" AND state = 'active' AND location = 'hot' ORDER BY file_id LIMIT ").push_bind(limit as i64);
        self.fetch(qb).await
    }

    async fn stats(&self) -> Result<CacheStats, CacheError> {
        self.migrate().await?;
        let (documents, tombstones, bytes): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state NOT IN ('deleted','disposed')), count(*) FILTER (WHERE state IN ('deleted','disposed')), \
             coalesce(sum(size) FILTER (WHERE state NOT IN ('deleted','disposed')), 0)::int8 FROM sidecars WHERE element_id = $1",
        )
        .bind(self.element_id)
        .fetch_one(&self.pool)
        .await
        .map_err(cache_err)?;
        Ok(CacheStats { documents: documents as u64, tombstones: tombstones as u64, bytes: bytes as u64 })
    }

    async fn remove(&self, file_id: Uuid) -> Result<(), CacheError> {
        self.migrate().await?;
        sqlx::query("DELETE FROM sidecars WHERE element_id = $1 AND file_id = $2")
            .bind(self.element_id)
            .bind(file_id)
            .execute(&self.pool)
            .await
            .map_err(cache_err)?;
        Ok(())
    }

    async fn revisions(&self) -> Result<Vec<(Uuid, u64)>, CacheError> {
        self.migrate().await?;
        let rows: Vec<(Uuid, i64)> = sqlx::query_as("SELECT file_id, revision FROM sidecars WHERE element_id = $1")
            .bind(self.element_id)
            .fetch_all(&self.pool)
            .await
            .map_err(cache_err)?;
        Ok(rows.into_iter().map(|(id, r)| (id, r as u64)).collect())
    }

    fn is_persistent(&self) -> bool {
        true
    }

    async fn checkpoint(&self) -> Result<Option<u64>, CacheError> {
        self.migrate().await?;
        let row: Option<(i64,)> = sqlx::query_as("SELECT wal_seq FROM cache_checkpoints WHERE element_id = $1")
            .bind(self.element_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(cache_err)?;
        Ok(row.map(|(s,)| s as u64))
    }

    async fn set_checkpoint(&self, seq: u64) -> Result<(), CacheError> {
        self.migrate().await?;
        // Rows are written with synchronous_commit off: a server crash loses the last
        // moments of them. The checkpoint says "everything up to here is in the cache", and
        // the applier moves on in memory once it is written, so it alone commits
        // synchronously: its commit flushes the server's WAL up to it, and with it every
        // row written before (from any connection). A crash then can lose only rows that
        // the checkpoint does not cover yet, which the WAL replays.
        let mut tx = self.pool.begin().await.map_err(cache_err)?;
        sqlx::query("SET LOCAL synchronous_commit TO on").execute(&mut *tx).await.map_err(cache_err)?;
        sqlx::query(
            "INSERT INTO cache_checkpoints (element_id, wal_seq) VALUES ($1, $2) \
             ON CONFLICT (element_id) DO UPDATE SET wal_seq = EXCLUDED.wal_seq, updated_at = now()",
        )
        .bind(self.element_id)
        .bind(seq as i64)
        .execute(&mut *tx)
        .await
        .map_err(cache_err)?;
        tx.commit().await.map_err(cache_err)
    }

    async fn rebuild_progress(&self) -> Result<Option<(u64, String)>, CacheError> {
        self.migrate().await?;
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT wal_seq, last_day FROM rebuild_progress WHERE element_id = $1")
                .bind(self.element_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(cache_err)?;
        Ok(row.map(|(s, d)| (s as u64, d)))
    }

    async fn begin_rebuild(&self, wal_seq: u64) -> Result<(), CacheError> {
        self.migrate().await?;
        let mut tx = self.pool.begin().await.map_err(cache_err)?;
        for sql in ["DELETE FROM sidecars WHERE element_id = $1", "DELETE FROM cache_checkpoints WHERE element_id = $1"]
        {
            sqlx::query(sql).bind(self.element_id).execute(&mut *tx).await.map_err(cache_err)?;
        }
        sqlx::query(
            "INSERT INTO rebuild_progress (element_id, wal_seq) VALUES ($1, $2) ON CONFLICT (element_id) \
             DO UPDATE SET wal_seq = $2, last_day = '', documents = 0, started_at = now()",
        )
        .bind(self.element_id)
        .bind(wal_seq as i64)
        .execute(&mut *tx)
        .await
        .map_err(cache_err)?;
        tx.commit().await.map_err(cache_err)
    }

    async fn rebuild_batch(&self, entries: Vec<CachedSidecar>, last_path: &str) -> Result<(), CacheError> {
        self.migrate().await?;
        let n = entries.len() as i64;
        let mut tx = self.pool.begin().await.map_err(cache_err)?;
        self.write_batch(&mut tx, entries).await?;
        sqlx::query("UPDATE rebuild_progress SET last_day = $2, documents = documents + $3 WHERE element_id = $1")
            .bind(self.element_id)
            .bind(last_path)
            .bind(n)
            .execute(&mut *tx)
            .await
            .map_err(cache_err)?;
        tx.commit().await.map_err(cache_err)
    }

    async fn finish_rebuild(&self) -> Result<(), CacheError> {
        self.migrate().await?;
        let mut tx = self.pool.begin().await.map_err(cache_err)?;
        // Durable with every rebuilt row before it (see set_checkpoint).
        sqlx::query("SET LOCAL synchronous_commit TO on").execute(&mut *tx).await.map_err(cache_err)?;
        sqlx::query(
            "INSERT INTO cache_checkpoints (element_id, wal_seq) SELECT element_id, wal_seq FROM rebuild_progress WHERE element_id = $1 \
             ON CONFLICT (element_id) DO UPDATE SET wal_seq = GREATEST(cache_checkpoints.wal_seq, EXCLUDED.wal_seq), updated_at = now()",
        )
        .bind(self.element_id)
        .execute(&mut *tx)
        .await
        .map_err(cache_err)?;
        sqlx::query("DELETE FROM rebuild_progress WHERE element_id = $1")
            .bind(self.element_id)
            .execute(&mut *tx)
            .await
            .map_err(cache_err)?;
        tx.commit().await.map_err(cache_err)
    }
}

/// Fresh databases for tests, on the server named by `ARTSTORE_TEST_DATABASE_URL`
/// (default `postgres://postgres@127.0.0.1:5432/postgres`).
pub mod testing {
    use super::*;

    /// The admin URL of the test server.
    pub fn admin_url() -> String {
        std::env::var("ARTSTORE_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
    }

    /// Creates an empty database and returns its URL. Fails loudly when there is no server:
    /// the project's scripts start one (`scripts/services.sh`).
    pub async fn fresh_database() -> String {
        let admin = admin_url();
        let name = format!("artstore_test_{}", Uuid::new_v4().simple());
        let pool = PgPoolOptions::new().max_connections(1).connect(&admin).await.unwrap_or_else(|e| {
            panic!("no PostgreSQL at {admin} ({e}); run scripts/services.sh (or set ARTSTORE_TEST_DATABASE_URL)")
        });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&pool).await.unwrap();
        pool.close().await;
        match admin.rfind('/') {
            Some(i) => format!("{}/{name}", &admin[..i]),
            None => format!("{admin}/{name}"),
        }
    }

    /// Drops a database made by [`fresh_database`] (best effort).
    pub async fn drop_database(url: &str) {
        let Some(name) = url.rsplit('/').next() else { return };
        if let Ok(pool) = PgPoolOptions::new().max_connections(1).connect(&admin_url()).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                .execute(&pool)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pg_cache_passes_the_suite() {
        let url = testing::fresh_database().await;
        let cache = PgCache::open(&url, Uuid::now_v7()).await.unwrap();
        crate::cache::suite::run(&cache).await;
        // Another element in the same database sees none of it.
        let other = PgCache::open(&url, Uuid::now_v7()).await.unwrap();
        assert_eq!(other.stats().await.unwrap(), CacheStats::default());
        cache.pool().close().await;
        other.pool().close().await;
        testing::drop_database(&url).await;
    }

    #[tokio::test]
    async fn unreachable_server_is_unavailable_without_database_text() {
        let e = connect("postgres://postgres@127.0.0.1:1/x").await.unwrap_err();
        assert!(matches!(e, CacheError::Unavailable(_)), "{e}");
        assert!(!e.to_string().contains("127.0.0.1"), "{e}");
    }
}
