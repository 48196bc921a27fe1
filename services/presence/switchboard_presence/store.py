"""SQL of the presence service."""

from datetime import datetime

from switchboard_runtime.db import Conn

__all__ = ["add_session", "beat", "expire_gateways", "remove_session", "session_count", "went_offline"]


async def beat(conn: Conn, gateway_id: str, now: datetime) -> None:
    await conn.execute(
        "INSERT INTO gateways (gateway_id, last_heartbeat) VALUES ($1, $2)"
        " ON CONFLICT (gateway_id) DO UPDATE"
        " SET last_heartbeat = GREATEST(gateways.last_heartbeat, EXCLUDED.last_heartbeat)",
        gateway_id,
        now,
    )


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
