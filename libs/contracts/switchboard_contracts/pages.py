"""A page of a queue flush as one broker message: delivery packs it, the gateway unpacks it.

The body is one line of JSON, the index `[[message_id, chat_id, seq, length], ...]`, then the
frames themselves back to back, `length` bytes each, ready to send to the client as they are.
One publish per page (up to 1,000 messages) instead of one per message: publishing each frame
and handling each as its own route delivery was nearly the whole cost of a flush
(docs/benchmarks.md). The page's headers are those of its end: `sb-count`, `sb-more`, ...
"""

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic_core import from_json, to_json

__all__ = ["PageEntry", "pack_page", "unpack_page"]


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
