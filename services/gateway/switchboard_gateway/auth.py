"""JWT verification: the algorithm is pinned, `exp` and `sub` are required.

PyJWT checks the signature, `exp`, `nbf` and `iat` (not in the future, with the leeway), and
`aud` / `iss` when configured (then required). The maximum age is checked here: PyJWT has none.
So are the types of `exp`, `nbf` and `iat`: PyJWT takes a numeric string, or a float such as
1e300 (a token that never expires), where a whole number of seconds belongs.
"""

import time
from dataclasses import dataclass

import jwt

from switchboard_contracts.models import check_user_id

from .settings import Settings

__all__ = ["AuthError", "Verified", "Verifier"]

# The last second of the year 9999: no NumericDate past it is meant seriously.
LAST_NUMERIC_DATE = 253_402_300_799
TIME_CLAIMS = ("exp", "nbf", "iat")


class AuthError(Exception):
    """The token is not acceptable; the message says why (it is sent to the client)."""


@dataclass(frozen=True)
class Verified:
    user_id: str
    # The token's `exp`, in seconds since the epoch.
    expires_at: int


@dataclass(frozen=True)
class Verifier:
    key: str
    algorithm: str
    audience: str | None
    issuer: str | None
    # Seconds of clock difference tolerated on exp, nbf and iat: the token issuer's clock is
    # never exactly ours.
    leeway: float = 30.0
    # Seconds after `iat` past which a token is refused whatever its `exp`; None: no such bound.
    max_age: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "Verifier":
        checks = (
            settings.jwt_audience,
            settings.jwt_issuer,
            settings.jwt_leeway_seconds,
            settings.jwt_max_age_seconds,
        )
        if settings.jwt_public_key:
            return cls(settings.jwt_public_key, "RS256", *checks)
        if settings.jwt_secret is None:
            raise RuntimeError("set CHAT_JWT_SECRET (HS256) or CHAT_JWT_PUBLIC_KEY (RS256)")
        return cls(settings.jwt_secret.get_secret_value(), "HS256", *checks)

    @property
    def _required(self) -> list[str]:
        return ["exp", "sub", "iat"] if self.max_age is not None else ["exp", "sub"]

    def user_id(self, token: object) -> str:
        return self.verify(token).user_id

    def verify(self, token: object) -> Verified:
        if not isinstance(token, str) or not token:
            raise AuthError("a JWT is required; a bare user id is not accepted")
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": self._required, "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthError(f"token not yet valid: {exc}") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        for name in TIME_CLAIMS:
            value = claims.get(name)
            if value is not None and (type(value) is not int or not 0 <= value <= LAST_NUMERIC_DATE):
                raise AuthError(f"`{name}` must be a whole number of seconds from 1970 to the year 9999")
        if self.max_age is not None:
            # PyJWT has checked that `iat` is present, and it is a whole number in range.
            age = int(time.time()) - claims["iat"]
            if age > self.max_age + self.leeway:
                raise AuthError(f"token too old: issued {age} s ago, the limit is {self.max_age:g} s")
        sub = claims["sub"]
        if not isinstance(sub, str):
            raise AuthError("`sub` must be a string")
        try:
            return Verified(check_user_id(sub), claims["exp"])
        except ValueError as exc:
            raise AuthError(f"`sub`: {exc}") from None
