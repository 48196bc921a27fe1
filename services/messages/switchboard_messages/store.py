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
    "append_event",
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


async def insert_member(conn: Conn, chat_id: UUID, user_id: str) -> bool:
    status: str = await conn.execute(
        "INSERT INTO chat_members (chat_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", chat_id, user_id
    )
    return status.endswith(" 1")


async def remove_member(conn: Conn, chat_id: UUID, user_id: str) -> bool:
    status: str = await conn.execute(
        "DELETE FROM chat_members WHERE chat_id = $1 AND user_id = $2", chat_id, user_id
    )
    return status.endswith(" 1")


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


async def history(conn: Conn, chat_id: UUID, before_seq: int | None, limit: int) -> list[MessageOut]:
    """The `limit` messages before `before_seq` (newest page when None), oldest first."""
    rows = await conn.fetch(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages"  # noqa: S608
        " WHERE chat_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
        chat_id,
        before_seq if before_seq is not None else 2**62,
        limit,
    )
    return [_message(row) for row in reversed(rows)]


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
        f" INSERT INTO messages ({_MESSAGE_COLUMNS}, temp_id)"
        " SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::text[], $6::text[],"
        " $7::uuid[], $8::timestamptz[], $9::text[])"
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
