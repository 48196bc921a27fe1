-- The messages service owns the `messages` schema; no other service reads it.
CREATE SCHEMA IF NOT EXISTS messages;

-- The append-only event log: every change to a chat is an event here, in order. The tables
-- below are projections of it, written in the same transaction.
CREATE TABLE messages.event_log (
    position bigserial PRIMARY KEY,
    event_id uuid NOT NULL UNIQUE,
    stream_id uuid NOT NULL,
    stream_version bigint NOT NULL,
    type text NOT NULL,
    data jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream_id, stream_version)
);

CREATE FUNCTION messages.event_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'messages.event_log is append-only';
END $$;

CREATE TRIGGER event_log_append_only BEFORE UPDATE OR DELETE ON messages.event_log
    FOR EACH ROW EXECUTE FUNCTION messages.event_log_is_append_only();

CREATE TABLE messages.chats (
    id uuid PRIMARY KEY,
    type text NOT NULL CHECK (type IN ('direct', 'group')),
    title text,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL,
    -- Updated in every transaction that appends to the chat's stream: the row lock it takes
    -- serialises writers per chat, which is what makes `seq` gapless.
    version bigint NOT NULL DEFAULT 0,
    last_seq bigint NOT NULL DEFAULT 0
);

CREATE TABLE messages.chat_members (
    chat_id uuid NOT NULL REFERENCES messages.chats (id),
    user_id text NOT NULL,
    joined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chat_id, user_id)
);
CREATE INDEX chat_members_by_user ON messages.chat_members (user_id);

CREATE TABLE messages.messages (
    id uuid PRIMARY KEY,
    chat_id uuid NOT NULL REFERENCES messages.chats (id),
    seq bigint NOT NULL,
    sender_id text NOT NULL,
    temp_id text NOT NULL,
    content text NOT NULL,
    message_type text NOT NULL,
    reply_to uuid,
    created_at timestamptz NOT NULL,
    UNIQUE (chat_id, seq),
    -- A client retrying a send (same tempId) gets the first message back, never a second one.
    UNIQUE (sender_id, temp_id)
);

CREATE TABLE messages.outbox (
    id bigserial PRIMARY KEY,
    exchange text NOT NULL,
    routing_key text NOT NULL,
    body bytea NOT NULL,
    headers jsonb,
    message_id text,
    persistent boolean NOT NULL
);

CREATE TABLE messages.processed_events (
    event_id uuid PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
