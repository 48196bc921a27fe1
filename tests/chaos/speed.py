"""How fast the steady load goes: the p99 of send → receive over windows of the sends' due time,
and how long after a fault it is back within reach of its level before.

Only live deliveries count: the sender's and the recipient's devices both connected when the
message was due and still on that connection when it arrived. A message that waited for a
device to come back (the churn, a cut socket, a killed gateway) measures the device's absence,
not the system's speed; the messages sent after it tell whether the system is back. A live
delivery that has not arrived yet counts with the time it has waited so far, so a window of
messages that are stuck never looks fast.
"""

import asyncio
import bisect
import math
import time
from dataclasses import dataclass, field

from .load import Send, User

__all__ = ["BACK_FACTOR", "Latencies", "SpeedLevel"]

# Full speed is a p99 within this factor of the level before the fault.
BACK_FACTOR = 1.5
# Windows of due time the p99 is taken over, slid by STEP: at the chaos run's 15 msg/s and a
# few recipients a message, 2 s hold about a hundred deliveries, enough for a p99 that one slow
# delivery does not decide alone.
WINDOW = 2.0
STEP = 0.25
# A window with fewer live deliveries than this says nothing (everyone it concerns was away).
MIN_SAMPLES = 20


def p99(samples: list[float]) -> float:
    """Nearest-rank 99th percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


@dataclass
class SpeedLevel:
    p99: float
    samples: int


@dataclass
class Latencies:
    """Every send of a load in due order (the load appends), and the users who see them."""

    users: list[User]
    members: dict[str, set[str]]
    sends: list[Send] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_id = {user.id: user for user in self.users}
        self._dues = [send.due for send in self.sends]

    def add(self, send: Send) -> None:
        self.sends.append(send)
        self._dues.append(send.due)

    def samples(self, start: float, end: float, now: float) -> list[float]:
        """Send → receive seconds of every live delivery of the sends due in [start, end)."""
        first, last = bisect.bisect_left(self._dues, start), bisect.bisect_left(self._dues, end)
        out: list[float] = []
        for send in self.sends[first:last]:
            sender = self._by_id[send.sender]
            from_session = sender.session_at(send.due)
            if from_session is None:
                continue  # sent while offline: it goes out when the device is back
            confirmed = send.confirmed_at if send.confirmed_at is not None else now
            if not sender.open_until(from_session, confirmed):
                continue  # the sender's connection went down with the send on it
            for member in self.members[send.chat_id] - {send.sender}:
                recipient = self._by_id[member]
                session = recipient.session_at(send.due)
                if session is None:
                    continue
                seen = recipient.first_seen.get(send.message_id) if send.message_id else None
                if seen is not None and seen[0] == session:
                    out.append(seen[1] - send.due)
                elif seen is None and recipient.open_until(session, now):
                    out.append(now - send.due)  # still on its way: at least this slow
        return out

    def level(self, start: float, end: float) -> SpeedLevel:
        samples = self.samples(start, end, time.perf_counter())
        return SpeedLevel(p99(samples) if samples else math.inf, len(samples))

    async def back_within(self, limit: float, since: float, timeout: float) -> float | None:
        """Seconds from `since` to the start of the first window of sends whose p99 is within
        `limit`; None if no window starting before `since + timeout` is.

        A window is judged once its last send has had `limit` to arrive: by then every live
        delivery of it either arrived or has waited longer than `limit`, so the verdict is final.
        """
        start = since
        while start < since + timeout:
            ready = start + WINDOW + limit
            wait = ready - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)  # the window's last send has not had its time yet
            samples = self.samples(start, start + WINDOW, time.perf_counter())
            if len(samples) >= MIN_SAMPLES and p99(samples) <= limit:
                return start - since
            start += STEP
        return None
