"""JWT verification: the algorithm is pinned, `exp` and `sub` are required."""

from dataclasses import dataclass

import jwt

from switchboard_contracts.models import check_user_id

from .settings import Settings

__all__ = ["AuthError", "Verifier"]


class AuthError(Exception):
    """The token is not acceptable; the message says why (it is sent to the client)."""


@dataclass(frozen=True)
class Verifier:
    key: str
    algorithm: str
    audience: str | None
    issuer: str | None
    # Seconds of clock difference tolerated on exp, nbf and iat: the token issuer's clock is
    # never exactly ours.
    leeway: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> "Verifier":
        checks = (settings.jwt_audience, settings.jwt_issuer, settings.jwt_leeway_seconds)
        if settings.jwt_public_key:
            return cls(settings.jwt_public_key, "RS256", *checks)
        if settings.jwt_secret is None:
            raise RuntimeError("set CHAT_JWT_SECRET (HS256) or CHAT_JWT_PUBLIC_KEY (RS256)")
        return cls(settings.jwt_secret.get_secret_value(), "HS256", *checks)

    def user_id(self, token: object) -> str:
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
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token expired") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        sub = claims["sub"]
        if not isinstance(sub, str):
            raise AuthError("`sub` must be a string")
        try:
            return check_user_id(sub)
        except ValueError as exc:
            raise AuthError(f"`sub`: {exc}") from None
