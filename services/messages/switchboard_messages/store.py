"""SQL of the messages service. Every function runs on the connection it is given."""

from collections.abc import Sequence
from uuid import UUID

import asyncpg
from pydantic_core import to_json

from switchboard_contracts.events import Envelope
from switchboard_contracts.models import ChatOut, MessageOut
from switchboard_runtime.db import Conn

from .domain import ChatState

__all__ = [
    "append_event",
    "append_to_chat",
    "chat_out",
    "chats_of",
    "find_by_temp_id",
    "history",
    "insert_chat",
    "insert_member",
    "insert_message",
    "is_member",
    "lock_chat",
    "lock_chat_for_sender",
    "message_in_chat",
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


async def lock_chat_for_sender(conn: Conn, chat_id: UUID, sender_id: str) -> tuple[ChatState, bool] | None:
    """Lock the chat (serialising its writers) and say whether the sender is a member, in one trip."""
    row = await conn.fetchrow(
        "SELECT c.id, c.type, c.version, c.last_seq,"
        " EXISTS (SELECT 1 FROM chat_members m WHERE m.chat_id = c.id AND m.user_id = $2) AS member"
        " FROM chats c WHERE c.id = $1 FOR UPDATE OF c",
        chat_id,
        sender_id,
    )
    if row is None:
        return None
    return ChatState(row["id"], row["type"], row["version"], row["last_seq"]), row["member"]


async def save_chat_state(conn: Conn, chat_id: UUID, version: int, last_seq: int) -> None:
    await conn.execute(
        "UPDATE chats SET version = $2, last_seq = $3 WHERE id = $1", chat_id, version, last_seq
    )


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


async def append_to_chat(conn: Conn, chat: ChatState, envelope: Envelope, last_seq: int) -> None:
    """Append the chat's next event and move its version (and last seq) on, in one round trip."""
    await conn.execute(
        "WITH appended AS ("
        " INSERT INTO event_log (event_id, stream_id, stream_version, type, data, recorded_at)"
        " VALUES ($1, $2, $3, $4, $5::jsonb, $6))"
        " UPDATE chats SET version = $3, last_seq = $7 WHERE id = $2",
        envelope.id,
        chat.id,
        chat.version + 1,
        envelope.type,
        to_json(envelope.data).decode(),
        envelope.time,
        last_seq,
    )


async def find_by_temp_id(conn: Conn, sender_id: str, temp_id: str) -> MessageOut | None:
    row = await conn.fetchrow(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE sender_id = $1 AND temp_id = $2",  # noqa: S608
        sender_id,
        temp_id,
    )
    return _message(row) if row else None


async def message_in_chat(conn: Conn, chat_id: UUID, message_id: UUID) -> bool:
    return bool(
        await conn.fetchval("SELECT true FROM messages WHERE id = $1 AND chat_id = $2", message_id, chat_id)
    )


async def insert_message(conn: Conn, message: MessageOut, temp_id: str) -> bool:
    """False when this sender already stored a message with this tempId (nothing is written)."""
    stored = await conn.fetchval(
        f"INSERT INTO messages ({_MESSAGE_COLUMNS}, temp_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"  # noqa: S608
        " ON CONFLICT (sender_id, temp_id) DO NOTHING RETURNING true",
        message.id,
        message.chat_id,
        message.seq,
        message.sender_id,
        message.content,
        message.message_type,
        message.reply_to,
        message.created_at,
        temp_id,
    )
    return bool(stored)


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
