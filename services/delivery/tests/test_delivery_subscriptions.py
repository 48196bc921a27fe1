from switchboard_contracts.topology import SUBSCRIPTIONS
from switchboard_delivery.domain import FlushPage
from switchboard_delivery.handlers import handlers_for


def test_the_queue_receives_exactly_what_the_handlers_handle() -> None:
    assert {model.TYPE for model in handlers_for(FlushPage(1, 1))} == set(SUBSCRIPTIONS["delivery"])
