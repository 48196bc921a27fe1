"""SQL of the delivery service."""

from collections.abc import Iterable, Sequence
from typing import NamedTuple
from uuid import UUID

from switchboard_contracts.models import MessageOut
from switchboard_runtime.db import Conn


class Page(NamedTuple):
    rows: list["Pending"]
    # More is queued after this page (it was cut short, or full).
    more: bool


class Pending(NamedTuple):
    message_id: UUID
    chat_id: UUID
    seq: int
    position: int
    frame: bytes


__all__ = [
    "Page",
    "Pending",
    "acknowledge",
    "add_members",
    "backlog_page",
    "members",
    "queue_message",
    "remove_member",
    "still_pending",
]


async def add_members(conn: Conn, chat_id: UUID, users: Iterable[str]) -> None:
    await conn.executemany(
        "INSERT INTO chat_members (chat_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        [(chat_id, user) for user in users],
    )


async def remove_member(conn: Conn, chat_id: UUID, user_id: str) -> None:
    await conn.execute("DELETE FROM chat_members WHERE chat_id = $1 AND user_id = $2", chat_id, user_id)


async def members(conn: Conn, chat_id: UUID) -> list[str]:
    return [
        row[0] for row in await conn.fetch("SELECT user_id FROM chat_members WHERE chat_id = $1", chat_id)
    ]


async def queue_message(conn: Conn, message: MessageOut, frame: bytes) -> list[str]:
    """Keep the frame and a pending delivery for every member but the sender, in one round trip.

    Returns those recipients. Membership is read in the same statement, so it is the membership
    as of this message in delivery's order of events.
    """
    recipients: list[str] = await conn.fetchval(
        "WITH stored AS ("
        "  INSERT INTO messages (message_id, chat_id, seq, frame) VALUES ($1, $2, $3, $4)"
        "  ON CONFLICT (message_id) DO UPDATE SET seq = EXCLUDED.seq RETURNING position),"
        " recipients AS (SELECT user_id FROM chat_members WHERE chat_id = $2 AND user_id <> $5),"
        " queued AS ("
        "  INSERT INTO pending (user_id, message_id, position)"
        "  SELECT recipients.user_id, $1, stored.position FROM stored, recipients ON CONFLICT DO NOTHING)"
        " SELECT coalesce(array_agg(user_id ORDER BY user_id), '{}') FROM recipients",
        message.id,
        message.chat_id,
        message.seq,
        frame,
        message.sender_id,
    )
    return recipients


async def still_pending(conn: Conn, message_id: UUID) -> list[str]:
    return [
        row[0] for row in await conn.fetch("SELECT user_id FROM pending WHERE message_id = $1", message_id)
    ]


async def acknowledge(conn: Conn, user_id: str, message_ids: Sequence[UUID]) -> None:
    await conn.execute(
        "DELETE FROM pending WHERE user_id = $1 AND message_id = ANY($2::uuid[])", user_id, list(message_ids)
    )


async def backlog_page(conn: Conn, user_id: str, after_position: int, messages: int, max_bytes: int) -> Page:
    """One page of what the user has not acknowledged after that position, in delivery's order.

    The page stops at `messages` rows or before `max_bytes` of frames (always at least one row);
    the cut happens in PostgreSQL, so only the page's frames come over the wire.
    """
    rows = await conn.fetch(
        "SELECT message_id, chat_id, seq, position, frame, examined FROM ("
        "  SELECT p.message_id, m.chat_id, m.seq, p.position, m.frame,"
        "   sum(octet_length(m.frame)) OVER (ORDER BY p.position) - octet_length(m.frame) AS before,"
        "   count(*) OVER () AS examined"
        "  FROM pending p JOIN messages m USING (message_id)"
        "  WHERE p.user_id = $1 AND p.position > $2 ORDER BY p.position LIMIT $3"
        " ) window_ WHERE before < $4 ORDER BY position",
        user_id,
        after_position,
        messages,
        max_bytes,
    )
    pending = [Pending(row[0], row[1], row[2], row[3], row[4]) for row in rows]
    examined = rows[0]["examined"] if rows else 0
    return Page(pending, more=len(pending) < examined or examined == messages)
