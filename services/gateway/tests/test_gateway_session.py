"""The session buffer and its catch-up ordering, driven directly (no socket needed)."""

import asyncio
from collections.abc import Callable

from switchboard_contracts.pages import PageEntry, pack_page
from switchboard_gateway.routed import Live, Page, Reply
from switchboard_gateway.sessions import CATCH_UP_TIMEOUT, CLOSE_TRY_AGAIN, Session


class Sink:
    """Stands in for the socket: records what the session writes and how it closes."""

    def __init__(self) -> None:
        self.frames: list[str] = []
        self.closed: tuple[int, str] | None = None
        self.changed = asyncio.Event()
        self.pages: list[int] = []

    async def send(self, frames: list[bytes]) -> None:
        self.frames.extend(frame.decode() for frame in frames)
        self.changed.set()

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        self.changed.set()

    async def request_page(self, after: int, cursor: str = "") -> None:
        self.pages.append(after)
        self.changed.set()

    async def until(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(5):
            while not done():
                self.changed.clear()
                await self.changed.wait()


def live(message_id: str, seq: int, chat: str = "c1") -> Live:
    return Live(f"live-{message_id}".encode(), ("ann",), message_id, chat, seq)


def page(
    session: Session,
    messages: list[tuple[str, int]],
    *,
    chat: str = "c1",
    after: int = 0,
    more_after: int | None = None,
) -> Page:
    """A flush page of (message id, seq) in one chat, as delivery packs it."""
    entries = [PageEntry(m, chat, seq, f"flush-{m}".encode()) for m, seq in messages]
    return Page(
        session.id,
        pack_page(entries),
        flush_id=session.flush_id,
        after=after,
        count=len(entries),
        more_after=more_after,
        more_cursor="",
    )


def session_for(sink: Sink, **options: float) -> Session:
    session = Session("ann", sink.send, sink.close, request_page=sink.request_page, **options)  # type: ignore[arg-type]
    session.start()
    return session


async def test_live_messages_wait_for_the_flush_and_duplicates_are_skipped() -> None:
    sink = Sink()
    session = session_for(sink, buffer_limit=10)
    session.deliver(live("m3", 3))
    session.deliver(live("m4", 4))
    session.deliver(Reply(b"reply", "gw", session.id))
    session.deliver(page(session, [("m1", 1), ("m3", 3)]))
    session.deliver(live("m5", 5))
    await sink.until(lambda: len(sink.frames) == 6)
    assert sink.frames == [
        "reply",
        "flush-m1",
        "flush-m3",
        '{"event":"queue_flushed","data":{"count":2}}',
        "live-m4",
        "live-m5",
    ]
    await session.stop()


async def test_a_held_message_older_than_the_flush_is_not_sent_after_it() -> None:
    """m5 was acknowledged by another device while this one caught up: sending it now would
    put seq 5 after seq 6."""
    sink = Sink()
    session = session_for(sink, buffer_limit=10)
    session.deliver(live("m5", 5))
    session.deliver(live("m6", 6))
    session.deliver(live("x1", 1, chat="c2"))
    session.deliver(page(session, [("m6", 6)]))
    await sink.until(lambda: len(sink.frames) == 3)
    assert sink.frames == ["flush-m6", '{"event":"queue_flushed","data":{"count":1}}', "live-x1"]
    await session.stop()


async def test_the_next_page_is_asked_for_and_counts_add_up() -> None:
    sink = Sink()
    session = session_for(sink, buffer_limit=10)
    session.deliver(page(session, [("m1", 1)], more_after=41))
    session.deliver(page(session, [("m1", 1)], more_after=41))  # the same page again: ignored
    await sink.until(lambda: sink.pages == [41])
    session.deliver(page(session, [("m1", 1), ("m2", 2)], after=41))  # m1 sent already: once
    await sink.until(lambda: len(sink.frames) == 3)
    assert sink.frames == ["flush-m1", "flush-m2", '{"event":"queue_flushed","data":{"count":3}}']
    assert sink.pages == [41]
    assert not session.catching_up
    await session.stop()


async def test_pages_of_an_earlier_catch_up_are_ignored() -> None:
    sink = Sink()
    session = session_for(sink, buffer_limit=10)
    stale = page(session, [("old", 1)])
    session.begin_catch_up()  # e.g. the broker connection came back: a new catch-up
    session.deliver(stale)
    assert session.catching_up
    session.deliver(page(session, [("new", 2)]))
    await sink.until(lambda: len(sink.frames) == 2)
    assert sink.frames == ["flush-new", '{"event":"queue_flushed","data":{"count":1}}']
    await session.stop()


async def test_a_flush_that_never_ends_closes_the_session_for_a_retry() -> None:
    sink = Sink()
    session = session_for(sink, buffer_limit=10, flush_timeout=0.05)
    session.deliver(live("m1", 1))
    await sink.until(lambda: sink.closed is not None)
    assert sink.closed == (CLOSE_TRY_AGAIN, CATCH_UP_TIMEOUT)
    assert sink.frames == []  # nothing was sent out of order
    await session.stop()


async def test_a_client_that_stops_reading_is_dropped_not_buffered_forever() -> None:
    sink = Sink()
    never = asyncio.Event()

    async def stuck(frames: list[bytes]) -> None:
        await never.wait()

    session = Session("ann", stuck, sink.close, buffer_limit=3)
    session.start()
    session.end_catch_up()
    for i in range(10):
        session.deliver(live(f"m{i}", i))
    await sink.until(lambda: sink.closed is not None)
    assert sink.closed == (CLOSE_TRY_AGAIN, "slow_consumer")
    await session.stop()


async def test_held_messages_count_against_the_byte_bound() -> None:
    sink = Sink()
    session = session_for(sink, buffer_limit=1000, buffer_bytes_limit=64 * 1024)
    session.deliver(Live(b"x" * 40_000, ("ann",), "m1", "c1", 1))
    session.deliver(Live(b"x" * 40_000, ("ann",), "m2", "c1", 2))
    await sink.until(lambda: sink.closed is not None)
    assert sink.closed == (CLOSE_TRY_AGAIN, "slow_consumer")
    await session.stop()


async def test_sync_replaces_the_queue_flush_and_releases_only_newer_live_messages() -> None:
    sink = Sink()
    session = session_for(sink, buffer_limit=20)
    stale_flush_id = session.flush_id
    session.deliver(live("m2", 2))  # before the sync: held behind the queue catch-up
    session.begin_sync()
    stale = page(session, [("m1", 1)])
    session.deliver(Page(session.id, stale.body, stale_flush_id, 0, 1, None, ""))
    session.deliver(live("m5", 5))
    session.deliver(live("n1", 1, chat="c2"))
    for seq in (1, 2, 3, 4):
        session.push_synced(f"m{seq}", "c1", seq, f"sync-m{seq}".encode())
    session.push_synced("m2", "c1", 2, b"sync-m2-again")
    session.end_sync()
    await sink.until(lambda: len(sink.frames) == 6)
    # The stale queue page is ignored, the synced range goes once in order, then held live
    # messages newer than it (m5) or of chats the sync did not cover (n1).
    assert sink.frames == ["sync-m1", "sync-m2", "sync-m3", "sync-m4", "live-m5", "live-n1"]
    assert not session.catching_up and not session.syncing
    await session.stop()


async def test_room_waits_until_the_socket_took_the_buffer() -> None:
    sink = Sink()
    blocked = asyncio.Event()

    async def slow_send(frames: list[bytes]) -> None:
        await blocked.wait()
        await sink.send(frames)

    session = Session("ann", slow_send, sink.close, buffer_limit=500)
    session.start()
    for i in range(300):
        session.push(f"f{i}".encode())

    async def written_when_room() -> int:
        await session.room()
        return len(sink.frames)

    waiting = asyncio.create_task(written_when_room())
    blocked.set()
    # Nothing was written before the socket unblocked, so this proves room() waited for it.
    assert await asyncio.wait_for(waiting, 5) >= 300 - 100
    await session.stop()


async def test_held_live_messages_do_not_block_room_for_a_catch_up() -> None:
    sink = Sink()
    session = session_for(sink, buffer_limit=100, buffer_bytes_limit=64 * 1024)
    # A quarter of the byte bound and more is held behind the catch-up: it cannot drain before
    # the catch-up ends, so it must not count as "no room" for the catch-up's own pages.
    for i in range(20):
        session.deliver(Live(b"x" * 1024, ("ann",), f"h{i}", "c1", 100 + i))
    session.push(b"frame")
    await asyncio.wait_for(session.room(), 5)
    assert not session.closed
    await session.stop()


async def test_only_ids_sent_on_this_connection_count_as_acknowledged() -> None:
    sink = Sink()
    session = session_for(sink, buffer_limit=10)
    sent = "9f56696e-fbe8-44cb-b29a-3769ddcae750"
    session.deliver(page(session, [(sent, 1)]))
    await sink.until(lambda: len(sink.frames) == 2)
    # Made-up, malformed and upper-cased ids: only the last names a message this connection got.
    asked = ["00000000-0000-0000-0000-000000000000", "not an id", "", sent.upper()]
    assert session.sent_of(asked) == [sent]
    await session.stop()


async def test_an_unreadable_flush_page_ends_the_session_for_a_retry() -> None:
    sink = Sink()
    session = session_for(sink, buffer_limit=10)
    session.deliver(Page(session.id, b"not a page", session.flush_id, 0, 1, None, ""))
    await sink.until(lambda: sink.closed is not None)
    assert sink.closed == (CLOSE_TRY_AGAIN, "internal")
    assert sink.frames == []
    await session.stop()


async def test_a_socket_with_room_is_written_in_one_burst_without_a_task_and_one_without_waits() -> None:
    """With `send_now`, what one event-loop turn pushes goes out in one write from a callback;
    when the socket has no room (`send_now` says False), a writer task waits on `send`."""
    sink = Sink()
    bursts: list[list[str]] = []
    room = True

    def send_now(frames: list[bytes]) -> bool:
        if room:
            bursts.append([frame.decode() for frame in frames])
        return room

    session = Session("ann", sink.send, sink.close, buffer_limit=10, send_now=send_now)
    session.push(b"a")
    session.push(b"b")
    await asyncio.sleep(0)  # one event-loop turn: the write is due at its end
    assert bursts == [["a", "b"]]
    assert session._writer is None and sink.frames == []

    room = False
    session.push(b"c")
    await sink.until(lambda: sink.frames == ["c"])
    assert bursts == [["a", "b"]]
