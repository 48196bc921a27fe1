"""uvicorn's WebSocket protocol, made to parse no further ahead of the application than it reads.

uvicorn hands every chunk the socket yields (up to 256 KiB) to the WebSocket parser at once and
queues every message in it, without bound, before it pauses reading. The parser is Python: a
chunk of tiny frames is tens of thousands of frames parsed in one go, with the event loop, and
so every other connection, waiting. The per-connection read pace (ws.py) came too late to help:
it only slowed how fast the application took messages already parsed and queued.

Here the bytes are kept unparsed and fed to the parser a slice at a time, only while the
application has no message waiting; when one is queued, reading stops until the application
takes it. So a connection costs parse work in step with the pace it is read at, and what it can
hold in the gateway is one chunk of bytes and one message.

A message split into many fragments (RFC 6455 continuation frames) is parsed frame by frame
before the application sees anything. Real clients send a message in one frame, or a few large
ones; past `max_fragments` the connection is closed with 1008 `too_many_fragments`.

Every connection closed for what the parser found (too many fragments, a frame over the size
limit, a malformed frame) is a violation charged to its address's connect allowance
(`Limits.violation`).

An upgrade whose head the handshake parser refuses (a line over 8,192 bytes, more than 128
headers: limits h11, which read the head first, does not have) never becomes a request for
uvicorn, which then neither answers nor closes: the socket would stay open for ever, past every
deadline. Such a head is answered here, `bad_handshake` with 414, 431 or 400, and closed, and
counts as a violation too.
"""

from typing import TYPE_CHECKING, Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import HeaderLineTooLong, InvalidState, RequestLineTooLong, TooManyHeaders
from websockets.frames import Frame

from switchboard_contracts.errors import WS_CLOSE_POLICY, ErrorCode
from switchboard_contracts.wire import error_frame

from .limits import raw_response

if TYPE_CHECKING:
    from .limits import Limits

__all__ = ["SEND_FRAMES", "SEND_FRAMES_NOW", "PacedWebSocketProtocol", "paced_websocket_protocol"]

# The ASGI scope extensions under which the protocol offers `send_frames` and `send_frames_now`
# to the application.
SEND_FRAMES = "switchboard.send_frames"
SEND_FRAMES_NOW = "switchboard.send_frames_now"

# Parse at most this much before looking again whether the application has a message waiting:
# 4 KiB of the smallest frames is a few hundred, a millisecond or two of parsing.
FEED_BYTES = 4096

KNOWN_CODES = frozenset(code.value for code in ErrorCode)
# The answers to an upgrade head the handshake parser refused, by what it refused.
_REFUSED = "the WebSocket upgrade request could not be read"
URI_TOO_LONG = raw_response("414 URI Too Long", ErrorCode.BAD_HANDSHAKE, f"{_REFUSED}: request line too long")
HEADERS_TOO_LARGE = raw_response(
    "431 Request Header Fields Too Large",
    ErrorCode.BAD_HANDSHAKE,
    f"{_REFUSED}: a header line over 8,192 bytes or more than 128 headers",
)
BAD_HANDSHAKE = raw_response("400 Bad Request", ErrorCode.BAD_HANDSHAKE, _REFUSED)

# What the WebSocket layer closed with when the reason is not one of ours.
CLOSE_KINDS = {1009: ErrorCode.FRAME_TOO_LARGE.value}


class PacedWebSocketProtocol(WebSocketsSansIOProtocol):
    max_fragments: int = 16
    limits: "Limits | None" = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unparsed = bytearray()

    async def run_asgi(self) -> None:
        extensions: dict[str, object] = self.scope.setdefault("extensions", {})  # type: ignore[assignment]
        extensions[SEND_FRAMES] = self.send_frames
        extensions[SEND_FRAMES_NOW] = self.send_frames_now
        await super().run_asgi()

    async def send_frames(self, frames: list[bytes]) -> None:
        """Send these text frames (UTF-8 JSON, as the services made them) in one socket write.

        What ASGI's `websocket.send` would do for each, minus a socket write per frame and the
        round trip through `str`: on a busy gateway the writes were the largest cost of sending
        (each runs the kernel's TCP path), and a session often has several frames waiting at once
        (`message_sent` and `message_delivery_info`, a page of a catch-up).
        """
        await self.writable.wait()
        if not self._write(frames):
            raise ClientDisconnected()

    def send_frames_now(self, frames: list[bytes]) -> bool:
        """`send_frames` without waiting: True if the frames were written; False, with nothing
        written, if the socket's buffer is over its high-water mark or the connection is going
        away. Then the caller waits on `send_frames`, which waits for room or raises.

        A session whose socket has room writes from the event loop's callback, without a task:
        when a message goes to thousands of sessions, a task for each was a fifth of the cost.
        """
        return self.writable.is_set() and self._write(frames)

    def _write(self, frames: list[bytes]) -> bool:
        """The frames in one socket write; False, with nothing written, if the connection is
        going away."""
        if self.disconnected or self.close_sent:
            return False
        try:
            for frame in frames:
                self.conn.send_text(frame)
        except InvalidState:
            return False  # not open: raised at the first frame, before anything was queued
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True

    def data_received(self, data: bytes) -> None:
        self._unparsed += data
        self._parse()

    async def receive(self) -> Any:
        message = await super().receive()  # resumes reading once nothing is left waiting
        if self._unparsed and self.queue.empty():
            self._parse()
        return message

    def _parse(self) -> None:
        # `read_paused` is set (and reading paused) as soon as a message is queued.
        while self._unparsed and not self.read_paused:
            if self.transport.is_closing():
                self._unparsed.clear()
                return
            chunk = bytes(self._unparsed[:FEED_BYTES])
            del self._unparsed[:FEED_BYTES]
            self.conn.receive_data(chunk)
            if self.conn.parser_exc is not None:
                self._unparsed.clear()
                self.handle_parser_exception()
                return
            if self.conn.handshake_exc is not None and not self.handshake_initiated:
                self._refuse_handshake(self.conn.handshake_exc)
                return
            self.handle_events()
        # Either all is parsed, or a message is waiting and reading is paused: the rest stays
        # unparsed and the socket unread until the application takes it (`receive`).

    def handle_cont(self, event: Frame) -> None:
        if len(self.frames) >= self.max_fragments and not self.close_sent:
            self._refuse_fragments()
            return
        super().handle_cont(event)

    def handle_parser_exception(self) -> None:
        if self.limits is not None and self.conn.close_sent is not None:
            # The handshake's scope names the client a trusted proxy forwarded for, if any.
            scope = getattr(self, "scope", None)
            client = scope.get("client") if scope else self.client
            reason = self.conn.close_sent.reason
            kind = (
                reason
                if reason in KNOWN_CODES
                else CLOSE_KINDS.get(self.conn.close_sent.code, "protocol_error")
            )
            self.limits.violation(client[0] if client else None, kind)
        super().handle_parser_exception()

    def _refuse_handshake(self, exc: Exception) -> None:
        """Answer an upgrade head the parser refused, and close (see the module's docstring)."""
        self._unparsed.clear()
        if isinstance(exc, RequestLineTooLong):
            answer = URI_TOO_LONG
        elif isinstance(exc, (HeaderLineTooLong, TooManyHeaders)):
            answer = HEADERS_TOO_LARGE
        else:
            answer = BAD_HANDSHAKE
        self.close_sent = True
        self.transport.write(answer)
        self.transport.close()
        if self.limits is not None:
            self.limits.violation(self.client[0] if self.client else None, ErrorCode.BAD_HANDSHAKE)

    def _refuse_fragments(self) -> None:
        self.frames = []
        self._unparsed.clear()
        code = ErrorCode.TOO_MANY_FRAGMENTS
        message = f"a message may come in at most {self.max_fragments} frames (fragments)"
        self.conn.send_text(error_frame(code, message))
        self.conn.fail(WS_CLOSE_POLICY, code.value)
        self.handle_parser_exception()  # tells the application, writes the close, closes


def paced_websocket_protocol(
    max_fragments: int, limits: "Limits | None" = None
) -> type[PacedWebSocketProtocol]:
    """The protocol class for uvicorn's `ws` option, with this fragment limit, charging
    violations to `limits`."""
    return type(
        "PacedWebSocketProtocol",
        (PacedWebSocketProtocol,),
        {"max_fragments": max_fragments, "limits": limits},
    )
