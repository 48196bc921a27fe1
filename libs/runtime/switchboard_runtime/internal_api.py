"""What every service's internal HTTP API (the one only gateways call) takes from a request.

The gateway authenticates the client and passes the verified user id in `X-Switchboard-User`;
deploy these ports where only gateways reach them.
"""

from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Header, Request

from switchboard_contracts.models import UserId

from .uow import UnitsOfWork

__all__ = ["Caller", "Partitions", "Pool", "Units"]


def _pool(request: Request) -> asyncpg.Pool:
    # The API's own pool, apart from the event pipeline's (settings.api_pool_size).
    pool: asyncpg.Pool = request.app.state.runtime.api_pool
    return pool


def _partitions(request: Request) -> int:
    # The deployment's partition count, for the routing keys of events the API emits.
    partitions: int = request.app.state.runtime.bus.topology.partitions
    return partitions


def _units(request: Request) -> UnitsOfWork[Any]:
    # Units of work on the API's pool: what a request writes and emits commits as one.
    units: UnitsOfWork[Any] = request.app.state.runtime.api_units
    return units


Pool = Annotated[asyncpg.Pool, Depends(_pool)]
Units = Annotated[UnitsOfWork[Any], Depends(_units)]
Partitions = Annotated[int, Depends(_partitions)]
Caller = Annotated[UserId, Header(alias="X-Switchboard-User")]
