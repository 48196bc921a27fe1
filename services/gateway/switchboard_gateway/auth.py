"""JWT verification: the algorithm is pinned, `exp` and `sub` are required."""

from dataclasses import dataclass

import jwt

from .settings import Settings

__all__ = ["AuthError", "Verifier"]

# Routing keys are at most 255 bytes; "user." plus the id must fit.
MAX_USER_ID_BYTES = 200


class AuthError(Exception):
    """The token is not acceptable; the message says why (it is sent to the client)."""


@dataclass(frozen=True)
class Verifier:
    key: str
    algorithm: str
    audience: str | None
    issuer: str | None

    @classmethod
    def from_settings(cls, settings: Settings) -> "Verifier":
        if settings.jwt_public_key:
            return cls(settings.jwt_public_key, "RS256", settings.jwt_audience, settings.jwt_issuer)
        if settings.jwt_secret is None:
            raise RuntimeError("set CHAT_JWT_SECRET (HS256) or CHAT_JWT_PUBLIC_KEY (RS256)")
        return cls(
            settings.jwt_secret.get_secret_value(), "HS256", settings.jwt_audience, settings.jwt_issuer
        )

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
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token expired") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub or len(sub.encode()) > MAX_USER_ID_BYTES:
            raise AuthError(f"`sub` must be a non-empty string of at most {MAX_USER_ID_BYTES} bytes")
        return sub
