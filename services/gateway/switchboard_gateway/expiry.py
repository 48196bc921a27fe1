"""A session lives as long as its token: when the token expires (its `exp`, plus the leeway the
handshake allowed), the session gets `error` `token_expired` and is closed with 4401, unless the
client sent a fresh token for the same user in time (`user_authenticated` again), which moves
the end to the new token's expiry.

Without it a socket outlived its token for as long as the client kept it open: a user whose
access was withdrawn by no longer issuing tokens kept sending and receiving.
"""

import asyncio
import time
from typing import Any

from pydantic import ValidationError

from switchboard_contracts.errors import WS_CLOSE_INVALID_TOKEN, ErrorCode
from switchboard_contracts.wire import UserAuthenticated, encode_frame, error_frame

from .auth import AuthError, Verified, Verifier
from .sessions import Session

__all__ = ["TokenExpiry", "authenticated_frame"]


def authenticated_frame(session: Session, verified: Verified) -> bytes:
    return encode_frame(
        "authenticated",
        {"user_id": session.user_id, "session_id": session.id, "expires_at": verified.expires_at},
    )


class TokenExpiry:
    def __init__(self, session: Session, verifier: Verifier, verified: Verified) -> None:
        self.session = session
        self.verifier = verifier
        self._timer: asyncio.TimerHandle | None = None
        self._arm(verified.expires_at)

    def _arm(self, expires_at: int) -> None:
        self.cancel()
        delay = expires_at + self.verifier.leeway - time.time()
        self._timer = asyncio.get_running_loop().call_later(max(0.0, delay), self._expired)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def refresh(self, data: Any) -> None:
        """`user_authenticated` on a session: a fresh token for its user moves the end and is
        answered `authenticated` again; any other is refused with `invalid_token`, and the
        session goes on until its current token expires."""
        try:
            token = UserAuthenticated.model_validate(data).token
            verified = self.verifier.verify(token)
        except ValidationError:
            self._refuse('data must be {"token": "<jwt>"}')
            return
        except AuthError as exc:
            self._refuse(str(exc))
            return
        if verified.user_id != self.session.user_id:
            self._refuse("the token is for another user")
            return
        self._arm(verified.expires_at)
        self.session.push(authenticated_frame(self.session, verified))

    def _refuse(self, reason: str) -> None:
        message = f"token not renewed, the session ends when the current one expires: {reason}"
        self.session.push(error_frame(ErrorCode.INVALID_TOKEN, message))

    def _expired(self) -> None:
        self._timer = None
        frame = error_frame(ErrorCode.TOKEN_EXPIRED, "the token expired; connect again with a fresh one")
        self.session.end(WS_CLOSE_INVALID_TOKEN, ErrorCode.TOKEN_EXPIRED.value, frame)
