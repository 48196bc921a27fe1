import asyncpg
import asyncpg.exceptions

from switchboard_runtime.transient import is_transient


def _postgres_error(cls: type[asyncpg.PostgresError]) -> asyncpg.PostgresError:
    return cls(cls.__name__)


def test_dependency_trouble_is_transient() -> None:
    assert is_transient(ConnectionResetError())
    assert is_transient(_postgres_error(asyncpg.exceptions.SerializationError))  # 40001
    assert is_transient(_postgres_error(asyncpg.exceptions.ReadOnlySQLTransactionError))  # 25006
    assert is_transient(_postgres_error(asyncpg.exceptions.AdminShutdownError))  # 57P01
    # A pooled connection whose backend was terminated mid-operation.
    assert is_transient(asyncpg.exceptions.InternalClientError("cannot switch to state 15"))


def test_bad_data_and_bugs_are_not() -> None:
    assert not is_transient(_postgres_error(asyncpg.exceptions.UniqueViolationError))  # 23505
    assert not is_transient(_postgres_error(asyncpg.exceptions.CharacterNotInRepertoireError))  # 22021
    assert not is_transient(ValueError("bad payload"))


def _closed_while_handling_loss() -> asyncpg.InterfaceError:
    try:
        try:
            raise asyncpg.exceptions.ConnectionDoesNotExistError("gone")
        except asyncpg.exceptions.ConnectionDoesNotExistError:
            # `from None` hides the cause but keeps the context, as asyncpg's savepoint exit does.
            raise asyncpg.InterfaceError("cannot perform operation: connection is closed") from None
    except asyncpg.InterfaceError as exc:
        return exc
    raise AssertionError("unreachable")


def test_a_connection_lost_under_another_error_is_found() -> None:
    assert is_transient(_closed_while_handling_loss())
    assert not is_transient(asyncpg.InterfaceError("the server expects 2 arguments, 0 were passed"))
