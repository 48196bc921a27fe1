"""Internal HTTP API for the gateway: chats, membership and history.

Not for clients. The gateway authenticates the caller and calls with a token signed for that
user (`switchboard_runtime.internal_auth`); deploy this port where only gateways reach it.
"""

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response

from switchboard_contracts.errors import ErrorCode
from switchboard_contracts.events import ChatCreated, ChatMemberAdded, ChatMemberRemoved, Event
from switchboard_contracts.ids import new_id
from switchboard_contracts.models import (
    MAX_SEQ,
    AddMember,
    ChatOut,
    CreateChat,
    HistoryMessage,
    HistoryPage,
    SyncPlan,
    SyncRequest,
    UserId,
)
from switchboard_runtime.internal_api import Caller, Pool, Units
from switchboard_runtime.uow import UnitOfWork

from .domain import ChatState, DomainError, chat_members_for, check_membership_change, plan_chat_sync
from .settings import Settings
from .store import Store

__all__ = ["router"]

router = APIRouter(prefix="/internal")


def _record_change(uow: UnitOfWork[Store], chat: ChatState, event: Event) -> None:
    """A membership change: the chat's next stream version, its event logged and published."""
    uow.outbox.emit(event, stream=(chat.id, chat.version + 1))


async def _require_member(store: Store, chat_id: UUID, caller: str) -> None:
    if not await store.is_member(chat_id, caller):
        if not await store.chat_exists(chat_id):
            raise DomainError(ErrorCode.CHAT_NOT_FOUND, f"no chat {chat_id}")
        raise DomainError(ErrorCode.NOT_A_MEMBER, f"you are not a member of chat {chat_id}")


async def _lock_as_member(store: Store, chat_id: UUID, caller: str) -> ChatState:
    """Lock the chat for a change by one of its members."""
    chat = await store.lock_chat(chat_id)
    if chat is None:
        raise DomainError(ErrorCode.CHAT_NOT_FOUND, f"no chat {chat_id}")
    await _require_member(store, chat_id, caller)
    return chat


@router.post("/chats", status_code=201)
async def create_chat(body: CreateChat, caller: Caller, units: Units) -> ChatOut:
    chat = ChatOut(
        id=new_id(),
        type=body.type,
        title=body.title,
        members=chat_members_for(caller, body),
        created_at=datetime.now(UTC),
    )
    async with units() as uow:
        await uow.store.insert_chat(chat, caller)
        event = ChatCreated(
            chat_id=chat.id,
            chat_type=chat.type,
            title=chat.title,
            members=chat.members,
            created_by=caller,
            created_at=chat.created_at,
        )
        uow.outbox.emit(event, stream=(chat.id, 1))
    return chat


@router.get("/chats")
async def list_chats(caller: Caller, pool: Pool) -> list[ChatOut]:
    async with pool.acquire() as conn:
        return list(await Store(conn).chats_of(caller))


@router.get("/chats/{chat_id}/membership", status_code=204)
async def membership(chat_id: UUID, caller: Caller, pool: Pool) -> Response:
    """204 when the caller is a member now (the gateway asks before a session joins a room)."""
    async with pool.acquire() as conn:
        await _require_member(Store(conn), chat_id, caller)
    return Response(status_code=204)


@router.get("/chats/{chat_id}/messages")
async def chat_history(
    chat_id: UUID,
    caller: Caller,
    pool: Pool,
    before_seq: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
    # Forward paging, used by the gateway to replay a device's sync in seq order.
    after_seq: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
    # The page size clients may ask for (1 to 200); at the content limit a page is still only
    # tens of MB, and the gateway's sync writes it to the socket message by message.
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> HistoryPage:
    """What the caller may read: the messages of the time they were a member (a removed member
    keeps the history up to the removal). Receipts are delivery's: the gateway adds them."""
    async with pool.acquire() as conn:
        store = Store(conn)
        if not await store.ever_member(chat_id, caller):
            await _require_member(store, chat_id, caller)  # answers chat_not_found or not_a_member
        # One row more than asked says whether an older page exists (for this reader).
        rows = await store.history(
            chat_id, caller, before_seq=before_seq, after_seq=after_seq, limit=limit + 1
        )
    more = len(rows) > limit and after_seq is None
    rows = rows[:limit] if after_seq is not None else rows[-limit:]
    page = [HistoryMessage(**message.model_dump()) for message in rows]
    return HistoryPage(messages=page, next_before_seq=page[0].seq if more else None)


@router.post("/sync")
async def sync_plan(body: SyncRequest, caller: Caller, pool: Pool, request: Request) -> SyncPlan:
    """Per chat, the range of messages a device's `sync` replays (the gateway then pages them)."""
    settings: Settings = request.app.state.settings
    limit = min(body.limit or settings.sync_compaction_limit, settings.sync_compaction_limit)
    async with pool.acquire() as conn:
        rows = await Store(conn).sync_rows(caller, body.chats, body.since)
    return SyncPlan(
        chats=[
            plan_chat_sync(
                row.chat_id,
                joined_seq=row.joined_seq,
                end_seq=row.end_seq,
                seen=row.seen,
                since_seq=row.since_seq,
                unread=row.unread,
                limit=limit,
            )
            for row in rows
        ]
    )


@router.post("/chats/{chat_id}/members", status_code=201)
async def add_member(chat_id: UUID, body: AddMember, caller: Caller, units: Units) -> ChatOut:
    async with units() as uow:
        chat = await _lock_as_member(uow.store, chat_id, caller)
        check_membership_change(chat)
        if await uow.store.insert_member(chat_id, body.user_id, joined_seq=chat.last_seq):
            added = ChatMemberAdded(
                chat_id=chat_id, user_id=body.user_id, by=caller, joined_seq=chat.last_seq
            )
            _record_change(uow, chat, added)
        out: ChatOut | None = await uow.store.chat_out(chat_id)
    if out is None:  # the chat row is locked above, so this cannot happen short of a bug
        raise DomainError(ErrorCode.INTERNAL, "chat vanished while adding a member")
    return out


@router.delete("/chats/{chat_id}/members/{user_id}", status_code=204)
async def remove_member(chat_id: UUID, user_id: UserId, caller: Caller, units: Units) -> Response:
    async with units() as uow:
        chat = await _lock_as_member(uow.store, chat_id, caller)
        check_membership_change(chat)
        if not await uow.store.remove_member(chat_id, user_id, left_seq=chat.last_seq):
            raise DomainError(ErrorCode.NOT_A_MEMBER, f"{user_id} is not a member of chat {chat_id}")
        _record_change(uow, chat, ChatMemberRemoved(chat_id=chat_id, user_id=user_id, by=caller))
    return Response(status_code=204)
