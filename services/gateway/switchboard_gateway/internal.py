"""Calls to the internal HTTP APIs of other services, on behalf of an authenticated user: each
signed for that user with the deployment's internal secret (switchboard_runtime.internal_auth)."""

from collections.abc import Generator
from typing import Any

import httpx
import structlog

from switchboard_contracts.errors import ErrorCode
from switchboard_contracts.models import ErrorBody
from switchboard_runtime.http_errors import ApiError
from switchboard_runtime.internal_auth import InternalTokens

__all__ = ["SignedCalls", "call"]

log = structlog.get_logger()

# The request extension that names the user a call is made for (read by `SignedCalls`).
USER = "switchboard.user"


class SignedCalls(httpx.Auth):
    """The httpx auth of a client of the internal APIs: a bearer token for the call's user."""

    def __init__(self, tokens: InternalTokens) -> None:
        self.tokens = tokens

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.tokens.sign(request.extensions[USER])}"
        yield request


async def call(client: httpx.AsyncClient, method: str, path: str, user: str, **kwargs: Any) -> httpx.Response:
    """The response, or the service's own error code raised as `ApiError`."""
    try:
        response = await client.request(method, path, extensions={USER: user}, **kwargs)
    except httpx.HTTPError as exc:
        log.warning("internal service unreachable", url=str(client.base_url), error=str(exc))
        raise ApiError(ErrorCode.INTERNAL, "service unavailable; try again") from None
    if response.status_code >= 400:
        try:
            body = ErrorBody.model_validate_json(response.content)
            raise ApiError(ErrorCode(body.code), body.message)
        except ValueError:
            log.warning("unexpected answer from internal service", status=response.status_code)
            raise ApiError(ErrorCode.INTERNAL, "service error") from None
    return response
