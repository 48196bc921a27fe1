"""A chaos run: a system of its own under a steady open-loop load, faults injected at random
moments, then the oracle, and one table of what happened."""

import asyncio
import contextlib
import random
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from tests.integration.client import Api, unique
from tests.integration.system import System, running_system

from .faults import Fault, Infra, Injected, schedule
from .load import User
from .oracle import Verdict, judge, lost_pairs, rebuild_differences
from .speed import BACK_FACTOR, Latencies, SpeedLevel

__all__ = ["Report", "chaos"]

# How long the system gets to recover from one fault before the run calls it unrecovered, and
# to settle (every acknowledged message delivered) once the load stops: generous, because a
# 2-core machine restarting a service under load is slow, and a miss is reported, not hidden.
RECOVERY_TIMEOUT = 120.0
SETTLE_TIMEOUT = 120.0
# A fault after which the load's p99 is not back within BACK_FACTOR of its level this long after
# the fault began fails the run: slower for good is a failure to recover, not a slow recovery.
FULL_SPEED_TIMEOUT = 60.0
# The load's level is its p99 over this long, after a warm-up, before the first fault.
WARMUP_SECONDS, LEVEL_SECONDS = 3.0, 10.0


@dataclass
class Report:
    faults: list[Injected] = field(default_factory=list)
    verdict: Verdict = field(default_factory=Verdict)
    level: SpeedLevel | None = None
    seconds: float = 0.0
    seed: int = 0

    def table(self) -> str:
        """One row per fault kind and target. `fault lasted`: from injection until the process
        was back (restarted, resumed, reading again); `recovered`: from injection until a probe
        message went end to end again; `users back`: for a gateway, until every user it held had
        reconnected elsewhere and finished a catch-up; `full speed`: until the load's p99 was back
        within BACK_FACTOR of its level before the faults (speed.py), the worst of the kind."""
        lines = [
            f"{'fault':<18} {'target':<10} {'n':>3} {'fault lasted':>13} {'recovered p50':>14} {'max':>14}"
            f" {'users back':>11} {'full speed':>11}",
        ]
        by_kind: dict[tuple[str, str], list[Injected]] = {}
        for fault in self.faults:
            target = "client" if fault.kind in ("client cut", "slow client") else fault.target
            by_kind.setdefault((fault.kind, target), []).append(fault)
        for (kind, target), faults in sorted(by_kind.items()):
            lasted = max(f.ended - f.started for f in faults)
            times = [f.recovered - f.started for f in faults if f.recovered is not None]
            back = [f.users_back - f.started for f in faults if f.users_back is not None]
            users_back = f"{max(back):.1f} s" if back else "-"
            if target.startswith("gateway-") and len(back) < len(faults):
                users_back = "NOT BACK"
            p50 = f"{statistics.median(times):.1f} s" if times else "-"
            worst = f"{max(times):.1f} s" if len(times) == len(faults) else "NOT RECOVERED"
            speeds = [f.full_speed for f in faults if f.full_speed is not None]
            full_speed = f"{max(speeds):.1f} s" if len(speeds) == len(faults) else "NOT BACK"
            lines.append(
                f"{kind:<18} {target:<10} {len(faults):>3} {lasted:>11.1f} s {p50:>14} {worst:>14}"
                f" {users_back:>11} {full_speed:>11}"
            )
        v = self.verdict
        lines += [
            "",
            f"faults injected {len(self.faults)}, run {self.seconds:.0f} s, seed {self.seed}",
        ]
        if self.level is not None:
            lines.append(
                f"load's p99 before the faults {self.level.p99 * 1000:.0f} ms over"
                f" {self.level.samples} live deliveries; full speed = p99 within {BACK_FACTOR}x of it"
            )
        lines += [
            f"messages acknowledged (message_sent) {v.acknowledged}, deliveries due {v.deliveries},"
            f" delivered {v.deliveries - v.lost}",
            f"lost {v.lost}, stored twice {v.stored_twice}, reordered {v.reordered},"
            f" to non-members {v.to_non_members}, event-log rebuild differences {v.rebuild_differences}",
            f"sends never confirmed (still unacknowledged when the run ended) {v.unconfirmed}",
        ]
        lines += [f"  {example}" for example in v.examples[:20]]
        return "\n".join(lines)


@dataclass
class World:
    system: System
    users: list[User]
    members: dict[str, set[str]]
    chats_of: dict[str, list[str]]
    probe: tuple[User, User, str]
    latencies: Latencies


@contextlib.asynccontextmanager
async def world(system: System) -> AsyncIterator[World]:
    """Ten users in two overlapping groups and four direct chats, plus a probe pair whose
    round trip measures recovery."""
    names = [unique(f"u{i}") for i in range(10)]
    probe_names = unique("probe-a"), unique("probe-b")
    layout = [
        ("group", names[0], names[1:6]),
        ("group", names[4], names[5:]),
        *(("direct", names[i], [names[9 - i]]) for i in range(4)),
        ("direct", probe_names[0], [probe_names[1]]),
    ]
    members: dict[str, set[str]] = {}
    for kind, creator, others in layout:
        api = Api(system, creator)
        try:
            chat = await api.create_chat(others, kind=kind)
        finally:
            await api.aclose()
        members[chat] = {creator, *others}
    chats_of = {name: sorted(c for c, m in members.items() if name in m) for name in [*names, *probe_names]}
    urls = [system.ws_url(i) for i in range(system.gateways)]
    changed = asyncio.Condition()
    users = [User(name, urls, set(chats_of[name]), changed) for name in [*names, *probe_names]]
    for user in users:
        user.start()
    try:
        probe_chat = chats_of[probe_names[0]][0]
        probe = (users[-2], users[-1], probe_chat)
        yield World(system, users, members, chats_of, probe, Latencies(users, members))
    finally:
        for user in users:
            await user.stop()


async def load(world: World, rate: float, stop: asyncio.Event) -> None:
    """Open loop: message n is due at start + n / rate whatever happened before."""
    senders = [u for u in world.users if not u.id.startswith("probe")]
    start, n = time.perf_counter(), 0
    while not stop.is_set():
        due = start + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # the load's clock
        sender = random.choice(senders)
        world.latencies.add(await sender.send(random.choice(world.chats_of[sender.id]), due))
        n += 1


async def churn(world: World, stop: asyncio.Event) -> None:
    """Now and then a user's phone goes off for a few seconds and comes back (their messages queue)."""
    candidates = [u for u in world.users if not u.id.startswith("probe")]
    while not stop.is_set():
        await asyncio.sleep(random.uniform(4, 8))  # the churn's clock
        user = random.choice(candidates)
        await user.go_offline()
        await asyncio.sleep(random.uniform(2, 4))  # time offline
        user.go_online()


async def round_trip(world: World, timeout: float) -> bool:
    """The probe pair exchanges one message end to end."""
    sender, receiver, chat = world.probe
    send = await sender.send(chat, time.perf_counter())

    def arrived() -> bool:
        return send.message_id is not None and any(r.message_id == send.message_id for r in receiver.received)

    return await receiver.wait(arrived, timeout)


async def caught_up_since(
    users: list[User], since: float, timeout: float, sessions: dict[str, int] | None = None
) -> float | None:
    """When every one of these users had finished a catch-up after `since`; a user whose
    session of then (`sessions`) is still open never lost anything and counts as back at once."""
    deadline = time.perf_counter() + timeout
    back = []
    for user in users:
        if sessions is not None and user.connected and user.sessions == sessions.get(user.id):
            continue
        left = deadline - time.perf_counter()
        if not await user.wait(lambda u=user: any(t > since for t in u.flushed_at), left):
            return None
        back.append(max(t for t in user.flushed_at if t > since))
    return max(back, default=time.perf_counter())


async def chaos(
    amqp_url: str,
    database_url: str,
    *,
    rounds: int,
    rate: float,
    gap: float,
    seed: int,
    skip: frozenset[str] = frozenset(),
) -> Report:
    random.seed(seed)
    infra = Infra(amqp_url, database_url)
    report = Report(seed=seed)
    started = time.perf_counter()
    async with running_system(amqp_url, database_url, gateways=2) as system, world(system) as w:
        if not await caught_up_since(w.users, 0.0, RECOVERY_TIMEOUT) or not await round_trip(w, 30):
            raise RuntimeError("the system did not come up")
        stop = asyncio.Event()
        tasks = [asyncio.create_task(load(w, rate, stop)), asyncio.create_task(churn(w, stop))]
        try:
            report.level = await steady_level(w)
            limit = BACK_FACTOR * report.level.p99
            for fault in [f for f in schedule(system.gateways, rounds) if f.kind not in skip]:
                await asyncio.sleep(random.uniform(gap / 2, gap))  # a random moment under load
                report.faults.append(await inject(w, infra, fault, limit))
                print(report.faults[-1], flush=True)
        finally:
            stop.set()
            for task in tasks:
                with contextlib.suppress(Exception):
                    await task
        for user in w.users:
            user.go_online()
        # Settled: every acknowledged message reached every member (or the time is up).
        await w.users[0].wait(lambda: not lost_pairs(w.users, w.members), SETTLE_TIMEOUT)
        report.verdict = judge(w.users, w.members)
        differences = await rebuild_differences(
            system.database_url, [s for u in w.users for s in u.sends.values()]
        )
        report.verdict.rebuild_differences = len(differences)
        report.verdict.examples += differences[:5]
    report.seconds = time.perf_counter() - started
    return report


async def steady_level(w: World) -> SpeedLevel:
    """The load's p99 before any fault, once it has warmed up."""
    start = time.perf_counter() + WARMUP_SECONDS
    # The level's window, then a second for its last messages to arrive.
    await asyncio.sleep(WARMUP_SECONDS + LEVEL_SECONDS + 1.0)
    level = w.latencies.level(start, start + LEVEL_SECONDS)
    if level.samples == 0:
        raise RuntimeError("the load got nothing through before the first fault")
    return level


async def inject(w: World, infra: Infra, fault: Fault, limit: float) -> Injected:
    on_gateway = []
    if fault.target.startswith("gateway-"):
        url = w.system.ws_url(int(fault.target.rsplit("-", 1)[1]))
        on_gateway = [u for u in w.users if u.connected and u.url == url]
    sessions = {u.id: u.sessions for u in on_gateway}
    started = time.perf_counter()
    target = await fault.inject(w.system, infra, w.users)
    injected = Injected(fault.kind, target, started, time.perf_counter())
    if await round_trip(w, RECOVERY_TIMEOUT):
        injected.recovered = time.perf_counter()
    if on_gateway:
        injected.users_back = await caught_up_since(on_gateway, started, RECOVERY_TIMEOUT, sessions)
    # The next fault comes only once this one's slowness is over, so each starts from full speed.
    injected.full_speed = await w.latencies.back_within(limit, started, FULL_SPEED_TIMEOUT)
    return injected
