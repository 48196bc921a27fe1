"""Pure rules of the delivery service."""

from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID

__all__ = [
    "FlushPage",
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
