"""Names on the broker, shared by every service so that nobody spells them twice.

Two exchanges, both prefixed with a namespace so that test runs and deployments sharing a
broker never see each other's traffic:

* `<ns>.events` (topic): domain events in batches (`batches.py`), routing key =
  `<event type>.<partition>` (`partitions.py`): every event of one batch has the same type and
  partition. A partitioned service (PARTITIONED) owns one durable quorum queue per partition,
  `<ns>.<service>.<partition>`, bound with `<type>.<partition>` for the types it handles; any
  other service owns one queue bound with `<type>.*`, every partition.
* `<ns>.route` (direct): frames on their way to clients. Every gateway process owns one exclusive
  queue bound with `gw.<gateway_id>` (answers to one of its sessions) and `user.<user_id>` for each
  user it currently holds. Frames for many users travel as one message whose `BCC` header lists
  their keys (`routing.py`): the broker puts one copy in each gateway queue bound to any of them,
  and each gateway hands each frame to its own sessions of those users. So every device gets every
  message, which one shared per-user queue (round-robin between consumers) could not give.
"""

from dataclasses import dataclass

from .events import (
    ChatCreated,
    ChatMemberAdded,
    ChatMemberRemoved,
    ChatReadMarked,
    DeliveryAcked,
    FlushRequested,
    GatewayHeartbeat,
    MessageSent,
    MessagesRead,
    MessageStored,
    NotificationCancelled,
    NotificationRequested,
    SessionClosed,
    SessionOpened,
    SessionRegistered,
    UserWentOffline,
    UserWentOnline,
)
from .partitions import DEFAULT_PARTITIONS

__all__ = ["OPTIONAL_SUBSCRIPTIONS", "PARTITIONED", "SUBSCRIPTIONS", "Headers", "Kind", "Topology"]

# Which event types each service's queue receives. Every service declares every queue in this
# table when it connects, so an event published before its consumer ever started (a fresh
# broker, services starting in any order) waits in the queue instead of being dropped.
SUBSCRIPTIONS: dict[str, tuple[str, ...]] = {
    "messages": (MessageSent.TYPE, ChatReadMarked.TYPE),
    "delivery": (
        ChatCreated.TYPE,
        ChatMemberAdded.TYPE,
        ChatMemberRemoved.TYPE,
        MessageStored.TYPE,
        DeliveryAcked.TYPE,
        SessionRegistered.TYPE,
        FlushRequested.TYPE,
        MessagesRead.TYPE,
        # Who counts as online: `message_delivery_info` and the push notifications follow it.
        UserWentOnline.TYPE,
        UserWentOffline.TYPE,
    ),
    "presence": (
        SessionOpened.TYPE,
        SessionClosed.TYPE,
        GatewayHeartbeat.TYPE,
        # Presence keeps its own membership projection: who shares a chat with whom decides who
        # may see whose presence.
        ChatCreated.TYPE,
        ChatMemberAdded.TYPE,
        ChatMemberRemoved.TYPE,
    ),
}

# Services that run as several active instances side by side, each partition of their events
# handled by one instance at a time (docs/scaling.md). The others take all partitions in one
# queue, with one active consumer and any further instance on standby.
PARTITIONED: frozenset[str] = frozenset({"messages", "delivery"})

# Queues declared only by the component that consumes them, when it is configured: events
# published while no such consumer is deployed are not kept for it.
OPTIONAL_SUBSCRIPTIONS: dict[str, tuple[str, ...]] = {
    "webhook": (NotificationRequested.TYPE, NotificationCancelled.TYPE),
}


class Kind:
    """Values of the `sb-kind` header: what a message on `<ns>.route` holds."""

    # Frames for users and sessions, packed (routing.py); `BCC` names their routing keys.
    BATCH = "batch"
    # A whole page of a queue flush, its frames packed in one body (pages.py), with the headers
    # that end the page.
    FLUSH_PAGE = "flush-page"
    # Pages of several sessions of one gateway, each with what its headers would say (pages.py).
    FLUSH_PAGES = "flush-pages"
    # Published to a chat's room key (`typing`): for the sessions of this gateway that joined it.
    ROOM = "room"
    # To a gateway from presence: announce every session again (presence had expired them).
    RESYNC = "resync"


class Headers:
    """AMQP headers on `<ns>.route` messages."""

    KIND = "sb-kind"
    # On "flush-page": the session it is for.
    SESSION = "sb-session"
    # On "room" frames from `typing`: the chat, the typer, and whether they are typing, so each
    # gateway can expire a typing state whose refreshes stopped (the typer's gateway may be gone).
    CHAT = "sb-chat"
    USER = "sb-user"
    TYPING = "sb-typing"
    # On "flush-page": how many messages the page has, and, when more are queued, the position
    # to continue after.
    COUNT = "sb-count"
    MORE = "sb-more"
    # On "flush-page" with "sb-more": where each partition's part of the backlog continues, an
    # opaque token the gateway sends back with its next page request (delivery's domain.py).
    CURSOR = "sb-cursor"
    # On "flush-page": which catch-up and which page (the position it started after) it belongs
    # to, so a late or repeated page is recognised and ignored.
    FLUSH = "sb-flush"
    AFTER = "sb-after"


@dataclass(frozen=True)
class Topology:
    namespace: str = "switchboard"
    # CHAT_PARTITIONS: every process of a deployment must use the same count.
    partitions: int = DEFAULT_PARTITIONS

    @property
    def events_exchange(self) -> str:
        return f"{self.namespace}.events"

    @property
    def route_exchange(self) -> str:
        return f"{self.namespace}.route"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.dead-letter"

    def service_queue(self, service: str) -> str:
        """The one queue of a service that is not partitioned (presence, webhook)."""
        return f"{self.namespace}.{service}"

    def partition_queue(self, service: str, partition: int) -> str:
        return f"{self.namespace}.{service}.{partition}"

    def queues(self, service: str) -> list[str]:
        """Every queue a service consumes: one per partition, or its one queue."""
        if service in PARTITIONED:
            return [self.partition_queue(service, p) for p in range(self.partitions)]
        return [self.service_queue(service)]

    def binding_keys(self, service: str, queue_index: int, event_types: tuple[str, ...]) -> list[str]:
        """The routing keys the `queue_index`-th queue of `queues(service)` is bound with."""
        suffix = str(queue_index) if service in PARTITIONED else "*"
        return [f"{event_type}.{suffix}" for event_type in event_types]

    def instances_exchange(self, service: str) -> str:
        """Fanout on which a partitioned service's instances announce themselves to each other."""
        return f"{self.namespace}.{service}.instances"

    def dead_letter_queue(self, service: str) -> str:
        return f"{self.namespace}.{service}.dead"

    def gateway_queue(self, gateway_id: str) -> str:
        return f"{self.namespace}.gateway.{gateway_id}"

    @staticmethod
    def user_key(user_id: str) -> str:
        return f"user.{user_id}"

    # Every gateway queue is bound with it: a batch for many users goes to all of them (routing.py).
    # No gateway key can be it (those are `gw.<id>`, ids `gw-<hex>`), nor a user or room key.
    ALL_GATEWAYS_KEY = "gw.all"

    @staticmethod
    def gateway_key(gateway_id: str) -> str:
        return f"gw.{gateway_id}"

    @staticmethod
    def room_key(chat_id: object) -> str:
        return f"chat.{chat_id}"
