-- Workload identity federation: projects, robot accounts, identity providers, the audit log,
-- failed-login counters, and a generation counter that every change to the first three bumps.

CREATE TABLE projects (
    name       TEXT PRIMARY KEY NOT NULL,
    public     INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);

CREATE TABLE identity_providers (
    name       TEXT PRIMARY KEY NOT NULL,
    config     TEXT NOT NULL,           -- the provider document (JSON)
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE robots (
    name              TEXT PRIMARY KEY NOT NULL,   -- robot$<project>+<name> or robot$<name>
    project           TEXT REFERENCES projects (name),
    description       TEXT NOT NULL DEFAULT '',
    disabled          INTEGER NOT NULL DEFAULT 0,
    expires_at        INTEGER,
    secret_hash       TEXT,
    identity_provider TEXT REFERENCES identity_providers (name),
    rules             TEXT NOT NULL DEFAULT '[]',  -- JSON array of rule specs
    permissions       TEXT NOT NULL DEFAULT '[]',  -- JSON array of permission specs
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    CHECK (secret_hash IS NULL OR identity_provider IS NULL)
);
CREATE INDEX robots_by_provider ON robots (identity_provider);
CREATE INDEX robots_by_project ON robots (project);

CREATE TABLE federation_generation (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
);
INSERT INTO federation_generation (id, generation) VALUES (1, 1);

CREATE TABLE audit_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms    INTEGER NOT NULL,
    action     TEXT NOT NULL,
    result     TEXT NOT NULL,
    principal  TEXT NOT NULL,
    robots     TEXT NOT NULL DEFAULT '[]',   -- JSON array
    provider   TEXT,
    subject    TEXT,
    jti        TEXT,
    claims     TEXT,                         -- JSON object
    repository TEXT,
    reference  TEXT,
    client     TEXT,
    message    TEXT
);
CREATE INDEX audit_by_time ON audit_events (time_ms);
CREATE INDEX audit_by_repository ON audit_events (repository, id);
CREATE INDEX audit_by_provider ON audit_events (provider, id);

-- One row per (event, robot) so robot filters are exact and indexed.
CREATE TABLE audit_robots (
    event_id INTEGER NOT NULL REFERENCES audit_events (id) ON DELETE CASCADE,
    robot    TEXT NOT NULL,
    PRIMARY KEY (robot, event_id)
);

CREATE TABLE login_failures (
    key          TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    count        INTEGER NOT NULL,
    PRIMARY KEY (key, window_start)
);
