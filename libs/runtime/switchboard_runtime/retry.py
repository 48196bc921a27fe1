"""Start-up and reconnection retries: the broker or database may be starting, or restarting."""

from collections.abc import Callable

import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
    wait_exponential_jitter,
)

__all__ = ["connect_retrying", "hold_retrying"]

log = structlog.get_logger()


def connect_retrying(
    what: str, errors: tuple[type[BaseException], ...], timeout: float = 120.0
) -> AsyncRetrying:
    """Back off from 0.2 s up to 5 s between tries; give up after `timeout` seconds.

    Two minutes covers a broker or database that a supervisor is still starting; past that the
    process exits and its supervisor restarts it, which is louder than waiting forever.
    """

    def before_sleep(state: object) -> None:
        log.warning("dependency not reachable yet, retrying", dependency=what)

    return AsyncRetrying(
        retry=retry_if_exception_type(errors),
        wait=wait_exponential_jitter(multiplier=0.2, max=5.0),
        stop=stop_after_delay(timeout),
        before_sleep=before_sleep,
        reraise=True,
    )


def hold_retrying(seconds: float, worth_waiting: Callable[[BaseException], bool]) -> AsyncRetrying:
    """Try again while the failure is `worth_waiting` for (a dependency away for a moment),
    from 50 ms up to 1 s apart, until `seconds` have passed since the first try; then the last
    failure is raised.

    A second at most between tries: the wait is for a restart measured in seconds, and a try
    against a connection that is not back yet fails at once, costing nothing.
    """
    return AsyncRetrying(
        retry=retry_if_exception(worth_waiting),
        wait=wait_exponential(multiplier=0.05, max=1.0),
        stop=stop_after_delay(seconds),
        reraise=True,
    )
