-- taskyard queue schema on PostgreSQL, version 4: what the dashboard reads and writes.

-- The task list, newest first, paged by (created_at, id): a page reads this index from
-- the cursor on and stops once it is full. created_at never changes: only adding a task
-- pays for it.
CREATE INDEX taskyard_tasks_newest ON {schema}.taskyard_tasks (created_at, id);
-- The overview's window reads the tasks that finished in it, not the whole table.
CREATE INDEX taskyard_tasks_finished ON {schema}.taskyard_tasks (finished_at)
    WHERE finished_at IS NOT NULL;

-- Operators' actions (retry, cancel, purge, pause, resume), newest last.
CREATE TABLE {schema}.taskyard_audit (
    seq    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     double precision NOT NULL,             -- epoch seconds, exactly as given
    actor  text        NOT NULL,
    action text        NOT NULL,
    target text        NOT NULL,
    count  integer     NOT NULL DEFAULT 1,
    detail json        NOT NULL DEFAULT '{}'
);

-- Queue-wide state workers read: 'intake_paused' = '1' while an operator paused intake.
CREATE TABLE {schema}.taskyard_state (
    key   text PRIMARY KEY,
    value text NOT NULL
);
