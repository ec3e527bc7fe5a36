-- taskyard queue schema on PostgreSQL, version 1. {schema} is the quoted schema name
-- (task_execution.postgres_schema). Times are timestamptz; payloads and results are
-- `json` (kept as written: the exact text taskyard encoded), never pickle.

CREATE TABLE {schema}.taskyard_tasks (
    seq              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- scheduling order
    id               text        NOT NULL UNIQUE,
    type             text        NOT NULL,
    status           text        NOT NULL
                     CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    priority         integer     NOT NULL,
    attempts         integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL,
    payload          json        NOT NULL,
    result           json,
    error            text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    run_after        timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz,
    timeout          double precision,
    idempotency_key  text,
    lease_token      text,
    lease_expires_at timestamptz,
    worker_id        text
) WITH (
    -- A busy queue updates every row three times and deletes it later: vacuum early so
    -- dead rows do not pile up in front of the claim's index scan.
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 500,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0,
    fillfactor = 85
);

-- The claim: queued tasks by priority, then scheduling order.
CREATE INDEX taskyard_tasks_ready ON {schema}.taskyard_tasks (priority, seq)
    WHERE status = 'queued';
-- The next delayed task, and the wake-up timer.
CREATE INDEX taskyard_tasks_due ON {schema}.taskyard_tasks (run_after) WHERE status = 'queued';
-- Idempotency keys are rare: only tasks that have one pay for this index.
CREATE UNIQUE INDEX taskyard_tasks_idempotency ON {schema}.taskyard_tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The lease sweep.
CREATE INDEX taskyard_tasks_leases ON {schema}.taskyard_tasks (lease_expires_at)
    WHERE status = 'running';

CREATE TABLE {schema}.taskyard_runs (
    run_id     text PRIMARY KEY,
    module_id  text NOT NULL,
    status     text NOT NULL,
    created_at timestamptz NOT NULL,
    data       json NOT NULL                       -- the Run as JSON
);

CREATE TABLE {schema}.taskyard_workers (
    worker_id      text PRIMARY KEY,
    hostname       text NOT NULL,
    pid            integer NOT NULL,
    started_at     timestamptz NOT NULL,
    last_heartbeat timestamptz NOT NULL,
    info           json NOT NULL DEFAULT '{}',     -- concurrency, running, task types
    stop_requested_at timestamptz                  -- `taskyard workers stop` asked it to stop
);
