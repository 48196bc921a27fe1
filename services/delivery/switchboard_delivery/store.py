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
    # The partition of its chat when it was queued (pending.part).
    part: int = 0


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


async def queue_message(conn: Conn, message: MessageOut, frame: bytes, part: int) -> list[str]:
    """Keep the frame and a pending delivery for every member but the sender, in one round trip.

    Returns those recipients. Membership is read in the same statement, so it is the membership
    as of this message in delivery's order of events. `part` is the partition of the chat.
    """
    recipients: list[str] = await conn.fetchval(
        "WITH stored AS ("
        "  INSERT INTO messages (message_id, chat_id, seq, frame) VALUES ($1, $2, $3, $4)"
        "  ON CONFLICT (message_id) DO UPDATE SET seq = EXCLUDED.seq RETURNING position),"
        " recipients AS (SELECT user_id FROM chat_members WHERE chat_id = $2 AND user_id <> $5),"
        " queued AS ("
        "  INSERT INTO pending (user_id, message_id, position, part)"
        "  SELECT recipients.user_id, $1, stored.position, $6 FROM stored, recipients ON CONFLICT DO NOTHING)"
        " SELECT coalesce(array_agg(user_id ORDER BY user_id), '{}') FROM recipients",
        message.id,
        message.chat_id,
        message.seq,
        frame,
        message.sender_id,
        part,
    )
    return recipients


async def still_pending(conn: Conn, message_id: UUID) -> list[str]:
    return [
        row[0] for row in await conn.fetch("SELECT user_id FROM pending WHERE message_id = $1", message_id)
    ]


async def acknowledge(conn: Conn, user_id: str, message_ids: Sequence[UUID]) -> list[Cancelled]:
    """Drop the acknowledged deliveries and cancel their open notifications.

    Two statements, not one: an ack (the user's partition) may meet the notification request of
    the same message (its chat's partition, another instance). That request locks the pending
    rows it reads (`request_notifications`), so the delete waits for it to commit, and the
    cancellation, a statement of its own with a fresh snapshot, then sees its notification.
    """
    await conn.execute(
        "DELETE FROM pending WHERE user_id = $1 AND message_id = ANY($2::uuid[])", user_id, list(message_ids)
    )
    rows = await conn.fetch(
        "UPDATE notifications SET cancelled_at = now()"
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
    takes its next batch, so every read (same partition: the chat's) handled before is seen
    here. An ack comes in the user's partition, maybe on another instance at this moment: the
    pending rows are locked (FOR UPDATE), so an ack deleting one either committed first (the
    row is gone: no request) or waits and then cancels what this inserted (`acknowledge`).
    """
    return [
        row[0]
        for row in await conn.fetch(
            "INSERT INTO notifications (message_id, user_id, chat_id, seq)"
            " SELECT p.message_id, p.user_id, $2, $3 FROM pending p"
            " WHERE p.message_id = $1 AND p.user_id = ANY($4::text[])"
            "  AND NOT EXISTS (SELECT 1 FROM chat_members m"
            "   WHERE m.chat_id = $2 AND m.user_id = p.user_id AND m.read_seq >= $3)"
            " FOR UPDATE OF p"
            " ON CONFLICT DO NOTHING RETURNING user_id",
            message.id,
            message.chat_id,
            message.seq,
            list(users),
        )
    ]


async def backlog_page(
    conn: Conn, user_id: str, cursor: Sequence[int], messages: int, max_bytes: int
) -> Page:
    """One page of what the user has not acknowledged, in delivery's order (position).

    `cursor` holds, per partition (the last entry for rows of a partition number at or past
    `len(cursor) - 1`, left from a larger partition count), the position that partition's part
    of the backlog continues after. Each partition is read on its own index range, so rows of
    one partition committed late (its instance was slower than another's) are not skipped by a
    page that went past their position (docs/scaling.md, "Catch-up pages").

    The page stops at `messages` rows or before `max_bytes` of frames (always at least one row);
    the cut happens in PostgreSQL, so only the page's frames come over the wire.
    """
    partitions = len(cursor) - 1
    rows = await conn.fetch(
        "SELECT message_id, chat_id, seq, position, frame, part, examined FROM ("
        "  SELECT p.message_id, m.chat_id, m.seq, p.position, m.frame, p.part,"
        "   sum(octet_length(m.frame)) OVER (ORDER BY p.position) - octet_length(m.frame) AS before,"
        "   count(*) OVER () AS examined"
        "  FROM ("
        "   SELECT message_id, position, part FROM ("
        "    SELECT q.* FROM unnest($2::bigint[]) WITH ORDINALITY AS c (after, n)"
        "    CROSS JOIN LATERAL (SELECT message_id, position, part FROM pending"
        "     WHERE user_id = $1 AND part = c.n - 1 AND position > c.after ORDER BY position LIMIT $3) q"
        "    UNION ALL"
        "    (SELECT message_id, position, part FROM pending"
        "     WHERE user_id = $1 AND part >= $5 AND position > $6 ORDER BY position LIMIT $3)"
        "   ) merged ORDER BY position LIMIT $3"
        "  ) p JOIN messages m USING (message_id)"
        " ) window_ WHERE before < $4 ORDER BY position",
        user_id,
        list(cursor[:partitions]),
        messages,
        max_bytes,
        partitions,
        cursor[partitions],
    )
    pending = [Pending(row[0], row[1], row[2], row[3], row[4], row[5]) for row in rows]
    examined = rows[0]["examined"] if rows else 0
    return Page(pending, more=len(pending) < examined or examined == messages)
