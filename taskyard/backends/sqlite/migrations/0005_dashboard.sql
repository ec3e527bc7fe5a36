-- taskyard queue schema, version 5: what the dashboard reads and writes.

-- The task list, newest first, paged by (created_at, id): a page reads this index from
-- the cursor on and stops once it is full. created_at never changes, so claims and
-- finishes never touch it; only adding a task pays for it.
CREATE INDEX taskyard_tasks_newest ON taskyard_tasks (created_at, id);

-- Operators' actions (retry, cancel, purge, pause, resume), newest last.
CREATE TABLE taskyard_audit (
    seq    INTEGER PRIMARY KEY,
    at     REAL    NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    target TEXT    NOT NULL,
    count  INTEGER NOT NULL DEFAULT 1,
    detail TEXT    NOT NULL DEFAULT '{}'         -- JSON
);

-- Queue-wide state workers read: 'intake_paused' = '1' while an operator paused intake.
CREATE TABLE taskyard_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Finished tasks. The overview's window (throughput, failures, processing times over the
-- last hour) reads the ones that finished in it, not the whole table; and the depth of
-- finished tasks by status and type is counted from the second index alone, in its
-- order, instead of reading a million rows. Only a finish (and a retry or a prune)
-- writes them; a claim does not. Both are partial on finished_at: a partial index on
-- `status IN (...)` cost every claim and finish about a fifth more CPU, measured.
CREATE INDEX taskyard_tasks_finished ON taskyard_tasks (finished_at)
    WHERE finished_at IS NOT NULL;
CREATE INDEX taskyard_tasks_finished_types ON taskyard_tasks (status, type, finished_at)
    WHERE finished_at IS NOT NULL;
