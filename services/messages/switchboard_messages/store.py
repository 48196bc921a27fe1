"""SQL of the messages service: chats, membership and messages. (Events go to the event log
with the unit of work's outbox: libs/runtime eventlog.py.)

`Store` is bound to one connection (a unit of work's transaction, or a read-only request's).
Sends are written set-based: a batch of any size is one statement that locks its chats and reads
everything the rules need; its messages are written by the append of their events (the messages
table is a projection of the event log, migration 0004).
"""

from collections.abc import Sequence
from uuid import UUID

import asyncpg

from switchboard_contracts.events import MessageSent
from switchboard_contracts.models import ChatOut, MessageOut
from switchboard_runtime.db import Conn

from .domain import BatchFacts, ChatState
from .read_store import ReadStore

__all__ = ["Store", "visible_to"]

# A constant, never user input: the f-strings below that splice it in are safe (S608).
_HISTORY_COLUMNS = "m.id, m.chat_id, m.seq, m.sender_id, m.content, m.message_type, m.reply_to, m.created_at"
_CHAT_SELECT = (
    "SELECT c.id, c.type, c.title, c.created_at,"
    " array(SELECT user_id FROM chat_members m WHERE m.chat_id = c.id ORDER BY joined_at, user_id) AS members"
    " FROM chats c"
)
# A chat's last seq and the version of its event stream, read from their indexes rather than
# kept in the chat row: an update of the chat row per batch would be one more row written per
# message. Only valid after the chat row is locked, in a statement of its own (a later
# snapshot than the lock's wait). `lock_for_sends` (migration 0004) reads both the same way.
_LAST_SEQ = "coalesce((SELECT max(seq) FROM messages mm WHERE mm.chat_id = {chat}), 0)"
_VERSION = "coalesce((SELECT max(stream_version) FROM event_log e WHERE e.stream_id = {chat}), 0)"


def visible_to(user_param: str) -> str:
    """SQL: whether the user in parameter `user_param` (e.g. "$2") may see message `m`: a member
    since before it, or a past member whose membership covered it. Built from constants only,
    so the queries that splice it in are safe (S608)."""
    user = user_param
    return (
        "(EXISTS (SELECT 1 FROM chat_members cm WHERE cm.chat_id = m.chat_id"  # noqa: S608 - constants
        f"  AND cm.user_id = {user} AND m.seq > cm.joined_seq)"
        " OR EXISTS (SELECT 1 FROM past_members pm WHERE pm.chat_id = m.chat_id"
        f"  AND pm.user_id = {user} AND m.seq > pm.joined_seq AND m.seq <= pm.left_seq))"
    )


def _message(row: asyncpg.Record) -> MessageOut:
    return MessageOut(
        id=row["id"],
        chat_id=row["chat_id"],
        seq=row["seq"],
        sender_id=row["sender_id"],
        content=row["content"],
        message_type=row["message_type"],
        reply_to=row["reply_to"],
        created_at=row["created_at"],
    )


class Store(ReadStore):
    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    # Chats and membership.

    async def lock_chat(self, chat_id: UUID) -> ChatState | None:
        """Lock the chat for a change, then read where it stands."""
        if not await self.conn.fetchval("SELECT true FROM chats WHERE id = $1 FOR UPDATE", chat_id):
            return None
        row = await self.conn.fetchrow(
            f"SELECT type, {_VERSION.format(chat='$1')}, {_LAST_SEQ.format(chat='$1')}"  # noqa: S608
            " FROM chats WHERE id = $1",
            chat_id,
        )
        return ChatState(chat_id, row[0], row[1], row[2]) if row else None

    async def last_seq(self, chat_id: UUID) -> int:
        seq: int = await self.conn.fetchval(f"SELECT {_LAST_SEQ.format(chat='$1')}", chat_id)  # noqa: S608
        return seq

    async def chat_exists(self, chat_id: UUID) -> bool:
        return bool(await self.conn.fetchval("SELECT true FROM chats WHERE id = $1", chat_id))

    async def is_member(self, chat_id: UUID, user_id: str) -> bool:
        return bool(
            await self.conn.fetchval(
                "SELECT true FROM chat_members WHERE chat_id = $1 AND user_id = $2", chat_id, user_id
            )
        )

    async def ever_member(self, chat_id: UUID, user_id: str) -> bool:
        """A member now or before: may read the history of the time they belonged."""
        return bool(
            await self.conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM chat_members WHERE chat_id = $1 AND user_id = $2)"
                " OR EXISTS (SELECT 1 FROM past_members WHERE chat_id = $1 AND user_id = $2)",
                chat_id,
                user_id,
            )
        )

    async def insert_chat(self, chat: ChatOut, created_by: str) -> None:
        await self.conn.execute(
            "WITH chat AS (INSERT INTO chats (id, type, title, created_by, created_at)"
            " VALUES ($1, $2, $3, $4, $5))"
            " INSERT INTO chat_members (chat_id, user_id) SELECT $1, unnest($6::text[])",
            chat.id,
            chat.type,
            chat.title,
            created_by,
            chat.created_at,
            chat.members,
        )

    async def insert_member(self, chat_id: UUID, user_id: str, joined_seq: int) -> bool:
        """Add a member who sees the messages after `joined_seq` (the chat's seq when added)."""
        status: str = await self.conn.execute(
            "INSERT INTO chat_members (chat_id, user_id, joined_seq) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING",
            chat_id,
            user_id,
            joined_seq,
        )
        return status.endswith(" 1")

    async def remove_member(self, chat_id: UUID, user_id: str, left_seq: int) -> bool:
        """End a membership, keeping its period so the history up to `left_seq` stays readable.

        False if the user was not a member. (A period ending where it began, added and removed
        with no message between, is kept once.)
        """
        removed: int = await self.conn.fetchval(
            "WITH gone AS (DELETE FROM chat_members WHERE chat_id = $1 AND user_id = $2"
            "  RETURNING joined_seq),"
            " kept AS (INSERT INTO past_members (chat_id, user_id, joined_seq, left_seq)"
            "  SELECT $1, $2, joined_seq, $3 FROM gone"
            "  ON CONFLICT (chat_id, user_id, joined_seq) DO UPDATE SET left_seq = EXCLUDED.left_seq)"
            " SELECT count(*) FROM gone",
            chat_id,
            user_id,
            left_seq,
        )
        return removed == 1

    async def chat_out(self, chat_id: UUID) -> ChatOut | None:
        row = await self.conn.fetchrow(f"{_CHAT_SELECT} WHERE c.id = $1", chat_id)  # noqa: S608
        return ChatOut.model_validate(dict(row)) if row else None

    async def chats_of(self, user_id: str) -> Sequence[ChatOut]:
        rows = await self.conn.fetch(
            f"{_CHAT_SELECT} JOIN chat_members me ON me.chat_id = c.id AND me.user_id = $1"  # noqa: S608
            " ORDER BY c.created_at DESC",
            user_id,
        )
        return [ChatOut.model_validate(dict(row)) for row in rows]

    # History.

    async def history(
        self, chat_id: UUID, reader: str, *, before_seq: int | None, after_seq: int | None, limit: int
    ) -> list[MessageOut]:
        """Up to `limit` messages `reader` may see, oldest first: the newest page before
        `before_seq` (the newest of all when None), or, with `after_seq`, the first page after it."""
        if after_seq is not None:
            rows = await self.conn.fetch(
                f"SELECT {_HISTORY_COLUMNS} FROM messages m WHERE m.chat_id = $1 AND m.seq > $3"  # noqa: S608
                f" AND {visible_to('$2')} ORDER BY m.seq LIMIT $4",
                chat_id,
                reader,
                after_seq,
                limit,
            )
            return [_message(row) for row in rows]
        rows = await self.conn.fetch(
            f"SELECT {_HISTORY_COLUMNS} FROM messages m WHERE m.chat_id = $1 AND m.seq < $3"  # noqa: S608
            f" AND {visible_to('$2')} ORDER BY m.seq DESC LIMIT $4",
            chat_id,
            reader,
            before_seq if before_seq is not None else 2**62,
            limit,
        )
        return [_message(row) for row in reversed(rows)]

    # Sends, set-based.

    async def lock_for_sends(self, sends: Sequence[MessageSent]) -> BatchFacts:
        """Lock the chats of a batch of sends for the rest of the transaction, then read
        everything the rules need about the batch: each chat's state, whether each sender is a
        member, a message already stored under each (sender, tempId), whether each `reply_to` is
        in the send's chat. One round trip (`lock_for_sends`, migration 0004)."""
        replies = [sent for sent in sends if sent.reply_to is not None]
        rows = await self.conn.fetch(
            "SELECT * FROM lock_for_sends($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],"
            " $6::uuid[], $7::uuid[])",
            list({sent.chat_id for sent in sends}),
            [sent.chat_id for sent in sends],
            [sent.sender_id for sent in sends],
            [sent.sender_id for sent in sends],
            [str(sent.temp_id) for sent in sends],
            [sent.chat_id for sent in replies],
            [sent.reply_to for sent in replies],
        )
        facts = BatchFacts(chats={}, memberships=set(), stored={}, replies=set())
        for row in rows:
            kind = row["kind"]
            if kind == "c":
                facts.chats[row["chat_id"]] = ChatState(
                    row["chat_id"], row["type"], row["version"], row["last_seq"]
                )
            elif kind == "m":
                facts.memberships.add((row["chat_id"], row["sender_id"]))
            elif kind == "s":
                facts.stored[(row["sender_id"], row["temp_id"])] = _message(row)
            else:
                facts.replies.add((row["chat_id"], row["id"]))
        return facts
