import pytest

from switchboard_contracts.pages import PageEntry, pack_page, unpack_page


def test_a_page_unpacks_to_what_was_packed_in_order() -> None:
    entries = [
        PageEntry("m1", "c1", 1, b'{"event": "new_message", "data": {"content": "line\\none"}}'),
        PageEntry("m2", "c2", 7, '{"data": "\u00e9"}'.encode()),
    ]
    assert unpack_page(pack_page(entries)) == entries


def test_an_empty_page_is_an_empty_index() -> None:
    assert unpack_page(pack_page([])) == []


@pytest.mark.parametrize("body", [b"", b'[["m1", "c1", 1, 10]]\nshort', b'[["m1", "c1", 1, 2]]\nlonger'])
def test_a_body_that_does_not_match_its_index_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError, match="flush page"):
        unpack_page(body)
