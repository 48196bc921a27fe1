"""SQL of the delivery service."""

from collections.abc import Iterable, Sequence
from typing import NamedTuple
from uuid import UUID

from switchboard_contracts.models import MessageOut
from switchboard_runtime.db import Conn


class Pending(NamedTuple):
    message_id: UUID
    chat_id: UUID
    seq: int
    position: int
    frame: bytes


__all__ = [
    "Pending",
    "acknowledge",
    "add_members",
    "backlog",
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
    rows = await conn.fetch(
        "WITH stored AS ("
        "  INSERT INTO messages (message_id, chat_id, seq, frame) VALUES ($1, $2, $3, $4)"
        "  ON CONFLICT (message_id) DO UPDATE SET seq = EXCLUDED.seq RETURNING position),"
        " recipients AS (SELECT user_id FROM chat_members WHERE chat_id = $2 AND user_id <> $5)"
        " INSERT INTO pending (user_id, message_id, position)"
        " SELECT recipients.user_id, $1, stored.position FROM stored, recipients"
        " ON CONFLICT DO NOTHING RETURNING user_id",
        message.id,
        message.chat_id,
        message.seq,
        frame,
        message.sender_id,
    )
    return [row[0] for row in rows]


async def still_pending(conn: Conn, message_id: UUID) -> list[str]:
    return [
        row[0] for row in await conn.fetch("SELECT user_id FROM pending WHERE message_id = $1", message_id)
    ]


async def acknowledge(conn: Conn, user_id: str, message_ids: Sequence[UUID]) -> None:
    await conn.execute(
        "DELETE FROM pending WHERE user_id = $1 AND message_id = ANY($2::uuid[])", user_id, list(message_ids)
    )


async def backlog(conn: Conn, user_id: str, after_position: int, limit: int) -> list[Pending]:
    """What the user has not acknowledged after that position, in the order delivery handled it."""
    rows = await conn.fetch(
        "SELECT p.message_id, m.chat_id, m.seq, p.position, m.frame"
        " FROM pending p JOIN messages m USING (message_id)"
        " WHERE p.user_id = $1 AND p.position > $2 ORDER BY p.position LIMIT $3",
        user_id,
        after_position,
        limit,
    )
    return [Pending(*row) for row in rows]
