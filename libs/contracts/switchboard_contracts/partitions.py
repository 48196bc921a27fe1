"""Which partition an event belongs to: the publisher decides, the routing key carries it.

Every event on `<ns>.events` is published with routing key `<type>.<partition>`, where the
partition is a stable hash of the event's partition key (`Event.PARTITION_BY`: the chat for chat
events, the user for user events) modulo the partition count. A partitioned service has one
queue per partition, bound with `<type>.<partition>`; a service that is not partitioned binds
`<type>.*` and gets every partition in one queue. No broker plugin is involved: the topic
exchange routes on the key the publisher computed.

All publishers and consumers of a deployment must agree on the partition count
(`CHAT_PARTITIONS`); docs/scaling.md says what changing it takes.
"""

import hashlib
from collections.abc import Mapping
from typing import Any

from .events import EVENT_TYPES

__all__ = ["DEFAULT_PARTITIONS", "event_routing_key", "partition_key", "partition_of"]

# Sixteen partitions: enough that up to eight instances of a service each get two and the load
# spreads evenly enough (rendezvous hashing over 16 keys), few enough that every instance can
# hold a standby subscription on every partition queue (2 services x 16 quorum queues, one
# channel each per instance) without the broker noticing. A power of two is not required.
DEFAULT_PARTITIONS = 16


def partition_of(key: str, partitions: int) -> int:
    """A stable partition in [0, partitions) for a key: the same in every process and release.

    BLAKE2b rather than Python's `hash()`, which is salted per process.
    """
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


def partition_key(event_type: str, data: Mapping[str, Any]) -> str:
    """The value of the event's `PARTITION_BY` field in its payload (as JSON data or a dump).

    Raises KeyError for an event type the contracts do not know or a payload without the field.
    """
    value: Any = data
    for part in EVENT_TYPES[event_type].PARTITION_BY.split("."):
        value = value[part]
    return str(value)


def event_routing_key(event_type: str, data: Mapping[str, Any], partitions: int) -> str:
    """`<type>.<partition>`: what an event is published with on `<ns>.events`."""
    return f"{event_type}.{partition_of(partition_key(event_type, data), partitions)}"
