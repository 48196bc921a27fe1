"""SQL of what readers do here: read markers and the plan of a device's sync.

Kept apart from `store` (chats, sends, history) because these statements serve the readers'
side: where each member's devices stand. Who received what (delivered, read receipts and their
totals) is delivery's to know: it holds what each recipient has not acknowledged.
"""

from datetime import datetime
from typing import NamedTuple
from uuid import UUID

from switchboard_runtime.db import Conn

__all__ = ["Marker", "ReadStore", "SyncRow"]


class Marker(NamedTuple):
    read_seq: int
    # The version of this member's receipt stream in the event log.
    version: int
    joined_seq: int


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


class ReadStore:
    conn: Conn

    async def lock_marker(self, chat_id: UUID, user_id: str) -> Marker | None:
        """The member's read marker, locked for this transaction; None if not a member now."""
        await self.conn.execute(
            "INSERT INTO read_markers (chat_id, user_id) SELECT $1, $2"
            " WHERE EXISTS (SELECT 1 FROM chat_members WHERE chat_id = $1 AND user_id = $2)"
            " ON CONFLICT DO NOTHING",
            chat_id,
            user_id,
        )
        locked = await self.conn.fetchrow(
            "SELECT r.read_seq, r.version, cm.joined_seq FROM read_markers r"
            " JOIN chat_members cm USING (chat_id, user_id)"
            " WHERE r.chat_id = $1 AND r.user_id = $2 FOR UPDATE OF r",
            chat_id,
            user_id,
        )
        return Marker(locked[0], locked[1], locked[2]) if locked else None

    async def save_marker(self, chat_id: UUID, user_id: str, read_seq: int, version: int) -> None:
        await self.conn.execute(
            "UPDATE read_markers SET read_seq = $3, version = $4 WHERE chat_id = $1 AND user_id = $2",
            chat_id,
            user_id,
            read_seq,
            version,
        )

    async def read_between(self, chat_id: UUID, user_id: str, after_seq: int, up_to_seq: int) -> list[UUID]:
        """The messages from others in (after_seq, up_to_seq], which become read."""
        rows = await self.conn.fetch(
            "SELECT id FROM messages WHERE chat_id = $1 AND seq > $3 AND seq <= $4 AND sender_id <> $2"
            " ORDER BY seq",
            chat_id,
            user_id,
            after_seq,
            up_to_seq,
        )
        return [row[0] for row in rows]

    async def unread(self, chat_id: UUID, user_id: str, after_seq: int) -> int:
        count: int = await self.conn.fetchval(
            "SELECT count(*) FROM messages WHERE chat_id = $1 AND seq > $3 AND sender_id <> $2",
            chat_id,
            user_id,
            after_seq,
        )
        return count

    async def sync_rows(self, user_id: str, seen: dict[UUID, int], since: datetime | None) -> list[SyncRow]:
        """Every chat `user_id` belongs to, and the chats the device names that they have left."""
        rows = await self.conn.fetch(
            "WITH asked AS (SELECT * FROM unnest($2::uuid[], $3::bigint[]) AS a (chat_id, seen)),"
            " mine AS ("
            "  SELECT cm.chat_id, cm.joined_seq,"
            "   coalesce((SELECT max(seq) FROM messages m WHERE m.chat_id = cm.chat_id), 0) AS end_seq"
            "  FROM chat_members cm WHERE cm.user_id = $1"
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
