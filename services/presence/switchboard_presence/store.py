"""SQL of the presence service."""

from collections.abc import Iterable
from datetime import datetime
from uuid import UUID

from switchboard_runtime.db import Conn

__all__ = [
    "add_members",
    "add_session",
    "beat",
    "cancel_grace",
    "end_graces",
    "expire_gateways",
    "online_contacts",
    "presence",
    "remove_member",
    "remove_session",
    "session_count",
    "share_a_chat",
    "start_grace",
    "went_offline",
]


async def beat(conn: Conn, gateway_id: str, now: datetime) -> bool:
    """Record a sign of life; True if presence did not know this gateway (new, or expired)."""
    new: bool = await conn.fetchval(
        "INSERT INTO gateways (gateway_id, last_heartbeat) VALUES ($1, $2)"
        " ON CONFLICT (gateway_id) DO UPDATE"
        " SET last_heartbeat = GREATEST(gateways.last_heartbeat, EXCLUDED.last_heartbeat)"
        # xmax = 0 on a freshly inserted row.
        " RETURNING xmax = 0",
        gateway_id,
        now,
    )
    return new


async def add_session(
    conn: Conn, session_id: str, user_id: str, gateway_id: str, device_id: str | None
) -> bool:
    status: str = await conn.execute(
        "INSERT INTO sessions (session_id, user_id, gateway_id, device_id) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT DO NOTHING",
        session_id,
        user_id,
        gateway_id,
        device_id,
    )
    return status.endswith(" 1")


async def remove_session(conn: Conn, session_id: str) -> bool:
    status: str = await conn.execute("DELETE FROM sessions WHERE session_id = $1", session_id)
    return status.endswith(" 1")


async def session_count(conn: Conn, user_id: str) -> int:
    count: int = await conn.fetchval("SELECT count(*) FROM sessions WHERE user_id = $1", user_id)
    return count


async def went_offline(conn: Conn, user_id: str, now: datetime) -> None:
    await conn.execute(
        "INSERT INTO last_seen (user_id, last_seen) VALUES ($1, $2)"
        " ON CONFLICT (user_id) DO UPDATE SET last_seen = EXCLUDED.last_seen",
        user_id,
        now,
    )


async def expire_gateways(conn: Conn, silent_since: datetime) -> list[str]:
    """Drop gateways silent since then with their sessions; returns the users left with none."""
    rows = await conn.fetch(
        "WITH gone AS (DELETE FROM gateways WHERE last_heartbeat < $1 RETURNING gateway_id),"
        " dropped AS (DELETE FROM sessions WHERE gateway_id IN (SELECT gateway_id FROM gone)"
        " RETURNING user_id)"
        " SELECT DISTINCT user_id FROM dropped",
        silent_since,
    )
    users = [row[0] for row in rows]
    if not users:
        return []
    still = await conn.fetch("SELECT DISTINCT user_id FROM sessions WHERE user_id = ANY($1::text[])", users)
    online = {row[0] for row in still}
    return [user for user in users if user not in online]


async def start_grace(conn: Conn, user_id: str, last_seen: datetime) -> None:
    """The user's last session closed: offline once the grace period from `last_seen` ends."""
    await conn.execute(
        "INSERT INTO pending_offline (user_id, last_seen) VALUES ($1, $2)"
        " ON CONFLICT (user_id) DO UPDATE SET last_seen = EXCLUDED.last_seen",
        user_id,
        last_seen,
    )


async def cancel_grace(conn: Conn, user_id: str) -> bool:
    """A session opened: True if the user was within a grace period (never seen offline)."""
    status: str = await conn.execute("DELETE FROM pending_offline WHERE user_id = $1", user_id)
    return status.endswith(" 1")


async def end_graces(conn: Conn, closed_before: datetime) -> list[tuple[str, datetime]]:
    """Take the users whose grace began before then and who still have no session."""
    rows = await conn.fetch(
        "DELETE FROM pending_offline p WHERE p.last_seen < $1"
        " AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.user_id = p.user_id)"
        " RETURNING p.user_id, p.last_seen",
        closed_before,
    )
    return [(row[0], row[1]) for row in rows]


async def online_contacts(conn: Conn, user_id: str) -> list[str]:
    """Users other than this one who share a chat with them and have a session now."""
    rows = await conn.fetch(
        "SELECT DISTINCT theirs.user_id FROM chat_members mine"
        " JOIN chat_members theirs ON theirs.chat_id = mine.chat_id AND theirs.user_id <> mine.user_id"
        " JOIN sessions s ON s.user_id = theirs.user_id"
        " WHERE mine.user_id = $1",
        user_id,
    )
    return [row[0] for row in rows]


async def share_a_chat(conn: Conn, user_id: str, other_id: str) -> bool:
    shared: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM chat_members mine"
        " JOIN chat_members theirs ON theirs.chat_id = mine.chat_id"
        " WHERE mine.user_id = $1 AND theirs.user_id = $2)",
        user_id,
        other_id,
    )
    return shared


async def presence(conn: Conn, user_id: str) -> tuple[bool, datetime | None]:
    """Whether the user counts as online (a session, or within the grace), and when last seen."""
    row = await conn.fetchrow(
        "SELECT EXISTS (SELECT 1 FROM sessions WHERE user_id = $1)"
        " OR EXISTS (SELECT 1 FROM pending_offline WHERE user_id = $1) AS online,"
        " (SELECT last_seen FROM last_seen WHERE user_id = $1) AS last_seen",
        user_id,
    )
    if row is None:  # never: a SELECT without FROM returns exactly one row
        return False, None
    return row["online"], row["last_seen"]


async def add_members(conn: Conn, chat_id: UUID, users: Iterable[str]) -> None:
    await conn.executemany(
        "INSERT INTO chat_members (chat_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        [(chat_id, user) for user in users],
    )


async def remove_member(conn: Conn, chat_id: UUID, user_id: str) -> None:
    await conn.execute("DELETE FROM chat_members WHERE chat_id = $1 AND user_id = $2", chat_id, user_id)
