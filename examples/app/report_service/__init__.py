"""An example application: it asks for reports through a TaskOrchestrator it receives by
injection, and never names a taskyard backend."""
