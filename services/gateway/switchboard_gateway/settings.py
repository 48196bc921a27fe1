import ipaddress
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from switchboard_runtime.settings import CommonSettings, long_enough

__all__ = ["Settings"]

# A comma-separated list in its variable (`a,b`), not JSON.
CommaList = Annotated[tuple[str, ...], NoDecode]


class Settings(CommonSettings):
    gateway_port: int = Field(8000, ge=0, le=65535)
    # HS256 secret, at least 32 bytes. Required unless an RS256 public key is configured.
    jwt_secret: SecretStr | None = None
    # PEM public key: when set, tokens must be RS256 and the secret is not used.
    jwt_public_key: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_seconds: float = Field(30.0, ge=0, le=300)
    # When set, a token is refused once this long has passed since its `iat` (then required),
    # whatever its `exp` says: the bound on replaying a token, e.g. one of a user since disabled,
    # when the issuer hands out long-lived tokens. Off by default because `iat` is optional in
    # tokens today; a deny list was not built (docs/protocol.md section 2.1).
    jwt_max_age_seconds: float | None = Field(None, gt=0)
    # The internal API of the messages service (chats, membership, history).
    messages_url: str = "http://127.0.0.1:8001"
    # The internal API of the presence service (who is online, for users sharing a chat).
    presence_url: str = "http://127.0.0.1:8003"
    # The internal API of the delivery service (receipts of the caller's messages in history).
    delivery_url: str = "http://127.0.0.1:8002"
    max_frame_bytes: int = Field(1024 * 1024, ge=1024)
    # WebSocket frames one message may be split into. Browsers and mobile libraries send a
    # message in one frame, a few send big ones in several large pieces; every frame costs a
    # parse in Python, so a message in thousands of 1-byte fragments is an attack (ws_protocol.py).
    max_fragments: int = Field(16, ge=1)
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
    # How long a send (and any event this gateway publishes) waits for the broker to come back
    # before the client is told `unavailable`. Ten seconds cover a broker restart (stopped, up
    # again in a few seconds, found again within the bus's one-second reconnect interval) with
    # room to spare, and are still shorter than a client's patience for a message that hangs.
    send_hold_seconds: float = Field(10.0, ge=0)
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
    # --- Abuse limits, all per gateway process (docs/protocol.md section 9) ---
    # `send_message` per user, shared by the user's sessions on this gateway: a burst of 50 (a
    # phone resending its offline outbox on reconnect, one message forwarded to a few dozen
    # chats), refilling at 10 per second, far above anyone typing, while bounding what one
    # account makes the system store and fan out. Past it: `rate_limited`, nothing stored.
    message_burst: int = Field(50, ge=1)
    messages_per_second: float = Field(10.0, gt=0)
    # Sessions of one user on this gateway: a phone, a desktop app and several browser tabs fit;
    # one account cannot make a gateway hold (and flush, and fan out to) thousands of sockets.
    max_sessions_per_user: int = Field(10, ge=1)
    # Open WebSockets from one client address on this gateway, authenticated or not. Generous
    # because a carrier-grade or office NAT puts many users behind one address; one host that
    # is not a NAT needs a handful, so a single machine still cannot take the gateway's sockets.
    max_connections_per_ip: int = Field(1000, ge=1)
    # Proxies (addresses or networks) whose X-Forwarded-For names the client for the limit above.
    # Empty: the peer address counts, since a header anyone can send must not choose the bucket.
    trusted_proxies: CommaList = ()
    # Origins (`https://chat.example`) whose pages may open a WebSocket; a browser's handshake
    # from another is refused 403. Empty allows any: tokens are never cookies, so a cross-site
    # page has no credential of the user to ride on (section 2.2); set it for defence in depth.
    allowed_origins: CommaList = ()
    # The request line and headers of every HTTP request, WebSocket upgrades included, must
    # arrive within this time of the connection opening: a real client sends them at once (under
    # 1 KB), a slowloris never finishes. Like the 10 s to authenticate that follows.
    header_timeout_seconds: float = Field(10.0, gt=0)

    @field_validator("jwt_secret")
    @classmethod
    def _secret_long_enough(cls, secret: SecretStr | None) -> SecretStr | None:
        return long_enough("CHAT_JWT_SECRET", secret)

    @field_validator("trusted_proxies", "allowed_origins", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            ipaddress.ip_network(item, strict=False)  # ValueError names the bad entry
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            parts = urlsplit(item)
            if item != "null" and (not parts.scheme or not parts.netloc or parts.path.strip("/")):
                raise ValueError(f"{item!r} is not an origin like https://chat.example")
        return value

    # How fast one connection's frames are read: a chat client sends a few a second (messages,
    # acknowledgements, typing); 20 a second with a burst of 200 (a client resending a backlog
    # after a reconnect) is far above that. Past it the socket is read more slowly, nothing is
    # refused: a flooding client only slows itself, and costs the gateway at most this rate.
    frames_per_second: float = Field(20.0, gt=0)
    frame_burst: int = Field(200, ge=1)
    # `send_message` from all the connections of one client address together: 20 a second
    # (1,200 a minute) with a burst of 100 serves an office NAT of hundreds of people chatting,
    # while a host with many accounts cannot multiply the per-user allowance into a flood:
    # each refused send still costs the messages service a lookup and an answer, and 100 a
    # second of them from one host doubled everyone's latency in the attack run
    # (docs/reliability.md section 7). Behind a load balancer, trust it (CHAT_TRUSTED_PROXIES)
    # so that each client address counts, not the balancer's.
    address_message_burst: int = Field(100, ge=1)
    address_messages_per_second: float = Field(20.0, gt=0)
    # Frames read from all the connections of one client address together, on top of the pace
    # of each: without it, a host's hundred connections are a hundred times one connection's
    # pace of parsing for the one event loop every user of the gateway shares. 200 a second
    # (a burst of 400): five hundred people behind one NAT each sending a message every 30 s
    # make about 70 (the send, its acknowledgements, typing), so a NAT fits with room to spare;
    # past it those sockets are read more slowly, nothing is refused. (It was 500: the attack
    # run, docs/reliability.md section 7, has what each costs.)
    address_frames_per_second: float = Field(200.0, gt=0)
    address_frame_burst: int = Field(400, ge=1)
    # `sync` from all the connections of one client address together, on top of the limit per
    # connection (3, then one per 10 s): each plans every chat of the user in the messages
    # service and pages history, the costliest thing a client asks for, and a hundred
    # connections of one host asking at once stalled everyone in the attack run. A burst of 20,
    # then 2 a second: a NAT's devices coming back still sync, spread over a few seconds.
    address_sync_burst: int = Field(20, ge=1)
    address_syncs_per_second: float = Field(2.0, gt=0)
    # New TCP connections from one client address (WebSockets and HTTP alike; behind trusted
    # proxies, WebSockets per forwarded client address). Every authenticated WebSocket binds a
    # route at the broker and tells presence, so a reconnect loop is work for three services,
    # and the first seconds of a connection flood were what most slowed everyone else in the
    # attack run (docs/reliability.md section 7). A burst of 20, then 10 a second: a NAT's
    # users come back after a gateway restart at that pace (clients back off with jitter),
    # while one host's loop is answered HTTP 429 `rate_limited` before anything is parsed.
    address_connect_burst: int = Field(20, ge=1)
    address_connects_per_second: float = Field(10.0, gt=0)
    # What a connection closed for breaking the protocol costs its address, in new connections
    # on top of its own: a message in too many fragments, a frame over the limit, a malformed
    # WebSocket frame, a request head not sent in time. Clients do none of these by accident,
    # while an attacker's reconnect loop does one every connection; at 10 (a second of the
    # address's connect rate) such a loop gets about one connection a second through instead of
    # ten, and each of its connections is an authentication, a route binding and presence events
    # spared. The other users of a NAT it hides behind keep their open sessions; only their new
    # connections wait, at most a minute past the burst (limits.PENALTY_MOST_SECONDS). 0: off.
    address_violation_cost: int = Field(10, ge=0)
