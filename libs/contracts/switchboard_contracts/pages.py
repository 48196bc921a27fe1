"""A page of a queue flush as one broker message: delivery packs it, the gateway unpacks it.

The body is one line of JSON, the index `[[message_id, chat_id, seq, length], ...]`, then the
frames themselves back to back, `length` bytes each, ready to send to the client as they are.
One publish per page (up to 1,000 messages) instead of one per message: publishing each frame
and handling each as its own route delivery was nearly the whole cost of a flush
(docs/benchmarks.md). The page's headers are those of its end: `sb-count`, `sb-more`, ...

Pages for several sessions of one gateway, made in one batch (a reconnect storm: many sessions
asking for their first page at once), travel together as one `flush-pages` message: an index
line `[[session_id, flush_id, after, count, more_after, cursor, length], ...]` (what the headers
of a lone page say), then each packed page, `length` bytes.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic_core import from_json, to_json

__all__ = ["PageEntry", "PageHead", "pack_page", "pack_pages", "unpack_page", "unpack_pages"]


@dataclass(frozen=True)
class PageEntry:
    message_id: str
    chat_id: str
    seq: int
    frame: bytes


def pack_page(entries: Sequence[PageEntry]) -> bytes:
    index = to_json([[e.message_id, e.chat_id, e.seq, len(e.frame)] for e in entries])
    return b"".join([index, b"\n", *(e.frame for e in entries)])


def unpack_page(body: bytes) -> list[PageEntry]:
    """The entries of a packed page; ValueError if the body does not match its index."""
    # JSON text holds no raw newline, so the first one ends the index.
    end = body.find(b"\n")
    if end < 0:
        raise ValueError("a flush page without an index line")
    entries = []
    offset = end + 1
    for message_id, chat_id, seq, length in from_json(body[:end]):
        entries.append(PageEntry(message_id, chat_id, seq, body[offset : offset + length]))
        offset += length
    if offset != len(body):
        raise ValueError(f"a flush page of {len(body)} bytes whose index accounts for {offset}")
    return entries


@dataclass(frozen=True, slots=True)
class PageHead:
    """What a page says about itself: whose catch-up, which page, and where the next starts."""

    session_id: str
    flush_id: str
    after: int
    count: int
    # The position to continue after, and the cursor to send back, when more is queued.
    more_after: int | None = None
    cursor: str = ""


def pack_pages(pages: Sequence[tuple[PageHead, bytes]]) -> bytes:
    index = to_json(
        [[h.session_id, h.flush_id, h.after, h.count, h.more_after, h.cursor, len(body)] for h, body in pages]
    )
    return b"".join([index, b"\n", *(body for _, body in pages)])


def unpack_pages(body: bytes) -> list[tuple[PageHead, bytes]]:
    """The pages of a `flush-pages` message, each still packed; ValueError if the body does not
    match its index."""
    end = body.find(b"\n")
    if end < 0:
        raise ValueError("flush pages without an index line")
    pages = []
    offset = end + 1
    for session_id, flush_id, after, count, more_after, cursor, length in from_json(body[:end]):
        head = PageHead(session_id, flush_id, after, count, more_after, cursor)
        pages.append((head, body[offset : offset + length]))
        offset += length
    if offset != len(body):
        raise ValueError(f"flush pages of {len(body)} bytes whose index accounts for {offset}")
    return pages
