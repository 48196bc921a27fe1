-- The partition of each pending delivery's chat (CHAT_PARTITIONS), so that a catch-up pages each
-- partition's part of a user's backlog on its own cursor (docs/scaling.md, "Catch-up pages"):
-- positions of one partition are committed in order, those of two partitions handled by two
-- instances are not. Rows from before are settled and may share partition 0.
ALTER TABLE delivery.pending ADD COLUMN part smallint NOT NULL DEFAULT 0;
-- Like 0002, a plain CREATE INDEX: it blocks writes to delivery.pending while it builds, so on a
-- large table run it while delivery is stopped.
CREATE INDEX pending_in_partition_order ON delivery.pending (user_id, part, position);
DROP INDEX delivery.pending_in_order;
