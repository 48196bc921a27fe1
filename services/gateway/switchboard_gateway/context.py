"""What the gateway's handlers share: its identity, the bus, sessions, rooms, settings, and the
internal APIs it calls."""

import asyncio
from dataclasses import dataclass

import httpx
import structlog

from switchboard_contracts.events import Event, FlushRequested, Origin, SessionOpened
from switchboard_runtime.amqp import Bus
from switchboard_runtime.batcher import EventBatcher

from .auth import Verifier
from .registry import Bindable, Registry
from .rooms import Rooms
from .sessions import Session
from .settings import Settings

__all__ = ["Gateway"]

log = structlog.get_logger()


@dataclass
class Gateway:
    id: str
    settings: Settings
    bus: Bus
    # Every event this gateway publishes goes through it: one publish per routing key in flight,
    # the events of all sessions gathered meanwhile in the next.
    events: EventBatcher
    registry: Registry
    verifier: Verifier
    rooms: Rooms
    # The messages service's internal API: membership checks and sync.
    messages: httpx.AsyncClient
    # The route queue's bindings for users and rooms (the registry's and the rooms' keys).
    bindings: Bindable

    def origin(self, session: Session) -> Origin:
        return Origin.model_construct(gateway_id=self.id, session_id=session.id)

    def session_opened(self, session: Session) -> SessionOpened:
        return SessionOpened(
            session_id=session.id,
            user_id=session.user_id,
            gateway_id=self.id,
            device_id=session.device_id,
            flush_id=session.flush_id,
        )

    async def reconnected(self, *_: object) -> None:
        """The broker connection came back with a new route queue (it is exclusive, so it went
        with the old connection): bind every user and room again, then announce the sessions.

        Every session holds what arrives live before its users are bound again, so nothing
        routed to them meanwhile can overtake the catch-up of what is still pending. A session
        whose route cannot be bound would miss what is routed to it: it reconnects.
        """
        sessions = self._hold_live()
        try:
            await self.bindings.restore()
        except Exception:
            log.exception("binding the routes again failed; dropping every session")
            for session in sessions:
                session.drop("resync_failed")
            return
        await self._announce(sessions)

    async def resync(self, *_: object) -> None:
        """Presence had expired this gateway: announce and flush every session again."""
        await self._announce(self._hold_live())

    def _hold_live(self) -> list[Session]:
        """Every session begins a new catch-up: it holds live messages until that ends.

        While the route was down, delivery found no route for these users and kept their
        messages pending; re-announcing each session makes delivery send them, in order, behind
        the catch-up. Presence ignores a session it already knows.
        """
        held = []
        for session in list(self.registry.sessions.values()):
            if session.syncing:
                # Its live messages were unroutable meanwhile and the replay does not cover
                # them: it reconnects and syncs again rather than miss them.
                session.drop("resync_during_sync")
                continue
            session.begin_catch_up()
            held.append(session)
        return held

    async def _announce(self, sessions: list[Session]) -> None:
        log.info("announcing sessions again; flushing them", sessions=len(sessions))

        async def announce(session: Session) -> None:
            try:
                await self.publish(self.session_opened(session))
            except Exception:
                # It cannot be flushed now: let it reconnect and be flushed then.
                session.drop("resync_failed")

        # Together: the events go out in a few batches, not one confirm after another.
        await asyncio.gather(*(announce(session) for session in sessions))

    async def request_page(self, session: Session, after_position: int, after_cursor: str = "") -> None:
        try:
            await self.publish(
                FlushRequested(
                    session_id=session.id,
                    user_id=session.user_id,
                    gateway_id=self.id,
                    flush_id=session.flush_id,
                    after_position=after_position,
                    after_cursor=after_cursor,
                )
            )
        except Exception:
            session.drop("flush_request_failed")

    async def publish(self, event: Event) -> None:
        """Publish and wait for the broker's confirm of the batch it went out in."""
        await self.events.emit(event)
