"""What a relay pass publishes, and what a unit of work's outbox keeps after a rewind."""

from typing import Any

from switchboard_contracts.events import GatewayHeartbeat
from switchboard_contracts.routing import Signal
from switchboard_runtime.batcher import MAX_BATCH_EVENTS
from switchboard_runtime.outbox import _batches
from switchboard_runtime.uow import Outbox


def row(*events: tuple[str, bytes]) -> dict[str, Any]:
    return {"keys": [key for key, _ in events], "bodies": [body for _, body in events]}


def test_a_pass_publishes_each_key_once_with_its_events_in_row_order() -> None:
    rows = [row(("a", b"1"), ("b", b"2")), row(("a", b"3"))]
    assert _batches(rows) == {"a": [[b"1", b"3"]], "b": [[b"2"]]}  # type: ignore[arg-type]


def test_a_key_with_more_events_than_a_batch_holds_gets_several() -> None:
    rows = [row(*[("a", b"e")] * (MAX_BATCH_EVENTS + 2))]
    assert [len(batch) for batch in _batches(rows)["a"]] == [MAX_BATCH_EVENTS, 2]  # type: ignore[arg-type]


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
