"""The classic room-based chat server, the design Switchboard's users start from.

It follows the Socket.IO guide's recommended "user room" approach
(shared/reference/room-to-user-delivery-guide.md): every socket of a user joins that user's
personal room, and for each message the server stores it, looks up the chat's members, and for
each recipient runs one query (its status row) and emits to the recipient's room. One process,
one connection pool, no broker, no caching. It speaks the subset of Switchboard's protocol v1
(docs/protocol.md) that the benchmark's load generator uses; README.md lists that subset.

    BASELINE_DATABASE_URL=postgresql://... BASELINE_JWT_SECRET=... python -m bench.baseline.server
"""

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import orjson
import uvicorn
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from switchboard_contracts.errors import WS_CLOSE_INVALID_TOKEN, ErrorCode
from switchboard_contracts.models import CreateChat, check_user_id

log = logging.getLogger("bench.baseline")

SCHEMA = (Path(__file__).with_name("schema.sql")).read_text()
# node-postgres' Pool defaults to 10 connections, and a single Node process behind Socket.IO is
# typically deployed with that default (Sequelize's own default is 5). Ten also leaves most of
# PostgreSQL's default max_connections (100) to other clients, as a shared database must.
POOL_SIZE = 10
# The same bounds as Switchboard's (docs/protocol.md, section 9), so both refuse the same input.
MAX_CONTENT_CHARS = 65_536
MAX_TEMP_ID_CHARS = 128
MAX_MESSAGE_TYPE_CHARS = 32
MAX_EVENT_CHARS = 64
MAX_ACK_IDS = 1_000
# Clock difference tolerated on `exp`, as Switchboard's default CHAT_JWT_LEEWAY_SECONDS.
JWT_LEEWAY_SECONDS = 30
MAX_INT64 = 2**63 - 1

# The seq comes from the chat row, whose lock is held until commit; created_at is read after
# taking it (clock_timestamp, not the transaction's start), so a chat's messages are ordered the
# same by created_at as by seq and the flush can order a user's queue by time.
_INSERT_MESSAGE = """
    WITH chat AS (UPDATE chats SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq)
    INSERT INTO messages (id, chat_id, seq, sender_id, content, message_type, reply_to, created_at)
    SELECT $2, $1, chat.last_seq, $3, $4, $5, $6, clock_timestamp() FROM chat
    RETURNING id, chat_id, seq, sender_id, content, message_type, reply_to, created_at
"""
_QUEUED = """
    SELECT m.id, m.chat_id, m.seq, m.sender_id, m.content, m.message_type, m.reply_to, m.created_at
    FROM message_status s JOIN messages m ON m.id = s.message_id
    WHERE s.user_id = $1 AND s.status = 'sent'
    ORDER BY m.created_at, m.chat_id, m.seq
"""


def encode(event: str, data: Any) -> str:
    return orjson.dumps({"event": event, "data": data}).decode()


def error(code: ErrorCode, message: str) -> str:
    return encode("error", {"code": code.value, "message": message})


def message_error(temp_id: str | int | None, code: ErrorCode, message: str) -> str:
    return encode("message_error", {"tempId": temp_id, "code": code.value, "message": message})


def message_json(row: asyncpg.Record) -> dict[str, Any]:
    """A stored message as Switchboard sends it (docs/protocol.md, section 6)."""
    created_at: datetime = row["created_at"]
    return {
        "id": str(row["id"]),
        "chat_id": str(row["chat_id"]),
        "seq": row["seq"],
        "sender_id": row["sender_id"],
        "content": row["content"],
        "message_type": row["message_type"],
        "reply_to": None if row["reply_to"] is None else str(row["reply_to"]),
        # ISO 8601 in UTC with microseconds and a Z, always (the protocol's format).
        "created_at": created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }


class Refused(Exception):
    """A request refused with one of the protocol's error codes."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SendMessage:
    chat_id: uuid.UUID
    content: str
    message_type: str
    reply_to: uuid.UUID | None


def temp_id_of(data: Any) -> str | int | None:
    """The tempId to echo: a string or an integer, else null (as Switchboard does)."""
    value = data.get("tempId") if isinstance(data, dict) else None
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


def _uuid(value: Any, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        raise Refused(ErrorCode.BAD_REQUEST, f"{field} must be a UUID string") from None


def parse_send(data: Any) -> SendMessage:
    if not isinstance(data, dict):
        raise Refused(ErrorCode.BAD_REQUEST, "data must be an object")
    temp_id = data.get("tempId")
    if isinstance(temp_id, bool) or not isinstance(temp_id, str | int):
        raise Refused(ErrorCode.BAD_REQUEST, "tempId must be a string or an integer")
    if isinstance(temp_id, str) and not (0 < len(temp_id) <= MAX_TEMP_ID_CHARS and "\0" not in temp_id):
        raise Refused(ErrorCode.BAD_REQUEST, f"tempId must be 1 to {MAX_TEMP_ID_CHARS} characters, no NUL")
    if isinstance(temp_id, int) and not -MAX_INT64 - 1 <= temp_id <= MAX_INT64:
        raise Refused(ErrorCode.BAD_REQUEST, "tempId must fit in 64 bits")
    content = data.get("content")
    if not isinstance(content, str) or not content or "\0" in content:
        raise Refused(ErrorCode.BAD_REQUEST, "content must be a non-empty string without NUL")
    if len(content) > MAX_CONTENT_CHARS:
        raise Refused(ErrorCode.CONTENT_TOO_LONG, f"content is limited to {MAX_CONTENT_CHARS} characters")
    message_type = data.get("message_type", "text")
    if not (
        isinstance(message_type, str)
        and 0 < len(message_type) <= MAX_MESSAGE_TYPE_CHARS
        and "\0" not in message_type
    ):
        raise Refused(ErrorCode.BAD_REQUEST, f"message_type must be 1 to {MAX_MESSAGE_TYPE_CHARS} characters")
    reply_to = data.get("reply_to")
    return SendMessage(
        chat_id=_uuid(data.get("chat_id"), "chat_id"),
        content=content,
        message_type=message_type,
        reply_to=None if reply_to is None else _uuid(reply_to, "reply_to"),
    )


class Connection:
    """One open socket of a user, a member of that user's room.

    Frames to it go through a queue that one task writes, so an emit never waits for a slow
    reader, as Socket.IO's emit only buffers. During the catch-up live messages are held, so the
    queue comes first and nothing is sent twice (docs/protocol.md, section 3).
    """

    def __init__(self, ws: WebSocket, user_id: str) -> None:
        self.ws = ws
        self.user_id = user_id
        self.session_id = f"s-{uuid.uuid4().hex}"
        self._outbox: asyncio.Queue[str] = asyncio.Queue()
        self._held: list[tuple[str, str]] | None = []  # (message id, frame) while catching up
        self._writer = asyncio.create_task(self._write())

    def emit(self, frame: str) -> None:
        self._outbox.put_nowait(frame)

    def emit_live(self, message_id: str, frame: str) -> None:
        if self._held is None:
            self.emit(frame)
        else:
            self._held.append((message_id, frame))

    def end_catch_up(self, sent: set[str]) -> None:
        held, self._held = self._held or [], None
        for message_id, frame in held:
            if message_id not in sent:
                self.emit(frame)

    async def _write(self) -> None:
        while True:
            frame = await self._outbox.get()
            try:
                await self.ws.send_text(frame)
            except Exception:
                return  # the socket is gone; the reading side sees the close and cleans up

    async def close(self) -> None:
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer


class ChatServer:
    def __init__(self, pool: asyncpg.Pool, secret: str) -> None:
        self.pool = pool
        self.secret = secret
        # The user rooms: user id -> that user's open sockets, in this one process.
        self.rooms: dict[str, set[Connection]] = {}
        # Handlers in flight, held here because the event loop keeps only weak references to tasks.
        self.handlers: set[asyncio.Task[None]] = set()

    def spawn(self, conn: Connection, event: str, data: Any) -> None:
        """Handle a frame in a task of its own, as Socket.IO runs an event's handler without
        waiting for the previous one: one slow send does not stall the socket's other frames."""
        task = asyncio.create_task(self.dispatch(conn, event, data))
        self.handlers.add(task)
        task.add_done_callback(self.handlers.discard)

    def user_of(self, token: str | None) -> str | None:
        if not token:
            return None
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=["HS256"],
                options={"require": ["sub", "exp"]},
                leeway=JWT_LEEWAY_SECONDS,
            )
            return check_user_id(claims["sub"])
        except (jwt.InvalidTokenError, ValueError, TypeError):
            return None

    def join(self, conn: Connection) -> None:
        self.rooms.setdefault(conn.user_id, set()).add(conn)

    def leave(self, conn: Connection) -> None:
        sockets = self.rooms.get(conn.user_id)
        if sockets is not None:
            sockets.discard(conn)
            if not sockets:
                del self.rooms[conn.user_id]

    async def catch_up(self, conn: Connection) -> None:
        """Everything still 'sent' for the user, oldest first, then queue_flushed."""
        rows = await self.pool.fetch(_QUEUED, conn.user_id)
        sent: set[str] = set()
        for row in rows:
            message = message_json(row)
            sent.add(message["id"])
            conn.emit(encode("new_message", message))
        conn.emit(encode("queue_flushed", {"count": len(rows)}))
        conn.end_catch_up(sent)

    async def dispatch(self, conn: Connection, event: str, data: Any) -> None:
        try:
            if event == "send_message":
                await self.send_message(conn, data)
            elif event == "message_received":
                await self.message_received(conn, data)
            else:
                conn.emit(error(ErrorCode.BAD_REQUEST, f"unknown event {event!r}"))
        except Refused as exc:
            conn.emit(error(exc.code, exc.message))
        except Exception:
            log.exception("handling %s failed", event)
            conn.emit(error(ErrorCode.INTERNAL, f"{event} failed"))

    async def send_message(self, conn: Connection, data: Any) -> None:
        temp_id = temp_id_of(data)
        try:
            request = parse_send(data)
            message = await self.store(conn.user_id, request)
        except Refused as exc:
            conn.emit(message_error(temp_id, exc.code, exc.message))
            return
        except Exception:
            log.exception("storing a message failed")
            conn.emit(message_error(temp_id, ErrorCode.INTERNAL, "the message was not stored"))
            return
        conn.emit(encode("message_sent", {"tempId": temp_id, "message": message}))

        # The guide's step 3: the chat's members, asked for on every message (no cache).
        recipients = await self.pool.fetch(
            "SELECT user_id FROM chat_members WHERE chat_id = $1 AND user_id <> $2",
            request.chat_id,
            conn.user_id,
        )
        # Step 4: per recipient, one query and an emit to the recipient's room. The status row is
        # written before the emit, so an acknowledgement can never arrive before the row it marks;
        # the row of an offline recipient is their queue. Awaited one by one, as the guide's loop.
        frame = encode("new_message", message)
        delivered = 0
        for (user_id,) in recipients:
            await self.pool.execute(
                "INSERT INTO message_status (user_id, message_id, status) VALUES ($1, $2, 'sent')",
                user_id,
                uuid.UUID(message["id"]),
            )
            sockets = self.rooms.get(user_id)
            if sockets:
                delivered += 1
                for socket in sockets:
                    socket.emit_live(message["id"], frame)
        # Step 5 of the guide, with Switchboard's field names.
        info = {
            "message_id": message["id"],
            "delivered": delivered,
            "queued": len(recipients) - delivered,
            "total": len(recipients),
        }
        conn.emit(encode("message_delivery_info", info))

    async def store(self, sender: str, request: SendMessage) -> dict[str, Any]:
        """The guide's messageService.sendMessage: check membership, then insert with the next seq."""
        async with self.pool.acquire() as db, db.transaction():
            found = await db.fetchrow(
                "SELECT EXISTS (SELECT 1 FROM chats WHERE id = $1) AS chat,"
                " EXISTS (SELECT 1 FROM chat_members WHERE chat_id = $1 AND user_id = $2) AS member",
                request.chat_id,
                sender,
            )
            assert found is not None  # noqa: S101 - SELECT without FROM always returns its row
            if not found["chat"]:
                raise Refused(ErrorCode.CHAT_NOT_FOUND, f"no chat {request.chat_id}")
            if not found["member"]:
                raise Refused(ErrorCode.NOT_A_MEMBER, f"you are not a member of chat {request.chat_id}")
            row = await db.fetchrow(
                _INSERT_MESSAGE,
                request.chat_id,
                uuid.uuid4(),
                sender,
                request.content,
                request.message_type,
                request.reply_to,
            )
            assert row is not None  # noqa: S101 - the chat row exists and is locked by this transaction
            return message_json(row)

    async def message_received(self, conn: Connection, data: Any) -> None:
        ids = data.get("message_ids") if isinstance(data, dict) else None
        if not (
            isinstance(ids, list) and 0 < len(ids) <= MAX_ACK_IDS and all(isinstance(i, str) for i in ids)
        ):
            raise Refused(ErrorCode.BAD_REQUEST, f"message_ids must be 1 to {MAX_ACK_IDS} message id strings")
        valid: list[uuid.UUID] = []
        for value in ids:
            with contextlib.suppress(ValueError):
                valid.append(uuid.UUID(value))  # an id that is not a UUID names no message: ignored
        await self.pool.execute(
            "UPDATE message_status SET status = 'delivered'"
            " WHERE user_id = $1 AND message_id = ANY($2::uuid[]) AND status = 'sent'",
            conn.user_id,
            valid,
        )


def _server(scope_owner: Request | WebSocket) -> ChatServer:
    server: ChatServer = scope_owner.app.state.server
    return server


def _bearer(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def websocket_endpoint(ws: WebSocket) -> None:
    server = _server(ws)
    await ws.accept()
    token = _bearer(ws.headers.get("authorization"))
    user_id = server.user_of(token if token is not None else ws.query_params.get("token"))
    if user_id is None:
        await ws.send_text(error(ErrorCode.INVALID_TOKEN, "a valid HS256 JWT is required at the handshake"))
        await ws.close(WS_CLOSE_INVALID_TOKEN, ErrorCode.INVALID_TOKEN.value)
        return
    conn = Connection(ws, user_id)
    conn.emit(encode("authenticated", {"user_id": user_id, "session_id": conn.session_id}))
    server.join(conn)  # before the catch-up query, so nothing stored meanwhile can miss this socket
    try:
        await server.catch_up(conn)
        while True:
            received = await ws.receive()
            if received["type"] == "websocket.disconnect":
                break
            text: str | None = received.get("text")
            try:
                frame: Any = orjson.loads(text) if text is not None else None
            except orjson.JSONDecodeError:
                frame = None
            event = frame.get("event") if isinstance(frame, dict) else None
            if not isinstance(event, str) or not 0 < len(event) <= MAX_EVENT_CHARS:
                conn.emit(
                    error(ErrorCode.BAD_REQUEST, 'a frame is a JSON object {"event": ..., "data": ...}')
                )
                continue
            server.spawn(conn, event, frame.get("data"))
    finally:
        server.leave(conn)
        await conn.close()


async def create_chat(request: Request) -> JSONResponse:
    server = _server(request)
    token = _bearer(request.headers.get("authorization"))
    if token is None:
        return _error(401, ErrorCode.NOT_AUTHENTICATED, "Authorization: Bearer <jwt> is required")
    user_id = server.user_of(token)
    if user_id is None:
        return _error(401, ErrorCode.INVALID_TOKEN, "the token was refused")
    try:
        body = CreateChat.model_validate_json(await request.body())
    except ValidationError as exc:
        return _error(422, ErrorCode.BAD_REQUEST, str(exc.errors(include_url=False)))
    # The caller is always a member; a member listed twice is one member.
    members = list(dict.fromkeys([user_id, *body.members]))
    if body.type == "direct" and len(members) != 2:
        return _error(422, ErrorCode.BAD_REQUEST, "a direct chat has exactly two members")
    chat_id = uuid.uuid4()
    async with server.pool.acquire() as db, db.transaction():
        created_at = await db.fetchval(
            "INSERT INTO chats (id, type, title, created_by) VALUES ($1, $2, $3, $4) RETURNING created_at",
            chat_id,
            body.type,
            body.title,
            user_id,
        )
        # Chat creation is setup, not the path the benchmark measures: one statement for all members.
        await db.execute(
            "INSERT INTO chat_members (chat_id, user_id) SELECT $1, unnest($2::text[])", chat_id, members
        )
    chat = {
        "id": str(chat_id),
        "type": body.type,
        "title": body.title,
        "members": members,
        "created_at": created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    return JSONResponse(chat, status_code=201)


def _error(status: int, code: ErrorCode, message: str) -> JSONResponse:
    return JSONResponse({"code": code.value, "message": message}, status_code=status)


async def healthz(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def create_app(database_url: str, secret: str) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(database_url, min_size=POOL_SIZE, max_size=POOL_SIZE)
        try:
            await pool.execute(SCHEMA)
            app.state.server = ChatServer(pool, secret)
            yield
        finally:
            try:
                await asyncio.wait_for(pool.close(), timeout=5)
            except TimeoutError:
                pool.terminate()  # a handler still holds a connection; the process is exiting

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/chats", create_chat, methods=["POST"]),
            WebSocketRoute("/ws", websocket_endpoint),
        ],
        lifespan=lifespan,
    )


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_app(os.environ["BASELINE_DATABASE_URL"], os.environ["BASELINE_JWT_SECRET"])
    uvicorn.run(
        app,
        host=os.environ.get("BASELINE_HOST", "127.0.0.1"),
        port=int(os.environ.get("BASELINE_PORT", "8100")),
        log_level="warning",
        access_log=False,
        # The same WebSocket layer and settings as Switchboard's gateway, so the comparison is of
        # the designs, not of WebSocket libraries: websockets' sans-I/O protocol, pings every
        # 20 s, no compression (Socket.IO's default is off too), frames up to 2 MiB.
        ws="websockets-sansio",
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        ws_per_message_deflate=False,
        ws_max_size=2 * 1024 * 1024,
        # Otherwise uvicorn waits for open WebSockets forever on SIGTERM.
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
