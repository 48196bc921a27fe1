"""Handlers of authenticated client frames, routed by `FRAME_HANDLERS`."""

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from pydantic import ValidationError

from switchboard_contracts.errors import ErrorCode
from switchboard_contracts.events import DeliveryAcked, MessageSent
from switchboard_contracts.wire import MessageReceived, SendMessage, error_frame, message_error_frame

from .context import Gateway
from .sessions import Session

__all__ = ["FRAME_HANDLERS", "describe"]

log = structlog.get_logger()

FrameHandler = Callable[[Gateway, Session, Any], Awaitable[None]]


def describe(exc: ValidationError) -> str:
    """One line naming each bad field, e.g. `chat_id: Input should be a valid UUID`."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "data"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


async def on_send_message(gateway: Gateway, session: Session, data: Any) -> None:
    temp_id = data.get("tempId") if isinstance(data, dict) else None
    if not isinstance(temp_id, str | int) or isinstance(temp_id, bool):
        temp_id = None
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
    event = MessageSent(
        chat_id=command.chat_id,
        sender_id=session.user_id,
        temp_id=command.temp_id,
        content=command.content,
        message_type=command.message_type,
        reply_to=command.reply_to,
        origin=gateway.origin(session),
    )
    try:
        await gateway.publish(event)
    except Exception:
        log.exception("publishing MessageSent failed", session_id=session.id)
        session.push(
            message_error_frame(
                command.temp_id, ErrorCode.INTERNAL, "not accepted; send again with the same tempId"
            )
        )


async def on_message_received(gateway: Gateway, session: Session, data: Any) -> None:
    try:
        ack = MessageReceived.model_validate(data)
    except ValidationError as exc:
        session.push(error_frame(ErrorCode.BAD_REQUEST, describe(exc)))
        return
    await gateway.publish(
        DeliveryAcked(user_id=session.user_id, session_id=session.id, message_ids=ack.message_ids)
    )


FRAME_HANDLERS: dict[str, FrameHandler] = {
    "send_message": on_send_message,
    "message_received": on_message_received,
}
