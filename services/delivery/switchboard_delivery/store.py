"""SQL of the delivery service: who belongs to each chat, who is online, each message's frame,
what each recipient has not acknowledged, how far each has read, and the notifications.

`Store` is bound to one connection (a unit of work's transaction, or a read-only request's).
Each batch operation is one statement whatever the batch's size.
"""

from collections.abc import Iterable, Sequence
from typing import NamedTuple
from uuid import UUID

from switchboard_runtime.db import Conn

__all__ = [
    "Acked",
    "Cancelled",
    "Page",
    "Pending",
    "Queued",
    "Receipts",
    "Status",
    "Store",
    "ToQueue",
    "Unnotified",
]


class ToQueue(NamedTuple):
    """A stored message as delivery keeps it."""

    message_id: UUID
    chat_id: UUID
    seq: int
    sender_id: str
    frame: bytes
    # The partition of its chat (pending.part): catch-up pages continue per partition.
    part: int


class Queued(NamedTuple):
    """What queueing a message found."""

    # False when the message was queued before (a redelivered event).
    fresh: bool
    # Members but the sender, as of this message.
    recipients: list[str]
    # Those of them who have not acknowledged it (after a repeat, fewer than `recipients`).
    pending: list[str]
    # Those of them online, by what presence last said.
    online: list[str]


class Acked(NamedTuple):
    """A message whose delivery to one recipient was acknowledged for the first time."""

    message_id: UUID
    user_id: str


class Status(NamedTuple):
    """A message's totals, for the `message_status` to its sender."""

    message_id: UUID
    chat_id: UUID
    seq: int
    sender_id: str
    delivered: int
    read: int
    total: int
    # A sender who has left the chat is told nothing more about it.
    sender_is_member: bool


class Cancelled(NamedTuple):
    """A notification that was open and is cancelled now."""

    message_id: UUID
    chat_id: UUID
    user_id: str


class Acknowledged(NamedTuple):
    """What a run of acknowledgements did (`Store.acknowledge`)."""

    acked: list[Acked]
    statuses: list[Status]
    cancelled: list[Cancelled]


class Pending(NamedTuple):
    message_id: UUID
    chat_id: UUID
    seq: int
    position: int
    frame: bytes
    # The partition of its chat when it was queued (pending.part).
    part: int = 0


class Unnotified(NamedTuple):
    """A pending delivery with no notification requested for it."""

    message_id: UUID
    chat_id: UUID
    seq: int
    sender_id: str
    user_id: str
    frame: bytes


class Page(NamedTuple):
    rows: list[Pending]
    # More is queued after this page (it was cut short, or full).
    more: bool


class Receipts(NamedTuple):
    """Where each recipient of one of the caller's messages stands."""

    message_id: UUID
    total: int
    delivered: int
    read: int
    # (recipient, "sent" | "delivered" | "read"), by recipient.
    receipts: list[tuple[str, str]]


# Totals of message `m` (a row of messages): recipients that acknowledged it (or read it, which
# implies it), and members that read it. Constants, spliced into queries below (S608); the
# function `acknowledge` (migration 0006) computes the same totals.
_DELIVERED = "(m.recipients - (SELECT count(*) FROM pending p WHERE p.message_id = m.message_id))"
_READ = (
    "(SELECT count(*) FROM chat_members cm WHERE cm.chat_id = m.chat_id AND cm.user_id <> m.sender_id"
    " AND cm.joined_seq < m.seq AND cm.read_seq >= m.seq)"
)
_SENDER_IS_MEMBER = (
    "EXISTS (SELECT 1 FROM chat_members cm WHERE cm.chat_id = m.chat_id AND cm.user_id = m.sender_id)"
)
_STATUS = (
    f"m.message_id, m.chat_id, m.seq, m.sender_id, {_DELIVERED}, {_READ}, m.recipients, {_SENDER_IS_MEMBER}"
)


class Store:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    # Membership and presence.

    async def add_members(self, chat_id: UUID, users: Iterable[str], joined_seq: int = 0) -> None:
        await self.conn.execute(
            "INSERT INTO chat_members (chat_id, user_id, joined_seq) SELECT $1, unnest($2::text[]), $3"
            " ON CONFLICT DO NOTHING",
            chat_id,
            list(users),
            joined_seq,
        )

    async def remove_member(self, chat_id: UUID, user_id: str) -> list[str]:
        """Remove the member; returns the members before (the removed one included)."""
        rows = await self.conn.fetch(
            "WITH gone AS (DELETE FROM chat_members WHERE chat_id = $1 AND user_id = $2)"
            " SELECT user_id FROM chat_members WHERE chat_id = $1",
            chat_id,
            user_id,
        )
        return [row[0] for row in rows]

    async def members(self, chat_id: UUID) -> list[str]:
        rows = await self.conn.fetch("SELECT user_id FROM chat_members WHERE chat_id = $1", chat_id)
        return [row[0] for row in rows]

    async def set_online(self, online: Sequence[str], offline: Sequence[str]) -> None:
        await self.conn.execute(
            "WITH went AS (DELETE FROM online WHERE user_id = ANY($2::text[]))"
            " INSERT INTO online (user_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
            list(online),
            list(offline),
        )

    # Messages.

    async def queue_messages(self, messages: Sequence[ToQueue]) -> list[Queued]:
        """Keep each message's frame and a pending delivery for every member but its sender, in
        one statement; returns, per message in order, what routing it needs to know.

        Membership is read in the same statement, so it is the membership as of these messages
        in delivery's order of events. A message queued before changes nothing and reports who
        still has not acknowledged it.
        """
        rows = await self.conn.fetch(
            "WITH input AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[],"
            "   $5::bytea[], $6::smallint[]) WITH ORDINALITY"
            "   AS i (message_id, chat_id, seq, sender_id, frame, part, n)),"
            " stored AS ("
            "  INSERT INTO messages (message_id, chat_id, seq, sender_id, frame, recipients)"
            "  SELECT i.message_id, i.chat_id, i.seq, i.sender_id, i.frame,"
            "   (SELECT count(*) FROM chat_members cm"
            "    WHERE cm.chat_id = i.chat_id AND cm.user_id <> i.sender_id)"
            "  FROM input i ORDER BY i.n"
            "  ON CONFLICT (message_id) DO NOTHING RETURNING message_id, position),"
            " queued AS ("
            "  INSERT INTO pending (user_id, message_id, position, part)"
            "  SELECT cm.user_id, s.message_id, s.position, i.part"
            "  FROM stored s JOIN input i USING (message_id)"
            "  JOIN chat_members cm ON cm.chat_id = i.chat_id AND cm.user_id <> i.sender_id"
            "  ON CONFLICT DO NOTHING)"
            " SELECT s.message_id IS NOT NULL,"
            "  ARRAY(SELECT cm.user_id FROM chat_members cm WHERE cm.chat_id = i.chat_id"
            "   AND cm.user_id <> i.sender_id ORDER BY cm.user_id),"
            "  CASE WHEN s.message_id IS NULL THEN"
            "   ARRAY(SELECT p.user_id FROM pending p WHERE p.message_id = i.message_id ORDER BY p.user_id)"
            "  END,"
            "  ARRAY(SELECT o.user_id FROM chat_members cm JOIN online o USING (user_id)"
            "   WHERE cm.chat_id = i.chat_id AND cm.user_id <> i.sender_id)"
            " FROM input i LEFT JOIN stored s USING (message_id) ORDER BY i.n",
            [m.message_id for m in messages],
            [m.chat_id for m in messages],
            [m.seq for m in messages],
            [m.sender_id for m in messages],
            [m.frame for m in messages],
            [m.part for m in messages],
        )
        # A fresh message is pending for all its recipients: the rows just inserted are not
        # visible to the statement that inserted them.
        return [
            Queued(fresh, recipients, recipients if fresh else pending, online)
            for fresh, recipients, pending, online in rows
        ]

    # Acknowledgements, reads, receipts.

    async def acknowledge(self, acks: Sequence[tuple[str, UUID]]) -> Acknowledged:
        """Drop these (user, message) deliveries, in one round trip (`acknowledge`, migration
        0006): those that were still pending (each a recipient's first acknowledgement of that
        message), the totals of their messages as they stand after it, and the open
        notifications it cancelled."""
        rows = await self.conn.fetch(
            "SELECT * FROM acknowledge($1::text[], $2::uuid[])",
            [user for user, _ in acks],
            [message for _, message in acks],
        )
        result = Acknowledged([], [], [])
        for row in rows:
            kind = row["kind"]
            if kind == "a":
                result.acked.append(Acked(row["message_id"], row["user_id"]))
            elif kind == "s":
                result.statuses.append(
                    Status(
                        row["message_id"],
                        row["chat_id"],
                        row["seq"],
                        row["sender_id"],
                        row["delivered"],
                        row["read"],
                        row["total"],
                        row["sender_is_member"],
                    )
                )
            else:
                result.cancelled.append(Cancelled(row["message_id"], row["chat_id"], row["user_id"]))
        return result

    async def mark_read(self, chat_id: UUID, user_id: str, up_to_seq: int) -> tuple[int, int] | None:
        """Move the member's read marker forward; returns (before, after), or None if they are
        not a member here. Reading implies receiving: their deliveries up to there are done."""
        row = await self.conn.fetchrow(
            # The subquery reads the marker as it was before this statement: one partition's
            # reads of a chat are handled by one instance at a time, so nothing moves it meanwhile.
            "WITH done AS (DELETE FROM pending p USING messages m WHERE p.user_id = $2"
            "  AND p.message_id = m.message_id AND m.chat_id = $1 AND m.seq <= $3)"
            " UPDATE chat_members cm SET read_seq = greatest(cm.read_seq, $3)"
            " FROM (SELECT read_seq FROM chat_members WHERE chat_id = $1 AND user_id = $2) old"
            " WHERE cm.chat_id = $1 AND cm.user_id = $2 RETURNING old.read_seq, cm.read_seq",
            chat_id,
            user_id,
            up_to_seq,
        )
        return (row[0], row[1]) if row else None

    async def newest_read(self, chat_id: UUID, reader: str, after_seq: int, up_to_seq: int) -> list[Status]:
        """Per sender (but the reader), their newest message in (after_seq, up_to_seq], with its
        totals: one `read` status per sender names it."""
        rows = await self.conn.fetch(
            f"SELECT {_STATUS} FROM ("  # noqa: S608
            "  SELECT DISTINCT ON (sender_id) * FROM messages WHERE chat_id = $1 AND seq > $3 AND seq <= $4"
            "  AND sender_id <> $2 ORDER BY sender_id, seq DESC) m",
            chat_id,
            reader,
            after_seq,
            up_to_seq,
        )
        return [Status(*row) for row in rows]

    async def receipts(self, sender_id: str, message_ids: Sequence[UUID]) -> list[Receipts]:
        """For each of these messages that `sender_id` sent: its totals and every recipient that
        is still a member, with their status."""
        status = (
            "CASE WHEN cm.read_seq >= m.seq THEN 'read' WHEN EXISTS (SELECT 1 FROM pending p"
            " WHERE p.message_id = m.message_id AND p.user_id = cm.user_id) THEN 'sent' ELSE 'delivered' END"
        )
        recipients = (
            "FROM chat_members cm WHERE cm.chat_id = m.chat_id AND cm.user_id <> m.sender_id"
            " AND cm.joined_seq < m.seq ORDER BY cm.user_id"
        )
        rows = await self.conn.fetch(
            f"SELECT m.message_id, m.recipients, {_DELIVERED}, {_READ},"  # noqa: S608 - constants
            f" ARRAY(SELECT cm.user_id {recipients}), ARRAY(SELECT {status} {recipients})"
            " FROM messages m WHERE m.message_id = ANY($2::uuid[]) AND m.sender_id = $1",
            sender_id,
            list(message_ids),
        )
        return [
            Receipts(row[0], row[1], row[2], row[3], list(zip(row[4], row[5], strict=True))) for row in rows
        ]

    # Notifications.

    async def request_notifications(
        self, requests: Sequence[tuple[UUID, UUID, int, str]]
    ) -> list[tuple[UUID, str]]:
        """Record a notification for each (message, chat, seq, recipient) still news to the
        recipient; returns the (message, recipient) pairs recorded now.

        A recipient who acknowledged the message (no pending row) or read the chat past it gets
        none, and one recorded before is not recorded again. An acknowledgement of the same
        message may be handled at this moment by another instance (acks come in the user's
        partition): the pending rows are locked, so the ack either committed first (the row is
        gone: no request) or waits and then cancels what this inserted (`acknowledge`).
        """
        rows = await self.conn.fetch(
            "INSERT INTO notifications (message_id, user_id, chat_id, seq)"
            " SELECT p.message_id, p.user_id, r.chat_id, r.seq FROM pending p"
            " JOIN unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[])"
            "  AS r (message_id, chat_id, seq, user_id)"
            "  ON p.message_id = r.message_id AND p.user_id = r.user_id"
            " WHERE NOT EXISTS (SELECT 1 FROM chat_members m"
            "  WHERE m.chat_id = r.chat_id AND m.user_id = r.user_id AND m.read_seq >= r.seq)"
            " FOR UPDATE OF p"
            " ON CONFLICT DO NOTHING RETURNING message_id, user_id",
            [message for message, _, _, _ in requests],
            [chat for _, chat, _, _ in requests],
            [seq for _, _, seq, _ in requests],
            [user for _, _, _, user in requests],
        )
        return [(row[0], row[1]) for row in rows]

    async def unnotified(self, user_id: str, limit: int) -> list[Unnotified]:
        """The newest of the user's pending messages with no notification yet, oldest first."""
        rows = await self.conn.fetch(
            "SELECT * FROM (SELECT m.message_id, m.chat_id, m.seq, m.sender_id, p.user_id, m.frame"
            " FROM pending p JOIN messages m USING (message_id)"
            " WHERE p.user_id = $1 AND NOT EXISTS (SELECT 1 FROM notifications n"
            "  WHERE n.message_id = p.message_id AND n.user_id = p.user_id)"
            " ORDER BY p.position DESC LIMIT $2) newest ORDER BY seq",
            user_id,
            limit,
        )
        return [Unnotified(*row) for row in rows]

    async def cancel_read(self, chat_id: UUID, user_id: str, up_to_seq: int) -> list[Cancelled]:
        rows = await self.conn.fetch(
            "UPDATE notifications SET cancelled_at = now()"
            " WHERE user_id = $2 AND chat_id = $1 AND seq <= $3 AND cancelled_at IS NULL"
            " RETURNING message_id, chat_id, user_id",
            chat_id,
            user_id,
            up_to_seq,
        )
        return [Cancelled(row[0], row[1], row[2]) for row in rows]

    # Catch-up.

    async def backlog_page(self, user_id: str, cursor: Sequence[int], messages: int, max_bytes: int) -> Page:
        """One page of what the user has not acknowledged, in delivery's order (position).

        `cursor` holds, per partition (the last entry for rows of a partition number at or past
        `len(cursor) - 1`, left from a larger partition count), the position that partition's
        part of the backlog continues after. Each partition is read on its own index range, so
        rows of one partition committed late (its instance was slower than another's) are not
        skipped by a page that went past their position (docs/scaling.md, "Catch-up pages").

        The page stops at `messages` rows or before `max_bytes` of frames (always at least one
        row); the cut happens in PostgreSQL, so only the page's frames come over the wire.
        """
        partitions = len(cursor) - 1
        rows = await self.conn.fetch(
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
