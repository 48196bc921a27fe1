"""Frames on their way to clients, gathered into one broker message per batch.

A service that answers clients (delivery above all) collects, for a whole batch of events, the
frames it has for users and sessions, and publishes them as one message on `<ns>.route` whose
`BCC` header lists the routing key of every user and gateway concerned (sender-selected
distribution): the broker puts one copy in each gateway queue bound to any of those keys, and
each gateway takes the frames of the users and sessions it holds and skips the rest. A message to
500 members is then one publish and one delivery per gateway instead of 500 of each.

The body is one line of JSON, the index, then the frames back to back, ready to send to clients
as they are. Each index entry is a list whose first item says what it is:

* `["L", length, users, message_id, chat_id, seq, except_session, left_chat]`: `Live`
* `["S", length, users]`: `Signal`
* `["R", length, gateway_id, session_id]`: `Reply`

`BCC` is stripped by the broker before delivery, so no gateway parses the key list. A batch
for more users than `BROADCAST_ABOVE_KEYS` goes to every gateway instead, on the key every
gateway queue is bound with; each still takes only its own users' and sessions' frames.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic_core import from_json, to_json

from .topology import Topology

__all__ = [
    "BROADCAST_ABOVE_KEYS",
    "MAX_USERS_PER_MESSAGE",
    "Live",
    "Reply",
    "RouteFrame",
    "Signal",
    "pack_route",
    "route_messages",
    "unpack_route",
]

# Above this many routing keys a batch goes to every gateway (`Topology.ALL_GATEWAYS_KEY`) instead
# of naming its users in `BCC`. The broker's cost of a `BCC` list grows with its length (RabbitMQ
# before 3.11 compares each key with every binding of the exchange: 56 ms for 1,000 keys over
# 5,000 bindings), while sending to every gateway costs one copy per gateway, each of which skips
# the users it does not hold. A hundred users are spread over every gateway of a deployment of a
# few dozen anyway, so their message reaches nearly all of them either way; and the key list
# stays far inside the header frame (a user key is at most 205 bytes, a frame 128 KiB).
BROADCAST_ABOVE_KEYS = 100
# A message's index lists the users of each of its frames; past this many the frames go on in the
# next message, so that no one message holds a gateway's event loop for long (reading 10,000
# entries takes a few milliseconds) whatever the batch and the groups in it.
MAX_USERS_PER_MESSAGE = 10_000


@dataclass(frozen=True, slots=True)
class Live:
    """A message or a membership change for every session of `users`, but `except_session`.

    Held in arrival order while a session catches up, so it keeps its place among the messages.
    `message_id`, `chat_id` and `seq` name a message frame (a catch-up drops a held one it already
    sent, or one older than what it sent for that chat); `left_chat` is set on `member_left` to
    the removed user, whose sessions then leave that chat's room.
    """

    frame: bytes
    users: tuple[str, ...]
    message_id: str | None = None
    chat_id: str | None = None
    seq: int | None = None
    except_session: str | None = None
    left_chat: str | None = None


@dataclass(frozen=True, slots=True)
class Signal:
    """About the present (presence, receipts, read markers): every session of `users` gets it at
    once, catching up or not."""

    frame: bytes
    users: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer to one session."""

    frame: bytes
    gateway_id: str
    session_id: str


RouteFrame = Live | Signal | Reply


def _keys(frame: RouteFrame) -> Iterable[str]:
    if isinstance(frame, Reply):
        return (Topology.gateway_key(frame.gateway_id),)
    return (Topology.user_key(user) for user in frame.users)


def pack_route(frames: Sequence[RouteFrame]) -> bytes:
    index: list[list[object]] = []
    for frame in frames:
        if isinstance(frame, Live):
            index.append(
                [
                    "L",
                    len(frame.frame),
                    frame.users,
                    frame.message_id,
                    frame.chat_id,
                    frame.seq,
                    frame.except_session,
                    frame.left_chat,
                ]
            )
        elif isinstance(frame, Signal):
            index.append(["S", len(frame.frame), frame.users])
        else:
            index.append(["R", len(frame.frame), frame.gateway_id, frame.session_id])
    return b"".join([to_json(index), b"\n", *(frame.frame for frame in frames)])


def unpack_route(body: bytes) -> list[RouteFrame]:
    """The frames of a packed route message; ValueError if the body does not match its index."""
    # JSON text holds no raw newline, so the first one ends the index.
    end = body.find(b"\n")
    if end < 0:
        raise ValueError("a route batch without an index line")
    frames: list[RouteFrame] = []
    offset = end + 1
    for entry in from_json(body[:end]):
        kind, length = entry[0], entry[1]
        data = body[offset : offset + length]
        offset += length
        if kind == "L":
            _, _, users, message_id, chat_id, seq, except_session, left_chat = entry
            frames.append(Live(data, tuple(users), message_id, chat_id, seq, except_session, left_chat))
        elif kind == "S":
            frames.append(Signal(data, tuple(entry[2])))
        elif kind == "R":
            frames.append(Reply(data, entry[2], entry[3]))
        else:
            raise ValueError(f"a route batch entry of unknown kind {kind!r}")
    if offset != len(body):
        raise ValueError(f"a route batch of {len(body)} bytes whose index accounts for {offset}")
    return frames


def route_messages(
    frames: Sequence[RouteFrame],
    broadcast_above: int = BROADCAST_ABOVE_KEYS,
    max_users: int = MAX_USERS_PER_MESSAGE,
) -> list[tuple[list[str], bytes, int]]:
    """The messages to publish for these frames, in order: (routing keys, packed body, frames in
    it) each.

    Frames go into one message until its index would list more than `max_users` users (a frame
    for more than that goes alone). Each message names every user and gateway it concerns or,
    past `broadcast_above` keys, goes to every gateway.
    """
    messages: list[tuple[list[str], bytes, int]] = []
    batch: list[RouteFrame] = []
    users = 0

    def close() -> None:
        keys = list(dict.fromkeys(key for frame in batch for key in _keys(frame)))
        if len(keys) > broadcast_above:
            keys = [Topology.ALL_GATEWAYS_KEY]
        messages.append((keys, pack_route(batch), len(batch)))

    for frame in frames:
        size = 1 if isinstance(frame, Reply) else len(frame.users)
        if batch and users + size > max_users:
            close()
            batch, users = [], 0
        batch.append(frame)
        users += size
    if batch:
        close()
    return messages
