"""Pure rules of the delivery service."""

from collections.abc import Iterable
from uuid import UUID

__all__ = ["delivery_info", "recipients_of"]


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
