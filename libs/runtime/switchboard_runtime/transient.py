"""Which failures mean "a dependency is unwell, try again" rather than "this event is bad".

A transient failure must never dead-letter an event: the batch is retried, unacknowledged, until
the database or broker is back. Only what will fail the same way again (bad data, a broken
constraint, a bug) goes to the dead-letter queue.
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
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _ALWAYS):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        return state[:2] in TRANSIENT_SQLSTATE_CLASSES or state == READ_ONLY_TRANSACTION
    return False
