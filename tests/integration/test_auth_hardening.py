"""Token checks beyond test_bad_input.py: `nbf` and `iat` in the future, audience and
issuer when configured, and the maximum token age that bounds replaying an old token.

One gateway for the module, configured with an audience, an issuer and a maximum age. Every
refusal is checked at the handshake and by frame, and a session opened with a good token keeps
working beside it.
"""

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import pytest

from .client import WAIT, Client, unique
from .conftest import Connector
from .system import JWT_SECRET, System, running_system

AUDIENCE = "switchboard-test"
ISSUER = "https://auth.test.example"
MAX_AGE = 3600


@pytest.fixture(scope="module")
async def system(infra_urls: tuple[str, str]) -> AsyncIterator[System]:
    """Overrides the shared system for this module, so `connect` and the failure logs use it."""
    async with running_system(
        *infra_urls,
        gateways=1,
        CHAT_JWT_AUDIENCE=AUDIENCE,
        CHAT_JWT_ISSUER=ISSUER,
        CHAT_JWT_MAX_AGE_SECONDS=str(MAX_AGE),
    ) as system:
        yield system


def claims(user: str, **changes: Any) -> dict[str, Any]:
    """Claims this system accepts; a change of None drops that claim."""
    now = int(time.time())
    good = {"sub": user, "exp": now + 600, "iat": now, "aud": AUDIENCE, "iss": ISSUER}
    merged = {**good, **changes}
    return {name: value for name, value in merged.items() if value is not None}


def signed(payload: dict[str, Any]) -> str:
    return jwt.encode(payload, JWT_SECRET, algorithm="HS256")


def good_token(user: str) -> str:
    return signed(claims(user))


# Each case: the claims it changes, and words the refusal's message must contain.
CASES: dict[str, tuple[Callable[[], dict[str, Any]], str]] = {
    "nbf in the future": (lambda: {"nbf": int(time.time()) + 300}, "not yet valid"),
    "iat in the future": (lambda: {"iat": int(time.time()) + 300}, "not yet valid"),
    "older than the maximum age": (lambda: {"iat": int(time.time()) - 2 * MAX_AGE}, "too old"),
    "iat far in the past": (lambda: {"iat": -(10**30)}, "whole number of seconds"),
    "exp a numeric string": (lambda: {"exp": str(int(time.time()) + 600)}, "whole number of seconds"),
    "exp that never comes": (lambda: {"exp": 1e300}, "whole number of seconds"),
    "no iat with a maximum age": (lambda: {"iat": None}, "iat"),
    "iat not a number": (lambda: {"iat": "yesterday"}, "iat"),
    "another audience": (lambda: {"aud": "another-service"}, "audience"),
    "no audience": (lambda: {"aud": None}, "aud"),
    "another issuer": (lambda: {"iss": "https://evil.example"}, "issuer"),
    "no issuer": (lambda: {"iss": None}, "iss"),
}


@pytest.fixture(scope="module")
async def witness(system: System) -> AsyncIterator[tuple[str, Client, Client]]:
    """A chat whose two members connected with good tokens, to show others are unaffected."""
    a, b = unique("a"), unique("b")
    async with httpx.AsyncClient(base_url=system.gateway_url(), timeout=WAIT) as http:
        response = await http.post(
            "/chats",
            json={"type": "direct", "members": [b]},
            headers={"Authorization": f"Bearer {good_token(a)}"},
        )
    assert response.status_code == 201, response.text
    chat = response.json()["id"]
    alice = await Client.connect(system.ws_url() + f"?token={good_token(a)}")
    bob = await Client.connect(system.ws_url() + f"?token={good_token(b)}")
    await alice.next("authenticated")
    await bob.next("authenticated")
    yield chat, alice, bob
    await alice.close()
    await bob.close()


async def still_works(witness: tuple[str, Client, Client]) -> None:
    chat, alice, bob = witness
    content = f"still here {uuid.uuid4().hex[:6]}"
    await alice.send_message(chat, content)
    await bob.wait(lambda _: any(m["content"] == content for m in bob.messages()))


@pytest.mark.parametrize("case", list(CASES))
async def test_token_is_refused_at_handshake_and_by_frame(
    connect: Connector, witness: tuple[str, Client, Client], case: str
) -> None:
    change, words = CASES[case]
    bad = signed(claims(unique("victim"), **change()))

    at_handshake = await connect.raw(path=f"?token={bad}")
    error = await at_handshake.next("error")
    assert error["code"] == "invalid_token" and words in error["message"].lower(), error
    assert await at_handshake.wait_closed() == 4401

    by_frame = await connect.raw()
    await by_frame.send("user_authenticated", {"token": bad})
    error = await by_frame.next("error")
    assert error["code"] == "invalid_token" and words in error["message"].lower(), error
    assert await by_frame.wait_closed() == 4401

    await still_works(witness)


async def test_the_http_api_applies_the_same_checks(system: System) -> None:
    user = unique("h")
    async with httpx.AsyncClient(base_url=system.gateway_url(), timeout=WAIT) as http:
        ok = await http.get("/chats", headers={"Authorization": f"Bearer {good_token(user)}"})
        assert ok.status_code == 200, ok.text
        for case in ("another audience", "older than the maximum age", "nbf in the future"):
            change, words = CASES[case]
            bad = signed(claims(user, **change()))
            refused = await http.get("/chats", headers={"Authorization": f"Bearer {bad}"})
            assert refused.status_code == 401 and refused.json()["code"] == "invalid_token", case
            assert words in refused.json()["message"].lower(), refused.text


async def test_a_token_within_the_maximum_age_and_the_leeway_is_accepted(connect: Connector) -> None:
    """Issued just under the maximum age ago, and with a clock 10 s ahead: both still valid."""
    for change in ({"iat": int(time.time()) - MAX_AGE + 60}, {"iat": int(time.time()) + 10}):
        user = unique("ok")
        client = await connect.raw(path=f"?token={signed(claims(user, **change))}")
        assert (await client.next("authenticated"))["user_id"] == user
