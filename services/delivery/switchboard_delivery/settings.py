from pydantic import Field

from switchboard_runtime.settings import CommonSettings

__all__ = ["Settings"]


class Settings(CommonSettings):
    delivery_port: int = Field(8002, ge=1, le=65535)
