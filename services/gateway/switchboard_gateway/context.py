"""What the gateway's handlers share: its identity, the bus, sessions, rooms, settings, and the
internal APIs it calls."""

from dataclasses import dataclass

import httpx
import structlog

from switchboard_contracts.events import Event, FlushRequested, Origin, SessionOpened
from switchboard_runtime.amqp import Bus
from switchboard_runtime.batcher import EventBatcher

from .auth import Verifier
from .registry import Registry
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

    async def resync(self, *_: object) -> None:
        """The broker connection came back, or presence had expired this gateway: announce and
        flush every session again.

        While it was down, delivery found no route for these users and kept their messages
        pending; re-announcing each session makes delivery send them (in order, behind a new
        catch-up). Presence ignores a session it already knows.
        """
        sessions = list(self.registry.sessions.values())
        log.info("announcing sessions again; flushing them", sessions=len(sessions))
        for session in sessions:
            if session.syncing:
                # Its live messages were unroutable meanwhile and the replay does not cover
                # them: it reconnects and syncs again rather than miss them.
                session.drop("resync_during_sync")
                continue
            session.begin_catch_up()
            try:
                await self.publish(self.session_opened(session))
            except Exception:
                # It cannot be flushed now: let it reconnect and be flushed then.
                session.drop("resync_failed")

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
