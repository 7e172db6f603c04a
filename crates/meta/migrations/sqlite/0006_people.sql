-- People: users onboarded from an OpenID provider, the tokens Berth issues to users, and logins
-- in progress.
--
-- A user may be linked to one OpenID identity (the provider's name in Berth, where to re-check
-- it; the `iss` and `sub` of its ID tokens): all three columns or none, and one identity links
-- at most one user. `groups` is the JSON array of the groups its provider reported last (sorted,
-- no duplicates); `created_at` is 0 for the users made before this migration. As in 0003,
-- ALTER TABLE cannot say IF NOT EXISTS, but sqlx applies this migration in one transaction, so
-- of two processes migrating one file at once the loser fails whole and finds it applied when
-- it retries.

ALTER TABLE users ADD COLUMN idp_provider TEXT;
ALTER TABLE users ADD COLUMN idp_issuer TEXT;
ALTER TABLE users ADD COLUMN idp_subject TEXT
    CONSTRAINT user_identity_whole CHECK ((idp_provider IS NULL) = (idp_subject IS NULL) AND (idp_issuer IS NULL) = (idp_subject IS NULL));
ALTER TABLE users ADD COLUMN email TEXT;
ALTER TABLE users ADD COLUMN "groups" TEXT NOT NULL DEFAULT '[]';   -- JSON array of group names
ALTER TABLE users ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN last_login_at INTEGER;
CREATE UNIQUE INDEX users_by_identity ON users (idp_issuer, idp_subject) WHERE idp_issuer IS NOT NULL;

-- Credentials Berth issued to users (personal access tokens, CLI and browser sessions, helper
-- passwords): only a hash of the secret is kept. A token goes with its user and with its parent
-- (a helper password with the CLI login it came from); the parent index serves that cascade.
-- `scope` is a JSON document (NULL: all of the user's access); `refresh_token` is the identity
-- provider's, for re-checking the user in the background (`tokens_to_check` walks the partial
-- index on the time of the last check).
CREATE TABLE user_tokens (
    id            TEXT PRIMARY KEY NOT NULL,
    user_name     TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    kind          TEXT NOT NULL CHECK (kind IN ('personal', 'cli', 'web', 'helper')),
    name          TEXT NOT NULL,
    secret_hash   TEXT NOT NULL,
    parent        TEXT REFERENCES user_tokens (id) ON DELETE CASCADE,
    scope         TEXT,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    last_used_at  INTEGER,
    refresh_token TEXT,
    checked_at    INTEGER
);
CREATE INDEX user_tokens_by_user ON user_tokens (user_name, created_at, id);
CREATE INDEX user_tokens_by_parent ON user_tokens (parent) WHERE parent IS NOT NULL;
CREATE INDEX user_tokens_by_expiry ON user_tokens (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX user_tokens_to_check ON user_tokens (coalesce(checked_at, created_at), id) WHERE refresh_token IS NOT NULL;

-- Logins in progress (an authorization request waiting for its callback, a device authorization
-- waiting for the person): transient, single use, gone at `expires_at`. `data` is a JSON
-- document. Never exported by `berth migrate`.
CREATE TABLE auth_requests (
    id         TEXT PRIMARY KEY NOT NULL,
    kind       TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX auth_requests_by_expiry ON auth_requests (expires_at);
