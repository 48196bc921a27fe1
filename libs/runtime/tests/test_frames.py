"""The frame coalescing that turns a burst of AMQP frames into one socket write."""

import asyncio

from aiormq.abc import ChannelFrame

from switchboard_runtime.frames import merge_queued


def frame(payload: bytes, *, drain: bool = False, close: bool = False) -> ChannelFrame:
    future = asyncio.get_running_loop().create_future() if drain else None
    return ChannelFrame(payload=payload, should_close=close, drain_future=future)


def queue_of(*frames: ChannelFrame) -> "asyncio.Queue[ChannelFrame]":
    queue: asyncio.Queue[ChannelFrame] = asyncio.Queue()
    for f in frames:
        queue.put_nowait(f)
    return queue


async def test_everything_queued_goes_out_as_one_frame_in_order() -> None:
    queue = queue_of(frame(b"b"), frame(b"c"))
    merged = merge_queued(frame(b"a"), queue)
    assert merged.payload == b"abc"
    assert queue.empty()
    assert not merged.should_drain and not merged.should_close


async def test_a_frame_that_must_be_drained_ends_the_burst_and_hands_over_its_wait() -> None:
    waited = frame(b"b", drain=True)
    queue = queue_of(waited, frame(b"c"))
    merged = merge_queued(frame(b"a"), queue)
    assert merged.payload == b"ab"
    assert merged.should_drain
    merged.drain()
    assert waited.drain_future is not None and waited.drain_future.done()
    assert queue.qsize() == 1  # c waits for the next write


async def test_a_closing_frame_ends_the_burst_and_still_closes() -> None:
    queue = queue_of(frame(b"close", close=True), frame(b"late"))
    merged = merge_queued(frame(b"a"), queue)
    assert merged.payload == b"aclose"
    assert merged.should_close


async def test_a_frame_with_a_duty_of_its_own_is_not_merged() -> None:
    first = frame(b"a", drain=True)
    queue = queue_of(frame(b"b"))
    assert merge_queued(first, queue) is first
    assert queue.qsize() == 1
