"""A device's `sync`: replay, per chat and in seq order, what it missed, then `sync_done`.

Messages plans the ranges (what the device saw, membership, the compaction limit); the gateway
pages each range from history as fast as the client reads, so a large catch-up neither fills
the session buffer nor times out.
"""

import structlog

from switchboard_contracts.errors import ErrorCode
from switchboard_contracts.models import ChatSync, HistoryPage, MessageOut, SyncPlan, SyncRequest
from switchboard_contracts.wire import Sync, encode_frame, error_frame, new_message_frame

from .context import Gateway
from .internal import call
from .sessions import Session

__all__ = ["run_sync"]

log = structlog.get_logger()

# Messages per history page: the most the messages service answers in one call.
PAGE = 200


async def run_sync(gateway: Gateway, session: Session, request: Sync) -> None:
    try:
        body = SyncRequest(chats=request.chats, since=request.since, limit=request.limit)
        response = await call(
            gateway.messages, "POST", "/internal/sync", session.user_id, json=body.model_dump(mode="json")
        )
        plan = SyncPlan.model_validate_json(response.content)
        for chat in plan.chats:
            await _replay(gateway, session, chat)
    except Exception:
        log.exception("sync failed", session_id=session.id, user_id=session.user_id)
        # Releasing the held live messages now would leave a gap before them: the client
        # reconnects and syncs again instead.
        session.push(error_frame(ErrorCode.INTERNAL, "sync failed; reconnect and sync again"))
        session.drop("sync_failed")
        return
    session.push(encode_frame("sync_done", {"chats": {str(c.chat_id): _outcome(c) for c in plan.chats}}))
    session.end_sync()


async def _replay(gateway: Gateway, session: Session, chat: ChatSync) -> None:
    if chat.from_seq is None or chat.to_seq is None:
        return
    after = chat.from_seq - 1
    while after < chat.to_seq and not session.closed:
        response = await call(
            gateway.messages,
            "GET",
            f"/internal/chats/{chat.chat_id}/messages",
            session.user_id,
            params={"after_seq": after, "limit": min(PAGE, chat.to_seq - after), "receipts": "false"},
        )
        page = HistoryPage.model_validate_json(response.content).messages
        if not page:
            break  # nothing more this user may see in the range
        for message in page:
            if message.seq > chat.to_seq:
                break
            out = MessageOut.model_validate(message.model_dump(include=set(MessageOut.model_fields)))
            session.push_synced(str(out.id), str(out.chat_id), out.seq, new_message_frame(out))
            # Wait for the socket whenever the buffer is past its watermark, inside a page too:
            # 200 messages at the content limit are far more than the buffer holds.
            await session.room()
        after = page[-1].seq


def _outcome(chat: ChatSync) -> dict[str, object]:
    return {"result": chat.result, "from_seq": chat.from_seq, "to_seq": chat.to_seq, "unread": chat.unread}
