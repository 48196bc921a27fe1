"""The bookkeeping behind the abuse limits; the limits themselves are hit for real in
tests/integration/test_limits.py."""

from switchboard_gateway.limits import Counts, Keyed, Limits, Pace, UserLimits
from switchboard_gateway.settings import Settings


def test_counts_refuse_past_the_limit_and_free_a_place_when_given_back() -> None:
    counts = Counts(2)
    assert counts.take("a") and counts.take("a") and not counts.take("a")
    assert counts.take("b")  # another key has its own count
    counts.give_back("a")
    assert counts.take("a")
    for _ in range(3):
        counts.give_back("b")  # giving back more than was taken never goes negative
    assert counts.held("b") == 0 and counts.take("b")


async def test_a_users_sessions_share_one_bucket_and_reconnecting_does_not_refill_it() -> None:
    users = UserLimits(max_sessions=2, burst=3, per_second=0.001)
    assert users.open("ann") and users.open("ann") and not users.open("ann")
    assert [await users.take_send("ann") for _ in range(4)] == [True, True, True, False]
    assert await users.take_send("bob")  # bob's bucket is his own
    users.close("ann")
    users.close("ann")
    assert users.open("ann")
    assert not await users.take_send("ann")  # still empty: leaving did not buy a new burst


async def test_a_bucket_is_forgotten_once_it_would_have_refilled() -> None:
    users = UserLimits(max_sessions=1, burst=1, per_second=1.0)
    assert users.open("ann") and await users.take_send("ann")
    users.close("ann")
    users.refill_seconds = 0.0  # as if a whole refill period had passed since ann left
    users.open("bob")
    assert "ann" not in users._buckets


def test_origins_are_checked_only_when_listed_and_only_for_browsers() -> None:
    anyone = Limits(Settings(jwt_secret="x" * 32))
    assert anyone.origin_allowed("https://evil.example") and anyone.origin_allowed(None)
    listed = Limits(Settings(jwt_secret="x" * 32, allowed_origins="https://App.example/"))
    assert listed.origin_allowed("https://app.example")
    assert listed.origin_allowed(None)
    assert not listed.origin_allowed("https://evil.example")
    assert not listed.origin_allowed("null")


async def test_connects_are_counted_per_address_and_trusted_proxies_are_not() -> None:
    limits = Limits(
        Settings(address_connect_burst=2, address_connects_per_second=0.001, trusted_proxies="10.0.0.0/8")
    )
    assert limits.connect_allowed("192.0.2.1") and limits.connect_allowed("192.0.2.1")
    assert not limits.connect_allowed("192.0.2.1")  # the burst is spent, nothing refills soon
    assert limits.connect_allowed("192.0.2.2")  # another address has its own bucket
    # A proxy carries many clients: they are counted at their handshakes instead.
    assert all(limits.connect_allowed("10.1.2.3") for _ in range(5))
    assert limits.count_connects_per_socket


def test_a_pace_lets_its_burst_through_then_spaces_what_follows() -> None:
    pace = Pace(burst=3, per_second=10)
    assert [pace.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    # Each further unit waits one interval (0.1 s) more than the one before; callers asking at
    # the same moment are served in the order they asked.
    waits = [pace.reserve() for _ in range(3)]
    assert all(abs(wait - expected) < 0.05 for wait, expected in zip(waits, [0.1, 0.2, 0.3], strict=True))
    assert abs(pace.reserve(amount=50) - 5.3) < 0.05  # a heavy frame waits for its whole weight


def test_a_pace_takes_now_only_what_is_free_and_a_charge_runs_into_debt() -> None:
    pace = Pace(burst=2, per_second=1)
    assert pace.take_now() and pace.take_now()
    assert not pace.take_now()  # the burst is spent: refused, and nothing taken
    assert 0.9 < pace.reserve() <= 1.0  # so the next unit is still only one interval away
    pace.charge(100, most_seconds=5)  # far more than the pace could owe: capped
    assert 5.9 < pace.reserve() <= 6.0  # the cap of 5 s past the burst, then this unit


def test_a_violation_costs_its_address_new_connections_and_only_that_address() -> None:
    limits = Limits(Settings(address_connect_burst=20, address_connects_per_second=10))
    assert limits.connect_allowed("192.0.2.1")
    limits.violation("192.0.2.1", "too_many_fragments")
    limits.violation("192.0.2.1", "too_many_fragments")  # 1 + 2 x 10 of the burst of 20
    assert not limits.connect_allowed("192.0.2.1")
    assert limits.connect_allowed("192.0.2.2")
    free = Limits(Settings(address_connect_burst=20, address_violation_cost=0))
    for _ in range(5):
        free.violation("192.0.2.1", "frame_too_large")
    assert free.connect_allowed("192.0.2.1")


def test_keyed_items_are_made_once_per_key_and_the_least_recently_used_goes_first() -> None:
    made = iter(range(1, 100))
    keyed = Keyed(lambda: next(made), most=2)
    assert keyed.of("a") == 1 and keyed.of("b") == 2 and keyed.of("a") == 1
    assert keyed.of("c") == 3  # pushes out b, the least recently used
    assert keyed.of("a") == 1 and keyed.of("b") == 4  # b comes back new
