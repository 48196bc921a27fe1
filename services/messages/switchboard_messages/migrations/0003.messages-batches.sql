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

-- One outbox row per unit of work: its events' routing keys and encoded envelopes. Events of
-- the old form (one row each) are carried over; frames for clients are no longer kept here.
ALTER TABLE messages.outbox RENAME TO outbox_v1;
CREATE TABLE messages.outbox (
    id bigserial PRIMARY KEY,
    keys text[] NOT NULL,
    bodies bytea[] NOT NULL
);
INSERT INTO messages.outbox (keys, bodies)
    SELECT ARRAY[routing_key], ARRAY[body] FROM messages.outbox_v1 WHERE exchange = 'events' ORDER BY id;
DROP TABLE messages.outbox_v1;
