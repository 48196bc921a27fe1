"""Who is calling an internal API: a short-lived token the gateway signs for the user it acts
for, checked by the service that answers.

The internal APIs (chats, history, membership, receipts, presence, sync plans) act on behalf of
a user the gateway authenticated. A header that merely named the user let any process that
reached the port act as anyone; and an HTTP header cannot carry every user id (headers are
Latin-1, user ids UTF-8). So the gateway signs `{"sub": <user>, "aud": "switchboard-internal"}`
with the deployment's internal secret (HS256, `CHAT_INTERNAL_SECRET`, at least 32 bytes, shared
by the gateways and the services and never by clients) and sends it as a bearer token; the
service checks the signature, the audience and the expiry, and takes the user from `sub`.
"""

import time

import jwt

from switchboard_contracts.models import check_user_id

from .settings import CommonSettings

__all__ = ["AUDIENCE", "InternalTokens", "internal_tokens"]

AUDIENCE = "switchboard-internal"
# A token is good for two minutes and signed again once half of that is gone: a stolen one is
# soon useless, and a busy gateway signs about once a minute per user, not once per call.
TOKEN_SECONDS = 120
# Users whose current token is kept; past it the cache starts again (a token is cheap to sign).
CACHED_USERS = 10_000


class InternalTokens:
    def __init__(self, secret: str) -> None:
        self._secret = secret
        self._cache: dict[str, tuple[str, float]] = {}

    def sign(self, user_id: str) -> str:
        now = time.time()
        cached = self._cache.get(user_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        token = jwt.encode(
            {"sub": user_id, "aud": AUDIENCE, "exp": int(now) + TOKEN_SECONDS},
            self._secret,
            algorithm="HS256",
        )
        if len(self._cache) >= CACHED_USERS:
            self._cache.clear()
        self._cache[user_id] = (token, now + TOKEN_SECONDS / 2)
        return token

    def verify(self, token: str) -> str:
        """The user a valid token names; `jwt.InvalidTokenError` (or ValueError for a user id the
        rule refuses) otherwise."""
        claims = jwt.decode(
            token,
            self._secret,
            algorithms=["HS256"],
            audience=AUDIENCE,
            options={"require": ["exp", "sub", "aud"]},
        )
        sub = claims["sub"]
        if not isinstance(sub, str):
            raise jwt.InvalidTokenError("`sub` must be a string")
        return check_user_id(sub)


def internal_tokens(settings: CommonSettings) -> InternalTokens:
    if settings.internal_secret is None:
        raise RuntimeError(
            "set CHAT_INTERNAL_SECRET (at least 32 bytes, the same for the gateways and every service):"
            " the gateway signs each internal call with it and the services check it"
        )
    return InternalTokens(settings.internal_secret.get_secret_value())
