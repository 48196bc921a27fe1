"""Internal HTTP API of delivery, for the gateway: the receipts of a sender's messages.

Delivery knows who received and read what (it holds what each recipient has not acknowledged,
and how far each has read), so a history page's receipts come from here. Not for clients: the
gateway authenticates the caller and calls with a token signed for that user
(`switchboard_runtime.internal_auth`).
"""

from fastapi import APIRouter

from switchboard_contracts.models import MessageReceipts, Receipt, ReceiptsRequest
from switchboard_runtime.internal_api import Caller, Pool

from .store import Store

__all__ = ["router"]

router = APIRouter(prefix="/internal")


@router.post("/receipts")
async def receipts(body: ReceiptsRequest, caller: Caller, pool: Pool) -> list[MessageReceipts]:
    """Of these messages, those the caller sent: totals, and every recipient still a member with
    their status (`sent`, `delivered` or `read`)."""
    async with pool.acquire() as conn:
        found = await Store(conn).receipts(caller, body.message_ids)
    return [
        MessageReceipts(
            message_id=r.message_id,
            delivered_count=r.delivered,
            read_count=r.read,
            total=r.total,
            receipts=[
                Receipt.model_validate({"user_id": user, "status": status}) for user, status in r.receipts
            ],
        )
        for r in found
    ]
