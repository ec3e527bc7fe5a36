-- taskyard queue schema, version 2: stopping workers through the queue.
-- `taskyard workers stop` sets stop_requested_at; the worker's next heartbeat reads it,
-- the worker drains as on SIGTERM and deletes its row as it exits.
ALTER TABLE taskyard_workers ADD COLUMN stop_requested_at REAL;
