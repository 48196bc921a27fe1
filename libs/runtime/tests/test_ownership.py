"""Rendezvous ownership: every instance computes the same owners, and a change of the live set
moves only the partitions it must."""

from switchboard_runtime.ownership import assignment, owner, should_hand_over

PARTITIONS = 16


def test_every_partition_has_exactly_one_owner_whatever_the_order() -> None:
    live = ["c", "a", "b"]
    owned = assignment(PARTITIONS, live)
    assert sorted(p for ps in owned.values() for p in ps) == list(range(PARTITIONS))
    assert owned == assignment(PARTITIONS, list(reversed(live)))
    assert all(owner(p, live) == owner(p, sorted(live)) for p in range(PARTITIONS))


def test_a_lone_instance_owns_everything() -> None:
    assert assignment(PARTITIONS, ["only"]) == {"only": list(range(PARTITIONS))}


def test_a_joining_instance_takes_only_what_it_wins_and_from_everyone() -> None:
    before = {p: owner(p, ["a", "b"]) for p in range(PARTITIONS)}
    after = {p: owner(p, ["a", "b", "c"]) for p in range(PARTITIONS)}
    moved = {p for p in range(PARTITIONS) if before[p] != after[p]}
    assert moved and all(after[p] == "c" for p in moved)


def test_a_leaving_instance_gives_up_only_its_own() -> None:
    live = [f"instance-{i}" for i in range(4)]
    before = {p: owner(p, live) for p in range(PARTITIONS)}
    after = {p: owner(p, live[1:]) for p in range(PARTITIONS)}
    assert {p for p in range(PARTITIONS) if before[p] != after[p]} == {
        p for p in range(PARTITIONS) if before[p] == live[0]
    }


def test_the_load_spreads() -> None:
    # 16 partitions over two instances: neither is left with nothing or almost everything.
    for pair in (["a", "b"], ["host-1-4242-ab12cd", "host-1-4243-ef34ab"], ["x", "y"]):
        counts = [len(ps) for ps in assignment(PARTITIONS, pair).values()]
        assert min(counts) >= 4, counts


def test_handover_only_to_an_owner_heard_after_this_one_became_active() -> None:
    # Not its own, active since t=10, owner heard at t=11: hand over.
    assert should_hand_over("me", "other", active_since=10.0, owner_last_seen=11.0)
    # The owner was last heard before: it may be the instance that just died. Keep it.
    assert not should_hand_over("me", "other", active_since=10.0, owner_last_seen=9.0)
    # Not active there (standby), its own partition, or an owner never heard: nothing to do.
    assert not should_hand_over("me", "other", active_since=None, owner_last_seen=11.0)
    assert not should_hand_over("me", "me", active_since=10.0, owner_last_seen=11.0)
    assert not should_hand_over("me", "other", active_since=10.0, owner_last_seen=None)
