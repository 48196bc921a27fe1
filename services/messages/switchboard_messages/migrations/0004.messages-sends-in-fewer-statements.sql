-- A batch of sends in two statements besides BEGIN and COMMIT: `lock_for_sends` (lock the chats,
-- then read everything the rules need), and the append of the batch's events, which also writes
-- the messages (the trigger below). Each statement saved is a round trip per batch for both the
-- service and the database, whatever the batch's size.

-- Locks the chats (in id order, so two writers never deadlock), then reads in one query each
-- chat's type, stream version and last seq, whether each sender is a member, a message already
-- stored under each (sender, tempId), and whether each `reply_to` is in its send's chat. The
-- read is a statement of its own inside the function, so under READ COMMITTED it sees what the
-- transactions it waited for committed (a single statement would read from a snapshot taken
-- before the lock's wait). Rows are told apart by `kind`: c(hat), m(ember), s(tored), r(eply).
CREATE FUNCTION messages.lock_for_sends(
    chats uuid[], member_chats uuid[], member_users text[], senders text[], temp_ids text[],
    reply_chats uuid[], reply_ids uuid[]
) RETURNS TABLE (
    kind text, chat_id uuid, type text, sender_id text, temp_id text, version bigint, last_seq bigint,
    id uuid, seq bigint, content text, message_type text, reply_to uuid, created_at timestamptz
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM messages.chats c WHERE c.id = ANY(chats) ORDER BY c.id FOR UPDATE;
    RETURN QUERY
        SELECT 'c', c.id, c.type, NULL::text, NULL::text,
            coalesce((SELECT max(e.stream_version) FROM messages.event_log e WHERE e.stream_id = c.id), 0),
            coalesce((SELECT max(mm.seq) FROM messages.messages mm WHERE mm.chat_id = c.id), 0),
            NULL::uuid, NULL::bigint, NULL::text, NULL::text, NULL::uuid, NULL::timestamptz
        FROM messages.chats c WHERE c.id = ANY(chats)
        UNION ALL
        SELECT 'm', cm.chat_id, NULL, cm.user_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
        FROM messages.chat_members cm
        JOIN unnest(member_chats, member_users) AS asked (chat_id, user_id) USING (chat_id, user_id)
        UNION ALL
        SELECT 's', m.chat_id, NULL, m.sender_id, m.temp_id, NULL, NULL, m.id, m.seq,
            m.content, m.message_type, m.reply_to, m.created_at
        FROM messages.messages m
        JOIN unnest(senders, temp_ids) AS asked (sender_id, temp_id) USING (sender_id, temp_id)
        UNION ALL
        SELECT 'r', m.chat_id, NULL, NULL, NULL, NULL, NULL, m.id, NULL, NULL, NULL, NULL, NULL
        FROM messages.messages m
        JOIN unnest(reply_chats, reply_ids) AS asked (chat_id, id) USING (chat_id, id);
END $$;

-- The messages table is a projection of the event log: every `chat.message.stored.v1` appended
-- writes its message row, in the same statement, set-based. The row is what the event says,
-- so the table can always be rebuilt from the log; a (sender, tempId) or (chat, seq) stored
-- twice fails the append like any other unique violation (only possible with two writers
-- racing, and the batch is then redone).
CREATE FUNCTION messages.project_messages() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO messages.messages
        (id, chat_id, seq, sender_id, temp_id, content, message_type, reply_to, created_at)
    SELECT (m ->> 'id')::uuid, (m ->> 'chat_id')::uuid, (m ->> 'seq')::bigint, m ->> 'sender_id',
        a.data ->> 'temp_id', m ->> 'content', m ->> 'message_type', (m ->> 'reply_to')::uuid,
        (m ->> 'created_at')::timestamptz
    FROM added a, LATERAL (SELECT a.data -> 'message') AS d (m)
    WHERE a.type = 'chat.message.stored.v1'
    ORDER BY a.position;
    RETURN NULL;
END $$;

CREATE TRIGGER messages_from_the_log AFTER INSERT ON messages.event_log
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION messages.project_messages();
