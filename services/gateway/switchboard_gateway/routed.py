"""What reaches a gateway on its route queue, as typed frames.

Frames for users and sessions come packed, many to a message (`routing.py`: `Live`, `Signal`,
`Reply`); a catch-up page comes as a message of its own with the headers that end it (`Page`),
or with other sessions' pages made in the same batch, each with its own head (`pages.py`); a
typing frame published to a chat's room comes alone (`RoomFrame`).
"""

from collections.abc import Mapping
from dataclasses import dataclass

from switchboard_contracts.pages import PageHead
from switchboard_contracts.routing import Live, Reply, Signal
from switchboard_contracts.topology import Headers

__all__ = ["Live", "Page", "Reply", "RoomFrame", "Signal", "ToSession", "header_text"]


def header_text(headers: Mapping[str, object], name: str) -> str | None:
    value = headers.get(name)
    if isinstance(value, bytes):
        return value.decode()
    return value if isinstance(value, str) else None


def _number(headers: Mapping[str, object], name: str) -> int | None:
    value = headers.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class Page:
    """A page of one session's catch-up: its frames packed (pages.py), which catch-up and which
    page it is, how many messages it holds and, when more are queued, where to continue."""

    session_id: str
    body: bytes
    flush_id: str | None
    after: int | None
    count: int
    more_after: int | None
    more_cursor: str

    @classmethod
    def from_message(cls, body: bytes, headers: Mapping[str, object]) -> "Page | None":
        session_id = header_text(headers, Headers.SESSION)
        if session_id is None:
            return None
        return cls(
            session_id=session_id,
            body=body,
            flush_id=header_text(headers, Headers.FLUSH),
            after=_number(headers, Headers.AFTER),
            count=_number(headers, Headers.COUNT) or 0,
            more_after=_number(headers, Headers.MORE),
            more_cursor=header_text(headers, Headers.CURSOR) or "",
        )

    @classmethod
    def from_head(cls, head: PageHead, body: bytes) -> "Page":
        """One of the pages of a `flush-pages` message."""
        return cls(head.session_id, body, head.flush_id, head.after, head.count, head.more_after, head.cursor)


@dataclass(frozen=True, slots=True)
class RoomFrame:
    """`user_typing` published to a chat's room: for this gateway's sessions in it."""

    chat_id: str
    user_id: str
    typing: bool
    frame: bytes

    @classmethod
    def from_message(cls, body: bytes, headers: Mapping[str, object]) -> "RoomFrame | None":
        chat_id, user_id = header_text(headers, Headers.CHAT), header_text(headers, Headers.USER)
        if chat_id is None or user_id is None:
            return None
        return cls(chat_id, user_id, bool(_number(headers, Headers.TYPING)), body)


# What a session is handed.
ToSession = Live | Signal | Reply | Page
