"""Handlers of authenticated client frames, routed by `FRAME_HANDLERS`."""

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from uuid import UUID

import structlog
from aiolimiter import AsyncLimiter
from pydantic import BaseModel, ValidationError

from switchboard_contracts.errors import ErrorCode
from switchboard_contracts.events import ChatReadMarked, DeliveryAcked, MessageSent
from switchboard_contracts.wire import (
    ChatRef,
    MarkRead,
    MessageReceived,
    SendMessage,
    Sync,
    Typing,
    encode_frame,
    error_frame,
    message_error_frame,
)
from switchboard_runtime.amqp import broker_unavailable
from switchboard_runtime.http_errors import ApiError

from .context import Gateway
from .internal import call
from .limits import take_now
from .sessions import Session
from .sync import run_sync

__all__ = ["FRAME_HANDLERS", "describe", "temp_id_of"]

log = structlog.get_logger()

# `sync` per connection: a burst of 3, then one every 10 s. Each plans every chat of the user and
# replays history, the costliest thing a client can ask for.
SYNC_BURST = 3
SYNC_SECONDS = 10
# Told to a client whose send met a broker away for longer than the send hold: long enough for
# a restart to finish, so the resend is not refused again at once.
RETRY_AFTER_SECONDS = 5

FrameHandler = Callable[[Gateway, Session, Any], Awaitable[None]]


def describe(exc: ValidationError) -> str:
    """One line naming each bad field, e.g. `chat_id: Input should be a valid UUID`."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "data"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def temp_id_of(data: Any) -> str | int | None:
    """The `tempId` of a `send_message` frame, when it has a usable one, for its `message_error`."""
    temp_id = data.get("tempId") if isinstance(data, dict) else None
    if not isinstance(temp_id, str | int) or isinstance(temp_id, bool):
        return None
    return temp_id


async def on_send_message(gateway: Gateway, session: Session, data: Any) -> None:
    temp_id = temp_id_of(data)
    try:
        command = SendMessage.model_validate(data)
    except ValidationError as exc:
        session.push(message_error_frame(temp_id, ErrorCode.BAD_REQUEST, describe(exc)))
        return
    limit = gateway.settings.max_content_chars
    if len(command.content) > limit:
        session.push(
            message_error_frame(
                command.temp_id,
                ErrorCode.CONTENT_TOO_LONG,
                f"content has {len(command.content)} characters; the limit is {limit}",
            )
        )
        return
    # Built without validating again what `SendMessage` and the session already guarantee.
    event = MessageSent.model_construct(
        chat_id=command.chat_id,
        sender_id=session.user_id,
        temp_id=command.temp_id,
        content=command.content,
        message_type=command.message_type,
        reply_to=command.reply_to,
        origin=gateway.origin(session),
    )
    temp_id = command.temp_id

    def refused(exc: BaseException) -> None:
        if broker_unavailable(exc):
            frame = message_error_frame(
                temp_id,
                ErrorCode.UNAVAILABLE,
                "the service is unavailable; send it again with the same tempId after retry_after seconds",
                retry_after=RETRY_AFTER_SECONDS,
            )
        else:
            frame = message_error_frame(
                temp_id, ErrorCode.INTERNAL, "not accepted; send again with the same tempId"
            )
        session.push(frame)

    # Not awaited: the session reads its next frame while the send's batch is in flight, and
    # sends keep their order (one routing key per chat, one publish in flight per key).
    gateway.events.emit_logged(event, on_error=refused)


Model = TypeVar("Model", bound=BaseModel)


def _parse(session: Session, event: str, model: type[Model], data: Any) -> Model | None:
    """The frame's data, or None after answering `bad_request` naming the bad fields."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        session.push(error_frame(ErrorCode.BAD_REQUEST, f"{event}: {describe(exc)}"))
        return None


async def on_message_received(gateway: Gateway, session: Session, data: Any) -> None:
    if (ack := _parse(session, "message_received", MessageReceived, data)) is None:
        return
    # Only what this connection was sent counts: an id it never got (made up, or from an earlier
    # connection) costs the services nothing. A message acknowledged too late that way is still
    # pending and comes again in the next catch-up, to be acknowledged there.
    received = session.sent_of(ack.message_ids)
    if received:
        # Not awaited: an acknowledgement lost with the broker leaves its messages pending, and
        # they come again in the next catch-up.
        gateway.events.emit_logged(
            DeliveryAcked(
                user_id=session.user_id, session_id=session.id, message_ids=[UUID(i) for i in received]
            )
        )


async def on_mark_read(gateway: Gateway, session: Session, data: Any) -> None:
    """Messages checks membership and answers `read_marked` (or an error) to the reader."""
    if (mark := _parse(session, "mark_read", MarkRead, data)) is None:
        return

    def failed(_: BaseException) -> None:
        session.push(error_frame(ErrorCode.INTERNAL, "mark_read failed; it may be retried"))

    gateway.events.emit_logged(
        ChatReadMarked(
            chat_id=mark.chat_id, user_id=session.user_id, seq=mark.seq, origin=gateway.origin(session)
        ),
        on_error=failed,
    )


async def on_join_chat(gateway: Gateway, session: Session, data: Any) -> None:
    if (ref := _parse(session, "join_chat", ChatRef, data)) is None:
        return
    chat_id = str(ref.chat_id)
    # Join, then check: a removal that lands while the check is in flight then finds the session
    # in the room and evicts it, instead of the join slipping in after the eviction.
    await gateway.rooms.join(session, chat_id)
    try:
        await call(gateway.messages, "GET", f"/internal/chats/{chat_id}/membership", session.user_id)
    except ApiError as exc:
        await gateway.rooms.leave(session, chat_id)
        session.push(error_frame(exc.code, f"join_chat: {exc.message}"))
        return
    session.push(encode_frame("chat_joined", {"chat_id": chat_id}))


async def on_leave_chat(gateway: Gateway, session: Session, data: Any) -> None:
    if (ref := _parse(session, "leave_chat", ChatRef, data)) is None:
        return
    await gateway.rooms.leave(session, str(ref.chat_id))
    session.push(encode_frame("chat_left", {"chat_id": str(ref.chat_id)}))


async def on_typing(gateway: Gateway, session: Session, data: Any) -> None:
    if (typing := _parse(session, "typing", Typing, data)) is None:
        return
    chat_id = str(typing.chat_id)
    if not gateway.rooms.joined(session, chat_id):
        session.push(error_frame(ErrorCode.NOT_JOINED, f"typing: join_chat {chat_id} first"))
        return
    settings = gateway.settings
    if session.typing_limit is None:
        session.typing_limit = AsyncLimiter(
            settings.typing_burst, settings.typing_burst / settings.typing_per_second
        )
    if not take_now(session.typing_limit):
        session.push(error_frame(ErrorCode.RATE_LIMITED, "typing: too many typing frames; slow down"))
        return
    await gateway.rooms.typing(session, chat_id, typing.is_typing)


async def on_sync(gateway: Gateway, session: Session, data: Any) -> None:
    if (request := _parse(session, "sync", Sync, data)) is None:
        return
    if session.syncing:
        session.push(error_frame(ErrorCode.BAD_REQUEST, "sync: a sync is already running"))
        return
    if session.sync_limit is None:
        # A device syncs once per connection; a few more are a client's retries, not a need.
        session.sync_limit = AsyncLimiter(SYNC_BURST, SYNC_BURST * SYNC_SECONDS)
    if not take_now(session.sync_limit):
        session.push(error_frame(ErrorCode.RATE_LIMITED, f"sync: at most one per {SYNC_SECONDS} s"))
        return
    # In the background: the session keeps reading frames (acks, sends) while it replays.
    session.start_sync(
        run_sync(gateway, session, request), {str(chat): seq for chat, seq in request.chats.items()}
    )


FRAME_HANDLERS: dict[str, FrameHandler] = {
    "send_message": on_send_message,
    "message_received": on_message_received,
    "mark_read": on_mark_read,
    "join_chat": on_join_chat,
    "leave_chat": on_leave_chat,
    "typing": on_typing,
    "sync": on_sync,
}
