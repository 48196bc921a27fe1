"""Scenarios driven at a rate: pairs in direct chats, a busy group with many senders, one large
group, one very large group.

Each is prepared once per target (users connected, chats created), then driven step by step up
a rate ladder: each step sends open-loop for its duration, waits for every delivery, and is
judged. The knee is the highest rate whose step held: p99 within the target, nothing lost,
doubled, reordered or refused, and the rate achieved.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hdrh.histogram import HdrHistogram

from bench import broker, pipeline
from bench.load import Ledger, Session, close_all, open_loop, open_sessions, summary
from bench.targets import Target
from bench.usage import Usage
from tests.integration.client import unique

# Message bodies of about the size of a chat message; also the size bench.floor measures.
PADDING = "x" * 100
# How long a step waits, after its last send, for every delivery to arrive before it counts
# the rest as lost: far past any target, so a slow system is judged slow, not lossy.
DRAIN_SECONDS = 60.0
# A step holds its rate when it sent at least this share of it (the generator kept up).
ACHIEVED_SHARE = 0.95

Route = tuple[Session, str, list[str]]


@dataclass
class Prepared:
    sessions: list[Session]
    route: Callable[[int], Route]
    # Deliveries per message: the recipients of one send.
    fan_out: int


@dataclass
class RateScenario:
    name: str
    what: str
    figure: str
    target_p99_ms: float
    rates: list[float]
    seconds: float
    size: int

    async def prepare(self, target: Target) -> Prepared:
        raise NotImplementedError

    def latency(self, ledger: Ledger, prepared: Prepared) -> HdrHistogram:
        """The histogram the scenario's figure (and its target) is about: send -> receive, or
        send -> the last member when a message has several recipients."""
        return ledger.to_last if prepared.fan_out > 1 else ledger.to_each

    def describe(self) -> dict[str, Any]:
        return {"what": self.what, "figure": self.figure, "target_p99_ms": self.target_p99_ms}


class Pairs(RateScenario):
    async def prepare(self, target: Target) -> Prepared:
        pairs = self.size
        left = [unique("a") for _ in range(pairs)]
        right = [unique("b") for _ in range(pairs)]
        chats = await target.create_chats([(a, [b], "direct") for a, b in zip(left, right, strict=True)])
        gateways = len(target.ws_urls)
        # The two ends of a chat on different gateways (when there are two), as most are.
        urls = target.ws_urls
        lefts = await open_sessions(urls, left, target.secret, None)
        rights = await open_sessions(urls[1 % gateways :] + urls[: 1 % gateways], right, target.secret, None)

        def route(n: int) -> Route:
            # Every user sends: pair i in turn, its two ends alternating.
            i = n % pairs
            if (n // pairs) % 2 == 0:
                return lefts[i], chats[i], [right[i]]
            return rights[i], chats[i], [left[i]]

        return Prepared(lefts + rights, route, 1)


class Group(RateScenario):
    async def prepare(self, target: Target) -> Prepared:
        users = [unique("g") for _ in range(self.size)]
        # Members connect before the group exists: presence tells every online contact when a
        # member comes online, so connecting the members of an existing 5,000-member group is
        # 12.5 million presence frames (docs/benchmarks.md, "Found on the way").
        sessions = await open_sessions(target.ws_urls, users, target.secret, None)
        [chat] = await target.create_chats([(users[0], users[1:], "group")])
        recipients = users[1:]

        def route(n: int) -> Route:
            return sessions[0], chat, recipients

        return Prepared(sessions, route, len(recipients))


@dataclass
class BusyChat(RateScenario):
    """One group where several members talk at once and the rest read: what a sender waits for
    is its own confirmation (`message_sent`), while every message also fans out to the group."""

    senders: int = 10

    async def prepare(self, target: Target) -> Prepared:
        users = [unique("c") for _ in range(self.size)]
        # Members connect before the group exists, as in Group: presence would otherwise tell
        # every online member about every other one coming online.
        sessions = await open_sessions(target.ws_urls, users, target.secret, None)
        [chat] = await target.create_chats([(users[0], users[1:], "group")])
        senders = min(self.senders, len(users))
        # Each sender's recipients: every other member (one session each, so no echo to expect).
        recipients = [[u for u in users if u != users[i]] for i in range(senders)]

        def route(n: int) -> Route:
            i = n % senders
            return sessions[i], chat, recipients[i]

        return Prepared(sessions, route, len(users) - 1)

    def latency(self, ledger: Ledger, prepared: Prepared) -> HdrHistogram:
        return ledger.to_confirm


@dataclass
class Counts:
    """What the database and the broker had done at one moment (their own counters)."""

    database: dict[str, int]
    rabbitmq: broker.Reading


async def counts(target: Target) -> Counts:
    """Read both; the broker first: its CLI takes about a second, time the database's backends
    need to report their last writes to pg_stat_database. Read outside the CPU window (the
    CLI's own Erlang VM would count as broker or machine CPU otherwise)."""
    reading = await broker.read()
    return Counts(await target.database_writes(), reading)


def work(before: Counts, after: Counts, units: int) -> dict[str, Any]:
    """Rows, commits and WAL full-page images, broker publishes, routings, deliveries and acks per
    unit (a message sent, or one delivered), with why the broker's are missing when they are."""
    per_broker, error = broker.per_unit(before.rabbitmq, after.rabbitmq, units)
    result: dict[str, Any] = {
        "database_per_message": {
            key: round((after.database[key] - before.database[key]) / units, 2) if units else 0.0
            for key in ("commits", "rows", "full_page_images")
        },
        "broker_per_message": per_broker,
    }
    if error:
        result["broker_error"] = error
    return result


async def step(target: Target, prepared: Prepared, scenario: RateScenario, rate: float) -> dict[str, Any]:
    ledger = Ledger()
    for session in prepared.sessions:
        session.ledger = ledger
    before = await counts(target)
    metrics_before = await pipeline.read(target.metrics_urls)
    usage = Usage.of(target.processes)
    usage.start()

    async def send(n: int, due: float) -> None:
        sender, chat, recipients = prepared.route(n)
        ledger.expect(n, chat, due, recipients)
        await sender.send_message(chat, ledger.content(n, PADDING), ledger.temp_id(n))

    schedule = await open_loop(rate, scenario.seconds, send)
    drained_at = time.perf_counter()
    settled = await ledger.settled(DRAIN_SECONDS)
    drain = time.perf_counter() - drained_at
    processes = usage.stop()
    metrics_after = await pipeline.read(target.metrics_urls)
    after = await counts(target)
    figure = scenario.latency(ledger, prepared)
    latency = summary(figure)
    result: dict[str, Any] = {
        "rate": rate,
        "seconds": scenario.seconds,
        "sent": schedule.sent,
        "achieved_rate": round(schedule.achieved_rate, 1),
        "late_sends": schedule.late,
        "worst_send_lag_ms": round(schedule.worst_lag * 1000, 1),
        "deliveries": schedule.sent * prepared.fan_out,
        "confirmed": ledger.confirmed,
        "errors": dict(ledger.errors),
        "lost": ledger.lost(),
        "duplicates": ledger.duplicates,
        "out_of_order": ledger.out_of_order,
        "drain_seconds": round(drain, 2),
        "latency_ms": latency,
        "to_each_ms": summary(ledger.to_each),
        "to_confirm_ms": summary(ledger.to_confirm),
        "histogram": figure.encode().decode(),
        "processes": per_message(processes, schedule.sent),
        **work(before, after, schedule.sent),
        "pipeline": pipeline.summarize(metrics_before, metrics_after, schedule.sent),
    }
    generator = processes["load generator"]["cores"]
    # One Python process does at most one core of work; near it, the generator is the limit.
    result["generator_bound"] = generator > 0.85 or schedule.late > 0.01 * schedule.sent
    result["held"] = bool(
        settled
        and result["lost"] == 0
        and result["duplicates"] == 0
        and result["out_of_order"] == 0
        and not result["errors"]
        and ledger.confirmed == schedule.sent
        and latency.get("p99", float("inf")) <= scenario.target_p99_ms
        and schedule.achieved_rate >= ACHIEVED_SHARE * rate
    )
    return result


def per_message(processes: dict[str, dict[str, float]], messages: int) -> dict[str, dict[str, float]]:
    """Adds each process's CPU per message sent, in microseconds."""
    for row in processes.values():
        if "cpu_seconds" in row and messages:
            row["cpu_us_per_message"] = round(row["cpu_seconds"] / messages * 1e6, 1)
            if "writes" in row:
                row["writes_per_message"] = round(row["writes"] / messages, 1)
    return processes


async def ladder(target: Target, scenario: RateScenario, log: Callable[[str], None]) -> dict[str, Any]:
    """Climb the rates until a step does not hold; the knee is the last one that did."""
    prepared = await scenario.prepare(target)
    steps = []
    knee = None
    try:
        for rate in scenario.rates:
            result = await step(target, prepared, scenario, rate)
            steps.append(result)
            latency = result["latency_ms"]
            confirm = result["to_confirm_ms"]
            other = result["processes"]["machine"]["other_cores"]
            published = (result["broker_per_message"] or {}).get("publishes", "-")
            if "broker_error" in result:
                log(f"  no broker counters: {result['broker_error']}")
            log(
                f"  {target.name} {scenario.name} {rate:g}/s (other load {other:.2f} core):"
                f" p50 {latency.get('p50', 0):.1f} ms"
                f" p99 {latency.get('p99', 0):.1f} ms (message_sent p50 {confirm.get('p50', 0):.1f}"
                f" p99 {confirm.get('p99', 0):.1f}) publishes/msg {published}"
                f" lost {result['lost']} dup {result['duplicates']}"
                f" errors {sum(result['errors'].values())} achieved {result['achieved_rate']:g}/s"
                f" generator {result['processes']['load generator']['cores']:.2f} core"
                f" -> {'held' if result['held'] else 'not held'}"
            )
            if not result["held"]:
                break
            knee = rate
    finally:
        await close_all(prepared.sessions)
    return {"knee": knee, "steps": steps}
