-- taskyard queue schema on PostgreSQL, version 6: workflows (dependencies) and concurrency
-- keys. Existing tasks keep every field; the new columns take their defaults.

ALTER TABLE {schema}.taskyard_tasks DROP CONSTRAINT taskyard_tasks_status_check;
ALTER TABLE {schema}.taskyard_tasks ADD CONSTRAINT taskyard_tasks_status_check
    CHECK (status IN ('waiting', 'queued', 'running', 'completed', 'failed', 'cancelled'));
ALTER TABLE {schema}.taskyard_tasks
    ADD COLUMN concurrency_key text,                 -- tasks sharing it run up to a limit at once
    ADD COLUMN on_dependency_failure text NOT NULL DEFAULT 'cancel'
        CHECK (on_dependency_failure IN ('cancel', 'run')),
    ADD COLUMN waiting_on integer NOT NULL DEFAULT 0,  -- a waiting task's unfinished dependencies
    ADD COLUMN has_dependents boolean NOT NULL DEFAULT false,  -- finishing it settles others
    ADD COLUMN workflow_id text;                     -- the id of its workflow's last task

-- The claim of tasks without a key; keyed ones have their own index, so a backlog behind
-- a key at its limit is never walked by the plain claim.
DROP INDEX {schema}.taskyard_tasks_ready;
CREATE INDEX taskyard_tasks_ready ON {schema}.taskyard_tasks (priority, seq)
    WHERE status = 'queued' AND concurrency_key IS NULL;
CREATE INDEX taskyard_tasks_keyed ON {schema}.taskyard_tasks (concurrency_key, priority, seq)
    WHERE status = 'queued' AND concurrency_key IS NOT NULL;
CREATE INDEX taskyard_tasks_running_keys ON {schema}.taskyard_tasks (concurrency_key)
    WHERE status = 'running' AND concurrency_key IS NOT NULL;
CREATE INDEX taskyard_tasks_workflow ON {schema}.taskyard_tasks (workflow_id)
    WHERE workflow_id IS NOT NULL;

-- One row per dependency: task_id waits for depends_on.
CREATE TABLE {schema}.taskyard_dependencies (
    depends_on text NOT NULL,
    task_id    text NOT NULL,
    PRIMARY KEY (depends_on, task_id)
);
CREATE INDEX taskyard_dependencies_task ON {schema}.taskyard_dependencies (task_id);
