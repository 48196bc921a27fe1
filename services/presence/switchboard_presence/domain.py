"""Pure rules of the presence service: no I/O, so they are tested directly."""

from datetime import datetime

from switchboard_contracts.models import PresenceOut
from switchboard_contracts.topology import Headers, Kind, Topology
from switchboard_contracts.wire import encode_frame

__all__ = ["presence_of", "presence_signals"]


def presence_of(user_id: str, *, online: bool, last_seen: datetime | None) -> PresenceOut:
    """What others see: while online no `last_seen`; offline, when last seen (null if never)."""
    return PresenceOut(
        user_id=user_id, status="online" if online else "offline", last_seen=None if online else last_seen
    )


def presence_signals(presence: PresenceOut, contacts: list[str]) -> list[tuple[str, bytes, dict[str, str]]]:
    """The `presence` frame for each contact, as (routing key, frame, headers) on the route exchange.

    One frame body for all: the same bytes go to every contact. A signal, so a contact that is
    catching up gets it at once rather than behind its backlog.
    """
    frame = encode_frame("presence", presence.model_dump(mode="json"))
    return [
        (Topology.user_key(contact), frame, {Headers.USER: contact, Headers.KIND: Kind.SIGNAL})
        for contact in contacts
        if contact != presence.user_id
    ]
