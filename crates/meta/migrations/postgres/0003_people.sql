-- People: users onboarded from an OpenID provider, the tokens Berth issues to users, and logins
-- in progress (see the SQLite migration 0006). Names, ids and keys are TEXT COLLATE "C" and JSON
-- documents TEXT, as everywhere here.

ALTER TABLE users
    ADD COLUMN idp_provider  TEXT COLLATE "C",
    ADD COLUMN idp_issuer    TEXT COLLATE "C",
    ADD COLUMN idp_subject   TEXT COLLATE "C",
    ADD COLUMN email         TEXT,
    ADD COLUMN groups        TEXT NOT NULL DEFAULT '[]',   -- JSON array of group names
    ADD COLUMN created_at    BIGINT NOT NULL DEFAULT 0,    -- 0: made before this migration
    ADD COLUMN last_login_at BIGINT,
    ADD CONSTRAINT user_identity_whole
        CHECK ((idp_provider IS NULL) = (idp_subject IS NULL) AND (idp_issuer IS NULL) = (idp_subject IS NULL));
CREATE UNIQUE INDEX users_by_identity ON users (idp_issuer, idp_subject) WHERE idp_issuer IS NOT NULL;

CREATE TABLE user_tokens (
    id            TEXT COLLATE "C" PRIMARY KEY,
    user_name     TEXT COLLATE "C" NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    kind          TEXT NOT NULL CHECK (kind IN ('personal', 'cli', 'web', 'helper')),
    name          TEXT NOT NULL,
    secret_hash   TEXT NOT NULL,
    parent        TEXT COLLATE "C" REFERENCES user_tokens (id) ON DELETE CASCADE,
    scope         TEXT,                          -- JSON document
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    last_used_at  BIGINT,
    refresh_token TEXT,
    checked_at    BIGINT
);
CREATE INDEX user_tokens_by_user ON user_tokens (user_name, created_at, id);
CREATE INDEX user_tokens_by_parent ON user_tokens (parent) WHERE parent IS NOT NULL;
CREATE INDEX user_tokens_by_expiry ON user_tokens (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX user_tokens_to_check ON user_tokens (COALESCE(checked_at, created_at), id) WHERE refresh_token IS NOT NULL;

CREATE TABLE auth_requests (
    id         TEXT COLLATE "C" PRIMARY KEY,
    kind       TEXT NOT NULL,
    data       TEXT NOT NULL,                    -- JSON document
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX auth_requests_by_expiry ON auth_requests (expires_at);
