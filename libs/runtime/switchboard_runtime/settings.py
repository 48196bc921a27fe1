"""Configuration every service shares, read from `CHAT_*` environment variables."""

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from switchboard_contracts.partitions import DEFAULT_PARTITIONS
from switchboard_contracts.topology import Topology

__all__ = ["MIN_SECRET_BYTES", "CommonSettings", "long_enough"]

# RFC 7518 section 3.2: an HS256 key must be at least as long as the hash, 256 bits. A shorter
# secret is open to brute force offline from any one token signed with it.
MIN_SECRET_BYTES = 32


def long_enough(variable: str, secret: SecretStr | None) -> SecretStr | None:
    """An HS256 secret of at least MIN_SECRET_BYTES, or a ValueError that names `variable`."""
    if secret is not None and len(secret.get_secret_value().encode()) < MIN_SECRET_BYTES:
        raise ValueError(
            f"{variable} must be at least {MIN_SECRET_BYTES} bytes (an HS256 key as long as its hash,"
            " RFC 7518 section 3.2); generate one with `openssl rand -base64 48`"
        )
    return secret


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHAT_", extra="ignore", frozen=True)

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    database_url: str = "postgresql://switchboard:switchboard@127.0.0.1:5432/switchboard"
    # Prefix of every exchange and queue; a test run or a second deployment on the same broker
    # picks its own so the two never see each other's traffic.
    namespace: str = Field("switchboard", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # How many partitions the events of messages and delivery are split into (docs/scaling.md).
    # Every process of a deployment, gateways included, must use the same value: the publisher
    # computes the partition, and a different count would send a chat's events to another queue.
    # Changing it means draining the queues first.
    partitions: int = Field(DEFAULT_PARTITIONS, ge=1, le=1024)
    host: str = "127.0.0.1"
    log_level: str = "INFO"
    # Enough unacknowledged deliveries to fill a batch and the next one while the first commits;
    # a 200-row commit is where asyncpg's insert rate levels off on this kind of machine. A
    # partitioned service splits it evenly over its partition queues (each on its own channel).
    prefetch: int = Field(400, ge=1, le=10_000)
    batch_size: int = Field(200, ge=1, le=5_000)
    # Database connections for the internal HTTP API (history, sync plans, membership checks),
    # a pool apart from the event pipeline's: a burst of API calls (a thousand devices syncing
    # at once, or a flood of them) then waits for its own connections and never holds up the
    # consumer and the outbox relay. Six: each call is one short query.
    api_pool_size: int = Field(6, ge=1, le=100)
    # Signs and checks the calls gateways make to the services' internal APIs (internal_auth.py).
    # Required to serve; the same in every process of a deployment, never given to clients.
    internal_secret: SecretStr | None = None

    @field_validator("internal_secret")
    @classmethod
    def _internal_secret_long_enough(cls, secret: SecretStr | None) -> SecretStr | None:
        return long_enough("CHAT_INTERNAL_SECRET", secret)

    def topology(self) -> Topology:
        return Topology(self.namespace, self.partitions)
