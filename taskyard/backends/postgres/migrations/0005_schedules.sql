-- taskyard queue schema on PostgreSQL, version 5: periodic schedules
-- (taskyard.framework.schedules). definition is the schedule's fields as JSON text.
-- Firing a slot updates next_fire_at under the condition that it still holds the value
-- the firer read, in the transaction that inserts the slot's task: a second firer waits
-- for the row, finds the condition false and writes nothing.
CREATE TABLE {schema}.taskyard_schedules (
    name         text        PRIMARY KEY,
    definition   text        NOT NULL,
    enabled      boolean     NOT NULL DEFAULT true,
    next_fire_at timestamptz NOT NULL,
    last_fire_at timestamptz,
    last_task_id text,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
