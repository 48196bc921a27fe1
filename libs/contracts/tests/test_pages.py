import pytest

from switchboard_contracts.pages import PageEntry, PageHead, pack_page, pack_pages, unpack_page, unpack_pages


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


def test_pages_of_several_sessions_unpack_to_what_was_packed() -> None:
    first = pack_page([PageEntry("m1", "c1", 1, b'{"event": "new_message"}\n')])
    pages = [
        (PageHead("s1", "f1", 0, 1), first),
        (PageHead("s2", "f2", 40, 1000, more_after=1040, cursor="0.1040"), pack_page([])),
    ]
    unpacked = unpack_pages(pack_pages(pages))
    assert unpacked == pages
    assert unpack_page(unpacked[0][1]) == unpack_page(first)


@pytest.mark.parametrize("body", [b"", b'[["s1", "f1", 0, 1, null, "", 10]]\nshort'])
def test_pages_that_do_not_match_their_index_are_refused(body: bytes) -> None:
    with pytest.raises(ValueError, match="flush pages"):
        unpack_pages(body)
