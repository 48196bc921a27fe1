"""Every error code a client can see, on the WebSocket and over HTTP.

One list, so the protocol document, the gateway and the tests cannot drift apart. The codes are
part of protocol v1: a code is never renamed or reused for another meaning.
"""

from enum import StrEnum

__all__ = [
    "DESCRIPTIONS",
    "HTTP_STATUS",
    "WS_CLOSE_FRAME_TOO_LARGE",
    "WS_CLOSE_INVALID_TOKEN",
    "WS_CLOSE_POLICY",
    "WS_CLOSE_TOO_MANY",
    "ErrorCode",
]


class ErrorCode(StrEnum):
    INVALID_TOKEN = "invalid_token"  # noqa: S105 - an error code, not a credential
    TOKEN_EXPIRED = "token_expired"  # noqa: S105 - an error code, not a credential
    NOT_AUTHENTICATED = "not_authenticated"
    BAD_REQUEST = "bad_request"
    NOT_A_MEMBER = "not_a_member"
    CHAT_NOT_FOUND = "chat_not_found"
    CONTENT_TOO_LONG = "content_too_long"
    FRAME_TOO_LARGE = "frame_too_large"
    TOO_MANY_FRAGMENTS = "too_many_fragments"
    SLOW_CONSUMER = "slow_consumer"
    NOT_JOINED = "not_joined"
    RATE_LIMITED = "rate_limited"
    NOT_A_CONTACT = "not_a_contact"
    TOO_MANY_SESSIONS = "too_many_sessions"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    REQUEST_TIMEOUT = "request_timeout"
    BAD_HANDSHAKE = "bad_handshake"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


DESCRIPTIONS: dict[ErrorCode, str] = {
    ErrorCode.INVALID_TOKEN: (
        "The JWT is missing, malformed, unsigned, signed with another key or algorithm, expired, not "
        "yet valid (`nbf` or `iat` in the future), for another audience or issuer when those are "
        "configured, older than the configured maximum age, or lacks `sub`/`exp` (and `iat` when a "
        "maximum age is configured); a bare user id in `user_authenticated` is refused the same way. "
        "On the WebSocket the socket is then closed with 4401."
    ),
    ErrorCode.TOKEN_EXPIRED: "The token the session authenticated with expired (its `exp` plus the "
    "configured leeway) and no fresh one came (`user_authenticated` again); the socket is then closed "
    "with 4401. Connect again with a fresh token.",
    ErrorCode.NOT_AUTHENTICATED: "An event other than `user_authenticated` arrived before authentication.",
    ErrorCode.BAD_REQUEST: "Bad JSON, a frame that is not an object, an unknown event, or a missing or "
    "wrongly typed field.",
    ErrorCode.NOT_A_MEMBER: "The caller is not a member of that chat.",
    ErrorCode.CHAT_NOT_FOUND: "No chat has that id.",
    ErrorCode.CONTENT_TOO_LONG: "`content` is longer than the configured limit "
    "(65,536 characters by default).",
    ErrorCode.FRAME_TOO_LARGE: "A frame is larger than the configured limit (1 MiB by default); the socket "
    "is closed with 1009.",
    ErrorCode.TOO_MANY_FRAGMENTS: "A message came split into more WebSocket frames (continuation "
    "fragments) than the configured limit (16 by default); the socket is closed with 1008.",
    ErrorCode.SLOW_CONSUMER: "The client did not read fast enough and its send buffer filled; the socket "
    "is closed with 1013 and the client catches up from its queue when it reconnects.",
    ErrorCode.NOT_JOINED: "`typing` for a chat this session has not joined with `join_chat`.",
    ErrorCode.RATE_LIMITED: "Too many frames of this kind: `typing` from one session, or `send_message` "
    "from one user on one gateway (all of the user's sessions there share the allowance); the frame "
    "was dropped and nothing was stored, the connection stays open. Also new connections from one "
    "address faster than the configured rate, answered HTTP 429 before any socket opens.",
    ErrorCode.NOT_A_CONTACT: "The caller shares no chat with that user, so may not see their presence.",
    ErrorCode.TOO_MANY_SESSIONS: "The user already holds the most sessions allowed on this gateway; the "
    "new connection is closed with 4429, the existing ones are unaffected.",
    ErrorCode.TOO_MANY_CONNECTIONS: "The client address already holds the most WebSockets allowed on this "
    "gateway; the new connection is closed with 4429, the existing ones are unaffected.",
    ErrorCode.ORIGIN_NOT_ALLOWED: "A browser's WebSocket handshake came from an origin not in the "
    "configured allow-list; it is refused with HTTP 403 before any WebSocket is opened.",
    ErrorCode.REQUEST_TIMEOUT: "Part of the request line and headers of an HTTP request (a WebSocket "
    "upgrade included) arrived, but not all of it within the configured time; answered 408 and the "
    "connection closed (a connection on which nothing was sent is closed without an answer).",
    ErrorCode.BAD_HANDSHAKE: "A WebSocket upgrade request the handshake refuses: a request line or a "
    "header line over 8,192 bytes or more than 128 headers (HTTP 414 or 431), or a request that is not "
    "a WebSocket upgrade the handshake can read (HTTP 400); answered at once and the connection closed.",
    ErrorCode.UNAVAILABLE: "The message broker was out of reach for longer than the gateway holds a send "
    "(`CHAT_SEND_HOLD_SECONDS`, 10 s by default); nothing was confirmed. Send it again with the same "
    "`tempId` after `retry_after` seconds.",
    ErrorCode.INTERNAL: "The server failed; the request may be retried with the same `tempId`.",
}

HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_TOKEN: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.NOT_AUTHENTICATED: 401,
    ErrorCode.BAD_REQUEST: 422,
    ErrorCode.NOT_A_MEMBER: 403,
    ErrorCode.CHAT_NOT_FOUND: 404,
    ErrorCode.CONTENT_TOO_LONG: 422,
    ErrorCode.FRAME_TOO_LARGE: 413,
    ErrorCode.TOO_MANY_FRAGMENTS: 400,
    ErrorCode.SLOW_CONSUMER: 503,
    ErrorCode.NOT_JOINED: 409,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.NOT_A_CONTACT: 403,
    ErrorCode.TOO_MANY_SESSIONS: 429,
    ErrorCode.TOO_MANY_CONNECTIONS: 429,
    ErrorCode.ORIGIN_NOT_ALLOWED: 403,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.BAD_HANDSHAKE: 400,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}

# 4401 mirrors HTTP 401 in the 4000-4999 range RFC 6455 leaves to applications.
WS_CLOSE_INVALID_TOKEN = 4401
# 1008 is RFC 6455's "policy violation": refused for what was sent (a bad device_id, a message
# in too many fragments), not for the token.
WS_CLOSE_POLICY = 1008
# 1009 is RFC 6455's "message too big".
WS_CLOSE_FRAME_TOO_LARGE = 1009
# A connection refused for a limit (too many sessions or connections), mirroring HTTP 429 like
# 4401 mirrors 401. Not 1013 "try again later": this protocol's clients reconnect at once after
# 1013, which here would only be refused again.
WS_CLOSE_TOO_MANY = 4429
