"""The partition of an event: stable, from the one key its type names, spread over every partition."""

from collections import Counter
from uuid import UUID, uuid4

import pytest

from switchboard_contracts.events import EVENT_TYPES, Envelope, MessageStored
from switchboard_contracts.models import MessageOut
from switchboard_contracts.partitions import (
    DEFAULT_PARTITIONS,
    event_routing_key,
    partition_key,
    partition_of,
)
from switchboard_contracts.topology import PARTITIONED, SUBSCRIPTIONS, Topology

CHAT = UUID("3b1f0c7e-2f53-4a7e-9a59-0f9b8a1a2c44")


def test_the_partition_of_a_key_never_changes() -> None:
    # Pinned: every process of every release must route a chat to the same queue, so a change
    # of the hash is a change of the partitioning (docs/scaling.md), not a refactoring.
    assert [partition_of(k, 16) for k in ("alice", "bob", str(CHAT))] == [9, 2, 13]


def test_keys_spread_over_every_partition() -> None:
    counts = Counter(partition_of(str(uuid4()), DEFAULT_PARTITIONS) for _ in range(16_000))
    assert set(counts) == set(range(DEFAULT_PARTITIONS))
    # 1,000 expected each; a fair hash stays well within +-20 %.
    assert all(800 < n < 1200 for n in counts.values()), counts


def test_a_partition_is_within_the_count() -> None:
    for partitions in (1, 2, 7, 16, 1024):
        assert all(0 <= partition_of(f"k{i}", partitions) < partitions for i in range(200))
    with pytest.raises(ValueError, match="at least 1"):
        partition_of("k", 0)


def test_every_event_type_names_a_partition_key_its_payload_has() -> None:
    chat_keyed = {
        "chat.message.sent.v1",
        "chat.message.stored.v1",
        "chat.created.v1",
        "chat.member.added.v1",
        "chat.member.removed.v1",
        "chat.read.marked.v1",
        "chat.messages.delivered.v1",
        "chat.messages.read.v1",
    }
    user_keyed = {
        "chat.delivery.acked.v1",
        "gateway.session.opened.v1",
        "gateway.session.closed.v1",
        "gateway.flush.requested.v1",
        "presence.session.registered.v1",
        "presence.user.online.v1",
        "presence.user.offline.v1",
    }
    for event_type, model in EVENT_TYPES.items():
        field = model.PARTITION_BY.split(".")[0]
        assert field in model.model_fields, event_type
        if event_type in chat_keyed:
            assert model.PARTITION_BY.endswith("chat_id"), event_type
        if event_type in user_keyed:
            assert model.PARTITION_BY == "user_id", event_type


def test_a_stored_message_goes_to_the_partition_of_its_chat() -> None:
    message = MessageOut.model_validate(
        {
            "id": str(uuid4()),
            "chat_id": str(CHAT),
            "seq": 1,
            "sender_id": "alice",
            "content": "hi",
            "message_type": "text",
            "reply_to": None,
            "created_at": "2026-01-01T00:00:00Z",
        }
    )
    stored = Envelope.wrap(
        MessageStored(message=message, temp_id="t", origin={"gateway_id": "g", "session_id": "s"}), "m"
    )
    assert partition_key(stored.type, stored.data) == str(CHAT)
    assert (
        event_routing_key(stored.type, stored.data, 16)
        == f"chat.message.stored.v1.{partition_of(str(CHAT), 16)}"
    )


def test_partitioned_queues_are_bound_to_their_partition_and_the_others_to_all() -> None:
    topology = Topology("ns", 4)
    assert topology.queues("delivery") == [f"ns.delivery.{p}" for p in range(4)]
    assert topology.queues("presence") == ["ns.presence"]
    assert topology.binding_keys("delivery", 2, ("a.v1",)) == ["a.v1.2"]
    assert topology.binding_keys("presence", 0, ("a.v1",)) == ["a.v1.*"]
    assert PARTITIONED <= set(SUBSCRIPTIONS)
