-- Berth metadata schema, version 1 (PostgreSQL).
--
-- The same tables, columns and rules as the SQLite migrations 0001..0004, in one migration,
-- written for PostgreSQL:
-- - times are BIGINT Unix seconds (the audit log's `time_ms`: milliseconds); sizes, offsets and
--   counters are BIGINT with CHECKs; flags are BOOLEAN; manifest bytes and upload hash states
--   are BYTEA;
-- - every name, key and digest is TEXT COLLATE "C": byte order, as SQLite's BINARY, whatever the
--   database's default collation, so listings sort alike on both backends and the btree indexes
--   serve `name > $last ORDER BY name LIMIT $n` (keyset pagination, never OFFSET);
-- - JSON documents (robot rules and permissions, provider configs, audit robots and claims) are
--   TEXT, stored exactly as given (JSONB would reorder keys and refuse \u0000); the store does not
--   look inside them, except the audit robots array when indexing an event's names.
-- No column that a hot path updates is indexed (repo_blobs.last_used, blobs.last_used,
-- uploads.updated), so those updates stay HOT (no index writes): garbage collection walks the
-- tables in primary-key order in batches instead.
-- sqlx applies a migration in one transaction under an advisory lock, so replicas that start at
-- the same time apply it exactly once.

CREATE TABLE repositories (
    id   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE
);

-- One record per digest. A storage key is written once and never reused.
CREATE TABLE blobs (
    digest      TEXT COLLATE "C" PRIMARY KEY,
    size        BIGINT NOT NULL CHECK (size >= 0),
    storage_key TEXT COLLATE "C" NOT NULL UNIQUE,
    last_used   BIGINT NOT NULL
);

-- A blob is visible in a repository while it is linked to it.
CREATE TABLE repo_blobs (
    repo_id   BIGINT NOT NULL REFERENCES repositories (id),
    digest    TEXT COLLATE "C" NOT NULL REFERENCES blobs (digest),
    last_used BIGINT NOT NULL,
    PRIMARY KEY (repo_id, digest)
);
-- "Is this blob linked anywhere?" (garbage collection, and the foreign key check when a blob
-- record is deleted).
CREATE INDEX repo_blobs_digest ON repo_blobs (digest);

CREATE TABLE manifests (
    repo_id       BIGINT NOT NULL REFERENCES repositories (id),
    digest        TEXT COLLATE "C" NOT NULL,
    media_type    TEXT NOT NULL,
    bytes         BYTEA NOT NULL,
    size          BIGINT NOT NULL CHECK (size >= 0),
    subject       TEXT COLLATE "C",
    artifact_type TEXT,
    annotations   TEXT,                 -- JSON object
    created       BIGINT NOT NULL,
    PRIMARY KEY (repo_id, digest)
);
CREATE INDEX manifests_subject ON manifests (repo_id, subject) WHERE subject IS NOT NULL;

-- What a manifest references: its config and layers ('blob') or child manifests ('manifest').
CREATE TABLE manifest_refs (
    repo_id         BIGINT NOT NULL,
    manifest_digest TEXT COLLATE "C" NOT NULL,
    ref_digest      TEXT COLLATE "C" NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('blob', 'manifest')),
    PRIMARY KEY (repo_id, manifest_digest, kind, ref_digest),
    FOREIGN KEY (repo_id, manifest_digest) REFERENCES manifests (repo_id, digest) ON DELETE CASCADE
);
CREATE INDEX manifest_refs_ref ON manifest_refs (repo_id, ref_digest, kind);

CREATE TABLE tags (
    repo_id         BIGINT NOT NULL,
    name            TEXT COLLATE "C" NOT NULL,
    manifest_digest TEXT COLLATE "C" NOT NULL,
    updated         BIGINT NOT NULL,
    PRIMARY KEY (repo_id, name),
    FOREIGN KEY (repo_id, manifest_digest) REFERENCES manifests (repo_id, digest) ON DELETE CASCADE
);
CREATE INDEX tags_manifest ON tags (repo_id, manifest_digest);

-- Upload sessions with their progress and lease (see the SQLite migration 0004): a write claims
-- the upload with a conditional UPDATE and releases it by compare-and-set on its token.
-- OFFSET is a reserved word: the column is always written quoted.
CREATE TABLE uploads (
    id          TEXT COLLATE "C" PRIMARY KEY,
    repo        TEXT NOT NULL,
    created     BIGINT NOT NULL,
    updated     BIGINT NOT NULL,
    "offset"    BIGINT NOT NULL DEFAULT 0 CHECK ("offset" >= 0),
    hash_state  BYTEA NOT NULL DEFAULT ''::bytea,
    parts       BIGINT NOT NULL DEFAULT 0 CHECK (parts >= 0),
    lease_token TEXT,
    lease_until BIGINT
);

CREATE TABLE users (
    name          TEXT COLLATE "C" PRIMARY KEY,
    password_hash TEXT NOT NULL,
    admin         BOOLEAN NOT NULL,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE settings (
    key   TEXT COLLATE "C" PRIMARY KEY,
    value TEXT NOT NULL
);

-- Workload identity federation (see the SQLite migration 0002).
CREATE TABLE projects (
    name       TEXT COLLATE "C" PRIMARY KEY,
    public     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);

CREATE TABLE identity_providers (
    name       TEXT COLLATE "C" PRIMARY KEY,
    config     TEXT NOT NULL,                    -- the whole provider document (JSON)
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- A robot logs in with a static secret or is federated with one identity provider, never both;
-- projects and providers cannot be deleted while robots refer to them.
CREATE TABLE robots (
    name              TEXT COLLATE "C" PRIMARY KEY,
    project           TEXT COLLATE "C" REFERENCES projects (name),
    description       TEXT NOT NULL DEFAULT '',
    disabled          BOOLEAN NOT NULL DEFAULT FALSE,
    expires_at        BIGINT,
    secret_hash       TEXT,                      -- argon2id PHC string
    identity_provider TEXT COLLATE "C" REFERENCES identity_providers (name),
    rules             TEXT NOT NULL DEFAULT '[]', -- JSON array of rule specs
    permissions       TEXT NOT NULL DEFAULT '[]', -- JSON array of permission specs
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    CONSTRAINT robot_secret_or_provider CHECK (secret_hash IS NULL OR identity_provider IS NULL)
);
CREATE INDEX robots_by_provider ON robots (identity_provider, name);
CREATE INDEX robots_by_project ON robots (project, name);

-- One row. Every write to projects, robots, identity providers or users locks it first (that
-- lock serialises those writes) and increments it in the same transaction when it changed
-- something; replicas poll it to know when to reload.
CREATE TABLE federation_generation (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    generation BIGINT NOT NULL
);
INSERT INTO federation_generation (id, generation) VALUES (1, 1);

-- Identity ids are never reused, even after pruning every event, so `id < before` pages stay
-- stable.
CREATE TABLE audit_events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time_ms    BIGINT NOT NULL,
    action     TEXT NOT NULL,
    result     TEXT NOT NULL,
    principal  TEXT NOT NULL,
    robots     TEXT NOT NULL DEFAULT '[]',       -- JSON array of robot names
    provider   TEXT,
    subject    TEXT,
    jti        TEXT,
    claims     TEXT,                             -- JSON object
    repository TEXT,
    reference  TEXT,
    client     TEXT,
    message    TEXT
);
CREATE INDEX audit_by_time ON audit_events (time_ms, id);
CREATE INDEX audit_by_repository ON audit_events (repository, id);
CREATE INDEX audit_by_provider ON audit_events (provider, id);

-- The names an event answers to in a robot filter: each of its robots and its principal.
CREATE TABLE audit_names (
    name     TEXT COLLATE "C" NOT NULL,
    event_id BIGINT NOT NULL REFERENCES audit_events (id) ON DELETE CASCADE,
    PRIMARY KEY (name, event_id)
);
CREATE INDEX audit_names_event ON audit_names (event_id);

-- Failed logins per key (`addr:<ip>`, `account:<name>`) and fixed window, shared by replicas.
CREATE TABLE login_failures (
    key          TEXT COLLATE "C" NOT NULL,
    window_start BIGINT NOT NULL,
    count        BIGINT NOT NULL CHECK (count >= 0),
    PRIMARY KEY (key, window_start)
);
CREATE INDEX login_failures_window ON login_failures (window_start);
