"""SQL of what readers do: receipts, read markers and the plan of a device's sync.

Kept apart from `store` (chats, sends, history) because these statements serve the readers'
side: who got and read what, and where each member's devices stand.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple
from uuid import UUID

from switchboard_runtime.db import Conn

from .domain import StatusChange
from .store import visible_to

__all__ = [
    "Marker",
    "SyncRow",
    "bump_stream",
    "lock_marker",
    "mark_delivered",
    "mark_read",
    "save_marker",
    "sync_rows",
    "unread",
]


class Marker(NamedTuple):
    read_seq: int
    # The version of this member's receipt stream in the event log.
    version: int
    joined_seq: int


# Whether the sender of `m` is still in its chat: one who left hears nothing more of it.
_SENDER_IS_MEMBER = (
    "EXISTS (SELECT 1 FROM chat_members cm WHERE cm.chat_id = m.chat_id AND cm.user_id = m.sender_id)"
)


async def mark_delivered(conn: Conn, user_id: str, message_ids: Sequence[UUID]) -> list[StatusChange]:
    """First receipts for these messages from `user_id`; returns only the ones that changed.

    Ids that are not messages `user_id` received (their own, another chat's, from before they
    joined, unknown) change nothing: an acknowledgement is not a way to learn about messages.
    """
    rows = await conn.fetch(
        "WITH acked AS ("  # noqa: S608 - visible_to() is built from constants
        "  SELECT m.id FROM messages m WHERE m.id = ANY($1::uuid[]) AND m.sender_id <> $2"
        f"  AND {visible_to('$2')}),"
        " added AS ("
        "  INSERT INTO receipts (message_id, user_id, status) SELECT id, $2, 'delivered' FROM acked"
        "  ON CONFLICT DO NOTHING RETURNING message_id)"
        " UPDATE messages m SET delivered_count = m.delivered_count + 1 FROM added"
        " WHERE m.id = added.message_id"
        " RETURNING m.id, m.chat_id, m.seq, m.sender_id, m.delivered_count, m.read_count, m.recipients,"
        f" {_SENDER_IS_MEMBER}",
        list(message_ids),
        user_id,
    )
    return [StatusChange(*row) for row in rows]


async def lock_marker(conn: Conn, chat_id: UUID, user_id: str) -> Marker | None:
    """The member's read marker, locked for this transaction; None if not a member now."""
    await conn.execute(
        "INSERT INTO read_markers (chat_id, user_id) SELECT $1, $2"
        " WHERE EXISTS (SELECT 1 FROM chat_members WHERE chat_id = $1 AND user_id = $2)"
        " ON CONFLICT DO NOTHING",
        chat_id,
        user_id,
    )
    row = await conn.fetchrow(
        "SELECT r.read_seq, r.version, cm.joined_seq FROM read_markers r"
        " JOIN chat_members cm USING (chat_id, user_id)"
        " WHERE r.chat_id = $1 AND r.user_id = $2 FOR UPDATE OF r",
        chat_id,
        user_id,
    )
    return Marker(row[0], row[1], row[2]) if row else None


async def bump_stream(conn: Conn, chat_id: UUID, user_id: str) -> int:
    """The next version of this member's receipt stream (the marker row is created if needed)."""
    version: int = await conn.fetchval(
        "INSERT INTO read_markers (chat_id, user_id, version) VALUES ($1, $2, 1)"
        " ON CONFLICT (chat_id, user_id) DO UPDATE SET version = read_markers.version + 1"
        " RETURNING version",
        chat_id,
        user_id,
    )
    return version


async def save_marker(conn: Conn, chat_id: UUID, user_id: str, read_seq: int, version: int) -> None:
    await conn.execute(
        "UPDATE read_markers SET read_seq = $3, version = $4 WHERE chat_id = $1 AND user_id = $2",
        chat_id,
        user_id,
        read_seq,
        version,
    )


async def mark_read(
    conn: Conn, chat_id: UUID, user_id: str, after_seq: int, up_to_seq: int
) -> list[StatusChange]:
    """Every message from others in (after_seq, up_to_seq] becomes `read` by `user_id`.

    A message never acknowledged is counted delivered too (reading it implies it arrived).
    """
    rows = await conn.fetch(
        "WITH target AS ("  # noqa: S608 - _SENDER_IS_MEMBER is a constant
        "  SELECT id FROM messages WHERE chat_id = $1 AND seq > $3 AND seq <= $4 AND sender_id <> $2),"
        " moved AS ("
        "  INSERT INTO receipts (message_id, user_id, status) SELECT id, $2, 'read' FROM target"
        "  ON CONFLICT (message_id, user_id) DO UPDATE SET status = 'read', updated_at = now()"
        "  WHERE receipts.status <> 'read'"
        # xmax = 0 on a freshly inserted row: a message that had no receipt from this user yet.
        "  RETURNING message_id, (xmax = 0) AS fresh)"
        " UPDATE messages m SET read_count = m.read_count + 1,"
        "  delivered_count = m.delivered_count + CASE WHEN moved.fresh THEN 1 ELSE 0 END"
        " FROM moved WHERE m.id = moved.message_id"
        " RETURNING m.id, m.chat_id, m.seq, m.sender_id, m.delivered_count, m.read_count, m.recipients,"
        f" {_SENDER_IS_MEMBER}",
        chat_id,
        user_id,
        after_seq,
        up_to_seq,
    )
    return [StatusChange(*row) for row in rows]


async def unread(conn: Conn, chat_id: UUID, user_id: str, after_seq: int) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM messages WHERE chat_id = $1 AND seq > $3 AND sender_id <> $2",
        chat_id,
        user_id,
        after_seq,
    )
    return count


class SyncRow(NamedTuple):
    chat_id: UUID
    # The visible range: after `joined_seq`, up to `end_seq` (the chat's last seq, or the seq
    # at which this user was removed).
    joined_seq: int
    end_seq: int
    # What the device says it saw (None: not named), the last seq before `since` (None: no
    # `since`), and the messages from others after the user's read marker.
    seen: int | None
    since_seq: int | None
    unread: int


async def sync_rows(conn: Conn, user_id: str, seen: dict[UUID, int], since: datetime | None) -> list[SyncRow]:
    """Every chat `user_id` belongs to, and the chats the device names that they have left."""
    rows = await conn.fetch(
        "WITH asked AS (SELECT * FROM unnest($2::uuid[], $3::bigint[]) AS a (chat_id, seen)),"
        " mine AS ("
        "  SELECT cm.chat_id, cm.joined_seq, c.last_seq AS end_seq FROM chat_members cm"
        "  JOIN chats c ON c.id = cm.chat_id WHERE cm.user_id = $1"
        "  UNION ALL"
        "  (SELECT DISTINCT ON (pm.chat_id) pm.chat_id, pm.joined_seq, pm.left_seq FROM past_members pm"
        "   JOIN asked USING (chat_id) WHERE pm.user_id = $1 AND NOT EXISTS ("
        "    SELECT 1 FROM chat_members cm WHERE cm.chat_id = pm.chat_id AND cm.user_id = $1)"
        "   ORDER BY pm.chat_id, pm.left_seq DESC))"
        " SELECT mine.chat_id, mine.joined_seq, mine.end_seq, asked.seen,"
        "  CASE WHEN $4::timestamptz IS NULL THEN NULL ELSE (SELECT coalesce(max(seq), 0) FROM messages m"
        "   WHERE m.chat_id = mine.chat_id AND m.created_at < $4) END,"
        "  (SELECT count(*) FROM messages m WHERE m.chat_id = mine.chat_id AND m.sender_id <> $1"
        "   AND m.seq > greatest(mine.joined_seq, coalesce(r.read_seq, 0)) AND m.seq <= mine.end_seq)"
        " FROM mine LEFT JOIN asked USING (chat_id)"
        " LEFT JOIN read_markers r ON r.chat_id = mine.chat_id AND r.user_id = $1"
        " ORDER BY mine.chat_id",
        user_id,
        list(seen),
        list(seen.values()),
        since,
    )
    return [SyncRow(*row) for row in rows]
