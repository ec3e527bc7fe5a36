"""Operations: observability, maintenance, backups, migration between backends.

Uses framework and backends; the CLI is a thin shell over these modules. Each module
is imported by name (``taskyard.ops.maintenance``); this package imports nothing.
"""
