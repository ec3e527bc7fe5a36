-- taskyard queue schema, version 7: workflows (dependencies) and concurrency keys.
-- The status CHECK gains 'waiting', which SQLite can only change by rebuilding the table:
-- the tasks are copied into the new table (ids, seq and every field kept) and the old
-- one dropped, inside this migration's one transaction.

CREATE TABLE taskyard_tasks_v5 (
    seq              INTEGER PRIMARY KEY,          -- scheduling order
    id               TEXT    NOT NULL UNIQUE,
    type             TEXT    NOT NULL,
    status           TEXT    NOT NULL
                     CHECK (status IN ('waiting', 'queued', 'running', 'completed', 'failed',
                                       'cancelled')),
    priority         INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    payload          TEXT    NOT NULL,
    result           TEXT,
    error            TEXT,
    created_at       REAL    NOT NULL,
    updated_at       REAL    NOT NULL,
    run_after        REAL    NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    timeout          REAL,
    idempotency_key  TEXT,
    lease_token      TEXT,
    lease_expires_at REAL,
    worker_id        TEXT,
    trace_context    TEXT,                         -- JSON: the scheduling span's carrier
    tracebacks       TEXT    NOT NULL DEFAULT '[]', -- JSON: the failed attempts' tracebacks
    concurrency_key  TEXT,                         -- tasks sharing it run up to a limit at once
    on_dependency_failure TEXT NOT NULL DEFAULT 'cancel'
                     CHECK (on_dependency_failure IN ('cancel', 'run')),
    waiting_on       INTEGER NOT NULL DEFAULT 0,   -- a waiting task's unfinished dependencies
    workflow_id      TEXT                          -- the id of its workflow's last task
);

INSERT INTO taskyard_tasks_v5 (seq, id, type, status, priority, attempts, max_attempts,
    payload, result, error, created_at, updated_at, run_after, started_at, finished_at,
    timeout, idempotency_key, lease_token, lease_expires_at, worker_id, trace_context, tracebacks)
SELECT seq, id, type, status, priority, attempts, max_attempts, payload, result, error,
    created_at, updated_at, run_after, started_at, finished_at, timeout, idempotency_key,
    lease_token, lease_expires_at, worker_id, trace_context, tracebacks
FROM taskyard_tasks;

DROP TABLE taskyard_tasks;
ALTER TABLE taskyard_tasks_v5 RENAME TO taskyard_tasks;

-- The claim of tasks without a key: by priority, then scheduling order; run_after and type
-- are in the index so no row is read for a task that is skipped. Keyed tasks have their
-- own index below, so a backlog behind a key at its limit is never walked here.
CREATE INDEX taskyard_tasks_ready ON taskyard_tasks (priority, seq, run_after, type)
    WHERE status = 'queued' AND concurrency_key IS NULL;
CREATE INDEX taskyard_tasks_due ON taskyard_tasks (run_after) WHERE status = 'queued';
CREATE UNIQUE INDEX taskyard_tasks_idempotency ON taskyard_tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX taskyard_tasks_leases ON taskyard_tasks (lease_expires_at) WHERE status = 'running';
-- The claim of keyed tasks: the distinct keys waiting (a skip-scan), queued ones per key
-- in order (due time and type in the index: no row read), and how many run per key.
CREATE INDEX taskyard_tasks_keyed ON taskyard_tasks (concurrency_key, priority, seq,
    run_after, type) WHERE status = 'queued' AND concurrency_key IS NOT NULL;
CREATE INDEX taskyard_tasks_running_keys ON taskyard_tasks (concurrency_key)
    WHERE status = 'running' AND concurrency_key IS NOT NULL;
CREATE INDEX taskyard_tasks_workflow ON taskyard_tasks (workflow_id)
    WHERE workflow_id IS NOT NULL;
-- The dashboard's indexes (version 5) went with the old table: built again.
CREATE INDEX taskyard_tasks_newest ON taskyard_tasks (created_at, id);
CREATE INDEX taskyard_tasks_finished ON taskyard_tasks (finished_at)
    WHERE finished_at IS NOT NULL;
CREATE INDEX taskyard_tasks_finished_types ON taskyard_tasks (status, type, finished_at)
    WHERE finished_at IS NOT NULL;

-- One row per dependency: task_id waits for depends_on. Finishing a task reads its
-- dependents through the primary key; a task's own dependencies through the second index.
CREATE TABLE taskyard_dependencies (
    depends_on TEXT NOT NULL,
    task_id    TEXT NOT NULL,
    PRIMARY KEY (depends_on, task_id)
) WITHOUT ROWID;
CREATE INDEX taskyard_dependencies_task ON taskyard_dependencies (task_id);
