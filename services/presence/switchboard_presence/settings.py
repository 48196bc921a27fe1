from pydantic import Field

from switchboard_runtime.settings import CommonSettings

__all__ = ["Settings"]


class Settings(CommonSettings):
    presence_port: int = Field(8003, ge=1, le=65535)
    # Gateways beat every 5 s; three missed beats (a stalled or killed gateway) expire its
    # sessions, long enough that one slow beat under load does not take users offline.
    session_expiry_seconds: float = Field(15.0, gt=0)
    expiry_check_seconds: float = Field(2.5, gt=0)
    # A user whose last session closed is announced offline only this long after, if no session
    # opened meanwhile: a phone switching networks or a page reload reconnects within a few
    # seconds, and its contacts should not see it flicker offline and online.
    presence_grace_seconds: float = Field(5.0, gt=0)
