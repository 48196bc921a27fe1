"""SQL of the messages service. Every function runs on the connection it is given."""

from collections.abc import Collection, Sequence
from uuid import UUID

import asyncpg
from pydantic_core import to_json

from switchboard_contracts.events import Envelope
from switchboard_contracts.models import ChatOut, MessageOut
from switchboard_runtime.db import Conn

from .domain import ChatState

__all__ = [
    "append_events",
    "insert_messages",
    "lock_chats",
    "memberships",
    "messages_in_chats",
    "save_chat_states",
    "stored_by_temp_id",
    "visible_to",
    "append_event",
    "ever_member",
    "last_seq",
    "receipts_of",
    "chat_exists",
    "chat_out",
    "chats_of",
    "history",
    "insert_chat",
    "insert_member",
    "is_member",
    "lock_chat",
    "remove_member",
    "save_chat_state",
]

# A constant, never user input: the f-strings below that splice it in are safe (S608).
_MESSAGE_COLUMNS = "id, chat_id, seq, sender_id, content, message_type, reply_to, created_at"
_CHAT_SELECT = (
    "SELECT c.id, c.type, c.title, c.created_at,"
    " array(SELECT user_id FROM chat_members m WHERE m.chat_id = c.id ORDER BY joined_at, user_id) AS members"
    " FROM chats c"
)


def _message(row: asyncpg.Record) -> MessageOut:
    return MessageOut.model_validate(dict(row))


async def lock_chat(conn: Conn, chat_id: UUID) -> ChatState | None:
    row = await conn.fetchrow(
        "SELECT id, type, version, last_seq FROM chats WHERE id = $1 FOR UPDATE", chat_id
    )
    return ChatState(row["id"], row["type"], row["version"], row["last_seq"]) if row else None


async def save_chat_state(conn: Conn, chat_id: UUID, version: int, last_seq: int) -> None:
    await conn.execute(
        "UPDATE chats SET version = $2, last_seq = $3 WHERE id = $1", chat_id, version, last_seq
    )


async def last_seq(conn: Conn, chat_id: UUID) -> int:
    seq: int = await conn.fetchval("SELECT last_seq FROM chats WHERE id = $1", chat_id)
    return seq


async def chat_exists(conn: Conn, chat_id: UUID) -> bool:
    return bool(await conn.fetchval("SELECT true FROM chats WHERE id = $1", chat_id))


async def is_member(conn: Conn, chat_id: UUID, user_id: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT true FROM chat_members WHERE chat_id = $1 AND user_id = $2", chat_id, user_id
        )
    )


async def append_event(conn: Conn, stream_id: UUID, version: int, envelope: Envelope) -> None:
    await conn.execute(
        "INSERT INTO event_log (event_id, stream_id, stream_version, type, data, recorded_at)"
        " VALUES ($1, $2, $3, $4, $5::jsonb, $6)",
        envelope.id,
        stream_id,
        version,
        envelope.type,
        to_json(envelope.data).decode(),
        envelope.time,
    )


async def insert_chat(conn: Conn, chat: ChatOut, created_by: str) -> None:
    await conn.execute(
        "INSERT INTO chats (id, type, title, created_by, created_at, version) VALUES ($1, $2, $3, $4, $5, 1)",
        chat.id,
        chat.type,
        chat.title,
        created_by,
        chat.created_at,
    )
    await conn.executemany(
        "INSERT INTO chat_members (chat_id, user_id) VALUES ($1, $2)",
        [(chat.id, user) for user in chat.members],
    )


async def insert_member(conn: Conn, chat_id: UUID, user_id: str, joined_seq: int) -> bool:
    """Add a member who sees the messages after `joined_seq` (the chat's seq when added)."""
    status: str = await conn.execute(
        "INSERT INTO chat_members (chat_id, user_id, joined_seq) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        chat_id,
        user_id,
        joined_seq,
    )
    return status.endswith(" 1")


async def remove_member(conn: Conn, chat_id: UUID, user_id: str, left_seq: int) -> bool:
    """End a membership, keeping its period so the history up to `left_seq` stays readable.

    False if the user was not a member. (A period ending where it began, added and removed with
    no message between, is kept once.)
    """
    removed: int = await conn.fetchval(
        "WITH gone AS (DELETE FROM chat_members WHERE chat_id = $1 AND user_id = $2 RETURNING joined_seq),"
        " kept AS (INSERT INTO past_members (chat_id, user_id, joined_seq, left_seq)"
        "  SELECT $1, $2, joined_seq, $3 FROM gone"
        "  ON CONFLICT (chat_id, user_id, joined_seq) DO UPDATE SET left_seq = EXCLUDED.left_seq)"
        " SELECT count(*) FROM gone",
        chat_id,
        user_id,
        left_seq,
    )
    return removed == 1


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


async def ever_member(conn: Conn, chat_id: UUID, user_id: str) -> bool:
    """A member now or before: may read the history of the time they belonged."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM chat_members WHERE chat_id = $1 AND user_id = $2)"
            " OR EXISTS (SELECT 1 FROM past_members WHERE chat_id = $1 AND user_id = $2)",
            chat_id,
            user_id,
        )
    )


async def chat_out(conn: Conn, chat_id: UUID) -> ChatOut | None:
    row = await conn.fetchrow(
        f"{_CHAT_SELECT} WHERE c.id = $1",  # noqa: S608
        chat_id,
    )
    return ChatOut.model_validate(dict(row)) if row else None


async def chats_of(conn: Conn, user_id: str) -> Sequence[ChatOut]:
    rows = await conn.fetch(
        f"{_CHAT_SELECT} JOIN chat_members me ON me.chat_id = c.id AND me.user_id = $1"  # noqa: S608
        " ORDER BY c.created_at DESC",
        user_id,
    )
    return [ChatOut.model_validate(dict(row)) for row in rows]


_HISTORY_COLUMNS = "m.id, m.chat_id, m.seq, m.sender_id, m.content, m.message_type, m.reply_to, m.created_at"


async def history(
    conn: Conn, chat_id: UUID, reader: str, *, before_seq: int | None, after_seq: int | None, limit: int
) -> list[asyncpg.Record]:
    """Up to `limit` messages `reader` may see, oldest first: the newest page before
    `before_seq` (the newest of all when None), or, with `after_seq`, the first page after it.
    Rows carry the receipt counters too."""
    columns = f"{_HISTORY_COLUMNS}, m.recipients, m.delivered_count, m.read_count"
    if after_seq is not None:
        return await conn.fetch(
            f"SELECT {columns} FROM messages m WHERE m.chat_id = $1 AND m.seq > $3"  # noqa: S608
            f" AND {visible_to('$2')} ORDER BY m.seq LIMIT $4",
            chat_id,
            reader,
            after_seq,
            limit,
        )
    rows = await conn.fetch(
        f"SELECT {columns} FROM messages m WHERE m.chat_id = $1 AND m.seq < $3"  # noqa: S608
        f" AND {visible_to('$2')} ORDER BY m.seq DESC LIMIT $4",
        chat_id,
        reader,
        before_seq if before_seq is not None else 2**62,
        limit,
    )
    return list(reversed(rows))


async def receipts_of(conn: Conn, message_ids: Sequence[UUID]) -> dict[UUID, list[tuple[str, str]]]:
    """For each message, every recipient it had (members when it was sent, but the sender) and
    their status: `sent` until a receipt says more."""
    rows = await conn.fetch(
        "SELECT m.id, r.user_id, coalesce(rc.status, 'sent') FROM messages m"
        " JOIN LATERAL ("
        "  SELECT user_id FROM chat_members cm WHERE cm.chat_id = m.chat_id AND cm.joined_seq < m.seq"
        "  UNION SELECT user_id FROM past_members pm WHERE pm.chat_id = m.chat_id"
        "   AND pm.joined_seq < m.seq AND m.seq <= pm.left_seq"
        " ) r ON r.user_id <> m.sender_id"
        " LEFT JOIN receipts rc ON rc.message_id = m.id AND rc.user_id = r.user_id"
        " WHERE m.id = ANY($1::uuid[]) ORDER BY m.id, r.user_id",
        list(message_ids),
    )
    out: dict[UUID, list[tuple[str, str]]] = {}
    for message_id, user_id, status in rows:
        out.setdefault(message_id, []).append((user_id, status))
    return out


# Set-based reads and writes for a batch of sends: a handful of statements per batch, whatever
# its size, instead of a few round trips per message.


async def lock_chats(conn: Conn, chat_ids: Collection[UUID]) -> dict[UUID, ChatState]:
    """Lock these chats for the rest of the transaction; in id order, so two writers never deadlock."""
    rows = await conn.fetch(
        "SELECT id, type, version, last_seq FROM chats WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
        list(chat_ids),
    )
    return {row["id"]: ChatState(row["id"], row["type"], row["version"], row["last_seq"]) for row in rows}


async def memberships(conn: Conn, pairs: Collection[tuple[UUID, str]]) -> set[tuple[UUID, str]]:
    rows = await conn.fetch(
        "SELECT chat_id, user_id FROM chat_members"
        " JOIN unnest($1::uuid[], $2::text[]) AS asked (chat_id, user_id) USING (chat_id, user_id)",
        [chat for chat, _ in pairs],
        [user for _, user in pairs],
    )
    return {(row[0], row[1]) for row in rows}


async def stored_by_temp_id(
    conn: Conn, keys: Collection[tuple[str, str]]
) -> dict[tuple[str, str], MessageOut]:
    rows = await conn.fetch(
        f"SELECT {_MESSAGE_COLUMNS}, temp_id FROM messages"  # noqa: S608
        " JOIN unnest($1::text[], $2::text[]) AS asked (sender_id, temp_id) USING (sender_id, temp_id)",
        [sender for sender, _ in keys],
        [temp for _, temp in keys],
    )
    return {(row["sender_id"], row["temp_id"]): _message(row) for row in rows}


async def messages_in_chats(conn: Conn, pairs: Collection[tuple[UUID, UUID]]) -> set[tuple[UUID, UUID]]:
    if not pairs:
        return set()
    rows = await conn.fetch(
        "SELECT chat_id, id FROM messages"
        " JOIN unnest($1::uuid[], $2::uuid[]) AS asked (chat_id, id) USING (chat_id, id)",
        [chat for chat, _ in pairs],
        [message for _, message in pairs],
    )
    return {(row[0], row[1]) for row in rows}


async def insert_messages(conn: Conn, messages: Sequence[tuple[MessageOut, str]]) -> None:
    inserted = await conn.fetchval(
        "WITH added AS ("  # noqa: S608 - _MESSAGE_COLUMNS is a constant
        f" INSERT INTO messages ({_MESSAGE_COLUMNS}, temp_id, recipients)"
        " SELECT m.*, (SELECT count(*) FROM chat_members cm WHERE cm.chat_id = m.chat_id"
        "  AND cm.user_id <> m.sender_id)"
        " FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::text[], $6::text[],"
        " $7::uuid[], $8::timestamptz[], $9::text[])"
        " AS m (id, chat_id, seq, sender_id, content, message_type, reply_to, created_at, temp_id)"
        " ON CONFLICT (sender_id, temp_id) DO NOTHING RETURNING 1)"
        " SELECT count(*) FROM added",
        [m.id for m, _ in messages],
        [m.chat_id for m, _ in messages],
        [m.seq for m, _ in messages],
        [m.sender_id for m, _ in messages],
        [m.content for m, _ in messages],
        [m.message_type for m, _ in messages],
        [m.reply_to for m, _ in messages],
        [m.created_at for m, _ in messages],
        [temp_id for _, temp_id in messages],
    )
    if inserted != len(messages):
        # Another writer stored one of these (sender, tempId) pairs after this batch looked:
        # only possible with two active instances. The batch is redone event by event.
        raise RuntimeError(f"{len(messages) - inserted} send(s) stored concurrently; redo the batch")


async def append_events(conn: Conn, events: Sequence[tuple[UUID, int, Envelope]]) -> None:
    await conn.executemany(
        "INSERT INTO event_log (event_id, stream_id, stream_version, type, data, recorded_at)"
        " VALUES ($1, $2, $3, $4, $5::jsonb, $6)",
        [
            (envelope.id, stream, version, envelope.type, to_json(envelope.data).decode(), envelope.time)
            for stream, version, envelope in events
        ],
    )


async def save_chat_states(conn: Conn, chats: Collection[ChatState]) -> None:
    await conn.execute(
        "UPDATE chats SET version = v.version, last_seq = v.last_seq"
        " FROM unnest($1::uuid[], $2::bigint[], $3::bigint[]) AS v (id, version, last_seq)"
        " WHERE chats.id = v.id",
        [chat.id for chat in chats],
        [chat.version for chat in chats],
        [chat.last_seq for chat in chats],
    )
