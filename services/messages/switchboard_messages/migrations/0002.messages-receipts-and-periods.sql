-- Membership over time. A member sees the messages after the seq the chat was at when they
-- joined; a removed member keeps read access to the messages up to their removal, nothing after.
ALTER TABLE messages.chat_members ADD COLUMN joined_seq bigint NOT NULL DEFAULT 0;

CREATE TABLE messages.past_members (
    chat_id uuid NOT NULL REFERENCES messages.chats (id),
    user_id text NOT NULL,
    joined_seq bigint NOT NULL,
    left_seq bigint NOT NULL,
    PRIMARY KEY (chat_id, user_id, joined_seq)
);
CREATE INDEX past_members_by_user ON messages.past_members (user_id);

-- Receipt counters on the message itself, so every status a sender is told carries the totals
-- without counting receipts: `recipients` is fixed when the message is stored (members but the
-- sender), the two counts move with the receipts below.
ALTER TABLE messages.messages
    ADD COLUMN recipients integer NOT NULL DEFAULT 0,
    ADD COLUMN delivered_count integer NOT NULL DEFAULT 0,
    ADD COLUMN read_count integer NOT NULL DEFAULT 0;

-- Where each recipient stands with each message; no row means "sent". Statuses only move
-- forward (delivered -> read); `read` implies delivered.
CREATE TABLE messages.receipts (
    message_id uuid NOT NULL REFERENCES messages.messages (id),
    user_id text NOT NULL,
    status text NOT NULL CHECK (status IN ('delivered', 'read')),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, user_id)
);

-- Each member's read marker in a chat, and the version of that member's receipt stream in the
-- event log (receipts are logged per (chat, member) stream, so they never contend with sends
-- for the chat's own stream).
CREATE TABLE messages.read_markers (
    chat_id uuid NOT NULL REFERENCES messages.chats (id),
    user_id text NOT NULL,
    read_seq bigint NOT NULL DEFAULT 0,
    version bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (chat_id, user_id)
);

-- `sync` with `since`: the last seq before a time, per chat.
CREATE INDEX messages_by_chat_time ON messages.messages (chat_id, created_at);
