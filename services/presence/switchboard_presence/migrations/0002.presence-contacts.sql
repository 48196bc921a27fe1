-- Presence's own projection of chat membership, fed by chat.created / chat.member.* events:
-- sharing a chat is what lets one user see another's presence.
CREATE TABLE presence.chat_members (
    chat_id uuid NOT NULL,
    user_id text NOT NULL,
    PRIMARY KEY (chat_id, user_id)
);
-- Contacts are found from the user's side: their chats first, then those chats' members.
CREATE INDEX chat_members_by_user ON presence.chat_members (user_id);

-- Users whose last session closed less than a grace period ago: they are announced offline
-- only if no session opens before the grace ends, so a quick reconnect is not seen at all.
CREATE TABLE presence.pending_offline (
    user_id text PRIMARY KEY,
    last_seen timestamptz NOT NULL
);
CREATE INDEX pending_offline_by_time ON presence.pending_offline (last_seen);
