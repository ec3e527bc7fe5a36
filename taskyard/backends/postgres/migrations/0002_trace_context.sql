-- taskyard queue schema on PostgreSQL, version 2: the W3C trace context of the span that
-- scheduled a task (JSON text of the propagator's carrier, e.g. {"traceparent": "00-..."}),
-- so the attempt that runs it, on any host, continues that trace. NULL when tracing was off.
ALTER TABLE {schema}.taskyard_tasks ADD COLUMN trace_context text;
