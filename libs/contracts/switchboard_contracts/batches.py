"""Events travel in batches: one AMQP message carries every event a producer gathered for one
routing key while its previous publish was in flight.

The body is the CloudEvents JSON batch format (`application/cloudevents-batch+json`): a JSON array
of complete events, each with its own `id`, `type`, `source`, `time` and `data`. A consumer handles
each event as if it had come alone; the batch is only how they travel. The broker's cost is per
message, not per byte, so a batch of ten costs about what one event did.

An AMQP message with any other content type holds one envelope (a dead letter replayed by hand, a
producer of an earlier version): `decode_events` reads both.
"""

from collections.abc import Sequence
from typing import Any

from pydantic_core import from_json

__all__ = ["BATCH_CONTENT_TYPE", "EVENT_CONTENT_TYPE", "decode_events", "encode_batch"]

BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
EVENT_CONTENT_TYPE = "application/json"


def encode_batch(events: Sequence[bytes]) -> bytes:
    """The batch of these already-encoded events, in order."""
    return b"[" + b",".join(events) + b"]"


def decode_events(body: bytes, content_type: str | None) -> list[Any]:
    """The events of one AMQP message as JSON values, in order. ValueError if the body is not
    JSON, or a batch is not an array."""
    value = from_json(body)
    if content_type == BATCH_CONTENT_TYPE:
        if not isinstance(value, list):
            raise ValueError("a cloudevents batch must be a JSON array")
        return value
    return [value]
