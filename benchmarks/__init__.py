"""taskyard's benchmarks: one command, the same workload through raw sqlite3, taskyard and
its Python peers, figures printed as a table (``python -m benchmarks --help``).

These are figures, not tests: nothing here runs under pytest.
"""
