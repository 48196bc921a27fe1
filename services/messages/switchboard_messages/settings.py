from pydantic import Field

from switchboard_runtime.settings import CommonSettings

__all__ = ["Settings"]


class Settings(CommonSettings):
    # The internal HTTP API the gateway calls for chats and history; not for clients.
    messages_port: int = Field(8001, ge=1, le=65535)
    # A device's `sync` replays at most this many messages per chat; past it the chat is
    # "compacted" (the newest this many are sent, the client pages older ones from history), so a
    # phone back after months gets its recent conversations at once, not a whole archive.
    sync_compaction_limit: int = Field(500, ge=1, le=10_000)
