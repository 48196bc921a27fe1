"""New ids for what the services store: messages, chats, events, sessions.

Time-ordered (UUIDv7, RFC 9562): a 48-bit millisecond timestamp first, then 74 random bits,
so ids made later sort later. Every one of them is a key in a PostgreSQL B-tree (a message's id
in three services' tables, an event's id in the event log, a session's in presence), and a
random (v4) key lands on a random leaf page: once the table outgrows memory every insert reads
a page, and after each checkpoint the first change to every page writes the whole page to the
WAL again, so a busy system's commits grow to several full pages each for minutes. Ordered ids
go to the right edge of each index, where the same few pages take every insert. They stay as
unguessable as ids need to be here (74 bits besides the time) and are ordinary `uuid.UUID` values on the wire.
"""

from uuid import UUID

from uuid_utils.compat import uuid7

__all__ = ["new_id"]


def new_id() -> UUID:
    """A new time-ordered id: it sorts after every id made in an earlier millisecond."""
    return uuid7()
