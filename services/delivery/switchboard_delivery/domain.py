"""Pure rules of the delivery service."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

__all__ = [
    "FlushPage",
    "StatusUpdate",
    "status_frame",
    "advance_cursor",
    "decode_cursor",
    "encode_cursor",
    "delivery_info",
    "member_frame_recipients",
    "preview",
    "recipients_of",
    "webhook_retries",
]


@dataclass(frozen=True)
class FlushPage:
    """How much of a backlog one flush page carries."""

    messages: int
    bytes: int


def recipients_of(members: Iterable[str], sender_id: str) -> list[str]:
    """Everyone in the chat but the sender (the sender's other devices are reached separately)."""
    return sorted(set(members) - {sender_id})


def delivery_info(message_id: UUID, recipients: int, routed: int) -> dict[str, object]:
    """`delivered` counts recipients with an online session the message was routed to."""
    return {
        "message_id": str(message_id),
        "delivered": routed,
        "queued": recipients - routed,
        "total": recipients,
    }


def member_frame_recipients(members: Iterable[str], user_id: str) -> list[str]:
    """Who hears of a membership change: the members, and always the user it is about (the
    added one is a member already, the removed one no longer is when the event is repeated)."""
    return sorted(set(members) | {user_id})


def preview(content: str, chars: int) -> str | None:
    """The start of a message for a push notification; None when previews are off (0)."""
    return content[:chars] if chars > 0 else None


def webhook_retries(status: int) -> bool:
    """Whether a webhook answer with this status is worth trying again.

    5xx, 408 (timeout) and 429 (rate limited) may pass later; any other 4xx, or a redirect
    (not followed), would only fail the same way again.
    """
    return status >= 500 or status in (408, 429)


def decode_cursor(token: str, after_position: int, partitions: int) -> list[int]:
    """Where each partition's part of a backlog continues: `partitions + 1` positions, the last
    for rows of partition numbers past the count (left from a larger count).

    From the `sb-cursor` token of the page before; without one (the first page, or a gateway of
    an earlier version), or with one of another partition count, every part continues after
    `after_position`, as a single cursor did.
    """
    parts = token.split(",") if token else []
    if len(parts) == partitions + 1 and all(part.isdigit() for part in parts):
        return [int(part) for part in parts]
    return [after_position] * (partitions + 1)


def advance_cursor(cursor: list[int], rows: Iterable[tuple[int, int]]) -> list[int]:
    """The cursor after a page of (partition, position) rows: per partition, the last position
    sent. Enough, because each partition's rows are committed in position order: one not yet
    visible when the page was read comes after every row of its partition that was."""
    advanced = list(cursor)
    last = len(advanced) - 1
    for part, position in rows:
        group = min(part, last)
        advanced[group] = max(advanced[group], position)
    return advanced


def encode_cursor(cursor: list[int]) -> str:
    return ",".join(str(position) for position in cursor)


@dataclass(frozen=True)
class StatusUpdate:
    """A message's receipts moved: who moved, and its totals after."""

    message_id: UUID
    chat_id: UUID
    sender_id: str
    # The recipients whose status moved in this batch, in the order they did.
    users: Sequence[str]
    delivered: int
    read: int
    total: int


def status_frame(
    update: StatusUpdate, status: Literal["delivered", "read"], up_to_seq: int | None = None
) -> dict[str, object]:
    """The data of the `message_status` the sender gets: one per message and batch, however many
    recipients moved in it (`user_ids`; `user_id` is the last of them), with the totals.

    `read` names the sender's newest message the reader read, and `up_to_seq`: a client marks
    every one of its messages up to it read, and a sender never gets hundreds of frames for one
    `mark_read`.
    """
    data: dict[str, object] = {
        "message_id": str(update.message_id),
        "chat_id": str(update.chat_id),
        "user_id": update.users[-1],
        "user_ids": list(update.users),
        "status": status,
        "delivered_count": update.delivered,
        "read_count": update.read,
        "total": update.total,
    }
    if up_to_seq is not None:
        data["up_to_seq"] = up_to_seq
    return data
