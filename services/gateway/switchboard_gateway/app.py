"""Wiring of the gateway: WebSocket and HTTP for clients, a route queue for what reaches them."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import uuid4

import httpx
import structlog
from fastapi import FastAPI
from starlette.routing import Match, WebSocketRoute
from starlette.types import Message, Receive, Scope, Send

from switchboard_contracts.events import GatewayHeartbeat, SessionClosed, SessionOpened
from switchboard_contracts.topology import Topology
from switchboard_runtime.acks import consume_acked
from switchboard_runtime.amqp import Bus
from switchboard_runtime.batcher import EventBatcher
from switchboard_runtime.bindings import Bindings
from switchboard_runtime.http_errors import install_error_handlers
from switchboard_runtime.internal_auth import internal_tokens
from switchboard_runtime.logs import configure_logging
from switchboard_runtime.service import (
    Runtime,
    add_health_routes,
    cancel_all,
    run_cli,
    spawn,
    tune_collector,
)

from .auth import Verifier
from .context import Gateway
from .http_api import router
from .internal import SignedCalls
from .limits import Limits, header_deadline_protocol
from .metrics import SESSIONS
from .registry import Registry
from .rooms import Rooms
from .routes import RouteConsumer
from .settings import Settings
from .ws import websocket_endpoint
from .ws_protocol import paced_websocket_protocol

__all__ = ["GatewayApp", "create_app", "main"]

SERVICE = "gateway"
log = structlog.get_logger()

# On every HTTP answer of the client port (OWASP's headers for a REST API): its JSON is for
# programs, never a page a browser should sniff into HTML, frame, load anything for, send a
# referrer from or cache. Strict-Transport-Security belongs to whatever terminates TLS.
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)


async def heartbeat(gateway: Gateway) -> None:
    while True:
        try:
            await gateway.publish(
                GatewayHeartbeat(gateway_id=gateway.id, sessions=len(gateway.registry.sessions))
            )
        except Exception:
            log.warning("heartbeat not published; broker unreachable")
        await asyncio.sleep(gateway.settings.heartbeat_seconds)


class GatewayApp:
    """The gateway as uvicorn serves it: the FastAPI application (HTTP API, health, lifespan),
    except that a WebSocket handshake for `/ws` goes straight to its Starlette route.

    Inside FastAPI every WebSocket would pass its middleware stack (server errors, exception
    telemetry, the body limit, exception handlers, an AsyncExitStack for uploaded files) and its
    router. None of them does anything for a WebSocket, yet each stays on the stack, awaiting,
    for as long as the socket is open. Measured with tracemalloc in the gateway, per idle session:
    10.7 KB through FastAPI's own WebSocket route (`add_api_websocket_route`, which adds two more
    AsyncExitStacks, the solved dependencies and a sub-response), 7.1 KB with a Starlette route
    inside FastAPI, 2.5 KB routed here (the route's own exception handling and the `WebSocket`,
    as in a plain Starlette application). That exception handling is Starlette's, as before;
    none of the HTTP error handlers applies to a WebSocket.
    """

    def __init__(self, app: FastAPI, websocket: WebSocketRoute) -> None:
        self.app = app
        self.websocket = websocket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.app(scope, receive, _with_security_headers(send))
            return
        if scope["type"] == "websocket":
            match, child_scope = self.websocket.matches(scope)
            if match is Match.FULL:
                scope.update(child_scope)
                scope["app"] = self.app  # the endpoint reads `ws.app.state`, as inside FastAPI
                await self.websocket.handle(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings | None = None, limits: Limits | None = None) -> GatewayApp:
    settings = settings or Settings()
    # Refused at start without the secret: every call to the services would be refused anyway.
    signed = SignedCalls(internal_tokens(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(SERVICE, settings.log_level)
        verifier = Verifier.from_settings(settings)
        gateway_id = f"gw-{uuid4().hex[:12]}"
        topology = settings.topology()
        bus = Bus(settings.amqp_url, topology, source=f"gateway/{gateway_id}")
        async with (
            httpx.AsyncClient(base_url=settings.messages_url, timeout=10.0, auth=signed) as messages_client,
            httpx.AsyncClient(base_url=settings.presence_url, timeout=10.0, auth=signed) as presence_client,
            httpx.AsyncClient(base_url=settings.delivery_url, timeout=10.0, auth=signed) as delivery_client,
        ):
            await bus.connect()
            channel = await bus.connection.channel()
            await channel.set_qos(prefetch_count=settings.route_prefetch)
            # Exclusive: the queue, and with it every user and room binding, vanishes with this
            # process, so the broker stops routing to a dead gateway and delivery sees those
            # users as offline.
            queue = await channel.declare_queue(
                topology.gateway_queue(gateway_id), exclusive=True, auto_delete=True
            )
            await queue.bind(topology.route_exchange, Topology.gateway_key(gateway_id))
            # Batches for many users come to every gateway on this key (routing.py).
            await queue.bind(topology.route_exchange, Topology.ALL_GATEWAYS_KEY)
            # The users' and rooms' keys come and go with sessions, bound in batches.
            bindings = Bindings(bus.connection, queue.name, topology.route_exchange)
            registry = Registry(bindings)
            SESSIONS.set_function(lambda: len(registry.sessions))

            async def publish_route(key: str, frame: bytes, headers: dict[str, object]) -> bool:
                return await bus.publish("route", key, frame, headers=headers)

            rooms = Rooms(bindings, publish_route, settings.typing_ttl_seconds)
            # A session's closing must never overtake its opening (a resync announces every
            # session again while some close): presence would keep a session that is gone.
            events = EventBatcher(
                bus,
                source=f"gateway/{gateway_id}",
                in_order=[{SessionOpened.TYPE, SessionClosed.TYPE}],
                hold_seconds=settings.send_hold_seconds,
            )
            gateway = Gateway(
                gateway_id, settings, bus, events, registry, verifier, rooms, messages_client, bindings
            )
            await consume_acked(
                channel, queue.name, RouteConsumer(gateway_id, registry, rooms, gateway.resync)
            )
            bus.connection.reconnect_callbacks.add(gateway.reconnected)
            runtime = Runtime(bus=bus)
            spawn(bindings.run(), runtime.tasks, "bindings")
            spawn(heartbeat(gateway), runtime.tasks, "heartbeat")
            tune_collector()
            app.state.gateway = gateway
            app.state.runtime = runtime
            app.state.messages_client = messages_client
            app.state.presence_client = presence_client
            app.state.delivery_client = delivery_client
            log.info("gateway started", gateway_id=gateway_id, namespace=settings.namespace)
            try:
                yield
            finally:
                await cancel_all(runtime.tasks)
                await events.close()
                await bus.close()
                log.info("gateway stopped", gateway_id=gateway_id)

    app = FastAPI(
        title="Switchboard gateway",
        summary="Client API: WebSocket protocol v1 at /ws (docs/protocol.md) and the chat HTTP API below.",
        lifespan=lifespan,
        # The OpenAPI document only: the interactive pages load Swagger UI and ReDoc from a CDN
        # into the client port's origin, scripts nobody here vouches for.
        docs_url=None,
        redoc_url=None,
    )
    app.state.limits = limits or Limits(settings)
    app.include_router(router)
    install_error_handlers(app)
    add_health_routes(app, lambda: app.state.runtime.ready())
    return GatewayApp(app, WebSocketRoute("/ws", websocket_endpoint))


def _with_security_headers(send: Send) -> Send:
    async def secured(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {name.lower() for name, _ in headers}
            headers += [header for header in SECURITY_HEADERS if header[0] not in present]
            message = {**message, "headers": headers}
        await send(message)

    return secured


def main() -> None:
    settings = Settings()
    # One set of limits for the HTTP protocol (connect rate on accept) and the application.
    limits = Limits(settings)
    run_cli(
        SERVICE,
        lambda: create_app(settings, limits),
        settings,
        port=settings.gateway_port,
        uvicorn_options={
            # The protocol-level cap; frames over max_frame_bytes but under this get the
            # documented `frame_too_large` answer before the close.
            "ws_max_size": settings.max_frame_bytes * 2,
            # Pings find dead peers (a phone that lost signal) within about 40 s.
            "ws_ping_interval": 20.0,
            "ws_ping_timeout": 20.0,
            # No permessage-deflate: chat frames are small, compression costs the gateway CPU on
            # every frame, and a compressed frame can expand far past the frame limit (a
            # "deflate bomb") before that limit is checked.
            "ws_per_message_deflate": False,
            # uvicorn's WebSocket protocol, parsing no further ahead than the application reads
            # and refusing messages cut into many fragments (ws_protocol.py); what it closes a
            # connection for is charged to the address (Limits.violation).
            "ws": paced_websocket_protocol(settings.max_fragments, limits),
            # uvicorn's HTTP/1.1 protocol plus a deadline for each request head (slowloris);
            # pinned, so the deadline holds even where httptools is installed.
            "http": header_deadline_protocol(settings.header_timeout_seconds, limits),
            # X-Forwarded-For is believed only from the configured proxies. uvicorn's own default
            # trusts it from loopback, which would let anything on the host pick its address.
            "proxy_headers": bool(settings.trusted_proxies),
            "forwarded_allow_ips": list(settings.trusted_proxies),
        },
    )
