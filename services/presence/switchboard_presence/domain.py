"""Pure rules of the presence service: no I/O, so they are tested directly."""

from datetime import datetime

from switchboard_contracts.models import PresenceOut
from switchboard_contracts.routing import Signal
from switchboard_contracts.wire import encode_frame

__all__ = ["presence_of", "presence_signal"]


def presence_of(user_id: str, *, online: bool, last_seen: datetime | None) -> PresenceOut:
    """What others see: while online no `last_seen`; offline, when last seen (null if never)."""
    return PresenceOut(
        user_id=user_id, status="online" if online else "offline", last_seen=None if online else last_seen
    )


def presence_signal(presence: PresenceOut, contacts: list[str]) -> Signal | None:
    """The `presence` frame for the user's contacts (never the user themselves), or None when
    nobody is to hear it. A signal: a contact that is catching up gets it at once rather than
    behind its backlog."""
    others = tuple(sorted(contact for contact in set(contacts) if contact != presence.user_id))
    if not others:
        return None
    return Signal(encode_frame("presence", presence.model_dump(mode="json")), others)
