from pydantic import Field, HttpUrl

from switchboard_runtime.settings import CommonSettings

__all__ = ["Settings"]


class Settings(CommonSettings):
    delivery_port: int = Field(8002, ge=1, le=65535)
    # One page of a queue flush. A gateway buffers 10,000 frames or 16 MiB per session; a page
    # stays well inside both, so a backlog of any size arrives page by page (the gateway asks
    # for the next when its buffer has room) and one flush bounds what delivery holds in memory.
    flush_page_messages: int = Field(1000, ge=1, le=10_000)
    flush_page_bytes: int = Field(4 * 1024 * 1024, ge=64 * 1024)
    # How many characters of a message's text a NotificationRequested carries as `preview`.
    # 0 (the default) sends none: a push provider (APNs, FCM) is a third party, and message
    # text should only leave for it where the deployment decided so. 1,000 is far more than
    # any lock screen shows.
    notification_preview_chars: int = Field(0, ge=0, le=1000)
    # When set, this process also POSTs every notification event to this URL (webhook.py).
    webhook_url: HttpUrl | None = None
    # One POST; a receiver that needs longer is treated as failing and retried.
    webhook_timeout_seconds: float = Field(10.0, gt=0)
    # How long one event is retried before it is dead-lettered. Events are sent in order, so
    # everything behind it waits meanwhile; two minutes covers a receiver being redeployed,
    # and a notification later than that has lost most of its use.
    webhook_retry_seconds: float = Field(120.0, gt=0)
