from pydantic import Field

from switchboard_runtime.settings import CommonSettings

__all__ = ["Settings"]


class Settings(CommonSettings):
    delivery_port: int = Field(8002, ge=1, le=65535)
    # One page of a queue flush. A gateway buffers 10,000 frames or 16 MiB per session; a page
    # stays well inside both, so a backlog of any size arrives page by page (the gateway asks
    # for the next when its buffer has room) and one flush bounds what delivery holds in memory.
    flush_page_messages: int = Field(1000, ge=1, le=10_000)
    flush_page_bytes: int = Field(4 * 1024 * 1024, ge=64 * 1024)
