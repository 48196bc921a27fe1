"""Run the chaos suite: `python -m tests.chaos [--short]` (scripts/chaos; CI runs --short).

Starts a system of its own (two gateways) against the local RabbitMQ and PostgreSQL, which it
stops and starts as faults: only loopback URLs are accepted. Exits 1 on any loss, double store,
reordering, delivery to a non-member, event-log mismatch, unrecovered fault, or fault after which
the load's latency was not back to full speed within a minute.
"""

import argparse
import asyncio
import os
import random
import sys

from .faults import INJECT
from .run import chaos


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--short", action="store_true", help="one round: every fault kind and target once")
    parser.add_argument("--rounds", type=int, default=2, choices=range(1, 11), metavar="1..10")
    # ~15 msg/s: a steady load the 2-core box carries with room to recover; not a benchmark.
    parser.add_argument("--rate", type=float, default=15.0)
    parser.add_argument("--gap", type=float, default=6.0, help="at most this many seconds between faults")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--skip", action="append", default=[], choices=sorted(INJECT), help="a fault kind to leave out"
    )
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    amqp = os.environ.get("CHAT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    database = os.environ.get(
        "CHAT_DATABASE_URL", "postgresql://switchboard:switchboard@127.0.0.1:5432/switchboard"
    )
    report = asyncio.run(
        chaos(
            amqp,
            database,
            rounds=1 if args.short else args.rounds,
            rate=args.rate,
            gap=args.gap,
            seed=seed,
            skip=frozenset(args.skip),
        )
    )
    print(report.table())
    # A gateway whose users were not all caught up within the time shows NOT BACK in the table;
    # it fails the run only through the oracle (a loss), not by itself. Not back to full speed
    # within a minute does fail it.
    unrecovered = [f for f in report.faults if f.recovered is None or f.full_speed is None]
    if not report.verdict.passed or unrecovered:
        print(f"FAILED (seed {seed}): {len(unrecovered)} unrecovered fault(s)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
