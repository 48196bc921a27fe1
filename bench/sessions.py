"""Scenarios about sessions rather than rates: the offline flush, idle sessions, the reconnect storm."""

import asyncio
import time
from collections.abc import Callable
from typing import Any

from bench.load import Ledger, Session, close_all, histogram, open_loop, open_sessions, summary
from bench.rates import PADDING, counts, per_message, work
from bench.targets import Target
from bench.usage import Usage
from tests.integration.client import unique

# The rate a backlog is written at before the flush or the storm: the writing is not what these
# scenarios measure, so it is kept well under the pairs knee.
BACKLOG_RATE = 400.0
# Far past every target: a slow flush is judged slow, not lossy.
WAIT_SECONDS = 300.0


async def queue_backlog(
    target: Target, sender: Session, echo: Session | None, plan: list[tuple[str, str]], ledger: Ledger
) -> float:
    """Send one message per (chat, recipient) in `plan` while the recipients are offline, and
    return once every one is stored and queued. Switchboard queues after storing (delivery is
    a later stage): the sender's other device seeing each message says delivery has handled it."""
    echoed = Ledger(run=ledger.run)
    if echo is not None:
        echo.ledger = echoed
    sender.ledger = ledger
    started = time.perf_counter()

    async def send(n: int, due: float) -> None:
        chat, recipient = plan[n]
        ledger.expect(n, chat, due, [recipient])
        if echo is not None:
            echoed.expect(n, chat, due, [sender.user], confirmed=False)
        await sender.send_message(chat, ledger.content(n, PADDING), ledger.temp_id(n))

    await open_loop(BACKLOG_RATE, len(plan) / BACKLOG_RATE, send)
    # The recipients are offline: only the confirmations and the echoes can come now.
    confirmed = await ledger.confirmations(WAIT_SECONDS)
    if not confirmed or (echo is not None and not await echoed.settled(WAIT_SECONDS)):
        raise RuntimeError(f"the backlog was not stored and queued: {ledger.unconfirmed} unconfirmed")
    return time.perf_counter() - started


async def offline_flush(target: Target, backlog: int, log: Callable[[str], None]) -> dict[str, Any]:
    """`backlog` messages queued for one user, who then connects: time to all of them, in order."""
    sender, recipient = unique("s"), unique("r")
    [chat] = await target.create_chats([(sender, [recipient], "direct")])
    senders = await open_sessions(target.ws_urls[:1] * 2, [sender, sender], target.secret, None)
    echo = senders[1] if target.echoes_to_sender else None
    ledger = Ledger()
    stored = await queue_backlog(target, senders[0], echo, [(chat, recipient)] * backlog, ledger)

    before = await counts(target)
    usage = Usage.of(target.processes)
    usage.start()
    started = time.perf_counter()
    [session] = await open_sessions(target.ws_urls[:1], [recipient], target.secret, ledger)
    flushed_after = time.perf_counter() - started
    settled = await ledger.settled(WAIT_SECONDS)
    seconds = time.perf_counter() - started
    processes = per_message(usage.stop(), backlog)
    after = await counts(target)
    await close_all([*senders, session])
    result = {
        "backlog": backlog,
        "store_seconds": round(stored, 2),
        "seconds": round(seconds, 3),
        "queue_flushed_after": round(flushed_after, 3),
        "queue_flushed_count": session.flushed_count,
        "messages_per_second": round(backlog / seconds),
        "lost": ledger.lost(),
        "duplicates": ledger.duplicates,
        "out_of_order": ledger.out_of_order,
        "processes": processes,
        # Per message flushed, that is per delivery.
        **work(before, after, backlog),
    }
    result["held"] = bool(
        settled and result["lost"] == 0 and result["duplicates"] == 0 and result["out_of_order"] == 0
    )
    log(
        f"  {target.name} offline flush of {backlog}: all in {seconds:.3f} s, lost {result['lost']}"
        f" dup {result['duplicates']} reordered {result['out_of_order']}"
    )
    return result


async def idle_sessions(target: Target, levels: list[int], log: Callable[[str], None]) -> dict[str, Any]:
    """Authenticated sessions that do nothing, all on one gateway: memory per session."""
    gateway = target.gateway
    url = target.ws_urls[:1]
    usage = Usage.of(target.processes, infrastructure=False)
    usage.start()
    base = usage.stop()[gateway]["rss_mb"]
    sessions: list[Session] = []
    steps = []
    try:
        for level in levels:
            usage.start()
            started = time.perf_counter()
            users = [unique("i") for _ in range(level - len(sessions))]
            sessions += await open_sessions(url, users, target.secret, None)
            seconds = time.perf_counter() - started
            processes = usage.stop()
            rss = processes[gateway]["rss_mb"]
            per_session_kb = (rss - base) * 1024 / len(sessions)
            steps.append(
                {
                    "sessions": len(sessions),
                    "connect_seconds": round(seconds, 2),
                    "gateway_rss_mb": rss,
                    "rss_per_session_kb": round(per_session_kb, 1),
                    "processes": processes,
                }
            )
            log(
                f"  {target.name} idle sessions {len(sessions)}: gateway RSS {base} -> {rss} MB,"
                f" {per_session_kb:.1f} KB a session; connected in {seconds:.1f} s"
            )
        # Still connected: every session must still be open after the last level.
        open_now = sum(1 for s in sessions if s.ws.close_code is None)
    finally:
        await close_all(sessions)
    return {"gateway": gateway, "base_rss_mb": base, "steps": steps, "open_at_end": open_now}


async def reconnect_storm(target: Target, count: int, log: Callable[[str], None]) -> dict[str, Any]:
    """`count` sessions drop at once; a message is queued for each; all reconnect at once."""
    sender = unique("s")
    users = [unique("u") for _ in range(count)]
    chats = await target.create_chats([(sender, [u], "direct") for u in users])
    senders = await open_sessions(target.ws_urls[:1] * 2, [sender, sender], target.secret, None)
    echo = senders[1] if target.echoes_to_sender else None
    sessions = await open_sessions(target.ws_urls, users, target.secret, None)
    for session in sessions:
        session.drop()
    await close_all(sessions)
    ledger = Ledger()
    await queue_backlog(target, senders[0], echo, list(zip(chats, users, strict=True)), ledger)

    before = await counts(target)
    usage = Usage.of(target.processes)
    usage.start()
    started = time.perf_counter()
    # Every session at once: no handshake waits for another.
    ready = histogram()
    sessions = await open_sessions(
        target.ws_urls, users, target.secret, ledger, concurrency=count, ready=ready
    )
    reconnected = time.perf_counter() - started
    settled = await ledger.settled(WAIT_SECONDS)
    seconds = time.perf_counter() - started
    processes = per_message(usage.stop(), count)
    after = await counts(target)
    await asyncio.gather(close_all(sessions), close_all(senders))
    result = {
        "sessions": count,
        "seconds": round(seconds, 2),
        "all_flushed_after": round(reconnected, 2),
        # Connect -> caught up (queue_flushed), per session.
        "session_ready_ms": summary(ready),
        "lost": ledger.lost(),
        "duplicates": ledger.duplicates,
        "processes": processes,
        # Per queued message, one for each session: per delivery.
        **work(before, after, count),
    }
    result["held"] = bool(settled and result["lost"] == 0 and result["duplicates"] == 0)
    each = summary(ready)
    log(
        f"  {target.name} reconnect storm of {count}: all back and caught up in {seconds:.2f} s"
        f" (a session: p50 {each.get('p50', 0):.0f} ms, p99 {each.get('p99', 0):.0f} ms),"
        f" lost {result['lost']} dup {result['duplicates']}"
    )
    return result
