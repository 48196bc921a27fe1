"""SQL of the presence service: gateways and their heartbeats, sessions, last-seen times, users
pending offline, and the membership projection that says who may see whose presence.

`Store` is bound to one connection. Session events come in batches (a reconnect storm is
thousands at once): each kind of change is one statement for the whole batch.
"""

from collections.abc import Iterable, Sequence
from datetime import datetime
from uuid import UUID

from switchboard_runtime.db import Conn

__all__ = ["OpenedSession", "Store"]

OpenedSession = tuple[str, str, str, str | None]


class Store:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    async def beat(self, gateway_ids: Sequence[str], now: datetime) -> set[str]:
        """Record a sign of life of each; returns those presence did not know (new, or expired)."""
        rows = await self.conn.fetch(
            "INSERT INTO gateways (gateway_id, last_heartbeat)"
            " SELECT DISTINCT unnest($1::text[]), $2::timestamptz"
            " ON CONFLICT (gateway_id) DO UPDATE"
            " SET last_heartbeat = GREATEST(gateways.last_heartbeat, EXCLUDED.last_heartbeat)"
            # xmax = 0 on a freshly inserted row.
            " RETURNING gateway_id, xmax = 0",
            list(gateway_ids),
            now,
        )
        return {row[0] for row in rows if row[1]}

    async def online_among(self, users: Iterable[str]) -> set[str]:
        """Those of these users with a session now."""
        rows = await self.conn.fetch(
            "SELECT DISTINCT user_id FROM sessions WHERE user_id = ANY($1::text[])", list(set(users))
        )
        return {row[0] for row in rows}

    async def add_sessions(self, sessions: Sequence[OpenedSession]) -> set[str]:
        """Record these (session, user, gateway, device); returns the session ids that were new
        (a gateway re-announces its sessions after a broker outage)."""
        rows = await self.conn.fetch(
            "INSERT INTO sessions (session_id, user_id, gateway_id, device_id)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])"
            " ON CONFLICT DO NOTHING RETURNING session_id",
            [s[0] for s in sessions],
            [s[1] for s in sessions],
            [s[2] for s in sessions],
            [s[3] for s in sessions],
        )
        return {row[0] for row in rows}

    async def remove_sessions(self, session_ids: Sequence[str]) -> list[str]:
        """End these sessions; returns the users of those that existed."""
        rows = await self.conn.fetch(
            "DELETE FROM sessions WHERE session_id = ANY($1::text[]) RETURNING user_id", list(session_ids)
        )
        return [row[0] for row in rows]

    async def cancel_graces(self, users: Iterable[str]) -> set[str]:
        """Sessions opened: returns the users that were within a grace period (never seen offline)."""
        rows = await self.conn.fetch(
            "DELETE FROM pending_offline WHERE user_id = ANY($1::text[]) RETURNING user_id", list(set(users))
        )
        return {row[0] for row in rows}

    async def start_graces(self, last_seen: dict[str, datetime]) -> None:
        """These users' last sessions closed: offline once the grace period from then ends."""
        await self.conn.execute(
            "INSERT INTO pending_offline (user_id, last_seen)"
            " SELECT * FROM unnest($1::text[], $2::timestamptz[])"
            " ON CONFLICT (user_id) DO UPDATE SET last_seen = EXCLUDED.last_seen",
            list(last_seen),
            list(last_seen.values()),
        )

    async def went_offline(self, last_seen: dict[str, datetime]) -> None:
        await self.conn.execute(
            "INSERT INTO last_seen (user_id, last_seen) SELECT * FROM unnest($1::text[], $2::timestamptz[])"
            " ON CONFLICT (user_id) DO UPDATE SET last_seen = EXCLUDED.last_seen",
            list(last_seen),
            list(last_seen.values()),
        )

    async def expire_gateways(self, silent_since: datetime) -> list[str]:
        """Drop gateways silent since then with their sessions; returns the users left with none."""
        rows = await self.conn.fetch(
            "WITH gone AS (DELETE FROM gateways WHERE last_heartbeat < $1 RETURNING gateway_id),"
            " dropped AS (DELETE FROM sessions WHERE gateway_id IN (SELECT gateway_id FROM gone)"
            " RETURNING user_id)"
            " SELECT DISTINCT user_id FROM dropped",
            silent_since,
        )
        users = [row[0] for row in rows]
        if not users:
            return []
        online = await self.online_among(users)
        return [user for user in users if user not in online]

    async def end_graces(self, closed_before: datetime) -> list[tuple[str, datetime]]:
        """Take the users whose grace began before then and who still have no session."""
        rows = await self.conn.fetch(
            "DELETE FROM pending_offline p WHERE p.last_seen < $1"
            " AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.user_id = p.user_id)"
            " RETURNING p.user_id, p.last_seen",
            closed_before,
        )
        return [(row[0], row[1]) for row in rows]

    async def online_contacts(self, users: Sequence[str]) -> dict[str, list[str]]:
        """For each of these users, the others who share a chat with them and have a session now."""
        rows = await self.conn.fetch(
            "SELECT mine.user_id, array_agg(DISTINCT theirs.user_id) FROM chat_members mine"
            " JOIN chat_members theirs ON theirs.chat_id = mine.chat_id AND theirs.user_id <> mine.user_id"
            " WHERE mine.user_id = ANY($1::text[])"
            "  AND EXISTS (SELECT 1 FROM sessions s WHERE s.user_id = theirs.user_id)"
            " GROUP BY mine.user_id",
            list(users),
        )
        return {row[0]: list(row[1]) for row in rows}

    async def share_a_chat(self, user_id: str, other_id: str) -> bool:
        shared: bool = await self.conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM chat_members mine"
            " JOIN chat_members theirs ON theirs.chat_id = mine.chat_id"
            " WHERE mine.user_id = $1 AND theirs.user_id = $2)",
            user_id,
            other_id,
        )
        return shared

    async def presence(self, user_id: str) -> tuple[bool, datetime | None]:
        """Whether the user counts as online (a session, or within the grace), and when last seen."""
        row = await self.conn.fetchrow(
            "SELECT EXISTS (SELECT 1 FROM sessions WHERE user_id = $1)"
            " OR EXISTS (SELECT 1 FROM pending_offline WHERE user_id = $1) AS online,"
            " (SELECT last_seen FROM last_seen WHERE user_id = $1) AS last_seen",
            user_id,
        )
        if row is None:  # never: a SELECT without FROM returns exactly one row
            return False, None
        return row["online"], row["last_seen"]

    async def add_members(self, chat_id: UUID, users: Iterable[str]) -> None:
        await self.conn.execute(
            "INSERT INTO chat_members (chat_id, user_id) SELECT $1, unnest($2::text[])"
            " ON CONFLICT DO NOTHING",
            chat_id,
            list(users),
        )

    async def remove_member(self, chat_id: UUID, user_id: str) -> None:
        await self.conn.execute(
            "DELETE FROM chat_members WHERE chat_id = $1 AND user_id = $2", chat_id, user_id
        )
