"""Frames for clients packed many to a broker message, and the keys it is routed on."""

import pytest

from switchboard_contracts.batches import BATCH_CONTENT_TYPE, decode_events, encode_batch
from switchboard_contracts.routing import (
    Live,
    Reply,
    RouteFrame,
    Signal,
    pack_route,
    route_messages,
    unpack_route,
)
from switchboard_contracts.topology import Topology


def test_every_kind_of_frame_comes_back_as_it_went() -> None:
    frames: list[RouteFrame] = [
        Live(b'{"event":"new_message"}', ("bob", "cy"), "m1", "c1", 7, except_session="s1", left_chat=None),
        Signal(b'{"event":"presence"}', ("ann",)),
        Reply(b'{"event":"message_sent"}', "gw-1", "s9"),
        Live(b'{"event":"member_left"}', ("dan",), left_chat="c2"),
    ]
    assert unpack_route(pack_route(frames)) == frames


def test_a_body_that_does_not_match_its_index_is_refused() -> None:
    body = pack_route([Signal(b"abc", ("ann",))])
    with pytest.raises(ValueError, match="accounts for"):
        unpack_route(body + b"x")
    with pytest.raises(ValueError, match="index"):
        unpack_route(b"no index line")


def test_one_message_names_every_user_and_gateway_once() -> None:
    frames: list[RouteFrame] = [Live(b"a", ("bob", "cy")), Signal(b"b", ("bob",)), Reply(b"c", "gw-1", "s1")]
    [(keys, body, count)] = route_messages(frames)
    assert keys == ["user.bob", "user.cy", "gw.gw-1"]
    assert count == 3 and unpack_route(body) == frames


def test_past_the_key_limit_one_message_goes_to_every_gateway() -> None:
    members = tuple(f"u{i}" for i in range(25))
    frames: list[RouteFrame] = [Live(b"hi", members, "m1", "c1", 1), Reply(b"ok", "gw-1", "s1")]
    [(keys, body, count)] = route_messages(frames, broadcast_above=25)
    assert keys == [Topology.ALL_GATEWAYS_KEY]
    assert count == 2 and unpack_route(body) == frames


def test_at_the_key_limit_the_message_still_names_each_key() -> None:
    frames = [Signal(b"x", (f"u{i}",)) for i in range(5)]
    [(keys, _, _)] = route_messages(frames, broadcast_above=5)
    assert keys == [f"user.u{i}" for i in range(5)]


def test_frames_past_the_user_limit_start_a_new_message_in_order() -> None:
    frames: list[RouteFrame] = [
        Signal(b"x", ("a", "b")),
        Signal(b"y", ("c",)),
        Live(b"z", ("d", "e", "f")),
        Signal(b"w", ("g",)),
    ]
    messages = route_messages(frames, max_users=3)
    assert [unpack_route(body) for _, body, _ in messages] == [frames[:2], frames[2:3], frames[3:]]
    assert [keys for keys, _, _ in messages][0] == ["user.a", "user.b", "user.c"]


def test_no_frames_no_message() -> None:
    assert route_messages([]) == []


def test_a_batch_of_events_is_a_json_array_and_a_lone_event_reads_as_one() -> None:
    events = [b'{"id":"1"}', b'{"id":"2"}']
    assert decode_events(encode_batch(events), BATCH_CONTENT_TYPE) == [{"id": "1"}, {"id": "2"}]
    assert decode_events(b'{"id":"3"}', "application/json") == [{"id": "3"}]
    with pytest.raises(ValueError, match="array"):
        decode_events(b'{"id":"3"}', BATCH_CONTENT_TYPE)
