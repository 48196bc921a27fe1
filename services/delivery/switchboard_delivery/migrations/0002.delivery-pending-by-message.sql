-- A redelivered MessageStored asks who has not acknowledged that message yet: without this
-- index that is a scan of every pending delivery.
CREATE INDEX pending_by_message ON delivery.pending (message_id);
