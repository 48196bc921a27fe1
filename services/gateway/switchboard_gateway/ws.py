"""The WebSocket endpoint: authenticate, bind the user's route, then read frames until close."""

import asyncio
import contextlib
import functools
from typing import Any

import orjson
import structlog
from fastapi import WebSocket
from starlette.websockets import WebSocketState

from switchboard_contracts.errors import WS_CLOSE_FRAME_TOO_LARGE, WS_CLOSE_INVALID_TOKEN, ErrorCode
from switchboard_contracts.events import SessionClosed
from switchboard_contracts.wire import ClientFrame, UserAuthenticated, encode_frame, error_frame

from .auth import AuthError
from .context import Gateway
from .handlers import FRAME_HANDLERS
from .metrics import FRAMES
from .sessions import Session

__all__ = ["websocket_endpoint"]

log = structlog.get_logger()


class Closed(Exception):
    """The client went away, or was sent away."""


async def websocket_endpoint(ws: WebSocket) -> None:
    gateway: Gateway = ws.app.state.gateway
    await ws.accept()
    session: Session | None = None
    try:
        user_id, device_id = await _authenticate(gateway, ws)
        session = Session(
            user_id=user_id,
            send=ws.send_text,
            close=lambda code, reason: _close(ws, code, reason),
            buffer_limit=gateway.settings.send_buffer_frames,
            buffer_bytes_limit=gateway.settings.send_buffer_bytes,
            flush_timeout=gateway.settings.flush_timeout_seconds,
            device_id=device_id,
        )
        session.request_page = functools.partial(gateway.request_page, session)
        try:
            await gateway.registry.attach(session)
        except Exception:
            log.exception("binding the user's route failed", user_id=user_id)
            with contextlib.suppress(Exception):
                await ws.send_text(
                    error_frame(ErrorCode.INTERNAL, "could not connect you; reconnect").decode()
                )
            await _close(ws, 1011, ErrorCode.INTERNAL.value)
            session = None
            raise Closed from None
        session.start()
        session.push(encode_frame("authenticated", {"user_id": user_id, "session_id": session.id}))
        await gateway.publish(gateway.session_opened(session))
        while True:
            frame = await _read(gateway, ws)
            if isinstance(frame, bytes):
                session.push(frame)
            else:
                await _dispatch(gateway, session, frame)
    except Closed:
        pass
    finally:
        if session is not None:
            await gateway.rooms.leave_all(session)  # others see its typing end at once
            await gateway.registry.detach(session)
            await session.stop()
            with contextlib.suppress(Exception):
                await gateway.publish(
                    SessionClosed(session_id=session.id, user_id=session.user_id, gateway_id=gateway.id)
                )


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    if ws.client_state == WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            await ws.close(code, reason)


async def _refuse(ws: WebSocket, message: str) -> Closed:
    with contextlib.suppress(Exception):
        await ws.send_text(error_frame(ErrorCode.INVALID_TOKEN, message).decode())
    await _close(ws, WS_CLOSE_INVALID_TOKEN, ErrorCode.INVALID_TOKEN.value)
    return Closed()


def _handshake_token(ws: WebSocket) -> str | None:
    header = ws.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""
    return ws.query_params.get("token")


async def _authenticate(gateway: Gateway, ws: WebSocket) -> tuple[str, str | None]:
    token = _handshake_token(ws)
    if token is not None:
        try:
            return gateway.verifier.user_id(token), ws.query_params.get("device_id")
        except AuthError as exc:
            raise await _refuse(ws, str(exc)) from None
    try:
        async with asyncio.timeout(gateway.settings.auth_timeout_seconds):
            while True:
                frame = await _read(gateway, ws)
                if isinstance(frame, bytes):
                    await ws.send_text(frame.decode())
                    continue
                if frame.event != "user_authenticated":
                    await ws.send_text(
                        error_frame(
                            ErrorCode.NOT_AUTHENTICATED, "send user_authenticated with a JWT first"
                        ).decode()
                    )
                    continue
                try:
                    auth = UserAuthenticated.model_validate(frame.data)
                    return gateway.verifier.user_id(auth.token), auth.device_id
                except (AuthError, ValueError) as exc:
                    reason = str(exc) if isinstance(exc, AuthError) else 'data must be {"token": "<jwt>"}'
                    raise await _refuse(ws, reason) from None
    except TimeoutError:
        raise await _refuse(ws, "no authentication within the time allowed") from None


async def _read(gateway: Gateway, ws: WebSocket) -> ClientFrame | bytes:
    """The next frame, or the `error` frame that answers a malformed one."""
    limit = gateway.settings.max_frame_bytes
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise Closed
    text: str | None = message.get("text")
    raw = text if text is not None else message.get("bytes") or b""
    if len(raw) > limit or (text is not None and len(text) * 4 > limit and len(text.encode()) > limit):
        with contextlib.suppress(Exception):
            await ws.send_text(
                error_frame(ErrorCode.FRAME_TOO_LARGE, f"frames are limited to {limit} bytes").decode()
            )
        await _close(ws, WS_CLOSE_FRAME_TOO_LARGE, ErrorCode.FRAME_TOO_LARGE.value)
        raise Closed
    if text is None:
        return error_frame(ErrorCode.BAD_REQUEST, "frames must be JSON text, not binary")
    try:
        parsed: Any = orjson.loads(text)
        return ClientFrame.model_validate(parsed)
    except orjson.JSONDecodeError:
        reason = "frame is not valid JSON"
    except ValueError:
        reason = 'a frame is an object {"event": "<name>", "data": {...}}'
    return error_frame(ErrorCode.BAD_REQUEST, reason)


async def _dispatch(gateway: Gateway, session: Session, frame: ClientFrame) -> None:
    handler = FRAME_HANDLERS.get(frame.event)
    FRAMES.labels(frame.event if handler else "unknown").inc()
    if handler is None:
        reason = (
            "already authenticated"
            if frame.event == "user_authenticated"
            else f"unknown event {frame.event!r}"
        )
        session.push(error_frame(ErrorCode.BAD_REQUEST, reason))
        return
    try:
        await handler(gateway, session, frame.data)
    except Exception:
        log.exception("frame handler failed", event=frame.event, session_id=session.id)
        session.push(error_frame(ErrorCode.INTERNAL, f"{frame.event} failed; it may be retried"))
