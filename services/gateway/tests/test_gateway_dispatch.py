"""A frame handler that fails answers `internal` and leaves the connection to read on."""

from typing import Any

import pytest

from switchboard_contracts.wire import ClientFrame
from switchboard_gateway import ws
from switchboard_gateway.handlers import FRAME_HANDLERS
from switchboard_gateway.sessions import Session


async def test_a_failing_handler_answers_internal_instead_of_ending_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(*_: Any) -> None:
        raise ConnectionError("broker unreachable")  # as a publish fails during a broker restart

    monkeypatch.setitem(FRAME_HANDLERS, "mark_read", broken)
    pushed: list[bytes] = []
    session = Session("ann", send=None, close=None, buffer_limit=10)  # type: ignore[arg-type]
    monkeypatch.setattr(Session, "push", lambda _, frame: pushed.append(frame))

    await ws._dispatch(None, None, session, ClientFrame(event="mark_read", data={}))  # type: ignore[arg-type]

    assert len(pushed) == 1 and b'"code":"internal"' in pushed[0]
