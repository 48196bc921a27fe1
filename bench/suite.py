"""The scenarios, their sizes and targets, and the order they run in.

Every scenario runs against a system of its own (a fresh Switchboard, a fresh baseline), so
one scenario's leftovers (queued messages, sessions closing) never weigh on the next.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from bench import floor
from bench.load import quiet_collector
from bench.rates import BusyChat, Group, Pairs, RateScenario, ladder
from bench.sessions import idle_sessions, offline_flush, reconnect_storm
from bench.targets import TARGETS, raise_open_files

Log = Callable[[str], None]


@dataclass
class Sizes:
    """One form of the suite: `full` (the figures in docs/benchmarks.md) or `short` (CI)."""

    pairs: RateScenario
    busy_chat: RateScenario
    group: RateScenario
    big_group: RateScenario
    flush_backlog: int
    idle_levels: list[int]
    storm_sessions: int
    floor_messages: int
    targets: dict[str, float] = field(default_factory=dict)


# The targets for this 2-core machine (docs/benchmarks.md section 4).
TARGETS_FULL = {
    "offline_flush_seconds": 1.0,
    "idle_rss_per_session_kb": 30.0,
    "idle_sessions": 20_000,
    "reconnect_storm_seconds": 10.0,
}

FULL = Sizes(
    pairs=Pairs(
        "pairs",
        "200 users in 100 direct chats, all online, all sending",
        "send → receive",
        150.0,
        # From 20 msg/s, where the latency of a lightly loaded system is judged (the report's
        # "low load" line), up to the target; a ladder stops at its first step that does not
        # hold, so the low steps come first.
        [20, 50, 100, 150, 200, 300, 500, 700, 1000, 1500, 2000],
        60.0,
        100,
    ),
    busy_chat=BusyChat(
        "busy chat",
        "one 50-member group, 10 members sending in turn, the other 40 reading",
        "send → message_sent",
        150.0,
        [50, 100, 200, 300, 500, 700, 1000],
        60.0,
        50,
        senders=10,
    ),
    group=Group(
        "group",
        "one 500-member group, one sender",
        "send → last member",
        500.0,
        [0.5, 1, 2, 5, 10, 20, 40, 80],
        60.0,
        500,
    ),
    big_group=Group(
        "big group",
        "one 5,000-member group, one sender",
        "send → last member",
        1000.0,
        [0.1, 0.2, 0.5, 1, 2, 4],
        60.0,
        5000,
    ),
    flush_backlog=10_000,
    # 20,000 is the target, but a process here may hold at most 20,000 files (a hard limit that
    # needs CAP_SYS_RESOURCE to raise, which this machine's sessions do not have), and the gateway
    # needs a few for itself: 19,500 sessions is as close as this machine allows.
    idle_levels=[5_000, 10_000, 19_500],
    storm_sessions=5_000,
    floor_messages=20_000,
    targets=TARGETS_FULL,
)

# A few seconds per scenario: enough to catch a lost, doubled or reordered message in CI, too
# little for any figure to mean something (latency targets are not judged).
SHORT = Sizes(
    pairs=Pairs("pairs", "40 users in 20 direct chats", "send → receive", float("inf"), [40], 3.0, 20),
    busy_chat=BusyChat(
        "busy chat",
        "one 20-member group, 5 members sending in turn",
        "send → message_sent",
        float("inf"),
        [20],
        3.0,
        20,
        senders=5,
    ),
    group=Group("group", "one 50-member group", "send → last member", float("inf"), [5], 3.0, 50),
    big_group=Group("big group", "one 300-member group", "send → last member", float("inf"), [2], 3.0, 300),
    flush_backlog=300,
    idle_levels=[300],
    storm_sessions=200,
    floor_messages=1_000,
)


def adjusted(
    sizes: Sizes, seconds: float | None, rates: list[float] | None, idle_levels: list[int] | None = None
) -> Sizes:
    """The same sizes with the rate scenarios' step length or ladder, or the idle-sessions
    levels, replaced (for exploring)."""
    changes: dict[str, Any] = {}
    if seconds is not None:
        changes["seconds"] = seconds
    if rates is not None:
        changes["rates"] = rates
    return replace(
        sizes,
        idle_levels=idle_levels or sizes.idle_levels,
        pairs=replace(sizes.pairs, **changes),
        busy_chat=replace(sizes.busy_chat, **changes),
        group=replace(sizes.group, **changes),
        big_group=replace(sizes.big_group, **changes),
    )


SCENARIOS = (
    "pairs",
    "busy chat",
    "group",
    "big group",
    "offline flush",
    "idle sessions",
    "reconnect storm",
)


async def run_scenario(
    name: str, target: str, sizes: Sizes, log: Log, instances: int, partitions: int | None = None
) -> dict[str, Any]:
    start = TARGETS[target]
    async with start(instances=instances, partitions=partitions) as system:
        rated = {
            "pairs": sizes.pairs,
            "busy chat": sizes.busy_chat,
            "group": sizes.group,
            "big group": sizes.big_group,
        }
        if name in rated:
            scenario = rated[name]
            return {**scenario.describe(), **await ladder(system, scenario, log)}
        if name == "offline flush":
            return await offline_flush(system, sizes.flush_backlog, log)
        if name == "idle sessions":
            return await idle_sessions(system, sizes.idle_levels, log)
        if name == "reconnect storm":
            return await reconnect_storm(system, sizes.storm_sessions, log)
    raise ValueError(f"no scenario {name!r}")


async def run(
    sizes: Sizes,
    scenarios: list[str],
    targets: list[str],
    log: Log,
    *,
    with_floor: bool = True,
    instances: int = 1,
    partitions: int | None = None,
) -> dict[str, Any]:
    raise_open_files()
    quiet_collector()
    results: dict[str, Any] = {
        "scenarios": {},
        "started": time.time(),
        "instances": instances,
        "partitions": partitions,
    }
    if with_floor:
        log("floor: the broker and the database alone")
        results["floor"] = await floor.run(sizes.floor_messages, 512, 256, 100)
        log(f"  {results['floor']}")
    for name in scenarios:
        results["scenarios"][name] = {}
        for target in targets:
            log(f"{name}: {target}")
            results["scenarios"][name][target] = await run_scenario(
                name, target, sizes, log, instances, partitions
            )
    results["seconds"] = round(time.time() - results["started"], 1)
    return results


__all__ = ["FULL", "SCENARIOS", "SHORT", "Sizes", "run"]
