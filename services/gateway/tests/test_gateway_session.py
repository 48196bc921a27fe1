"""The session buffer and its catch-up ordering, driven directly (no socket needed)."""

import asyncio

from switchboard_gateway.sessions import CLOSE_SLOW_CONSUMER, Session


class Sink:
    def __init__(self) -> None:
        self.frames: list[str] = []
        self.closed: tuple[int, str] | None = None
        self.arrived = asyncio.Event()

    async def send(self, frame: str) -> None:
        self.frames.append(frame)
        self.arrived.set()

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


async def _drain(session: Session, sink: Sink, count: int) -> None:
    async with asyncio.timeout(5):
        while len(sink.frames) < count:
            sink.arrived.clear()
            await sink.arrived.wait()


async def test_live_messages_wait_for_the_flush_and_duplicates_are_skipped() -> None:
    sink = Sink()
    session = Session("ann", sink.send, sink.close, buffer_limit=10)
    session.start()
    session.deliver("live", b"live-3", "m3")
    session.deliver("live", b"live-4", "m4")
    session.deliver("reply", b"reply", None)
    session.deliver("flush", b"flush-1", "m1")
    session.deliver("flush", b"flush-3", "m3")
    session.deliver("flush-done", b"done", None)
    session.deliver("live", b"live-5", "m5")
    await _drain(session, sink, 6)
    assert sink.frames == ["reply", "flush-1", "flush-3", "done", "live-4", "live-5"]
    await session.stop()


async def test_a_client_that_stops_reading_is_dropped_not_buffered_forever() -> None:
    sink = Sink()
    never = asyncio.Event()

    async def stuck(frame: str) -> None:
        await never.wait()

    session = Session("ann", stuck, sink.close, buffer_limit=3)
    session.start()
    session.end_catch_up()
    for i in range(10):
        session.deliver("live", f"m{i}".encode(), str(i))
    await asyncio.sleep(0)  # let the scheduled close run
    assert sink.closed == (CLOSE_SLOW_CONSUMER, "slow_consumer")
    await session.stop()
