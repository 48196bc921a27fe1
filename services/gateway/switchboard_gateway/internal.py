"""Calls to the internal HTTP APIs of other services, on behalf of an authenticated user."""

from typing import Any

import httpx
import structlog

from switchboard_contracts.errors import ErrorCode
from switchboard_contracts.models import ErrorBody
from switchboard_runtime.http_errors import ApiError

__all__ = ["call"]

log = structlog.get_logger()


async def call(client: httpx.AsyncClient, method: str, path: str, user: str, **kwargs: Any) -> httpx.Response:
    """The response, or the service's own error code raised as `ApiError`."""
    try:
        response = await client.request(method, path, headers={"X-Switchboard-User": user}, **kwargs)
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
