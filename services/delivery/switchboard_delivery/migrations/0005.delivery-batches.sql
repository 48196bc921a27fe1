-- The batch-native pipeline (docs/architecture.md section 3).
--
-- Delivery owns the receipts: who acknowledged each message (its pending rows are gone) and how
-- far each member read. A message's sender and recipient count give the totals; a member's
-- joined_seq keeps one added later out of the older messages' counts.
ALTER TABLE delivery.messages
    ADD COLUMN sender_id text NOT NULL DEFAULT '',
    ADD COLUMN recipients integer NOT NULL DEFAULT 0;
-- A read marker's range of messages, and the newest message per sender in it.
CREATE INDEX messages_by_chat_seq ON delivery.messages (chat_id, seq);
ALTER TABLE delivery.chat_members ADD COLUMN joined_seq bigint NOT NULL DEFAULT 0;

-- Who presence counts online (a session on some gateway, or within the grace period after the
-- last one closed): `message_delivery_info` counts them delivered, the others get a notification.
CREATE TABLE delivery.online (
    user_id text PRIMARY KEY,
    since timestamptz NOT NULL DEFAULT now()
);

-- Every handler is idempotent by what it writes: no event id is recorded per event any more.
DROP TABLE delivery.processed_events;

-- One outbox row per unit of work: its events' routing keys and encoded envelopes. Events of
-- the old form (one row each) are carried over; frames for clients are no longer kept here.
ALTER TABLE delivery.outbox RENAME TO outbox_v1;
CREATE TABLE delivery.outbox (
    id bigserial PRIMARY KEY,
    keys text[] NOT NULL,
    bodies bytea[] NOT NULL
);
INSERT INTO delivery.outbox (keys, bodies)
    SELECT ARRAY[routing_key], ARRAY[body] FROM delivery.outbox_v1 WHERE exchange = 'events' ORDER BY id;
DROP TABLE delivery.outbox_v1;
