-- Images: one row per distinct file content (sha256 of the bytes as received).
CREATE TABLE images (
    sha256          TEXT PRIMARY KEY,
    origin          TEXT NOT NULL CHECK (origin IN ('source', 'enriched', 'synthetic')),
    original_name   TEXT NOT NULL,
    source_path     TEXT,
    size_bytes      INTEGER NOT NULL,
    format          TEXT NOT NULL,
    width           INTEGER NOT NULL,
    height          INTEGER NOT NULL,
    mode            TEXT NOT NULL,
    captured_at     TEXT,
    ingested_at     TEXT NOT NULL,
    phash           TEXT NOT NULL,
    dhash           TEXT NOT NULL,
    sharpness       REAL NOT NULL,
    excluded        INTEGER NOT NULL DEFAULT 0,
    excluded_reason TEXT,
    duplicate_of    TEXT REFERENCES images(sha256)
);
CREATE INDEX images_origin ON images(origin);

-- Every path that delivered a given content, so exact duplicates keep their provenance.
CREATE TABLE image_paths (
    sha256   TEXT NOT NULL REFERENCES images(sha256),
    path     TEXT NOT NULL,
    seen_at  TEXT NOT NULL,
    PRIMARY KEY (sha256, path)
);

-- Cached analyses: recomputed only when the image or the analyzer version changes.
CREATE TABLE analyses (
    image_sha  TEXT NOT NULL,
    analyzer   TEXT NOT NULL,
    version    TEXT NOT NULL,
    result     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (image_sha, analyzer, version)
);

-- Long-running work; an unfinished job with the same kind and key is resumed, not restarted.
CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL,
    key          TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    params       TEXT NOT NULL DEFAULT '{}',
    total        INTEGER,
    done         INTEGER NOT NULL DEFAULT 0,
    message      TEXT,
    error        TEXT,
    pid          INTEGER,
    started_at   TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    finished_at  TEXT,
    attempts     INTEGER NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX jobs_open_key ON jobs(kind, key) WHERE state != 'done';

-- Datasets and their immutable versions.
CREATE TABLE datasets (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE dataset_versions (
    id                INTEGER PRIMARY KEY,
    dataset_id        INTEGER NOT NULL REFERENCES datasets(id),
    version           INTEGER NOT NULL,
    parent_id         INTEGER REFERENCES dataset_versions(id),
    created_at        TEXT NOT NULL,
    trigger           TEXT NOT NULL,
    class_word        TEXT NOT NULL,
    caption_template  TEXT NOT NULL,
    trigger_placement TEXT NOT NULL,
    selection         TEXT NOT NULL,
    note              TEXT,
    UNIQUE (dataset_id, version)
);
CREATE TABLE dataset_items (
    version_id INTEGER NOT NULL REFERENCES dataset_versions(id),
    image_sha  TEXT NOT NULL REFERENCES images(sha256),
    caption    TEXT NOT NULL,
    PRIMARY KEY (version_id, image_sha)
);

CREATE TRIGGER dataset_versions_immutable_update BEFORE UPDATE ON dataset_versions
BEGIN SELECT RAISE(ABORT, 'dataset versions are immutable: create a new version'); END;
CREATE TRIGGER dataset_versions_immutable_delete BEFORE DELETE ON dataset_versions
BEGIN SELECT RAISE(ABORT, 'dataset versions are immutable: create a new version'); END;
CREATE TRIGGER dataset_items_immutable_update BEFORE UPDATE ON dataset_items
BEGIN SELECT RAISE(ABORT, 'dataset versions are immutable: create a new version'); END;
CREATE TRIGGER dataset_items_immutable_delete BEFORE DELETE ON dataset_items
BEGIN SELECT RAISE(ABORT, 'dataset versions are immutable: create a new version'); END;
