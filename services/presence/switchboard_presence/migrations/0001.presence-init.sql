-- The presence service owns the `presence` schema; no other service reads it.
CREATE SCHEMA IF NOT EXISTS presence;

-- Gateways prove they are alive by heartbeat; the sessions of one that falls silent expire.
CREATE TABLE presence.gateways (
    gateway_id text PRIMARY KEY,
    last_heartbeat timestamptz NOT NULL
);

CREATE TABLE presence.sessions (
    session_id text PRIMARY KEY,
    user_id text NOT NULL,
    gateway_id text NOT NULL,
    device_id text,
    opened_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sessions_by_user ON presence.sessions (user_id);
CREATE INDEX sessions_by_gateway ON presence.sessions (gateway_id);

CREATE TABLE presence.last_seen (
    user_id text PRIMARY KEY,
    last_seen timestamptz NOT NULL
);

CREATE TABLE presence.outbox (
    id bigserial PRIMARY KEY,
    exchange text NOT NULL,
    routing_key text NOT NULL,
    body bytea NOT NULL,
    headers jsonb,
    message_id text,
    persistent boolean NOT NULL
);

CREATE TABLE presence.processed_events (
    event_id uuid PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
