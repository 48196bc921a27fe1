"""Pure rules of the delivery service."""

from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID

__all__ = ["FlushPage", "delivery_info", "recipients_of"]


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
