-- taskyard queue schema, version 3: the W3C trace context of the span that scheduled a
-- task (JSON of the propagator's carrier, e.g. {"traceparent": "00-..."}), so the attempt
-- that runs it, in any process, continues that trace. NULL when tracing was off.
ALTER TABLE taskyard_tasks ADD COLUMN trace_context TEXT;
