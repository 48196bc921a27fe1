from pydantic import Field

from switchboard_runtime.settings import CommonSettings

__all__ = ["Settings"]


class Settings(CommonSettings):
    # The internal HTTP API the gateway calls for chats and history; not for clients.
    messages_port: int = Field(8001, ge=1, le=65535)
