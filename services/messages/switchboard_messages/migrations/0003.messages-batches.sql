-- The batch-native pipeline (docs/architecture.md section 3).
--
-- Receipts moved to delivery, which knows who has not acknowledged what: the receipts table and
-- the counters on each message go. Read markers stay here (mark_read is checked against the
-- membership this service owns), and so do the read events in the log.
DROP TABLE messages.receipts;
ALTER TABLE messages.messages
    DROP COLUMN recipients,
    DROP COLUMN delivered_count,
    DROP COLUMN read_count;

-- A chat's last seq and its stream version are read from the indexes on messages (chat_id, seq)
-- and event_log (stream_id, stream_version) under the chat's row lock, instead of being written
-- to the chat row by every batch of sends.
ALTER TABLE messages.chats
    DROP COLUMN version,
    DROP COLUMN last_seq;

-- Every handler is idempotent by what it writes (a (sender, tempId) is stored once, a marker
-- only moves forward): no event id is recorded per event any more.
DROP TABLE messages.processed_events;

-- The event log is the outbox (libs/runtime eventlog.py): each event keeps the routing key it
-- was emitted with, and one cursor says how far the log has been published. Events still in the
-- old outbox (a system upgraded without draining first) are published again from the log: the
-- cursor starts before the first of them.
ALTER TABLE messages.event_log ADD COLUMN routing_key text;
CREATE TABLE messages.relay_cursor (position bigint NOT NULL);
INSERT INTO messages.relay_cursor (position) SELECT coalesce(
    (SELECT min(e.position) - 1 FROM messages.event_log e
        JOIN messages.outbox o ON o.message_id = e.event_id::text),
    (SELECT max(position) FROM messages.event_log),
    0);
DROP TABLE messages.outbox;

-- Appends a unit of work's events. The advisory lock, taken before the positions are drawn and
-- held until commit, makes transactions append and commit in one order: the committed log is
-- always a prefix of its positions, which is what lets the relay keep a cursor. A writer that is
-- not the relay's leader wakes it.
CREATE FUNCTION messages.append_events(
    ids uuid[], streams uuid[], versions bigint[], types text[], datas jsonb[], times timestamptz[],
    keys text[], wake boolean
) RETURNS TABLE (appended bigint) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('messages.event_log'));
    RETURN QUERY
        WITH added AS (
            INSERT INTO messages.event_log
                (event_id, stream_id, stream_version, type, data, recorded_at, routing_key)
            SELECT e.event_id, e.stream_id, e.stream_version, e.type, e.data, e.recorded_at, e.routing_key
            FROM unnest(ids, streams, versions, types, datas, times, keys) WITH ORDINALITY AS e
                (event_id, stream_id, stream_version, type, data, recorded_at, routing_key, n)
            ORDER BY e.n
            RETURNING messages.event_log.position
        )
        SELECT added.position FROM added ORDER BY added.position;
    IF wake THEN
        PERFORM pg_notify('switchboard_event_log', '');
    END IF;
END $$;
