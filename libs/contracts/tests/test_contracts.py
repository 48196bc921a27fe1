from uuid import uuid4

import orjson

from switchboard_contracts.errors import DESCRIPTIONS, HTTP_STATUS, ErrorCode
from switchboard_contracts.events import EVENT_TYPES, Envelope, Origin, SessionOpened
from switchboard_contracts.wire import SendMessage, encode_frame, message_error_frame


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
