"""The client HTTP API (Bearer JWT): chats, membership and history, and presence.

The gateway authenticates and forwards to the service that owns the data (messages for chats,
presence for who is online); it never touches another service's tables itself.
"""

from typing import Annotated, Any
from urllib.parse import quote
from uuid import UUID

import httpx
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from switchboard_contracts.errors import ErrorCode
from switchboard_contracts.models import (
    MAX_SEQ,
    AddMember,
    ChatOut,
    CreateChat,
    ErrorBody,
    HistoryPage,
    MessageReceipts,
    PresenceOut,
    ReceiptsRequest,
    UserId,
)
from switchboard_runtime.http_errors import ApiError

from .auth import AuthError
from .context import Gateway
from .internal import call

__all__ = ["router"]


bearer = HTTPBearer(auto_error=False)


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def caller(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> str:
    if credentials is None:
        raise ApiError(ErrorCode.NOT_AUTHENTICATED, "send Authorization: Bearer <jwt>")
    try:
        return _gateway(request).verifier.user_id(credentials.credentials)
    except AuthError as exc:
        raise ApiError(ErrorCode.INVALID_TOKEN, str(exc)) from None


Caller = Annotated[str, Depends(caller)]
ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorBody} for status in (401, 403, 404, 422)}
router = APIRouter(tags=["chats"], responses=ERRORS)


def _messages(request: Request) -> httpx.AsyncClient:
    client: httpx.AsyncClient = request.app.state.messages_client
    return client


def _delivery(request: Request) -> httpx.AsyncClient:
    client: httpx.AsyncClient = request.app.state.delivery_client
    return client


def _presence(request: Request) -> httpx.AsyncClient:
    client: httpx.AsyncClient = request.app.state.presence_client
    return client


@router.post(
    "/chats", status_code=201, summary="Create a direct or group chat (the caller is always a member)"
)
async def create_chat(body: CreateChat, user: Caller, request: Request) -> ChatOut:
    response = await call(
        _messages(request), "POST", "/internal/chats", user, json=body.model_dump(mode="json")
    )
    return ChatOut.model_validate(response.json())


@router.get("/chats", summary="The caller's chats")
async def list_chats(user: Caller, request: Request) -> list[ChatOut]:
    response = await call(_messages(request), "GET", "/internal/chats", user)
    return [ChatOut.model_validate(chat) for chat in response.json()]


@router.get("/chats/{chat_id}/messages", summary="History, oldest first; members only")
async def history(
    chat_id: UUID,
    user: Caller,
    request: Request,
    before_seq: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> HistoryPage:
    params: dict[str, int] = {"limit": limit}
    if before_seq is not None:
        params["before_seq"] = before_seq
    response = await call(
        _messages(request), "GET", f"/internal/chats/{chat_id}/messages", user, params=params
    )
    page = HistoryPage.model_validate_json(response.content)
    # The caller's own messages carry where each recipient stands: delivery knows that.
    own = [message.id for message in page.messages if message.sender_id == user]
    if own:
        asked = ReceiptsRequest(message_ids=own).model_dump(mode="json")
        answer = await call(_delivery(request), "POST", "/internal/receipts", user, json=asked)
        receipts = {r.message_id: r for r in map(MessageReceipts.model_validate, answer.json())}
        page.messages = [
            message.model_copy(
                update={
                    "delivered_count": found.delivered_count,
                    "read_count": found.read_count,
                    "total": found.total,
                    "receipts": found.receipts,
                }
            )
            if (found := receipts.get(message.id)) is not None
            else message
            for message in page.messages
        ]
    return page


@router.post("/chats/{chat_id}/members", status_code=201, summary="Add a member (group chats)")
async def add_member(chat_id: UUID, body: AddMember, user: Caller, request: Request) -> ChatOut:
    response = await call(
        _messages(request), "POST", f"/internal/chats/{chat_id}/members", user, json=body.model_dump()
    )
    return ChatOut.model_validate(response.json())


@router.delete("/chats/{chat_id}/members/{user_id}", status_code=204, summary="Remove a member (group chats)")
async def remove_member(chat_id: UUID, user_id: UserId, user: Caller, request: Request) -> Response:
    await call(
        _messages(request), "DELETE", f"/internal/chats/{chat_id}/members/{quote(user_id, safe='')}", user
    )
    return Response(status_code=204)


@router.get(
    "/users/{user_id}/presence",
    tags=["presence"],
    summary="Whether a user is online; only for the user and those sharing a chat with them",
)
async def presence(user_id: UserId, user: Caller, request: Request) -> PresenceOut:
    response = await call(
        _presence(request), "GET", f"/internal/users/{quote(user_id, safe='')}/presence", user
    )
    return PresenceOut.model_validate(response.json())
