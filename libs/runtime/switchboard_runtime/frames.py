"""One socket write per burst of AMQP frames, not one per frame.

aiormq's connection writer takes frames from its queue one at a time and writes each with its
own `write()`. Every publish and every acknowledgement is a frame, and on a busy service many are
queued together (a batch's after-commit publishes, the relay's pass); on loopback each write
also runs the kernel's TCP path for the receiving end, so the writes were the largest single
cost in every service's profile (docs/benchmarks.md). `CoalescingFrameGenerator` hands the
writer everything already queued as one frame: same bytes, same order. A frame that must be
drained (its publisher waits until it is written) or that closes the connection ends a burst
and passes its duty on to the merged frame, so those waits and the close behave as before.

`install()` puts it in place of aiormq's own generator, which the writer looks up by name each
time a connection starts writing.
"""

import asyncio

import aiormq.connection
from aiormq.abc import ChannelFrame

__all__ = ["CoalescingFrameGenerator", "install", "merge_queued"]


def merge_queued(first: ChannelFrame, queue: "asyncio.Queue[ChannelFrame]") -> ChannelFrame:
    """`first` and every frame queued behind it, up to and including one that must be drained
    or that closes the connection, as one frame."""
    if first.should_close or first.should_drain or queue.empty():
        return first
    payloads = [first.payload]
    last = first
    while not queue.empty():
        last = queue.get_nowait()
        queue.task_done()
        payloads.append(last.payload)
        if last.should_close or last.should_drain:
            break
    return ChannelFrame(
        payload=b"".join(payloads), should_close=last.should_close, drain_future=last.drain_future
    )


class CoalescingFrameGenerator(aiormq.connection.FrameGenerator):
    async def __anext__(self) -> ChannelFrame:
        return merge_queued(await super().__anext__(), self.queue)


def install() -> None:
    aiormq.connection.FrameGenerator = CoalescingFrameGenerator  # type: ignore[misc]
