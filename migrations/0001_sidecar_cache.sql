-- The sidecar cache: a mirror of every element's *.attr.json sidecars for listing and
-- filtering. Never the truth: `artstore storage-element rebuild-cache` refills it from
-- the files. One database may serve several elements (element_id in every key).

CREATE TABLE sidecars (
    element_id     uuid        NOT NULL,
    file_id        uuid        NOT NULL,
    document_id    uuid        NOT NULL,
    version        integer     NOT NULL,
    revision       bigint      NOT NULL,
    state          text        NOT NULL,
    content_type   text        NOT NULL,
    size           bigint      NOT NULL,
    sha256         text        NOT NULL,
    -- the data/YYYY/MM/DD folder (the date of the UUIDv7 file id)
    day            date        NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    tags           text[]      NOT NULL,
    retention_mode text        NOT NULL,
    retain_until   timestamptz,
    legal_hold     boolean     NOT NULL,
    disposition    text        NOT NULL,
    location       text        NOT NULL,
    has_restore    boolean     NOT NULL,
    -- the sidecar's path relative to the element root
    path           text        NOT NULL,
    -- the sidecar itself, as written (json keeps the exact text)
    doc            json        NOT NULL,
    PRIMARY KEY (element_id, file_id)
);

CREATE INDEX sidecars_document ON sidecars (element_id, document_id, version);
CREATE INDEX sidecars_day ON sidecars (element_id, day, file_id);
CREATE INDEX sidecars_content_type ON sidecars (element_id, content_type, file_id);
CREATE INDEX sidecars_state ON sidecars (element_id, state, file_id);
CREATE INDEX sidecars_tags ON sidecars USING gin (tags);
CREATE INDEX sidecars_retain_until ON sidecars (element_id, retain_until) WHERE retain_until IS NOT NULL;
CREATE INDEX sidecars_restore ON sidecars (element_id) WHERE has_restore;

-- How far into an element's WAL the cache has applied: every commit with seq <= wal_seq.
CREATE TABLE cache_checkpoints (
    element_id uuid        PRIMARY KEY,
    wal_seq    bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A rebuild in progress: it resumes after last_day instead of starting over.
CREATE TABLE rebuild_progress (
    element_id uuid        PRIMARY KEY,
    wal_seq    bigint      NOT NULL,
    last_day   text        NOT NULL DEFAULT '',
    documents  bigint      NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now()
);
