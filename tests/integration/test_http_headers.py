"""The gateway's HTTP answers carry security headers, and the client port serves the OpenAPI
document but no page that loads scripts from elsewhere."""

import httpx
import pytest

from .client import WAIT, token, unique
from .system import System

EXPECTED = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


@pytest.mark.parametrize(
    ("method", "path", "authenticated", "status"),
    [
        ("GET", "/healthz", False, 200),
        ("GET", "/chats", True, 200),
        ("GET", "/chats", False, 401),
        ("POST", "/chats", True, 422),
        ("GET", "/no-such-path", False, 404),
        ("GET", "/openapi.json", False, 200),
    ],
)
async def test_every_http_answer_carries_the_security_headers(
    system: System, method: str, path: str, authenticated: bool, status: int
) -> None:
    headers = {"Authorization": f"Bearer {token(unique('ann'))}"} if authenticated else {}
    async with httpx.AsyncClient(base_url=system.gateway_url(), timeout=WAIT) as http:
        response = await http.request(method, path, headers=headers, json={} if method == "POST" else None)
    assert response.status_code == status, response.text
    assert {name: response.headers.get(name) for name in EXPECTED} == EXPECTED


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_no_page_that_loads_scripts_from_a_cdn_is_served(system: System, path: str) -> None:
    async with httpx.AsyncClient(base_url=system.gateway_url(), timeout=WAIT) as http:
        assert (await http.get(path)).status_code == 404
