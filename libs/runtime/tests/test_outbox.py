"""What a relay pass publishes, in each partition's order, and what an outbox keeps after a rewind."""

from switchboard_contracts.events import GatewayHeartbeat
from switchboard_contracts.routing import Signal
from switchboard_runtime.batcher import MAX_BATCH_EVENTS, in_partition_order
from switchboard_runtime.uow import Outbox


def test_a_partitions_events_of_one_key_travel_together_in_log_order() -> None:
    events = [("stored.0", b"1"), ("stored.1", b"2"), ("stored.0", b"3"), ("stored.1", b"4")]
    assert in_partition_order(events) == [("stored.0", [b"1", b"3"]), ("stored.1", [b"2", b"4"])]


def test_an_event_of_another_type_in_a_partition_starts_a_new_batch_so_nothing_overtakes_it() -> None:
    # A member added between two messages of its chat: the second message must reach the
    # partition's queue after the membership, the first before it.
    events = [("stored.3", b"m1"), ("added.3", b"u"), ("stored.3", b"m2"), ("stored.5", b"x")]
    assert in_partition_order(events) == [
        ("stored.3", [b"m1"]),
        ("added.3", [b"u"]),
        ("stored.3", [b"m2"]),
        ("stored.5", [b"x"]),
    ]


def test_a_key_with_more_events_than_a_batch_holds_gets_several() -> None:
    batches = in_partition_order([("a.0", b"e")] * (MAX_BATCH_EVENTS + 2))
    assert [len(bodies) for _, bodies in batches] == [MAX_BATCH_EVENTS, 2]


def test_events_of_a_type_no_consumer_knows_are_left_out() -> None:
    assert in_partition_order([("", b"old"), ("a.0", b"1")]) == [("a.0", [b"1"])]


def test_a_rewind_drops_what_an_event_that_failed_emitted() -> None:
    outbox = Outbox("test", partitions=4)
    outbox.emit(GatewayHeartbeat(gateway_id="g1", sessions=1))
    outbox.route(Signal(b"kept", ("ann",)))
    mark = outbox.mark()
    outbox.emit(GatewayHeartbeat(gateway_id="g2", sessions=1))
    outbox.route(Signal(b"dropped", ("bob",)))
    outbox.publish("gw.x", b"page", {})
    outbox.rewind(mark)
    assert len(outbox.keys) == len(outbox.bodies) == 1
    assert outbox.frames == [Signal(b"kept", ("ann",))] and outbox.messages == []
    assert outbox.keys[0].startswith("gateway.heartbeat.v1.")
