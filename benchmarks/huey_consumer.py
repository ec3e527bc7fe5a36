"""huey's consumer as a child process of the benchmark:

    python -m benchmarks.huey_consumer --db HUEY.db [--workers 2] [--delay 0.05]

The consumer is built, prints ``loaded``, and runs (``Consumer.run``) once it reads
``go``; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.huey_app import make_huey


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--worker-type", default="process", choices=["process", "thread"])
    parser.add_argument("--delay", type=float, default=0.05, help="queue polling interval")
    args = parser.parse_args(argv)
    app = make_huey(args.db)
    consumer = app.huey.create_consumer(
        workers=args.workers,
        worker_type=args.worker_type,
        initial_delay=args.delay,
        backoff=1.0,  # poll at a steady interval, like a taskyard worker
        max_delay=args.delay,
        periodic=False,
        check_worker_health=False,
    )
    print("loaded", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    consumer.run()


if __name__ == "__main__":
    main()
