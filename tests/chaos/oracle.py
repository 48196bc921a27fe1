"""What a chaos run checks once the system has settled: what senders were told against what
recipients got, and the stored state against the event log rebuilt from scratch."""

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from .load import Send, User

__all__ = ["Verdict", "judge", "lost_pairs", "rebuild_differences"]


def lost_pairs(users: list[User], members: dict[str, set[str]]) -> list[tuple[Send, str]]:
    """(send, member) for every acknowledged message a member never received on any session."""
    got: dict[str, set[str]] = {user.id: {r.message_id for r in user.received} for user in users}
    return [
        (send, member)
        for user in users
        for send in user.sends.values()
        if send.message_id is not None
        for member in members[send.chat_id] - {send.sender}
        if send.message_id not in got[member]
    ]


@dataclass
class Verdict:
    acknowledged: int = 0
    unconfirmed: int = 0
    deliveries: int = 0
    lost: int = 0
    stored_twice: int = 0
    reordered: int = 0
    to_non_members: int = 0
    rebuild_differences: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        bad = (self.lost, self.stored_twice, self.reordered, self.to_non_members, self.rebuild_differences)
        return not any(bad)


def judge(users: list[User], members: dict[str, set[str]]) -> Verdict:
    verdict = Verdict()
    sends = [send for user in users for send in user.sends.values()]
    acknowledged = [send for send in sends if send.message_id is not None]
    verdict.acknowledged = len(acknowledged)
    verdict.unconfirmed = len(sends) - len(acknowledged)
    verdict.deliveries = sum(len(members[send.chat_id]) - 1 for send in acknowledged)
    lost = lost_pairs(users, members)
    verdict.lost = len(lost)
    verdict.examples += [
        f"lost: {send.message_id} (seq {send.seq}) for {member}" for send, member in lost[:5]
    ]
    # One tempId answered with two different messages would be a message stored twice.
    doubled = [send for send in sends if len(send.ids) > 1]
    verdict.stored_twice = len(doubled)
    verdict.examples += [f"stored twice: tempId {send.temp_id} -> {sorted(send.ids)}" for send in doubled[:5]]
    for user in users:
        newest: dict[tuple[int, str], int] = {}
        seen: set[tuple[int, str]] = set()
        for received in user.received:
            if received.chat_id not in user.chats:
                verdict.to_non_members += 1
                verdict.examples.append(f"{user.id} got {received.message_id} of {received.chat_id}")
            key = (received.session, received.message_id)
            if key in seen:
                continue  # a redelivered copy on the same session: the client drops it by id
            seen.add(key)
            chat = (received.session, received.chat_id)
            if received.seq < newest.get(chat, 0):
                verdict.reordered += 1
                verdict.examples.append(
                    f"reordered: {user.id} session {received.session} got seq {received.seq}"
                    f" of {received.chat_id} after seq {newest[chat]}"
                )
            newest[chat] = max(newest.get(chat, 0), received.seq)
    return verdict


async def rebuild_differences(database_url: str, sends: list[Send]) -> list[str]:
    """Replay `messages.event_log` from the start and compare with the live tables; also check
    that every stored tempId of this run is stored once."""
    conn = await asyncpg.connect(database_url)
    try:
        events = await conn.fetch("SELECT type, data FROM messages.event_log ORDER BY position")
        members: dict[str, set[str]] = defaultdict(set)
        messages: dict[str, tuple[str, int, str, str]] = {}
        for row in events:
            data: dict[str, Any] = json.loads(row["data"])
            if row["type"] == "chat.created.v1":
                members[data["chat_id"]] |= set(data["members"])
            elif row["type"] == "chat.member.added.v1":
                members[data["chat_id"]].add(data["user_id"])
            elif row["type"] == "chat.member.removed.v1":
                members[data["chat_id"]].discard(data["user_id"])
            elif row["type"] == "chat.message.stored.v1":
                m = data["message"]
                messages[m["id"]] = (m["chat_id"], m["seq"], m["sender_id"], m["content"])
        live_messages = {
            str(r["id"]): (str(r["chat_id"]), r["seq"], r["sender_id"], r["content"])
            for r in await conn.fetch("SELECT id, chat_id, seq, sender_id, content FROM messages.messages")
        }
        live_members: dict[str, set[str]] = defaultdict(set)
        for r in await conn.fetch("SELECT chat_id, user_id FROM messages.chat_members"):
            live_members[str(r["chat_id"])].add(r["user_id"])
        stored = await conn.fetch(
            "SELECT sender_id, temp_id, count(*) AS n FROM messages.messages"
            " GROUP BY sender_id, temp_id HAVING count(*) > 1"
        )
    finally:
        await conn.close()
    differences = [f"message {i} differs from its event" for i in set(messages) ^ set(live_messages)]
    differences += [
        f"message {i}: log {messages[i]} != table {live_messages[i]}"
        for i in set(messages) & set(live_messages)
        if messages[i] != live_messages[i]
    ]
    differences += [
        f"members of {chat}: log {sorted(members[chat])} != table {sorted(live_members[chat])}"
        for chat in set(members) | set(live_members)
        if members[chat] != live_members[chat]
    ]
    differences += [f"tempId {r['temp_id']} of {r['sender_id']} stored {r['n']} times" for r in stored]
    confirmed = {send.message_id for send in sends if send.message_id}
    differences += [f"confirmed message {i} is not stored" for i in confirmed - set(live_messages)]
    return differences
