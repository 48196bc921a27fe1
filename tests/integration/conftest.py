from collections.abc import AsyncIterator, Iterator

import pytest

from .client import Api, Client
from .infra import broker_url, database_url
from .system import System, running_system


@pytest.fixture(scope="session")
def infra_urls() -> Iterator[tuple[str, str]]:
    with broker_url() as amqp, database_url() as database:
        yield amqp, database


@pytest.fixture(scope="session")
async def system(infra_urls: tuple[str, str]) -> AsyncIterator[System]:
    """One system (two gateways) shared by the tests that do not break it on purpose."""
    async with running_system(*infra_urls) as system:
        yield system


@pytest.fixture
async def connect(system: System) -> AsyncIterator["Connector"]:
    connector = Connector(system)
    yield connector
    await connector.close()


class Connector:
    """Opens clients and APIs for a test and closes them after it."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.clients: list[Client] = []
        self.apis: list[Api] = []

    async def __call__(self, user_id: str, gateway: int = 0) -> Client:
        client = await Client.connect(self.system.ws_url(gateway), user_id)
        self.clients.append(client)
        return client

    async def raw(self, gateway: int = 0, path: str = "") -> Client:
        client = await Client.connect(self.system.ws_url(gateway) + path)
        self.clients.append(client)
        return client

    def api(self, user_id: str, gateway: int = 0) -> Api:
        api = Api(self.system, user_id, gateway)
        self.apis.append(api)
        return api

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        for api in self.apis:
            await api.aclose()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    system = item.funcargs.get("system") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(system, System):
        report.sections.append(("service logs", system.logs()))


# Tests that stop and start the local broker or database. They run first, before the shared
# system exists: nothing else then reconnects beside them and slows their recovery, and no later
# test meets a system still reconnecting from them.
RESTART_INFRASTRUCTURE = frozenset({"test_broker_outage", "test_dead_letter_durability", "test_recovery"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def restarts(item: pytest.Item) -> bool:
        module = getattr(item, "module", None)
        return module is not None and module.__name__.rsplit(".", 1)[-1] in RESTART_INFRASTRUCTURE

    items.sort(key=lambda item: not restarts(item))  # stable: each group keeps its order
