-- taskyard queue schema, version 4: the traceback of each failed attempt.
-- A JSON array of {"attempt", "failed_at", "error", "traceback"}, the newest few attempts
-- (taskyard.framework.models.MAX_TRACEBACKS), each bounded in size; appended by the
-- finish that records the failure, so it costs nothing on the claim or on success.

ALTER TABLE taskyard_tasks ADD COLUMN tracebacks TEXT NOT NULL DEFAULT '[]';
