-- The delivery service owns the `delivery` schema; no other service reads it.
CREATE SCHEMA IF NOT EXISTS delivery;

-- Projection of chat membership, fed by chat.created / chat.member.* events.
CREATE TABLE delivery.chat_members (
    chat_id uuid NOT NULL,
    user_id text NOT NULL,
    PRIMARY KEY (chat_id, user_id)
);

-- One copy of each message's client frame, so a backlog can be resent without asking anyone.
CREATE TABLE delivery.messages (
    position bigserial UNIQUE,
    message_id uuid PRIMARY KEY,
    chat_id uuid NOT NULL,
    seq bigint NOT NULL,
    frame bytea NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now()
);

-- What each recipient has not acknowledged yet. `position` copies delivery.messages.position
-- so a flush reads one index in order without a sort.
CREATE TABLE delivery.pending (
    user_id text NOT NULL,
    message_id uuid NOT NULL REFERENCES delivery.messages (message_id),
    position bigint NOT NULL,
    PRIMARY KEY (user_id, message_id)
);
CREATE INDEX pending_in_order ON delivery.pending (user_id, position);

CREATE TABLE delivery.outbox (
    id bigserial PRIMARY KEY,
    exchange text NOT NULL,
    routing_key text NOT NULL,
    body bytea NOT NULL,
    headers jsonb,
    message_id text,
    persistent boolean NOT NULL
);

CREATE TABLE delivery.processed_events (
    event_id uuid PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
