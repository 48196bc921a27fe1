"""`switchboard-admin`: look at the dead-letter queues and send their events back.

    switchboard-admin dlq list <service> [--limit N]
    switchboard-admin dlq replay <service> (--id <envelope id> ... | --all)

`<service>` is a name of SUBSCRIPTIONS or OPTIONAL_SUBSCRIPTIONS (messages, delivery, presence,
webhook); its dead letters are in `<ns>.<service>.dead`, one queue whatever its partitions, and a
replay sends each event back to the queue of its partition. A dead letter is one event (what a
consumer dead-lettered) or, rarely, a whole batch (one that killed its consumer past the queue's
delivery limit): either way, each event is listed and replayed on its own. Settings come from the
same `CHAT_*` variables as the services (`CHAT_AMQP_URL`, `CHAT_NAMESPACE`, `CHAT_PARTITIONS`).

Safe while the services run: no service consumes a dead-letter queue, and this command takes
messages from it only as unacknowledged deliveries. Whatever it does not explicitly acknowledge
goes back to the queue when it is done, or when it dies (the broker requeues a closed channel's
unacknowledged deliveries), so an interrupted run loses nothing. Two runs at once do not see each
other's held messages: a replay that reports an id as not found may simply be racing a list.
"""

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from pamqp.commands import Basic
from pydantic import ValidationError
from pydantic_core import to_json

from switchboard_contracts.batches import BATCH_CONTENT_TYPE, EVENT_CONTENT_TYPE, decode_events, encode_batch
from switchboard_contracts.events import Envelope
from switchboard_contracts.partitions import partition_key, partition_of
from switchboard_contracts.topology import OPTIONAL_SUBSCRIPTIONS, PARTITIONED, SUBSCRIPTIONS, Topology

from .consumer import DeathHeaders
from .settings import CommonSettings

__all__ = ["main"]

SERVICES = (*SUBSCRIPTIONS, *OPTIONAL_SUBSCRIPTIONS)
# A terminal line's worth of the payload: enough to recognise the event, not to dump it.
EXCERPT_CHARS = 80
# How many dead letters `list` shows by default: each is held unacknowledged until the listing
# ends, and a screenful is what a person reads; --limit raises it.
DEFAULT_LIST_LIMIT = 100
# Headers the broker keeps per queue: a republished copy must start its own count, or it would
# arrive looking already redelivered.
DROPPED_ON_REPLAY = frozenset({"x-delivery-count"})


@dataclass(frozen=True)
class DeadLetter:
    """What `list` shows of one dead-lettered event."""

    id: str
    type: str
    time: str
    reason: str
    count: int
    first_queue: str
    excerpt: str
    # The event as it travels, and its partition key (None when it cannot be read).
    body: bytes
    key: str | None

    @classmethod
    def of(cls, message: AbstractIncomingMessage) -> list["DeadLetter"]:
        """The events of one dead-lettered message (one, or a whole batch)."""
        headers = message.headers or {}
        # x-death (the broker's) holds one entry per (queue, reason), the latest first; its count
        # says how many times the message died that way (a replayed poison event adds to it).
        # An event a consumer dead-lettered on its own, out of a batch, carries sb-death-* instead.
        deaths: list[dict[str, Any]] = list(headers.get("x-death") or [])  # type: ignore[arg-type]
        latest = deaths[0] if deaths else {}
        reason = str(latest.get("reason") or headers.get(DeathHeaders.REASON) or "-")
        count = int(latest.get("count", 1 if DeathHeaders.REASON in headers else 0))
        first_queue = str(headers.get("x-first-death-queue") or headers.get(DeathHeaders.QUEUE) or "-")
        try:
            raw_events = decode_events(message.body, message.content_type)
        except ValueError:
            raw_events = []
        if not raw_events:
            # An unreadable message is dead-lettered too; its id is the AMQP message id, if any.
            body = message.body.decode("utf-8", "replace")
            return [
                cls(
                    message.message_id or "-",
                    "(unreadable)",
                    "-",
                    reason,
                    count,
                    first_queue,
                    _cut(body),
                    message.body,
                    None,
                )
            ]
        letters = []
        for raw in raw_events:
            try:
                envelope = Envelope.model_validate(raw)
                key: str | None = partition_key(envelope.type, envelope.data)
            except (ValidationError, KeyError, TypeError):
                letters.append(
                    cls(
                        "-",
                        "(unreadable)",
                        "-",
                        reason,
                        count,
                        first_queue,
                        _cut(str(raw)),
                        to_json(raw),
                        None,
                    )
                )
                continue
            letters.append(
                cls(
                    id=str(envelope.id),
                    type=envelope.type,
                    time=envelope.time.isoformat(),
                    reason=reason,
                    count=count,
                    first_queue=first_queue,
                    excerpt=_cut(json.dumps(envelope.data, ensure_ascii=True)),
                    body=to_json(raw),
                    key=key,
                )
            )
        return letters

    def line(self) -> str:
        return (
            f"{self.id}  {self.type}  {self.time}  {self.reason} x{self.count}"
            f" (first died in {self.first_queue})  {self.excerpt}"
        )


def _cut(text: str) -> str:
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 3] + "..."


async def _held(channel: AbstractChannel, queue_name: str, limit: int) -> list[AbstractIncomingMessage]:
    """Take up to `limit` messages from a dead-letter queue, unacknowledged.

    A passive declare gives the depth now; taking no more than that ends the loop even while
    services keep dead-lettering. All of them stay held until the caller is done: a message
    handed back (nack with requeue) would be the very next one `basic.get` returns, so they
    cannot be looked at one at a time. `basic.get` works here because a dead-letter queue, unlike
    a service queue, has no single active consumer.
    """
    queue = await channel.declare_queue(queue_name, passive=True)
    depth = queue.declaration_result.message_count or 0
    held = []
    for _ in range(min(depth, limit)):
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            break
        held.append(message)
    return held


async def list_dead(settings: CommonSettings, service: str, limit: int) -> int:
    topology = settings.topology()
    queue_name = topology.dead_letter_queue(service)
    connection = await aio_pika.connect(settings.amqp_url, client_properties={"connection_name": "admin"})
    async with connection:
        channel = await connection.channel()
        held = await _held(channel, queue_name, limit)
        shown = 0
        for message in held:
            for letter in DeadLetter.of(message):
                print(letter.line())
                shown += 1
        # Closing the channel would requeue them too; saying so is clearer and immediate.
        if held:
            await held[-1].nack(multiple=True, requeue=True)
        print(f"{shown} dead-lettered event(s) shown from {queue_name}")
    return 0


async def replay(settings: CommonSettings, service: str, ids: Sequence[str], replay_all: bool) -> int:
    """Move the chosen dead-lettered events back to the service's own queue; 1 if an id was not
    found.

    They go to the service's queue through the default exchange, not to `<ns>.events`:
    republishing on the topic exchange would hand the event again to every other service bound
    to its type, which handled it already. For a partitioned service that is the queue of the
    event's partition, computed from the event as its publisher did (`target_queue`), so it
    keeps its place in its chat's order. Each event goes alone, persistent and confirmed by the
    broker before its dead letter is acknowledged; the events of a dead-lettered batch that were
    not chosen go back to the dead-letter queue, also confirmed first. A crash in between leaves
    an event in both queues (handled at least once, like everything else), never in neither.
    """
    topology = settings.topology()
    wanted = set(ids)
    dead_queue = topology.dead_letter_queue(service)
    connection = await aio_pika.connect(settings.amqp_url, client_properties={"connection_name": "admin"})
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        held = await _held(channel, dead_queue, sys.maxsize)
        targets: dict[str, int] = {}
        replayed: set[str] = set()
        for message in held:
            letters = DeadLetter.of(message)
            chosen = [letter for letter in letters if replay_all or letter.id in wanted]
            if not chosen:
                await message.nack(requeue=True)
                continue
            headers = {k: v for k, v in (message.headers or {}).items() if k not in DROPPED_ON_REPLAY}
            for letter in chosen:
                target = target_queue(topology, service, letter)
                if target not in targets:
                    # Passive: a missing service queue is an error here, not something to create
                    # with the wrong arguments.
                    await channel.declare_queue(target, passive=True)
                    targets[target] = 0
                await _publish(channel, target, letter.body, headers, letter.id, EVENT_CONTENT_TYPE)
                targets[target] += 1
                replayed.add(letter.id)
            rest = [letter for letter in letters if letter not in chosen]
            if rest:
                body = encode_batch([letter.body for letter in rest])
                await _publish(channel, dead_queue, body, headers, message.message_id, BATCH_CONTENT_TYPE)
            await message.ack()
        missing = sorted(wanted - replayed)
        for ident in missing:
            print(f"not found in {dead_queue}: {ident}")
        where = ", ".join(f"{name} ({count})" for name, count in sorted(targets.items())) or "none"
        print(f"{len(replayed)} event(s) replayed to {where}")
    return 1 if missing else 0


async def _publish(
    channel: AbstractChannel,
    queue: str,
    body: bytes,
    headers: dict[str, Any],
    message_id: str | None,
    content_type: str,
) -> None:
    copy = aio_pika.Message(
        body,
        headers=headers,
        message_id=message_id,
        content_type=content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )
    # mandatory: if the queue vanished since the declare, the copy comes back instead of being
    # dropped, and its dead letter stays.
    confirm = await channel.default_exchange.publish(copy, queue, mandatory=True)
    if not isinstance(confirm, Basic.Ack):
        raise RuntimeError(f"{queue} did not take {message_id}; nothing more replayed")


def target_queue(topology: Topology, service: str, letter: DeadLetter) -> str:
    """The queue a dead-lettered event of `service` goes back to.

    A service that is not partitioned has one. For a partitioned one, the queue of the event's
    partition under the current partition count, computed from the envelope; an event that
    cannot be read goes back to the queue it first died in (it will die there again).
    """
    if service not in PARTITIONED:
        return topology.service_queue(service)
    if letter.key is None:
        if letter.first_queue in topology.queues(service):
            return letter.first_queue
        return topology.partition_queue(service, 0)
    return topology.partition_queue(service, partition_of(letter.key, topology.partitions))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="switchboard-admin", description="Look at the dead-letter queues and replay their events."
    )
    commands = parser.add_subparsers(dest="area", required=True)
    dlq = commands.add_parser("dlq", help="dead-letter queues").add_subparsers(dest="command", required=True)
    listing = dlq.add_parser("list", help="show dead-lettered events; they stay in the queue")
    listing.add_argument("service", choices=SERVICES)
    listing.add_argument("--limit", type=int, default=DEFAULT_LIST_LIMIT)
    replaying = dlq.add_parser("replay", help="move dead-lettered events back to the service's queue")
    replaying.add_argument("service", choices=SERVICES)
    which = replaying.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", dest="ids", action="append", default=[], metavar="ENVELOPE_ID")
    which.add_argument("--all", action="store_true")
    args = parser.parse_args(argv)
    settings = CommonSettings()
    try:
        if args.command == "list":
            sys.exit(asyncio.run(list_dead(settings, args.service, args.limit)))
        sys.exit(asyncio.run(replay(settings, args.service, args.ids, args.all)))
    except aiormq.exceptions.ChannelNotFoundEntity as exc:
        # A wrong CHAT_NAMESPACE, or "webhook" where no delivery process has CHAT_WEBHOOK_URL set.
        sys.exit(f"switchboard-admin: {exc} (namespace {settings.namespace!r})")


if __name__ == "__main__":
    main()
