-- taskyard queue schema, version 6: periodic schedules (taskyard.framework.schedules).
-- definition is the schedule's fields as JSON; times are REAL epoch seconds like the rest.
-- Firing a slot updates next_fire_at under the condition that it still holds the value the
-- firer read, in the transaction that inserts the slot's task.
CREATE TABLE taskyard_schedules (
    name         TEXT    PRIMARY KEY,
    definition   TEXT    NOT NULL,
    enabled      INTEGER NOT NULL DEFAULT 1,
    next_fire_at REAL    NOT NULL,
    last_fire_at REAL,
    last_task_id TEXT,
    created_at   REAL    NOT NULL,
    updated_at   REAL    NOT NULL
);
