"""The routing handler with its store in memory: what one stored message sends, and to whom."""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID, uuid4

import orjson

from switchboard_contracts.events import MessageStored, NotificationRequested, Origin
from switchboard_contracts.models import MessageOut
from switchboard_contracts.routing import Live, Reply
from switchboard_delivery.handlers import on_messages_stored
from switchboard_delivery.store import Queued, Store, ToQueue
from switchboard_runtime.uow import Outbox, UnitOfWork


class MemoryStore:
    """Queues each message for the members of its chat; `online` is who presence counts online."""

    def __init__(self, members: dict[UUID, list[str]], online: set[str]) -> None:
        self.members = members
        self.online = online
        self.queued: dict[UUID, list[str]] = {}
        self.notified: set[tuple[UUID, str]] = set()

    async def queue_messages(self, messages: Sequence[ToQueue]) -> list[Queued]:
        out = []
        for m in messages:
            recipients = sorted(u for u in self.members[m.chat_id] if u != m.sender_id)
            fresh = m.message_id not in self.queued
            pending = self.queued.setdefault(m.message_id, list(recipients))
            out.append(Queued(fresh, recipients, list(pending), [u for u in recipients if u in self.online]))
        return out

    async def request_notifications(
        self, requests: Sequence[tuple[UUID, UUID, int, str]]
    ) -> list[tuple[UUID, str]]:
        new = [(message, user) for message, _, _, user in requests if (message, user) not in self.notified]
        self.notified.update(new)
        return new


def stored(chat_id: UUID, sender: str = "ann") -> MessageStored:
    message = MessageOut(
        id=uuid4(),
        chat_id=chat_id,
        seq=1,
        sender_id=sender,
        content="hi",
        message_type="text",
        reply_to=None,
        created_at=datetime.now(UTC),
    )
    return MessageStored(message=message, temp_id="t1", origin=Origin(gateway_id="gw-1", session_id="s-1"))


def event(frame: bytes) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(frame)
    return data


async def test_one_frame_for_every_recipient_the_senders_answers_and_a_push_for_the_offline() -> None:
    chat = uuid4()
    store = MemoryStore({chat: ["ann", "bob", "cy"]}, online={"bob"})
    uow = UnitOfWork(cast(Store, store), Outbox("delivery", partitions=4))
    sent = stored(chat)

    await on_messages_stored([sent], uow, preview_chars=0)

    # The sender's answers first, so they lead the first broker message however large the group.
    message_sent, info, to_all, to_sender = uow.outbox.frames
    assert isinstance(to_all, Live) and to_all.users == ("bob", "cy") and to_all.seq == 1
    assert isinstance(to_sender, Live) and to_sender.users == ("ann",) and to_sender.except_session == "s-1"
    assert event(to_all.frame) == {"event": "new_message", "data": sent.message.model_dump(mode="json")}
    assert isinstance(message_sent, Reply) and event(message_sent.frame)["event"] == "message_sent"
    assert isinstance(info, Reply) and event(info.frame)["data"] == {
        "message_id": str(sent.message.id),
        "delivered": 1,
        "queued": 1,
        "total": 2,
    }
    # Cy is offline: one notification, as an event through the outbox.
    assert [key.rsplit(".", 1)[0] for key in uow.outbox.keys] == [NotificationRequested.TYPE]


async def test_a_redelivered_message_goes_again_only_to_who_has_not_acknowledged_it() -> None:
    chat = uuid4()
    store = MemoryStore({chat: ["ann", "bob", "cy"]}, online={"bob", "cy"})
    sent = stored(chat)
    await on_messages_stored(
        [sent], UnitOfWork(cast(Store, store), Outbox("delivery", partitions=4)), preview_chars=0
    )
    store.queued[sent.message.id].remove("bob")  # Bob acknowledged it

    again = UnitOfWork(cast(Store, store), Outbox("delivery", partitions=4))
    await on_messages_stored([sent], again, preview_chars=0)

    info, to_all = again.outbox.frames[1:3]
    assert isinstance(to_all, Live) and to_all.users == ("cy",)
    assert event(info.frame)["data"]["delivered"] == 2
    assert again.outbox.keys == []  # nobody offline, and nothing new to notify
