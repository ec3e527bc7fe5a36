"""A web service that queues jobs with taskyard: a producer-only FastAPI process
(:mod:`.web`) and a worker process (``taskyard worker --app jobs_service.worker:register``)
sharing one durable queue, with one OpenTelemetry trace across both."""
