"""The in-place retry policy of a batch: transient errors retried, but not for ever."""

import asyncpg.exceptions
import pytest

from switchboard_runtime.consumer import BATCH_RETRY_ATTEMPTS, batch_retrying


async def _no_sleep(_: float) -> None:
    """The policy's back-off is not under test; its decisions are."""


async def _attempts_until_given_up(errors: list[Exception]) -> int:
    """Run a commit that raises the given errors in turn (then succeeds); count its calls."""
    calls = 0

    async def commit() -> None:
        nonlocal calls
        calls += 1
        if calls <= len(errors):
            raise errors[calls - 1]

    async for attempt in batch_retrying().copy(sleep=_no_sleep):
        with attempt:
            await commit()
    return calls


async def test_a_transient_error_that_never_clears_is_retried_a_bounded_number_of_times() -> None:
    # 57014, a statement timeout: classed as transient, yet this "batch" hits it every time.
    timeout = asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout")
    with pytest.raises(asyncpg.exceptions.QueryCanceledError):
        await _attempts_until_given_up([timeout] * (BATCH_RETRY_ATTEMPTS + 10))


async def test_it_gives_up_after_exactly_the_allowed_attempts() -> None:
    deadlock = asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
    assert await _attempts_until_given_up([deadlock] * (BATCH_RETRY_ATTEMPTS - 1)) == BATCH_RETRY_ATTEMPTS
    with pytest.raises(asyncpg.exceptions.DeadlockDetectedError):
        await _attempts_until_given_up([deadlock] * BATCH_RETRY_ATTEMPTS)


async def test_a_bad_event_is_not_retried_in_place() -> None:
    # 22021, a NUL in text: the same input fails the same way, so no retry.
    bad = asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence")
    with pytest.raises(asyncpg.exceptions.CharacterNotInRepertoireError):
        await _attempts_until_given_up([bad, bad])
