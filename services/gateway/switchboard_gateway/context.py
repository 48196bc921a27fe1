"""What the gateway's handlers share: its identity, the bus, the session registry, the settings."""

from dataclasses import dataclass

from switchboard_contracts.events import Envelope, Event, Origin
from switchboard_runtime.amqp import Bus

from .auth import Verifier
from .sessions import Registry, Session
from .settings import Settings

__all__ = ["Gateway"]


@dataclass
class Gateway:
    id: str
    settings: Settings
    bus: Bus
    registry: Registry
    verifier: Verifier

    def origin(self, session: Session) -> Origin:
        return Origin(gateway_id=self.id, session_id=session.id)

    async def publish(self, event: Event) -> None:
        await self.bus.publish_event(Envelope.wrap(event, source=f"gateway/{self.id}"))
