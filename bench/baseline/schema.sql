-- The classic room-based design's tables, as the Socket.IO guide's models imply: chats, their
-- members, messages, and one status row per recipient of each message (the guide's
-- MessageStatus). The server runs this at start; every statement may run again.

CREATE TABLE IF NOT EXISTS chats (
    id uuid PRIMARY KEY,
    type text NOT NULL CHECK (type IN ('direct', 'group')),
    title text,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- The last seq handed out in this chat. Bumping it locks the row until the sending
    -- transaction commits, which serialises senders per chat and keeps seq gapless.
    last_seq bigint NOT NULL DEFAULT 0
);

-- The primary key leads with chat_id: it is the guide's recommended
-- `idx_chat_members_chat` index for "the members of this chat".
CREATE TABLE IF NOT EXISTS chat_members (
    chat_id uuid NOT NULL REFERENCES chats (id),
    user_id text NOT NULL,
    PRIMARY KEY (chat_id, user_id)
);

CREATE TABLE IF NOT EXISTS messages (
    id uuid PRIMARY KEY,
    chat_id uuid NOT NULL REFERENCES chats (id),
    seq bigint NOT NULL,
    sender_id text NOT NULL,
    content text NOT NULL,
    message_type text NOT NULL,
    reply_to uuid,
    created_at timestamptz NOT NULL,
    UNIQUE (chat_id, seq)
);

-- 'sent' until a device of the recipient acknowledges the message (message_received), then
-- 'delivered'. The rows still 'sent' are the user's offline queue, flushed on connect. The key
-- leads with user_id because both readers ask "this user's rows": the flush, and the
-- acknowledgement of a list of message ids.
CREATE TABLE IF NOT EXISTS message_status (
    user_id text NOT NULL,
    message_id uuid NOT NULL REFERENCES messages (id),
    status text NOT NULL CHECK (status IN ('sent', 'delivered')),
    PRIMARY KEY (user_id, message_id)
);
