"""Which failures mean "a dependency is unwell, try again" rather than "this event is bad".

A transient failure does not dead-letter an event while the database or broker is really away:
the batch is retried, unacknowledged, until it is back. What will fail the same way again (bad
data, a broken constraint, a bug), and a "transient" error that one event keeps raising while the
database is healthy, go to the dead-letter queue (consumer.py).
"""

import aiormq.exceptions
import asyncpg
import asyncpg.exceptions

__all__ = ["is_transient"]

# SQLSTATE classes: 08 connection exception, 40 transaction rollback (serialization failure,
# deadlock), 53 insufficient resources, 57 operator intervention (shutdown, cancel), 58 system
# error. 25006 is "read-only transaction", seen while a primary fails over.
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
READ_ONLY_TRANSACTION = "25006"

_ALWAYS = (
    OSError,
    TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    # "cannot switch to state 15; another operation is in progress": a pooled connection whose
    # backend was terminated in the middle of an operation (seen in CI when the database was
    # cut off mid-batch). If it came from anything else, the consumer's probe of a healthy
    # database still dead-letters the event rather than retrying it for ever.
    asyncpg.exceptions.InternalClientError,
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
)


def is_transient(exc: BaseException) -> bool:
    """True when this error, or one it was raised from or while handling, is transient.

    The chain matters: a connection lost inside a savepoint surfaces as asyncpg's InterfaceError
    ("connection is closed") raised while handling the real ConnectionDoesNotExistError.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _ALWAYS):
            return True
        if isinstance(current, asyncpg.PostgresError):
            state = current.sqlstate or ""
            if state[:2] in TRANSIENT_SQLSTATE_CLASSES or state == READ_ONLY_TRANSACTION:
                return True
        current = current.__cause__ or current.__context__
    return False
