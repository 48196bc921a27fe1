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


class Cancelled(NamedTuple):
    """A notification that was open and is cancelled now."""

    message_id: UUID
    chat_id: UUID


class Pending(NamedTuple):
    message_id: UUID
    chat_id: UUID
    seq: int
    position: int
    frame: bytes


__all__ = [
    "Cancelled",
    "Page",
    "Pending",
    "acknowledge",
    "add_members",
    "backlog_page",
    "mark_read",
    "members",
    "queue_message",
    "remove_member",
    "request_notifications",
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


async def acknowledge(conn: Conn, user_id: str, message_ids: Sequence[UUID]) -> list[Cancelled]:
    """Drop the acknowledged deliveries and cancel their open notifications, in one round trip."""
    rows = await conn.fetch(
        "WITH acked AS (DELETE FROM pending WHERE user_id = $1 AND message_id = ANY($2::uuid[]))"
        " UPDATE notifications SET cancelled_at = now()"
        " WHERE user_id = $1 AND message_id = ANY($2::uuid[]) AND cancelled_at IS NULL"
        " RETURNING message_id, chat_id",
        user_id,
        list(message_ids),
    )
    return [Cancelled(row[0], row[1]) for row in rows]


async def mark_read(conn: Conn, chat_id: UUID, user_id: str, up_to_seq: int) -> list[Cancelled]:
    """Remember how far the user read the chat and cancel its open notifications up to there."""
    rows = await conn.fetch(
        "WITH marked AS ("
        "  UPDATE chat_members SET read_seq = greatest(read_seq, $3) WHERE chat_id = $1 AND user_id = $2)"
        " UPDATE notifications SET cancelled_at = now()"
        " WHERE user_id = $2 AND chat_id = $1 AND seq <= $3 AND cancelled_at IS NULL"
        " RETURNING message_id, chat_id",
        chat_id,
        user_id,
        up_to_seq,
    )
    return [Cancelled(row[0], row[1]) for row in rows]


async def request_notifications(conn: Conn, message: MessageOut, users: Sequence[str]) -> list[str]:
    """Record a notification for each of `users` the message is still news to; returns those new.

    A user who acknowledged the message (no pending row) or read the chat past it gets none, and
    one recorded before is not recorded again. The consumer runs after-commit work before it
    takes its next batch, so every ack or read handled before this point is seen here.
    """
    return [
        row[0]
        for row in await conn.fetch(
            "INSERT INTO notifications (message_id, user_id, chat_id, seq)"
            " SELECT p.message_id, p.user_id, $2, $3 FROM pending p"
            " WHERE p.message_id = $1 AND p.user_id = ANY($4::text[])"
            "  AND NOT EXISTS (SELECT 1 FROM chat_members m"
            "   WHERE m.chat_id = $2 AND m.user_id = p.user_id AND m.read_seq >= $3)"
            " ON CONFLICT DO NOTHING RETURNING user_id",
            message.id,
            message.chat_id,
            message.seq,
            list(users),
        )
    ]


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
