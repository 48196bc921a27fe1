-- A run of acknowledgements in one statement, whatever its size: the deliveries dropped, the
-- totals of every message that moved (for the one `message_status` its sender gets), and the
-- open notifications of the first acknowledgements cancelled. Each step is a statement of its
-- own inside the function, so under READ COMMITTED each sees what the one before it did, and a
-- notification request that the delete waited for is seen by the cancel. Rows are told apart
-- by `kind`: a(cknowledged), s(tatus), c(ancelled).
CREATE FUNCTION delivery.acknowledge(users text[], message_ids uuid[]) RETURNS TABLE (
    kind text, message_id uuid, user_id text, chat_id uuid, seq bigint, sender_id text,
    delivered bigint, read bigint, total integer, sender_is_member boolean
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    acked_users text[];
    acked_messages uuid[];
BEGIN
    WITH gone AS (
        DELETE FROM delivery.pending p USING unnest(users, message_ids) AS a (user_id, message_id)
        WHERE p.user_id = a.user_id AND p.message_id = a.message_id
        RETURNING p.message_id, p.user_id
    )
    SELECT array_agg(gone.user_id), array_agg(gone.message_id) INTO acked_users, acked_messages FROM gone;
    IF acked_users IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT 'a', a.message_id, a.user_id, NULL::uuid, NULL::bigint, NULL::text, NULL::bigint,
            NULL::bigint, NULL::integer, NULL::boolean
        FROM unnest(acked_users, acked_messages) AS a (user_id, message_id);
    RETURN QUERY
        SELECT 's', m.message_id, NULL::text, m.chat_id, m.seq, m.sender_id,
            m.recipients - (SELECT count(*) FROM delivery.pending p WHERE p.message_id = m.message_id),
            (SELECT count(*) FROM delivery.chat_members cm WHERE cm.chat_id = m.chat_id
                AND cm.user_id <> m.sender_id AND cm.joined_seq < m.seq AND cm.read_seq >= m.seq),
            m.recipients,
            EXISTS (SELECT 1 FROM delivery.chat_members cm WHERE cm.chat_id = m.chat_id
                AND cm.user_id = m.sender_id)
        FROM delivery.messages m WHERE m.message_id = ANY(acked_messages);
    RETURN QUERY
        WITH cancelled AS (
            UPDATE delivery.notifications n SET cancelled_at = now()
            FROM unnest(acked_users, acked_messages) AS a (user_id, message_id)
            WHERE n.user_id = a.user_id AND n.message_id = a.message_id AND n.cancelled_at IS NULL
            RETURNING n.message_id, n.user_id, n.chat_id
        )
        SELECT 'c', c.message_id, c.user_id, c.chat_id, NULL::bigint, NULL::text, NULL::bigint,
            NULL::bigint, NULL::integer, NULL::boolean
        FROM cancelled c;
END $$;
