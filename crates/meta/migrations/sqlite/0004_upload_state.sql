-- Upload sessions carry their progress and a lease, so that appends to one upload are serialised
-- by the store (across every process sharing it) instead of by a lock held in one process:
-- a write first claims the upload (a conditional UPDATE: no unexpired lease, the expected
-- offset), then releases it by compare-and-set on its token, recording the new offset, the
-- serialised running hash and the number of finished parts.
-- Like 0003, sqlx applies this migration and records it in one transaction, so of two processes
-- migrating one fresh file at once the loser fails whole and finds it applied when it retries.
-- Portable SQL: PostgreSQL accepts the same statements (BIGINT/BYTEA columns instead). OFFSET is a
-- reserved word there, so the column is always written quoted: "offset".

ALTER TABLE uploads ADD COLUMN "offset" INTEGER NOT NULL DEFAULT 0 CHECK ("offset" >= 0);
ALTER TABLE uploads ADD COLUMN hash_state BLOB NOT NULL DEFAULT x'';
ALTER TABLE uploads ADD COLUMN parts INTEGER NOT NULL DEFAULT 0 CHECK (parts >= 0);
ALTER TABLE uploads ADD COLUMN lease_token TEXT;
ALTER TABLE uploads ADD COLUMN lease_until INTEGER;
