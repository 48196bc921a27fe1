-- The batch-native pipeline (docs/architecture.md section 3).
--
-- Every handler is idempotent by what it writes (a session is added or removed once): no event
-- id is recorded per event any more.
DROP TABLE presence.processed_events;

-- One outbox row per unit of work: its events' routing keys and encoded envelopes. Events of
-- the old form (one row each) are carried over; frames for clients are no longer kept here.
ALTER TABLE presence.outbox RENAME TO outbox_v1;
CREATE TABLE presence.outbox (
    id bigserial PRIMARY KEY,
    keys text[] NOT NULL,
    bodies bytea[] NOT NULL
);
INSERT INTO presence.outbox (keys, bodies)
    SELECT ARRAY[routing_key], ARRAY[body] FROM presence.outbox_v1 WHERE exchange = 'events' ORDER BY id;
DROP TABLE presence.outbox_v1;
