"""Internal HTTP API for the gateway: a user's presence, for the users who may see it.

Not for clients. The gateway authenticates the caller and calls with a token signed for that
user (`switchboard_runtime.internal_auth`); deploy this port where only gateways reach it.
"""

from fastapi import APIRouter

from switchboard_contracts.errors import ErrorCode
from switchboard_contracts.models import PresenceOut, UserId
from switchboard_runtime.http_errors import ApiError
from switchboard_runtime.internal_api import Caller, Pool

from .domain import presence_of
from .store import Store

__all__ = ["router"]

router = APIRouter(prefix="/internal")


@router.get("/users/{user_id}/presence")
async def user_presence(user_id: UserId, caller: Caller, pool: Pool) -> PresenceOut:
    async with pool.acquire() as conn:
        store = Store(conn)
        # The same rule as the `presence` frames: only someone sharing a chat may know.
        if caller != user_id and not await store.share_a_chat(caller, user_id):
            raise ApiError(ErrorCode.NOT_A_CONTACT, f"you share no chat with {user_id}")
        online, last_seen = await store.presence(user_id)
    return presence_of(user_id, online=online, last_seen=last_seen)
