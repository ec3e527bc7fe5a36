-- taskyard queue schema on PostgreSQL, version 3: the traceback of each failed attempt.
-- A jsonb array of {"attempt", "failed_at", "error", "traceback"}, the newest few attempts
-- (taskyard.framework.models.MAX_TRACEBACKS), each bounded in size; appended by the
-- finish that records the failure. Adding a column with a constant default rewrites
-- nothing (PostgreSQL 11 and later).

ALTER TABLE {schema}.taskyard_tasks ADD COLUMN tracebacks jsonb NOT NULL DEFAULT '[]';
