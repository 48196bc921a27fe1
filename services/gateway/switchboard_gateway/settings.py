from pydantic import Field, SecretStr

from switchboard_runtime.settings import CommonSettings

__all__ = ["Settings"]


class Settings(CommonSettings):
    gateway_port: int = Field(8000, ge=0, le=65535)
    # HS256 secret. Required unless an RS256 public key is configured.
    jwt_secret: SecretStr | None = None
    # PEM public key: when set, tokens must be RS256 and the secret is not used.
    jwt_public_key: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_seconds: float = Field(30.0, ge=0, le=300)
    # The internal API of the messages service (chats, membership, history).
    messages_url: str = "http://127.0.0.1:8001"
    # The internal API of the presence service (who is online, for users sharing a chat).
    presence_url: str = "http://127.0.0.1:8003"
    max_frame_bytes: int = Field(1024 * 1024, ge=1024)
    max_content_chars: int = Field(65_536, ge=1)
    # A client that opens a socket must authenticate within this time or be closed (4401).
    auth_timeout_seconds: float = Field(10.0, gt=0)
    # Frames and bytes waiting to be written to one socket. A whole queue flush lands here at
    # once (10,000 small messages, or 16 MiB); past either bound the client is too slow, is
    # dropped with 1013 and catches up from its queue on reconnect, so one stuck client cannot
    # grow the gateway without bound.
    send_buffer_frames: int = Field(10_000, ge=10)
    send_buffer_bytes: int = Field(16 * 1024 * 1024, ge=64 * 1024)
    # A queue flush not finished by then closes the session with 1013, so the client reconnects
    # and is flushed whole rather than getting live messages out of order. Two minutes: long
    # enough for a slow phone to read a 10,000-message backlog, or for delivery to get through a
    # lag after a restart, without the session giving up and joining the back of the queue again.
    flush_timeout_seconds: float = Field(120.0, gt=0)
    # Presence expires a gateway's sessions after about three missed beats.
    heartbeat_seconds: float = Field(5.0, gt=0)
    # Unacknowledged route deliveries in flight to this gateway; each is handed to in-memory
    # session buffers at once, so this only bounds the burst the event loop takes in one go.
    route_prefetch: int = Field(1000, ge=1)
    # A typing state not refreshed within this time ends by itself ("is typing" must not stick
    # when a client forgets to say it stopped); clients refresh every few seconds while typing.
    typing_ttl_seconds: float = Field(6.0, gt=0)
    # `typing` frames one session may send: a burst of 10 (start/stop per keystroke burst in a
    # couple of chats), refilling at 2 per second; past it the frame is refused `rate_limited`.
    typing_burst: int = Field(10, ge=1)
    typing_per_second: float = Field(2.0, gt=0)
