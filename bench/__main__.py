"""The benchmark suite: `python -m bench` runs every scenario against Switchboard and the
room-based baseline, measures the floor, and writes bench/results/<date>/ (results.json,
results.md, plots) and the results part of docs/benchmarks.md.

    .venv/bin/python -m bench                 # the full suite, about 40 minutes on a 2-core machine
    .venv/bin/python -m bench --short         # seconds per scenario; fails on loss or duplicates
    .venv/bin/python -m bench --scenario pairs --target switchboard

Loopback only: every system is started here on 127.0.0.1 with a database and broker namespace
of its own, and removed after. Every load is bounded in count and time.
"""

import argparse
import asyncio
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.suite import FULL, SCENARIOS, SHORT, adjusted, run


def log(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


def failures(results: dict[str, Any]) -> list[str]:
    """What the short form fails on: anything Switchboard lost, doubled or reordered. (The
    baseline's own failures are findings, shown in the report.)"""
    found = []
    for name, by_target in results["scenarios"].items():
        for target, result in by_target.items():
            if target != "switchboard":
                continue
            steps = result.get("steps", [result])
            for step in steps:
                for key in ("lost", "duplicates", "out_of_order"):
                    if step.get(key):
                        found.append(f"{name} on {target}: {key} {step[key]}")
            if name == "idle sessions" and result["open_at_end"] != result["steps"][-1]["sessions"]:
                found.append(f"{name} on {target}: only {result['open_at_end']} sessions still open")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help="a few seconds per scenario (CI)")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="only these (repeatable)")
    parser.add_argument("--target", action="append", choices=("switchboard", "baseline"), help="only these")
    parser.add_argument(
        "--no-floor", action="store_true", help="skip measuring the broker and database alone"
    )
    parser.add_argument("--seconds", type=float, help="length of each rate step (default 60; 3 short)")
    parser.add_argument(
        "--rates", type=lambda text: [float(r) for r in text.split(",")], help="the ladder, e.g. 100,200,400"
    )
    parser.add_argument(
        "--instances", type=int, default=1, choices=range(1, 5), help="of messages and delivery each (1-4)"
    )
    parser.add_argument(
        "--partitions", type=int, help="Switchboard's CHAT_PARTITIONS (default: one per instance)"
    )
    parser.add_argument(
        "--sessions",
        type=lambda text: [int(n) for n in text.split(",")],
        help="the idle-sessions levels, e.g. 2000,5000 (default 5000,10000,19500; 300 short)",
    )
    parser.add_argument("--out", type=Path, help="results directory (default bench/results/<date>)")
    args = parser.parse_args()

    sizes = adjusted(SHORT if args.short else FULL, args.seconds, args.rates, args.sessions)
    scenarios = args.scenario or list(SCENARIOS)
    targets = args.target or ["switchboard", "baseline"]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    out = args.out or report.ROOT / "bench" / "results" / (f"{stamp}-short" if args.short else stamp)
    command = shlex.join(["python", "-m", "bench", *sys.argv[1:]])
    results = asyncio.run(
        run(
            sizes,
            scenarios,
            targets,
            log,
            with_floor=not args.no_floor,
            instances=args.instances,
            partitions=args.partitions,
        )
    )
    results["command"] = command
    # Only a full run of everything speaks for the whole suite in the docs.
    complete = not args.short and args.instances == 1 and args.partitions is None
    complete = complete and not (args.scenario or args.target or args.seconds or args.rates or args.sessions)
    print(report.write(results, out, command, update_docs=complete))
    log(f"results in {out}")
    found = failures(results)
    if found:
        raise SystemExit("lost, doubled or reordered messages:\n  " + "\n  ".join(found))


if __name__ == "__main__":
    main()
