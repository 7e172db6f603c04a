-- Workload identity federation: projects, robot accounts, identity providers, the audit log,
-- failed-login counters, and a generation counter that every change to the first three bumps.
-- Like 0001, statements are idempotent (IF NOT EXISTS, ON CONFLICT DO NOTHING) so that two
-- processes migrating one fresh file at once converge. Timestamps are Unix seconds, except the
-- audit log's `time_ms` (Unix milliseconds). JSON documents are stored as text; the store does
-- not validate them (higher layers do), but it enforces the references between rows.

CREATE TABLE IF NOT EXISTS projects (
    name       TEXT PRIMARY KEY NOT NULL,
    public     INTEGER NOT NULL DEFAULT 0 CHECK (public IN (0, 1)),
    created_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS identity_providers (
    name       TEXT PRIMARY KEY NOT NULL,
    config     TEXT NOT NULL,           -- the whole provider document (JSON)
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- A robot of a project (`robot$<project>+<name>`) or a system robot (`robot$<name>`, no project).
-- It logs in with a static secret or is federated with one identity provider, never both; with
-- neither it cannot log in. Projects and providers cannot be deleted while robots refer to them.
CREATE TABLE IF NOT EXISTS robots (
    name              TEXT PRIMARY KEY NOT NULL,
    project           TEXT REFERENCES projects (name),
    description       TEXT NOT NULL DEFAULT '',
    disabled          INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    expires_at        INTEGER,
    secret_hash       TEXT,                        -- argon2id PHC string
    identity_provider TEXT REFERENCES identity_providers (name),
    rules             TEXT NOT NULL DEFAULT '[]',  -- JSON array of rule specs
    permissions       TEXT NOT NULL DEFAULT '[]',  -- JSON array of permission specs
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    CONSTRAINT robot_secret_or_provider CHECK (secret_hash IS NULL OR identity_provider IS NULL)
);
CREATE INDEX IF NOT EXISTS robots_by_provider ON robots (identity_provider);
CREATE INDEX IF NOT EXISTS robots_by_project ON robots (project);

-- One row. Every write to projects, robots or identity providers increments it in the same
-- transaction; replicas poll it to know when to reload their compiled rules.
CREATE TABLE IF NOT EXISTS federation_generation (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
);
INSERT INTO federation_generation (id, generation) VALUES (1, 1) ON CONFLICT (id) DO NOTHING;

-- AUTOINCREMENT: ids are never reused, even after pruning every event, so `id < before` pages
-- stay stable.
CREATE TABLE IF NOT EXISTS audit_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms    INTEGER NOT NULL,
    action     TEXT NOT NULL,
    result     TEXT NOT NULL,
    principal  TEXT NOT NULL,
    robots     TEXT NOT NULL DEFAULT '[]',   -- JSON array of robot names
    provider   TEXT,
    subject    TEXT,
    jti        TEXT,
    claims     TEXT,                         -- JSON object
    repository TEXT,
    reference  TEXT,
    client     TEXT,
    message    TEXT
);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit_events (time_ms);
CREATE INDEX IF NOT EXISTS audit_by_repository ON audit_events (repository, id);
CREATE INDEX IF NOT EXISTS audit_by_provider ON audit_events (provider, id);

-- The names an event answers to in a robot filter: each of its robots and its principal, one row
-- each, so the filter is exact (robot `a` never matches `ab`) and walks an index newest first.
CREATE TABLE IF NOT EXISTS audit_names (
    name     TEXT NOT NULL,
    event_id INTEGER NOT NULL REFERENCES audit_events (id) ON DELETE CASCADE,
    PRIMARY KEY (name, event_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS audit_names_event ON audit_names (event_id);

-- Failed logins per key (`addr:<ip>`, `account:<name>`) and fixed window, shared by replicas.
CREATE TABLE IF NOT EXISTS login_failures (
    key          TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    count        INTEGER NOT NULL CHECK (count >= 0),
    PRIMARY KEY (key, window_start)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS login_failures_window ON login_failures (window_start);
