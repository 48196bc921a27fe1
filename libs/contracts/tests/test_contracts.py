from pathlib import Path
from uuid import uuid4

import orjson
import pytest

from switchboard_contracts.errors import DESCRIPTIONS, HTTP_STATUS, ErrorCode
from switchboard_contracts.events import EVENT_TYPES, Envelope, Origin, SessionOpened
from switchboard_contracts.models import check_user_id
from switchboard_contracts.wire import (
    CLIENT_EVENTS,
    SERVER_EVENTS,
    ChatRef,
    SendMessage,
    encode_frame,
    message_error_frame,
)

PROTOCOL = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"


def test_every_error_code_is_documented_and_mapped() -> None:
    assert set(DESCRIPTIONS) == set(ErrorCode) == set(HTTP_STATUS)


def test_event_types_are_versioned_and_past_tense_routing_keys() -> None:
    for name, model in EVENT_TYPES.items():
        assert name == model.TYPE
        assert name.endswith(".v1") and name.count(".") >= 2


def test_envelope_round_trips() -> None:
    event = SessionOpened(session_id="s", user_id="u", gateway_id="g")
    envelope = Envelope.wrap(event, "gateway/g")
    back = Envelope.model_validate_json(envelope.model_dump_json())
    assert back == envelope
    assert SessionOpened.model_validate(back.data) == event


def test_send_message_accepts_the_socket_io_shape() -> None:
    chat = uuid4()
    command = SendMessage.model_validate({"chat_id": str(chat), "content": "hi", "tempId": 17})
    assert command.chat_id == chat and command.message_type == "text" and command.temp_id == 17


def test_frames_are_event_and_data() -> None:
    assert orjson.loads(encode_frame("x", {"a": 1})) == {"event": "x", "data": {"a": 1}}
    assert orjson.loads(message_error_frame("t", ErrorCode.BAD_REQUEST, "m"))["data"] == {
        "tempId": "t",
        "code": "bad_request",
        "message": "m",
    }
    assert Origin(gateway_id="g", session_id="s").session_id == "s"


def test_every_event_and_error_code_is_in_the_protocol_document_with_an_example() -> None:
    text = PROTOCOL.read_text()
    for name in (*CLIENT_EVENTS, *SERVER_EVENTS):
        assert f'"event": "{name}"' in text or f'"event":"{name}"' in text, f"no example frame of {name}"
    for code in ErrorCode:
        assert f"| `{code.value}` |" in text, f"error code {code.value} is not in the table of section 8.1"


def test_join_chat_takes_the_bare_chat_id_of_socket_io_clients() -> None:
    chat = uuid4()
    assert ChatRef.model_validate(str(chat)).chat_id == chat
    assert ChatRef.model_validate({"chat_id": str(chat)}).chat_id == chat


@pytest.mark.parametrize("bad", ["a\x00b", "tab\there", "esc\x1b[0m", "del\x7f", "c1\x85", ""])
def test_a_user_id_with_a_control_character_or_empty_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="user id"):
        check_user_id(bad)


@pytest.mark.parametrize("good", ["josé", "ユーザー", "👩‍💻 dev", "a b", "x" * 128])
def test_a_user_id_of_any_script_within_the_limits_is_accepted(good: str) -> None:
    assert check_user_id(good) == good
