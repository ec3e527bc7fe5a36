-- taskyard queue schema, version 1.
-- Times are REAL seconds since the Unix epoch, UTC: one representation, compared as numbers.
-- Payloads and results are JSON text, never pickle.

CREATE TABLE taskyard_tasks (
    seq              INTEGER PRIMARY KEY,          -- scheduling order
    id               TEXT    NOT NULL UNIQUE,
    type             TEXT    NOT NULL,
    status           TEXT    NOT NULL
                     CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
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
    worker_id        TEXT
);

-- The claim: queued tasks by priority, then scheduling order; run_after and type are in
-- the index so tasks that are not due, or not this worker's, are skipped without a row read.
CREATE INDEX taskyard_tasks_ready ON taskyard_tasks (priority, seq, run_after, type)
    WHERE status = 'queued';
-- The next delayed task, and the wake-up timer.
CREATE INDEX taskyard_tasks_due ON taskyard_tasks (run_after) WHERE status = 'queued';
-- Idempotency keys are rare: only tasks that have one pay for this index.
CREATE UNIQUE INDEX taskyard_tasks_idempotency ON taskyard_tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The lease sweep.
CREATE INDEX taskyard_tasks_leases ON taskyard_tasks (lease_expires_at) WHERE status = 'running';
-- Every index is paid for on each claim and each finish, so there are no others:
-- inspection and pruning scan, which is rare and cheap next to the hot path.

CREATE TABLE taskyard_runs (
    run_id     TEXT PRIMARY KEY,
    module_id  TEXT NOT NULL,
    status     TEXT NOT NULL,
    created_at REAL NOT NULL,
    data       TEXT NOT NULL                       -- the Run as JSON
);

CREATE TABLE taskyard_workers (
    worker_id      TEXT PRIMARY KEY,
    hostname       TEXT NOT NULL,
    pid            INTEGER NOT NULL,
    started_at     REAL NOT NULL,
    last_heartbeat REAL NOT NULL,
    info           TEXT NOT NULL DEFAULT '{}'      -- JSON: concurrency, running, task types
);
