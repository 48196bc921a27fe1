"""Which live instance of a service owns which partition: rendezvous hashing, pure.

Every instance computes the same answer from the same set of live instances, with no
coordinator: the owner of a partition is the instance whose hash of (instance, partition) is
highest. When an instance joins, it takes from each other instance only the partitions it now
wins; when one leaves, only its partitions move, each to the instance that came second for it.
"""

import hashlib
from collections.abc import Collection, Iterable

__all__ = ["assignment", "owner", "should_hand_over"]


def _score(instance: str, partition: int) -> int:
    digest = hashlib.blake2b(f"{instance}\x00{partition}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(partition: int, instances: Iterable[str]) -> str:
    """The instance that owns `partition` among `instances` (at least one)."""
    return max(instances, key=lambda instance: (_score(instance, partition), instance))


def assignment(partitions: int, instances: Collection[str]) -> dict[str, list[int]]:
    """Every instance's partitions (an instance that wins none is listed with none)."""
    owned: dict[str, list[int]] = {instance: [] for instance in instances}
    for partition in range(partitions):
        owned[owner(partition, instances)].append(partition)
    return owned


def should_hand_over(
    me: str, partition_owner: str, active_since: float | None, owner_last_seen: float | None
) -> bool:
    """Whether an instance should give up a partition it is consuming.

    Only to an owner that showed it was alive after this instance became active there. Right
    after an owner is killed, the broker makes some other instance active on its partitions
    while the dead owner still counts as live for a few seconds (until its heartbeats are
    missed): handing over then would pass the partition round the survivors, each returning
    its prefetched deliveries to the queue (which counts towards the delivery limit), until the
    dead one expires. A live owner heartbeats within one interval, so a real handover waits at
    most that long.
    """
    if partition_owner == me or active_since is None or owner_last_seen is None:
        return False
    return owner_last_seen > active_since
