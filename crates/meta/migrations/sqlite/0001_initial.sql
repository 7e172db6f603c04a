-- Berth metadata schema, version 1 (SQLite).
-- Timestamps are seconds since the Unix epoch. Digests are canonical `algorithm:hex` text.
-- Statements use IF NOT EXISTS so that two processes migrating one fresh file at once converge.

CREATE TABLE IF NOT EXISTS repositories (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

-- One record per digest. A storage key is written once and never reused.
CREATE TABLE IF NOT EXISTS blobs (
    digest      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL CHECK (size >= 0),
    storage_key TEXT NOT NULL UNIQUE,
    last_used   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blobs_last_used ON blobs (last_used);

-- A blob is visible in a repository while it is linked to it.
CREATE TABLE IF NOT EXISTS repo_blobs (
    repo_id   INTEGER NOT NULL REFERENCES repositories (id),
    digest    TEXT NOT NULL REFERENCES blobs (digest),
    last_used INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS repo_blobs_digest ON repo_blobs (digest);
CREATE INDEX IF NOT EXISTS repo_blobs_last_used ON repo_blobs (last_used);

CREATE TABLE IF NOT EXISTS manifests (
    id            INTEGER PRIMARY KEY,
    repo_id       INTEGER NOT NULL REFERENCES repositories (id),
    digest        TEXT NOT NULL,
    media_type    TEXT NOT NULL,
    bytes         BLOB NOT NULL,
    size          INTEGER NOT NULL,
    subject       TEXT,
    artifact_type TEXT,
    annotations   TEXT,
    created       INTEGER NOT NULL,
    UNIQUE (repo_id, digest)
);
CREATE INDEX IF NOT EXISTS manifests_subject ON manifests (repo_id, subject) WHERE subject IS NOT NULL;

-- What a manifest references: its config and layers ('blob') or child manifests ('manifest').
CREATE TABLE IF NOT EXISTS manifest_refs (
    repo_id         INTEGER NOT NULL,
    manifest_digest TEXT NOT NULL,
    ref_digest      TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('blob', 'manifest')),
    PRIMARY KEY (repo_id, manifest_digest, kind, ref_digest),
    FOREIGN KEY (repo_id, manifest_digest) REFERENCES manifests (repo_id, digest) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS manifest_refs_ref ON manifest_refs (repo_id, ref_digest, kind);

CREATE TABLE IF NOT EXISTS tags (
    repo_id         INTEGER NOT NULL,
    name            TEXT NOT NULL COLLATE BINARY,
    manifest_digest TEXT NOT NULL,
    updated         INTEGER NOT NULL,
    PRIMARY KEY (repo_id, name),
    FOREIGN KEY (repo_id, manifest_digest) REFERENCES manifests (repo_id, digest) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_manifest ON tags (repo_id, manifest_digest);

CREATE TABLE IF NOT EXISTS uploads (
    id      TEXT PRIMARY KEY,
    repo    TEXT NOT NULL,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS uploads_updated ON uploads (updated);

CREATE TABLE IF NOT EXISTS users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    admin         INTEGER NOT NULL CHECK (admin IN (0, 1))
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
