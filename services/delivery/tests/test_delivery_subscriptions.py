from switchboard_contracts.topology import SUBSCRIPTIONS
from switchboard_delivery.handlers import HANDLERS


def test_the_queue_receives_exactly_what_the_handlers_handle() -> None:
    assert {model.TYPE for model in HANDLERS} == set(SUBSCRIPTIONS["delivery"])
