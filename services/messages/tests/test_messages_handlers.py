"""The send handler with its store in memory: what a batch of sends writes and emits."""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID, uuid4

import orjson

from switchboard_contracts.events import MessageSent, MessageStored, Origin
from switchboard_contracts.models import MessageOut
from switchboard_contracts.routing import Reply
from switchboard_messages.domain import BatchFacts, ChatState
from switchboard_messages.handlers import on_messages_sent
from switchboard_messages.store import Store
from switchboard_runtime.uow import Outbox, UnitOfWork

ORIGIN = Origin(gateway_id="gw-1", session_id="s-1")


class MemoryStore:
    """The part of `Store` the send handler uses, over dicts."""

    def __init__(self) -> None:
        self.chats: dict[UUID, ChatState] = {}
        self.members: set[tuple[UUID, str]] = set()
        self.messages: dict[tuple[str, str], MessageOut] = {}

    async def lock_for_sends(self, sends: Sequence[MessageSent]) -> BatchFacts:
        return BatchFacts(
            chats={s.chat_id: self.chats[s.chat_id] for s in sends if s.chat_id in self.chats},
            memberships={(s.chat_id, s.sender_id) for s in sends if (s.chat_id, s.sender_id) in self.members},
            stored={
                key: self.messages[key]
                for s in sends
                if (key := (s.sender_id, str(s.temp_id))) in self.messages
            },
            replies=set(),
        )


def send(chat_id: UUID, sender: str, temp_id: str) -> MessageSent:
    return MessageSent(
        chat_id=chat_id,
        sender_id=sender,
        temp_id=temp_id,
        content="hi",
        message_type="text",
        reply_to=None,
        origin=ORIGIN,
    )


def frame(reply: Any) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(reply.frame)
    return data


async def test_a_batch_stores_members_sends_refuses_strangers_and_answers_a_retry_itself() -> None:
    store = MemoryStore()
    chat = uuid4()
    store.chats[chat] = ChatState(chat, "group", version=3, last_seq=41)
    store.members |= {(chat, "ann"), (chat, "bob")}
    earlier = MessageOut(
        id=uuid4(),
        chat_id=chat,
        seq=41,
        sender_id="bob",
        content="before",
        message_type="text",
        reply_to=None,
        created_at=datetime.now(UTC),
    )
    store.messages[("bob", "t-old")] = earlier
    uow = UnitOfWork(cast(Store, store), Outbox("messages", partitions=4))

    await on_messages_sent(
        [
            send(chat, "ann", "t1"),
            send(chat, "eve", "t2"),
            send(chat, "bob", "t-old"),
            send(chat, "ann", "t3"),
        ],
        uow,
    )

    # Two stored, with the chat's next seqs, each an event of the chat's stream in the log.
    assert [e.data["message"]["seq"] for e in uow.outbox.envelopes] == [42, 43]
    assert uow.outbox.streams == [(chat, 4), (chat, 5)]
    assert [key.rsplit(".", 1)[0] for key in uow.outbox.keys] == [MessageStored.TYPE] * 2
    # Their `message_sent` goes out with their delivery; here only the refusal and the retry.
    replies = [frame(r) for r in uow.outbox.frames]
    assert all(isinstance(r, Reply) and r.session_id == "s-1" for r in uow.outbox.frames)
    assert [(r["event"], r["data"]["tempId"]) for r in replies] == [
        ("message_error", "t2"),
        ("message_sent", "t-old"),
    ]
    assert replies[0]["data"]["code"] == "not_a_member"
    assert replies[1]["data"]["message"]["id"] == str(earlier.id)
