"""Gateway metrics (prometheus-client); labels are closed sets, never user or chat ids."""

from prometheus_client import Counter, Gauge

__all__ = ["FRAMES", "SESSIONS", "VIOLATIONS"]

SESSIONS = Gauge("switchboard_gateway_sessions", "Authenticated sessions held by this gateway")
FRAMES = Counter("switchboard_gateway_frames_total", "Client frames received, by event", ["event"])
VIOLATIONS = Counter(
    "switchboard_gateway_violations_total",
    "Connections closed for breaking the protocol, by error code",
    ["kind"],
)
