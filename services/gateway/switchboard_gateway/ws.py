"""The WebSocket endpoint: check the limits, authenticate, bind the user's route, then read
frames until close."""

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from fastapi import WebSocket
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.websockets import WebSocketState

from switchboard_contracts.errors import (
    HTTP_STATUS,
    WS_CLOSE_FRAME_TOO_LARGE,
    WS_CLOSE_INVALID_TOKEN,
    WS_CLOSE_POLICY,
    WS_CLOSE_TOO_MANY,
    ErrorCode,
)
from switchboard_contracts.events import SessionClosed
from switchboard_contracts.wire import (
    ClientFrame,
    UserAuthenticated,
    error_frame,
    message_error_frame,
)

from .auth import AuthError, Verified
from .context import Gateway
from .expiry import TokenExpiry, authenticated_frame
from .handlers import FRAME_HANDLERS, temp_id_of
from .limits import Limits, ReadPace
from .metrics import FRAMES
from .sessions import Session
from .ws_protocol import SEND_FRAMES, SEND_FRAMES_NOW

__all__ = ["websocket_endpoint"]

log = structlog.get_logger()


class Closed(Exception):
    """The client went away, or was sent away."""


async def websocket_endpoint(ws: WebSocket) -> None:
    gateway: Gateway = ws.app.state.gateway
    limits: Limits = ws.app.state.limits
    if not limits.origin_allowed(ws.headers.get("origin")):
        message = "this origin may not open a WebSocket to this server (CHAT_ALLOWED_ORIGINS)"
        await _deny(ws, ErrorCode.ORIGIN_NOT_ALLOWED, message)
        return
    # The peer, or the client a trusted proxy names (uvicorn's proxy headers; docs/protocol.md
    # 2.4). A Unix socket has no address: only network peers are counted.
    address = ws.client.host if ws.client else None
    # Behind trusted proxies the client's own address is known only now. Direct peers were
    # counted when their TCP connection was accepted (limits.HeaderDeadlineProtocol), and a
    # trusted proxy always sends X-Forwarded-For, so only a handshake with it is counted here;
    # a direct client sending the header itself is counted twice, which only slows itself.
    if (
        address is not None
        and limits.count_connects_per_socket
        and "x-forwarded-for" in ws.headers
        and not limits.address_connects.take(address)
    ):
        message = "this address opens connections too fast; reconnect with back-off"
        await _deny(ws, ErrorCode.RATE_LIMITED, message)
        return
    if address is not None and not limits.addresses.take(address):
        with contextlib.suppress(Exception):
            await ws.accept()
        await _refuse(
            ws,
            ErrorCode.TOO_MANY_CONNECTIONS,
            WS_CLOSE_TOO_MANY,
            f"this address already has {limits.addresses.limit} connections open to this gateway",
        )
        return
    try:
        await _serve(gateway, limits, ws)
    finally:
        if address is not None:
            limits.addresses.give_back(address)


async def _deny(ws: WebSocket, code: ErrorCode, message: str) -> None:
    """An HTTP answer (403, 429) before the WebSocket opens: no socket, no session, no work."""
    response = JSONResponse({"code": code.value, "message": message}, status_code=HTTP_STATUS[code])
    try:
        await ws.send_denial_response(response)
    except RuntimeError:
        await ws.close()  # a server without the denial-response extension answers a bare 403


async def _serve(gateway: Gateway, limits: Limits, ws: WebSocket) -> None:
    await ws.accept()
    session: Session | None = None
    expiry: TokenExpiry | None = None
    counted: str | None = None  # the user whose session count this connection holds
    pace = limits.read_pace(ws.client.host if ws.client else None)
    try:
        verified, device_id = await _authenticate(gateway, ws, pace)
        user_id = verified.user_id
        if not limits.users.open(user_id):
            raise await _refuse(
                ws,
                ErrorCode.TOO_MANY_SESSIONS,
                WS_CLOSE_TOO_MANY,
                f"you already have {limits.users.sessions.limit} sessions on this gateway; close one",
            )
        counted = user_id
        session = Session(
            user_id=user_id,
            send=frame_sender(ws),
            # Absent under another ASGI server: every write then goes through `send`.
            send_now=ws.scope.get("extensions", {}).get(SEND_FRAMES_NOW),
            close=lambda code, reason: _close(ws, code, reason),
            buffer_limit=gateway.settings.send_buffer_frames,
            buffer_bytes_limit=gateway.settings.send_buffer_bytes,
            flush_timeout=gateway.settings.flush_timeout_seconds,
            device_id=device_id,
            address=ws.client.host if ws.client else None,
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
        expiry = TokenExpiry(session, gateway.verifier, verified)
        session.push(authenticated_frame(session, verified))
        await gateway.publish(gateway.session_opened(session))
        while True:
            frame = await _read(gateway, ws, pace)
            if isinstance(frame, bytes):
                session.push(frame)
            elif frame.event == "user_authenticated":
                FRAMES.labels(frame.event).inc()
                expiry.refresh(frame.data)
            else:
                await _dispatch(gateway, limits, session, frame)
    except Closed:
        pass
    finally:
        if expiry is not None:
            expiry.cancel()
        # Counted out first, so nothing the cleanup below may raise can leak the user's place.
        if counted is not None:
            limits.users.close(counted)
        if session is not None:
            await gateway.rooms.leave_all(session)  # others see its typing end at once
            await gateway.registry.detach(session)
            await session.stop()
            with contextlib.suppress(Exception):
                await gateway.publish(
                    SessionClosed(
                        session_id=session.id,
                        user_id=session.user_id,
                        gateway_id=gateway.id,
                        closed_at=datetime.now(UTC),
                    )
                )


def frame_sender(ws: WebSocket) -> Callable[[list[bytes]], Awaitable[None]]:
    """How a session writes its frames to this socket: all waiting frames in one write, through
    the protocol's own `send_frames` (ws_protocol.py) where the server offers it, else one
    ASGI send each (another ASGI server)."""
    send_frames: Callable[[list[bytes]], Awaitable[None]] | None = ws.scope.get("extensions", {}).get(
        SEND_FRAMES
    )
    if send_frames is not None:
        return send_frames

    async def one_by_one(frames: list[bytes]) -> None:
        for frame in frames:
            await ws.send_text(frame.decode())

    return one_by_one


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    if ws.client_state == WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            await ws.close(code, reason)


async def _refuse(ws: WebSocket, code: ErrorCode, close_code: int, message: str) -> Closed:
    """Send the `error` frame, then close with the code as the reason."""
    with contextlib.suppress(Exception):
        await ws.send_text(error_frame(code, message).decode())
    await _close(ws, close_code, code.value)
    return Closed()


async def _refuse_token(ws: WebSocket, message: str) -> Closed:
    return await _refuse(ws, ErrorCode.INVALID_TOKEN, WS_CLOSE_INVALID_TOKEN, message)


def _handshake_token(ws: WebSocket) -> str | None:
    header = ws.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""
    return ws.query_params.get("token")


async def _credentials(ws: WebSocket, data: Any) -> UserAuthenticated:
    """The token and device id, or a refusal: 4401 for a missing or malformed token, 1008 with
    `bad_request` for a bad `device_id` (1 to 128 characters, no NUL)."""
    try:
        return UserAuthenticated.model_validate(data)
    except ValidationError as exc:
        if any(error["loc"][:1] == ("device_id",) for error in exc.errors()):
            message = "device_id must be 1 to 128 characters without NUL"
            raise await _refuse(ws, ErrorCode.BAD_REQUEST, WS_CLOSE_POLICY, message) from None
        raise await _refuse_token(ws, 'data must be {"token": "<jwt>"}') from None


async def _authenticate(gateway: Gateway, ws: WebSocket, pace: ReadPace) -> tuple[Verified, str | None]:
    token = _handshake_token(ws)
    if token is not None:
        auth = await _credentials(ws, {"token": token or "-", "device_id": ws.query_params.get("device_id")})
        try:
            return gateway.verifier.verify(token), auth.device_id
        except AuthError as exc:
            raise await _refuse_token(ws, str(exc)) from None
    try:
        async with asyncio.timeout(gateway.settings.auth_timeout_seconds):
            while True:
                frame = await _read(gateway, ws, pace)
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
                auth = await _credentials(ws, frame.data)
                try:
                    return gateway.verifier.verify(auth.token), auth.device_id
                except AuthError as exc:
                    raise await _refuse_token(ws, str(exc)) from None
    except TimeoutError:
        raise await _refuse_token(ws, "no authentication within the time allowed") from None


async def _read(gateway: Gateway, ws: WebSocket, pace: ReadPace) -> ClientFrame | bytes:
    """The next frame, or the `error` frame that answers a malformed one."""
    limit = gateway.settings.max_frame_bytes
    await pace.take()
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
        limits: Limits = ws.app.state.limits
        limits.violation(ws.client.host if ws.client else None, ErrorCode.FRAME_TOO_LARGE)
        raise Closed
    if text is None:
        return error_frame(ErrorCode.BAD_REQUEST, "frames must be JSON text, not binary")
    try:
        parsed: Any = orjson.loads(text)
        frame = ClientFrame.model_validate(parsed)
    except orjson.JSONDecodeError:
        reason = "frame is not valid JSON"
    except ValueError:
        reason = 'a frame is an object {"event": "<name>", "data": {...}}'
    else:
        if extra := _extra_cost(frame):
            await pace.take(extra)  # an acknowledgement of many ids is that much more work
        return frame
    return error_frame(ErrorCode.BAD_REQUEST, reason)


# One more unit of the read pace per this many message ids in a `message_received`: 1,000 ids
# weigh 10 frames, so acknowledging is never the cheap way to make the services work.
IDS_PER_UNIT = 100


def _extra_cost(frame: ClientFrame) -> int:
    ids = frame.data.get("message_ids") if isinstance(frame.data, dict) else None
    if frame.event != "message_received" or not isinstance(ids, list):
        return 0
    return len(ids) // IDS_PER_UNIT


async def _dispatch(gateway: Gateway, limits: Limits, session: Session, frame: ClientFrame) -> None:
    handler = FRAME_HANDLERS.get(frame.event)
    FRAMES.labels(frame.event if handler else "unknown").inc()
    # Every send counts, a malformed one too: the bucket bounds the work a user makes, not only
    # what is stored. Refused before anything is published, so nothing of it is stored.
    if frame.event == "send_message" and not (
        await limits.users.take_send(session.user_id)
        and (session.address is None or limits.address_sends.take(session.address))
    ):
        reason = "send_message: too many messages; send it again later with the same tempId"
        session.push(message_error_frame(temp_id_of(frame.data), ErrorCode.RATE_LIMITED, reason))
        return
    # A sync is the costliest request; the handler limits each connection, this the address.
    if (
        frame.event == "sync"
        and session.address is not None
        and not limits.address_syncs.take(session.address)
    ):
        session.push(error_frame(ErrorCode.RATE_LIMITED, "sync: too many from your address; retry later"))
        return
    if handler is None:
        session.push(error_frame(ErrorCode.BAD_REQUEST, f"unknown event {frame.event!r}"))
        return
    try:
        await handler(gateway, session, frame.data)
    except Exception:
        log.exception("frame handler failed", frame_event=frame.event, session_id=session.id)
        session.push(error_frame(ErrorCode.INTERNAL, f"{frame.event} failed; it may be retried"))
