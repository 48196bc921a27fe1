"""A protocol fuzzer. Random and mutated frames at the gateway, over real sockets.

Every frame gets a documented answer or none, the socket stays open (except for the documented
closes: 1009 for a frame over the size limit, 1007 for a text frame that is not UTF-8, 4401 for a
refused authentication), the server never answers `internal`, other sessions carry on, and the
gateways neither crash nor grow without bound.

Hypothesis drives the examples from a worker thread; each example runs as a coroutine on the
session's event loop (`asyncio.run_coroutine_threadsafe`), so the long-lived connections, the
`system` fixture and the examples share one loop, and the test body can check the system before
and after the whole run. The run is reproducible: a fixed seed (`FUZZ_SEED`, printed), no example
database. `FUZZ_EXAMPLES` sets the number of examples (300 by default).
"""

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal
from urllib.parse import quote, urlencode

import aio_pika
import httpx
import orjson
import pytest
import websockets
from hypothesis import HealthCheck, example, given, seed, settings
from hypothesis import strategies as st

from switchboard_contracts.errors import ErrorCode
from switchboard_contracts.models import MAX_SEQ
from switchboard_contracts.wire import CLIENT_EVENTS, SERVER_EVENTS

from .client import Client, Frame, token, unique
from .conftest import Connector
from .system import System

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
SEED = int(os.environ.get("FUZZ_SEED", "20260505"))
# The gateway's defaults (docs/protocol.md section 9); the test system does not change them.
MAX_FRAME_BYTES = 1024 * 1024
MAX_CONTENT_CHARS = 65_536
# One example: its frames, the probe, and the answers that take the broker and the database.
EXAMPLE_TIMEOUT = 60.0
# How authentication may be refused (protocol §2.3, §8.2): a bad token, or a bad device_id.
REFUSALS = {"invalid_token": 4401, "bad_request": 1008}
ANSWER_WAIT = 20.0
# A catch-up with nothing queued ends at once; this only bounds the wait when it never does.
FLUSH_WAIT = 10.0
# Generous: the gateway may keep a few large frames' worth of arenas; a leak per frame is far more.
RSS_GROWTH_LIMIT_KIB = 96 * 1024
ERROR_CODES = {code.value for code in ErrorCode}
# The events whose answer comes back through the broker, after the probe: each frame gets one.
ASYNC_ANSWERS = ("send_message", "mark_read", "sync")

pytestmark = pytest.mark.timeout(240 + EXAMPLES // 4)


# ---------------------------------------------------------------------------------------------
# What an example sends. Strategies build small descriptions; the harness turns them into frames
# (ids of the run's chats, long strings), so Hypothesis never generates megabytes itself.


@dataclass(frozen=True)
class Ref:
    """An id the harness knows at run time: the fuzzer's own chat, someone else's, ..."""

    name: Literal[
        "own_chat", "foreign_chat", "missing_chat", "own_message", "foreign_message", "fresh", "token"
    ]


@dataclass(frozen=True)
class Long:
    """`char * count`, built at send time."""

    char: str
    count: int


@dataclass(frozen=True)
class Json:
    """A value sent as a JSON text frame (ASCII-escaped or as raw UTF-8)."""

    value: Any
    ascii: bool = True


@dataclass(frozen=True)
class Raw:
    """Bytes or text sent as they are. `text` frames of bytes that are not UTF-8 are sent anyway."""

    kind: Literal["text", "binary"]
    payload: str | bytes | Callable[[], str]


@dataclass(frozen=True)
class Mutated:
    """A JSON frame with some of its bytes replaced, sent as a text or a binary frame."""

    frame: Json
    edits: tuple[tuple[int, bytes], ...]
    binary: bool


@dataclass(frozen=True)
class Truncated:
    frame: Json
    keep: float


Send = Json | Raw | Mutated | Truncated


@dataclass(frozen=True)
class Handshake:
    """Authenticate at the handshake: `?token=...&device_id=...`, the token valid or not."""

    device_id: Any
    valid: bool


# -- values -----------------------------------------------------------------------------------

EDGE_INTS = [
    0,
    1,
    -1,
    2**31 - 1,
    2**31,
    2**53,
    2**53 + 1,
    MAX_SEQ,
    MAX_SEQ + 1,
    2**64 - 1,
    2**64,
    -(2**63) - 1,
]
EDGE_INTS += [10**30, -(10**30)]
NASTY_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\x01\x1f\x7f",
    "\u202e\u200f",
    "\ufeff",
    "\U0001f600",
    "\ud800",
    "\udfff",
    "\ud83d",
    "null",
    "true",
    "0",
    "-1",
    "NaN",
    "__proto__",
    "'; DROP TABLE messages; --",
    "../../etc/passwd",
    "%s%n",
    "\r\n",
]
uuid_text = st.uuids().flatmap(
    lambda u: st.sampled_from(
        [str(u), str(u).upper(), u.hex, f"{{{u}}}", f"urn:uuid:{u}", f" {u}", f"{u}\x00", str(u)[:-1]]
    )
)
long_text = st.builds(
    Long,
    st.sampled_from(["x", "\u00e9", "\U0001f600", "\x00", "\\", '"', "\u202e"]),
    st.sampled_from([32, 33, 64, 65, 128, 129, 8192, 8193, MAX_CONTENT_CHARS, MAX_CONTENT_CHARS + 1]),
)
surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
texts = st.one_of(
    st.text(max_size=40),
    st.text(st.one_of(st.characters(), surrogates, st.sampled_from('\x00\x01\n\t"\\')), max_size=20),
    st.sampled_from(NASTY_STRINGS),
    uuid_text,
    long_text,
)
fixed_offsets = st.timedeltas(
    min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
)
datetimes = st.one_of(
    st.datetimes(timezones=st.builds(timezone, fixed_offsets)).map(datetime.isoformat),
    st.datetimes().map(datetime.isoformat),  # naive: no time zone
    st.sampled_from(
        [
            "0001-01-01T00:00:00+14:00",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59-14:00",
            "9999-12-31T23:59:59.999999Z",
            "2026-02-30T00:00:00Z",
            "2026-01-01",
            "yesterday",
            "1e10",
        ]
    ),
    st.integers(),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(EDGE_INTS),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


def sometimes_junk(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(valid, valid, junk)


chat_ref = st.one_of(
    st.sampled_from([Ref("own_chat"), Ref("foreign_chat"), Ref("missing_chat")]),
    uuid_text,
    st.just("00000000-0000-0000-0000-000000000000"),
)
message_ref = st.one_of(st.sampled_from([Ref("own_message"), Ref("foreign_message")]), uuid_text)
seqs = st.one_of(st.integers(-3, 60), st.sampled_from(EDGE_INTS), st.just(1.0), st.just("1"), st.booleans())
temp_ids = st.one_of(
    st.just(Ref("fresh")),
    st.text(max_size=130),
    st.sampled_from([Long("t", 128), Long("t", 129), "", "\x00"]),
    st.integers(),
    st.sampled_from(EDGE_INTS),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)


def schema(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """An object with each field present or not, usually plausible, plus unknown extra fields;
    sometimes a bare string, list or number instead of an object."""
    base = st.fixed_dictionaries({}, optional={name: sometimes_junk(s) for name, s in fields.items()})
    extra = st.dictionaries(st.text(max_size=10), junk, max_size=2)
    return st.one_of(
        st.builds(lambda e, b: {**e, **b}, extra, base), st.builds(lambda e, b: {**e, **b}, extra, base), junk
    )


DATA: dict[str, st.SearchStrategy[Any]] = {
    "user_authenticated": schema(token=st.one_of(texts, st.just(Ref("token"))), device_id=texts),
    "send_message": schema(
        chat_id=chat_ref,
        content=st.one_of(texts, st.just("hello")),
        message_type=st.one_of(texts, st.just("text")),
        reply_to=st.one_of(st.none(), message_ref),
        tempId=temp_ids,
    ),
    "message_received": schema(
        message_ids=st.one_of(
            st.lists(message_ref, max_size=4),
            st.sampled_from([999, 1000, 1001]).map(lambda n: [str(uuid.UUID(int=i + 1)) for i in range(n)]),
        )
    ),
    "mark_read": schema(chat_id=chat_ref, seq=seqs),
    "join_chat": st.one_of(schema(chat_id=chat_ref), chat_ref),
    "leave_chat": st.one_of(schema(chat_id=chat_ref), chat_ref),
    "typing": schema(
        chat_id=chat_ref, is_typing=st.one_of(st.booleans(), st.sampled_from([0, 1, "true", None]))
    ),
    "sync": schema(
        chats=st.dictionaries(chat_ref, seqs, max_size=3),
        since=datetimes,
        limit=st.one_of(st.integers(-2, 1000), st.sampled_from(EDGE_INTS)),
    ),
}
assert set(DATA) == set(CLIENT_EVENTS)

event_names = st.one_of(
    st.sampled_from(CLIENT_EVENTS),
    st.sampled_from(CLIENT_EVENTS),
    st.sampled_from(CLIENT_EVENTS).map(str.upper),
    st.sampled_from(CLIENT_EVENTS).map(lambda e: f" {e}"),
    st.sampled_from(SERVER_EVENTS),
    st.sampled_from(["", "x" * 64, "x" * 65, "\x00", "__proto__", "constructor"]),
    st.text(max_size=70),
    junk,
)


@st.composite
def structured(draw: st.DrawFn) -> Json:
    """(a) `{"event", "data"}` with data from the event's schema, fields mutated."""
    event = draw(event_names)
    data_for = DATA.get(event) if isinstance(event, str) else None
    frame: dict[str, Any] = {"event": event}
    if draw(st.integers(0, 9)) > 0:
        frame["data"] = draw(data_for if data_for is not None else junk)
    if draw(st.integers(0, 9)) == 0:
        frame.update(draw(st.dictionaries(st.text(max_size=8), junk, max_size=2)))
    if draw(st.integers(0, 19)) == 0:
        frame.pop("event")
    return Json(frame, ascii=draw(st.booleans()))


def _nest(depth: int, shape: str) -> Callable[[], str]:
    def build() -> str:
        if shape == "array":
            return "[" * depth + "]" * depth
        if shape == "object":
            return '{"a":' * depth + "1" + "}" * depth
        return '{"event": "send_message", "data": ' + "[" * depth + "]" * depth + "}"

    return build


def _sized(size: int, char: str) -> Callable[[], str]:
    """A valid `send_message` frame of exactly `size` bytes in UTF-8 (content of `char`s)."""

    def build() -> str:
        head = (
            f'{{"event": "send_message", "data": {{"chat_id": "{uuid.uuid4()}", "tempId": "big", "content": "'
        )
        room = size - len(head.encode()) - len('"}}')
        width = len(char.encode())
        return head + char * (room // width) + "x" * (room % width) + '"}}'

    return build


byte_level = st.one_of(
    st.binary(max_size=64).map(lambda b: Raw("binary", b)),
    st.binary(min_size=1, max_size=64).map(lambda b: Raw("text", b)),
    junk.map(Json),
    st.floats().map(lambda f: Raw("text", json.dumps({"event": "mark_read", "data": {"seq": f}}))),
    st.builds(Truncated, structured(), st.floats(0, 1)),
    st.builds(
        Mutated,
        structured(),
        st.lists(st.tuples(st.integers(0, 10**6), st.binary(max_size=3)), min_size=1, max_size=4).map(tuple),
        st.booleans(),
    ),
    st.sampled_from(
        [
            "",
            " ",
            "null",
            "{}",
            "[]",
            '""',
            "0",
            "\ufeff{}",
            '{"event": null}',
            '{"event": ""}',
            '{"event": "typing", "data": {}}x',
            '{"event": "sync", "data": {}, "event": "typing"}',
            "{'event': 'sync'}",
            '{"event": "send_message", "data": {"tempId": 1e999}}',
            '{"event": "mark_read", "data": {"seq": -0}}',
            '{"event": "send_message", "data": {"content": "\\ud800", "tempId": "s"}}',
        ]
    ).map(lambda t: Raw("text", t)),
    st.builds(
        _nest,
        st.sampled_from([1023, 1024, 1025, 10_000, 150_000]),
        st.sampled_from(["array", "object", "data"]),
    ).map(lambda build: Raw("text", build)),
    st.builds(
        _sized,
        st.sampled_from([MAX_FRAME_BYTES - 1, MAX_FRAME_BYTES, MAX_FRAME_BYTES + 1, 2 * MAX_FRAME_BYTES + 1]),
        st.sampled_from(["x", "\u00e9", "\U0001f600"]),
    ).map(lambda build: Raw("text", build)),
)


def _frame(event: str, data: Any) -> Json:
    return Json({"event": event, "data": data})


own_or_not = st.sampled_from([Ref("foreign_chat"), Ref("missing_chat")])
# (c) well-formed frames about chats the user is not in, or that do not exist.
hostile = st.one_of(
    st.builds(
        lambda c, m: _frame(
            "send_message", {"chat_id": c, "content": "let me in", "tempId": Ref("fresh"), **m}
        ),
        own_or_not,
        st.sampled_from([{}, {"reply_to": Ref("foreign_message")}]),
    ),
    st.builds(lambda c: _frame("join_chat", {"chat_id": c}), own_or_not),
    st.builds(lambda c: _frame("join_chat", c), own_or_not),
    st.builds(
        lambda c, s: _frame("mark_read", {"chat_id": c, "seq": s}), own_or_not, st.integers(1, MAX_SEQ)
    ),
    st.builds(lambda c, t: _frame("typing", {"chat_id": c, "is_typing": t}), own_or_not, st.booleans()),
    st.builds(lambda c: _frame("leave_chat", {"chat_id": c}), own_or_not),
    st.builds(lambda c, s: _frame("sync", {"chats": {c: s}}), own_or_not, st.integers(0, 5)),
    st.builds(lambda c: _frame("sync", {"chats": {Ref("own_chat"): 0, c: 0}, "limit": 3}), own_or_not),
    st.builds(lambda: _frame("message_received", {"message_ids": [Ref("foreign_message")]})),
    st.builds(
        lambda: _frame(
            "send_message",
            {
                "chat_id": Ref("own_chat"),
                "content": "reply",
                "tempId": Ref("fresh"),
                "reply_to": Ref("foreign_message"),
            },
        )
    ),
)
# (d) the valid frames a real client sends, to interleave with bad ones.
valid = st.one_of(
    st.just(_frame("join_chat", {"chat_id": Ref("own_chat")})),
    st.just(_frame("join_chat", Ref("own_chat"))),
    st.just(_frame("leave_chat", {"chat_id": Ref("own_chat")})),
    st.builds(lambda t: _frame("typing", {"chat_id": Ref("own_chat"), "is_typing": t}), st.booleans()),
    st.builds(lambda s: _frame("mark_read", {"chat_id": Ref("own_chat"), "seq": s}), st.integers(1, 50)),
    st.just(_frame("sync", {})),
    st.builds(lambda s: _frame("sync", {"chats": {Ref("own_chat"): s}, "limit": 5}), st.integers(0, 30)),
    st.builds(
        lambda text, reply: _frame(
            "send_message",
            {"chat_id": Ref("own_chat"), "content": text or "x", "tempId": Ref("fresh"), "reply_to": reply},
        ),
        st.text(max_size=20).map(lambda s: s.replace("\x00", "")),
        st.sampled_from([None, Ref("own_message")]),
    ),
    st.just(_frame("message_received", {"message_ids": [Ref("own_message")]})),
)


def _one_field_off(
    event: str, valid: dict[str, Any], **fields: st.SearchStrategy[Any]
) -> st.SearchStrategy[Json]:
    """A valid frame about the fuzzer's own chat with one field replaced (or dropped)."""

    def replace(name: str) -> st.SearchStrategy[Json]:
        return st.one_of(fields[name], junk).map(lambda v: _frame(event, {**valid, name: v}))

    dropped = st.sampled_from(sorted(valid)).map(
        lambda name: _frame(event, {k: v for k, v in valid.items() if k != name})
    )
    return st.one_of(st.sampled_from(sorted(fields)).flatmap(replace), dropped)


own = Ref("own_chat")
# (a) aimed: a frame the gateway accepts but for one field, so the odd value reaches the services.
one_field_off = st.one_of(
    _one_field_off(
        "send_message",
        {"chat_id": own, "content": "hi", "tempId": Ref("fresh")},
        chat_id=chat_ref,
        content=texts,
        message_type=texts,
        reply_to=st.one_of(st.none(), message_ref),
        tempId=temp_ids,
    ),
    _one_field_off("mark_read", {"chat_id": own, "seq": 1}, chat_id=chat_ref, seq=seqs),
    _one_field_off(
        "sync",
        {"chats": {own: 0}, "since": "2026-01-01T00:00:00Z", "limit": 5},
        chats=st.dictionaries(chat_ref, seqs, max_size=3),
        since=datetimes,
        limit=st.one_of(st.integers(-2, 1000), st.sampled_from(EDGE_INTS)),
    ),
    _one_field_off("typing", {"chat_id": own, "is_typing": True}, chat_id=chat_ref, is_typing=scalars),
    _one_field_off("join_chat", {"chat_id": own}, chat_id=chat_ref),
    _one_field_off(
        "message_received", {"message_ids": [Ref("own_message")]}, message_ids=st.lists(message_ref)
    ),
)
cases = st.one_of(
    st.lists(structured(), min_size=1, max_size=1),
    st.lists(one_field_off, min_size=1, max_size=1),
    st.lists(one_field_off, min_size=1, max_size=1),
    st.lists(structured(), min_size=1, max_size=1),
    st.lists(byte_level, min_size=1, max_size=1),
    st.lists(hostile, min_size=1, max_size=1),
    st.lists(
        st.one_of(valid, valid, structured(), one_field_off, hostile, byte_level), min_size=2, max_size=8
    ),
)


# ---------------------------------------------------------------------------------------------
# Turning descriptions into wire frames.


@dataclass
class Wire:
    text: bool
    payload: bytes
    # What the gateway makes of it, as far as the protocol says: the event it reaches, if any.
    event: str | None = None

    @property
    def utf8(self) -> bool:
        try:
            self.payload.decode()
        except UnicodeDecodeError:
            return False
        return True

    @property
    def closes_with(self) -> int | None:
        if len(self.payload) > MAX_FRAME_BYTES:
            return 1009
        if self.text and not self.utf8:
            return 1007
        return None

    async def send(self, client: Client) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            if self.text and self.utf8:
                await client.ws.send(self.payload.decode())
            else:
                await client.ws.send(self.payload, text=self.text)

    def __repr__(self) -> str:
        shown = self.payload if len(self.payload) <= 300 else self.payload[:300] + b"..."
        return f"Wire(text={self.text}, {len(self.payload)} bytes, {shown!r})"


def _event_of(payload: bytes) -> str | None:
    """The event the gateway dispatches this frame to (it parses with orjson too)."""
    try:
        frame = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    event = frame.get("event") if isinstance(frame, dict) else None
    return event if isinstance(event, str) and 1 <= len(event) <= 64 else None


def _encode(value: Any, ascii_only: bool) -> bytes:
    if not ascii_only:
        try:
            return json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:  # a lone surrogate: only its escape can be sent
            pass
    return json.dumps(value).encode()


# ---------------------------------------------------------------------------------------------
# The harness: long-lived connections, the oracle, and the checks after the run.


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _rss_kib(system: System, name: str) -> int:
    popen = system.processes[name].popen
    assert popen is not None
    with open(f"/proc/{popen.pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1])


async def _dead_letters(system: System) -> dict[str, int]:
    connection = await aio_pika.connect(system.amqp_url)
    async with connection:
        channel = await connection.channel()
        counts = {}
        for service in ("messages", "delivery", "presence"):
            queue = await channel.declare_queue(f"{system.namespace}.{service}.dead", passive=True)
            counts[service] = queue.declaration_result.message_count or 0
        return counts


def _log_sizes(system: System) -> dict[str, int]:
    return {name: p.log.stat().st_size for name, p in system.processes.items()}


# uvicorn logs each text frame that is not UTF-8 at error level, with a traceback, before the
# documented 1007 close: expected here, anything else is not.
EXPECTED_LOG_ERRORS = ("Invalid UTF-8 sequence received from client.",)


def _new_log_errors(system: System, since: dict[str, int]) -> list[str]:
    """Lines logged at error level (or with a traceback) by any service since `since`."""
    found = []
    for name, process in system.processes.items():
        with process.log.open("rb") as log:
            log.seek(since[name])
            for line in log.read().decode(errors="replace").splitlines():
                entry: Any = {}
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                if not isinstance(entry, dict) or entry.get("event") in EXPECTED_LOG_ERRORS:
                    continue
                if entry.get("level") in ("error", "critical", "exception") or "Traceback" in line:
                    found.append(f"{name}: {line[:2000]}")
    return found


@dataclass
class Fuzzer:
    connect: Connector
    system: System
    user: str
    own_chat: str
    foreign_chat: str
    foreign_message: str
    gateway: int = 0
    client: Client | None = None
    checked: int = 0
    own_messages: list[str] = field(default_factory=list)
    # Answers this connection is owed so far, by the event that asked (ASYNC_ANSWERS).
    owed: Counter[str] = field(default_factory=Counter)
    # Answers a closed connection was still owed: `read_marked` goes to every connection of the
    # user, so they may arrive on the next one.
    late: Counter[str] = field(default_factory=Counter)
    previous: str = ""
    sent_temp_ids: list[Any] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)

    async def open(self) -> Client:
        if self.client is None or self.client.close_code is not None:
            if self.client is not None:
                self.stats["reconnects"] += 1
                frames = self.client.frames
                self.late += Counter({e: n - _answers(frames, e) for e, n in self.owed.items()})
            self.client = await self.connect(self.user, gateway=self.gateway)
            self.checked = 0
            self.owed = Counter()
        return self.client

    def resolve(self, value: Any) -> Any:
        if isinstance(value, Ref):
            if value.name == "own_chat":
                return self.own_chat
            if value.name == "foreign_chat":
                return self.foreign_chat
            if value.name == "own_message" and self.own_messages:
                return self.own_messages[-1]
            if value.name == "foreign_message":
                return self.foreign_message
            if value.name == "fresh":
                return f"fuzz-{uuid.uuid4().hex}"
            if value.name == "token":
                return token(self.user)
            return str(uuid.uuid4())
        if isinstance(value, Long):
            return value.char * value.count
        if isinstance(value, dict):
            return {self.resolve(k): self.resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        return value

    def wire(self, send: Send) -> Wire:
        wire = self._wire(send)
        if wire.event == "send_message":
            data = orjson.loads(wire.payload).get("data")
            self.sent_temp_ids.append(data.get("tempId") if isinstance(data, dict) else None)
        return wire

    def _wire(self, send: Send) -> Wire:
        if isinstance(send, Json):
            payload = _encode(self.resolve(send.value), send.ascii)
            return Wire(True, payload, _event_of(payload))
        if isinstance(send, Truncated):
            whole = _encode(self.resolve(send.frame.value), send.frame.ascii)
            cut = whole[: min(int(len(whole) * send.keep), len(whole) - 1)]
            return Wire(True, cut, _event_of(cut))
        if isinstance(send, Mutated):
            data = bytearray(_encode(self.resolve(send.frame.value), send.frame.ascii))
            for position, replacement in send.edits:
                at = position % max(len(data), 1)
                data[at : at + max(len(replacement), 1)] = replacement
            payload = bytes(data)
            return Wire(not send.binary, payload, None if send.binary else _event_of(payload))
        payload_value = send.payload() if callable(send.payload) else send.payload
        payload = (
            payload_value.encode(errors="surrogatepass") if isinstance(payload_value, str) else payload_value
        )
        text = send.kind == "text"
        return Wire(text, payload, _event_of(payload) if text else None)

    async def run(self, case: list[Send]) -> None:
        client = await self.open()
        start = len(client.frames)
        wires: list[Wire] = []
        closes_with: int | None = None
        for send in case:
            wire = self.wire(send)
            wires.append(wire)
            self.stats["frames"] += 1
            await wire.send(client)
            if (closes_with := wire.closes_with) is not None:
                break
        context = f"frames sent: {wires!r}"
        # `user_authenticated` on an open session is a renewal; a refused one is `invalid_token`.
        renewals = frozenset({"invalid_token"} if any(w.event == "user_authenticated" for w in wires) else ())
        if closes_with is not None:
            self.stats[f"closed {closes_with}"] += 1
            code = await client.wait_closed()
            self.check(
                client,
                context,
                allowed_errors=renewals | frozenset({"frame_too_large"} if closes_with == 1009 else ()),
            )
            assert code == closes_with, f"expected close {closes_with}, got {code}; {context}"
            return
        self.owed.update(w.event for w in wires if w.event in ASYNC_ANSWERS)
        probe = str(uuid.uuid4())
        await client.send("leave_chat", {"chat_id": probe})

        def answered(frames: list[Frame]) -> bool:
            return {"event": "chat_left", "data": {"chat_id": probe}} in frames[start:] and all(
                _answers(frames, event) >= count for event, count in self.owed.items()
            )

        try:
            await client.wait(answered, timeout=ANSWER_WAIT)
        except (AssertionError, TimeoutError):
            self.check(client, context, renewals)
            raise AssertionError(
                f"no answer (or the socket closed: {client.close_code}) within {ANSWER_WAIT}s; "
                f"owed {dict(self.owed)} answers and the probe; {context}; "
                f"got {client.frames[start:][-10:]}"
            ) from None
        self.check(client, context, renewals)
        for event, count in self.owed.items():
            assert _answers(client.frames, event) <= count + self.late[event], (
                f"{event}: more answers than frames; {context}; before that {self.previous}; "
                f"got {client.frames[start:]}"
            )
        self.previous = context

    def check(self, client: Client, context: str, allowed_errors: frozenset[str] = frozenset()) -> None:
        """The oracle, over every frame not checked yet."""
        for frame in client.frames[self.checked :]:
            self.stats[f"got {frame.get('event')}"] += 1
            problem = _problem(frame, self, allowed_errors)
            assert problem is None, f"{problem}: {frame!r}; {context}"
            if frame["event"] == "message_sent":
                self.own_messages.append(frame["data"]["message"]["id"])
            if frame["event"] in ("error", "message_error"):
                self.stats[f"code {frame['data']['code']}"] += 1
        self.checked = len(client.frames)


def _answers(window: list[Frame], event: str) -> int:
    """How many of `event`'s answers are in the window (each such frame gets exactly one)."""
    if event == "send_message":
        return sum(f["event"] in ("message_sent", "message_error") for f in window)
    names = {"mark_read": "read_marked", "sync": "sync_done"}
    return sum(
        f["event"] == names[event]
        or (f["event"] == "error" and str(f["data"].get("message", "")).startswith(event))
        for f in window
    )


def _problem(frame: Frame, fuzzer: Fuzzer, allowed_errors: frozenset[str]) -> str | None:
    event, data = frame.get("event"), frame.get("data")
    if event not in SERVER_EVENTS:
        return "an undocumented server event"
    if event in ("error", "message_error"):
        code = data.get("code") if isinstance(data, dict) else None
        if code not in ERROR_CODES:
            return "an error without a documented code"
        if code == ErrorCode.INTERNAL:
            return "the server failed on the input (`internal`)"
        if code in (
            "invalid_token",
            "not_authenticated",
            "frame_too_large",
            "slow_consumer",
            "not_a_contact",
        ):
            if code not in allowed_errors:
                return f"`{code}` on an authenticated session"
    if event == "message_error" or event == "message_sent":
        temp_id = data.get("tempId")
        if temp_id is not None and not any(_same(temp_id, sent) for sent in fuzzer.sent_temp_ids):
            return "a tempId the session never sent"
    if event in ("message_sent", "new_message", "read_marked", "chat_joined"):
        chat = data["message"]["chat_id"] if event == "message_sent" else data.get("chat_id")
        if chat != fuzzer.own_chat:
            return "a chat the user is not a member of"
    if event == "sync_done" and set(data.get("chats", {})) - {fuzzer.own_chat}:
        return "sync_done names a chat the user is not a member of"
    return None


# Failures the fuzzer found, kept so that every run tries them; each says what it found.
FOUND: tuple[list[Send], ...] = (
    # messages answers 500 for a `since` whose UTC time is before year 1: `internal`, then 1013.
    [Json({"event": "sync", "data": {"since": "0001-01-01T00:00:00+14:00"}})],
)
FOUND_BEFORE_AUTH: tuple[Any, ...] = (
    # presence cannot store a NUL in `device_id`: SessionOpened is dead-lettered, no queue_flushed.
    Json({"event": "user_authenticated", "data": {"token": Ref("token"), "device_id": "\x00"}}),
    Handshake("\x00", valid=True),
)


def _run_examples(
    loop: asyncio.AbstractEventLoop,
    strategy: st.SearchStrategy[Any],
    body: Callable[[Any], Coroutine[Any, Any, None]],
    always: tuple[Any, ...] = (),
) -> Callable[[], None]:
    """A Hypothesis test, run in a thread, whose examples are coroutines on `loop`; the `always`
    cases (failures found before) are tried first on every run."""

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        future = asyncio.run_coroutine_threadsafe(body(case), loop)
        try:
            future.result(EXAMPLE_TIMEOUT)
        except TimeoutError:
            future.cancel()
            raise

    for case in always:
        run = example(case=case)(run)
    return run


async def _bystanders(connect: Connector) -> tuple[str, Client, Client, str]:
    """Two users of one chat, one on each gateway, connected for the whole run."""
    carol, dave = unique("fuzz-carol"), unique("fuzz-dave")
    chat = await connect.api(carol).create_chat([dave], kind="direct")
    on_other, on_same = await connect(carol, gateway=1), await connect(dave, gateway=0)
    await on_same.next("queue_flushed")
    await on_other.send_message(chat, "before the fuzz")
    message = (await on_other.next("message_sent"))["message"]["id"]
    assert (await on_same.next("new_message"))["id"] == message
    return chat, on_other, on_same, message


async def _bystanders_carry_on(chat: str, carol: Client, dave: Client) -> None:
    for sender, receiver, text in ((carol, dave, "after the fuzz"), (dave, carol, "me too")):
        await sender.send_message(chat, text)
        assert (await sender.next("message_sent"))["message"]["content"] == text
        await receiver.wait(lambda _, r=receiver, t=text: any(m["content"] == t for m in r.messages()))
    for client in (carol, dave):
        assert client.close_code is None
        # Nothing of the fuzzer reached them: no typing, no receipts, no errors.
        unexpected = [
            f
            for f in client.frames
            if f["event"] not in ("authenticated", "queue_flushed", "presence")
            and f["event"] not in ("new_message", "message_sent", "message_delivery_info")
        ]
        assert unexpected == [], unexpected
        assert all(m["chat_id"] == chat for m in client.messages())


async def _gateways_healthy(system: System) -> None:
    async with httpx.AsyncClient() as http:
        for i in range(system.gateways):
            process = system.processes[f"gateway-{i}"]
            assert process.popen is not None and process.popen.poll() is None, f"gateway-{i} exited"
            assert (await http.get(f"{process.url}/readyz", timeout=10)).status_code == 200


async def _warm_up(fuzzer: Fuzzer) -> None:
    """One frame of each kind before memory is measured, so one-time allocations do not count."""
    warm: list[Send] = [
        Raw("text", _sized(MAX_FRAME_BYTES, "\u00e9")),
        Raw("text", _nest(150_000, "object")),
        Raw("binary", b"\xff"),
        Json({"event": "sync", "data": {}}),
        Json(
            {
                "event": "send_message",
                "data": {"chat_id": Ref("own_chat"), "content": "w", "tempId": Ref("fresh")},
            }
        ),
        Json({"event": "mark_read", "data": {"chat_id": Ref("own_chat"), "seq": 1}}),
    ]
    for send in warm:
        await fuzzer.run([send])
    await fuzzer.run([Raw("text", _sized(MAX_FRAME_BYTES + 1, "x"))])


async def test_fuzzed_frames_get_documented_answers_and_harm_no_one(
    system: System, connect: Connector
) -> None:
    print(f"\nfuzz: {EXAMPLES} examples, seed {SEED} (FUZZ_EXAMPLES, FUZZ_SEED)")
    chat, carol, dave, foreign_message = await _bystanders(connect)
    user = unique("fuzzer")
    own_chat = await connect.api(user).create_chat([unique("fuzz-partner")], kind="direct")
    fuzzer = Fuzzer(connect, system, user, own_chat, chat, foreign_message)
    await _warm_up(fuzzer)

    rss_before = {name: _rss_kib(system, name) for name in ("gateway-0", "gateway-1")}
    dead_before = await _dead_letters(system)
    logs_before = _log_sizes(system)
    started = time.monotonic()
    await asyncio.to_thread(_run_examples(asyncio.get_running_loop(), cases, fuzzer.run, FOUND))
    elapsed = time.monotonic() - started
    rss_after = {name: _rss_kib(system, name) for name in rss_before}
    print(f"fuzz: {EXAMPLES} examples in {elapsed:.1f}s; {dict(sorted(fuzzer.stats.items()))}")
    print(f"fuzz: gateway RSS KiB before {rss_before}, after {rss_after}")

    await _gateways_healthy(system)
    await _bystanders_carry_on(chat, carol, dave)
    assert await _dead_letters(system) == dead_before, "events dead-lettered while fuzzing"
    errors = _new_log_errors(system, logs_before)
    assert errors == [], "\n".join(errors[:20])
    for name, before in rss_before.items():
        assert rss_after[name] - before < RSS_GROWTH_LIMIT_KIB, (
            f"{name} grew from {before} to {rss_after[name]} KiB"
        )


# ---------------------------------------------------------------------------------------------
# Before authentication: the same frames on connections that have not authenticated yet.


pre_auth_cases = st.one_of(
    # (A URL of hundreds of kilobytes is refused with HTTP 400 before any WebSocket: not fuzzed.)
    st.builds(
        Handshake,
        st.one_of(texts.filter(lambda t: not isinstance(t, Long) or t.count < 200), st.none()),
        st.booleans(),
    ),
    structured(),
    byte_level,
    st.builds(lambda d: Json({"event": "user_authenticated", "data": d}), DATA["user_authenticated"]),
    st.builds(
        lambda d: Json({"event": "user_authenticated", "data": {"token": Ref("token"), "device_id": d}}),
        texts,
    ),
)


@dataclass
class PreAuth:
    connect: Connector
    user: str
    client: Client | None = None
    opened: float = 0.0
    stats: Counter[str] = field(default_factory=Counter)

    async def open(self) -> Client:
        # A connection gets 10 s to authenticate: start afresh well before that runs out.
        if self.client is None or self.client.close_code is not None or time.monotonic() - self.opened > 5:
            if self.client is not None:
                await self.client.close()
            self.client = await self.connect.raw(gateway=1)
            self.opened = time.monotonic()
        return self.client

    async def handshake(self, case: Handshake) -> None:
        query = {"token": token(self.user) if case.valid else "not-a-jwt"}
        if case.device_id is not None:
            device = self.helper.resolve(case.device_id)
            query["device_id"] = device if isinstance(device, str) else json.dumps(device)
        path = "?" + urlencode(query, quote_via=quote, errors="surrogatepass")
        client = await self.connect.raw(gateway=1, path=path)
        context = f"handshake {path[:300]!r}"
        await client.wait(lambda f: bool(f), timeout=ANSWER_WAIT)
        first = client.frames[0]
        if first["event"] == "authenticated":
            assert case.valid, context
            # The catch-up ends, whatever the device id: no queue_flushed means it never will.
            await client.next("queue_flushed", timeout=FLUSH_WAIT)
            self.stats["handshake authenticated"] += 1
        else:
            # The documented refusals: a bad token (4401), or a bad device_id (1008).
            code = first["data"]["code"] if first["event"] == "error" else None
            assert code in REFUSALS, f"{first}; {context}"
            assert await client.wait_closed() == REFUSALS[code], context
            self.stats["handshake refused"] += 1
        await client.close()

    @property
    def helper(self) -> "Fuzzer":
        return Fuzzer(self.connect, self.connect.system, self.user, "", "", "")

    async def run(self, send: "Send | Handshake") -> None:
        if isinstance(send, Handshake):
            return await self.handshake(send)
        client = await self.open()
        wire = self.helper.wire(send)
        start = len(client.frames)
        await wire.send(client)
        context = f"frame sent: {wire!r}"
        closes_with = wire.closes_with
        if closes_with is None:
            await client.send("typing", {})

            def done(frames: list[Frame]) -> bool:
                window = frames[start:]
                return any(f["event"] == "authenticated" for f in window) or (
                    len([f for f in window if f["event"] == "error"]) >= 2
                )

            with contextlib.suppress(AssertionError):  # a close ends the wait too; judged below
                await client.wait(done, timeout=ANSWER_WAIT)
        else:
            await client.wait_closed()
        window = client.frames[start:]
        self.stats["closed" if client.close_code else "open"] += 1
        authenticated = any(f["event"] == "authenticated" for f in window)
        for frame in window:
            if authenticated:
                break  # the session's own frames follow; the other test fuzzes those
            code = frame["data"].get("code") if frame["event"] == "error" else None
            assert frame["event"] == "error" and code in ERROR_CODES, f"{frame}; {context}"
            self.stats[f"code {code}"] += 1
            allowed = {"bad_request", "not_authenticated", "invalid_token", "frame_too_large"}
            assert code in allowed, f"{frame}; {context}"
        if closes_with is not None:
            assert client.close_code == closes_with, f"closed with {client.close_code}; {context}"
        elif wire.event == "user_authenticated":
            # Authenticated, or refused as documented (REFUSALS): never left half-way.
            if authenticated:
                # The catch-up ends, whatever the device id: no queue_flushed means it never will.
                with contextlib.suppress(AssertionError, TimeoutError):
                    await client.next("queue_flushed", timeout=FLUSH_WAIT)
                assert client.of("queue_flushed"), f"no queue_flushed after authenticated; {context}"
            else:
                await client.wait_closed()
                code = window[0]["data"]["code"] if window else None
                assert code in REFUSALS, f"{window}; {context}"
                assert client.close_code == REFUSALS[code], f"closed with {client.close_code}; {context}"
            await client.close()  # authenticated or closed: the next example starts afresh
            self.client = None
        else:
            assert client.close_code is None, f"closed with {client.close_code}; {context}"
            codes = [f["data"]["code"] for f in window]
            assert codes[-1] == "not_authenticated", f"the probe was not refused: {window}; {context}"


async def test_fuzzed_frames_before_authentication(system: System, connect: Connector) -> None:
    pre = PreAuth(connect, unique("fuzz-pre"))
    dead_before = await _dead_letters(system)
    logs_before = _log_sizes(system)
    await asyncio.to_thread(
        _run_examples(asyncio.get_running_loop(), pre_auth_cases, pre.run, FOUND_BEFORE_AUTH)
    )
    print(f"\nfuzz before authentication: {dict(sorted(pre.stats.items()))}")
    await _gateways_healthy(system)
    assert await _dead_letters(system) == dead_before
    errors = _new_log_errors(system, logs_before)
    assert errors == [], "\n".join(errors[:20])
