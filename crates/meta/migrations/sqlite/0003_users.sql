-- Local users can be disabled (a disabled user never logs in; the row and its hash stay so that
-- re-enabling needs no new password). ALTER TABLE ... ADD COLUMN cannot say IF NOT EXISTS, but
-- sqlx applies a migration and records it in one transaction, so of two processes migrating one
-- fresh file at once the loser fails whole and finds it applied when it retries.
-- Portable SQL: PostgreSQL accepts the same statement (with a BOOLEAN column instead).

ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1));
