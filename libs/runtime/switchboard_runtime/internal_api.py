"""What every service's internal HTTP API (the one only gateways call) takes from a request.

The gateway authenticates the client and calls on the user's behalf with a token it signs with
the deployment's internal secret (internal_auth.py); `Caller` is the user it names, and a call
without a valid one is refused with 401 `invalid_token`. Deploy these ports where only gateways
reach them all the same.
"""

from typing import Annotated, Any

import asyncpg
import jwt
from fastapi import Depends, Header, Request

from switchboard_contracts.errors import ErrorCode

from .http_errors import ApiError
from .internal_auth import InternalTokens
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


def _caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(ErrorCode.INVALID_TOKEN, "an internal call needs the gateway's signed bearer token")
    tokens: InternalTokens = request.app.state.internal_tokens
    try:
        return tokens.verify(token.strip())
    except (jwt.InvalidTokenError, ValueError):
        raise ApiError(ErrorCode.INVALID_TOKEN, "the internal call's token is not valid") from None


Caller = Annotated[str, Depends(_caller)]
