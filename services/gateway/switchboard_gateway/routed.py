"""A frame as it arrives from the route queue: the frame itself and its routing headers."""

from collections.abc import Mapping
from dataclasses import dataclass

from aio_pika.abc import AbstractIncomingMessage

from switchboard_contracts.topology import Headers, Kind

__all__ = ["Routed", "header_text"]


def header_text(headers: Mapping[str, object], name: str) -> str | None:
    value = headers.get(name)
    if isinstance(value, bytes):
        return value.decode()
    return value if isinstance(value, str) else None


def _number(headers: Mapping[str, object], name: str) -> int | None:
    value = headers.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Routed:
    kind: str
    frame: bytes
    message_id: str | None = None
    chat_id: str | None = None
    seq: int | None = None
    # flush-page only: messages in the page, and where to continue when more are queued.
    count: int = 0
    more_after: int | None = None
    more_cursor: str = ""
    # flush-page only: the catch-up and the page (its starting cursor) it belongs to.
    flush_id: str | None = None
    after: int | None = None
    # Who it is for: one session, or every local session of a user but one.
    session_id: str | None = None
    user_id: str | None = None
    except_session: str | None = None
    # Room frames: whether the user is typing. On member_left to the removed user: the chat.
    typing: bool = False
    left_chat: str | None = None

    @classmethod
    def from_message(cls, message: AbstractIncomingMessage) -> "Routed":
        headers = dict(message.headers)
        return cls(
            kind=header_text(headers, Headers.KIND) or Kind.LIVE,
            frame=message.body,
            session_id=header_text(headers, Headers.SESSION),
            user_id=header_text(headers, Headers.USER),
            except_session=header_text(headers, Headers.EXCEPT_SESSION),
            message_id=header_text(headers, Headers.MESSAGE_ID),
            chat_id=header_text(headers, Headers.CHAT),
            seq=_number(headers, Headers.SEQ),
            count=_number(headers, Headers.COUNT) or 0,
            more_after=_number(headers, Headers.MORE),
            more_cursor=header_text(headers, Headers.CURSOR) or "",
            flush_id=header_text(headers, Headers.FLUSH),
            after=_number(headers, Headers.AFTER),
            typing=bool(_number(headers, Headers.TYPING)),
            left_chat=header_text(headers, Headers.LEFT_CHAT),
        )
