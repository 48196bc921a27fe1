-- One row per (message, recipient) that delivery asked push services to notify about: the
-- primary key is what makes NotificationRequested go out once, across redeliveries and crashes,
-- and `cancelled_at` what makes NotificationCancelled go out once.
CREATE TABLE delivery.notifications (
    message_id uuid NOT NULL,
    user_id text NOT NULL,
    chat_id uuid NOT NULL,
    seq bigint NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    cancelled_at timestamptz,
    PRIMARY KEY (message_id, user_id)
);
-- A read marker cancels the open notifications of one user in one chat up to a seq.
CREATE INDEX notifications_open ON delivery.notifications (user_id, chat_id, seq)
    WHERE cancelled_at IS NULL;

-- How far each member has read each chat: a read processed before the notification for an
-- older message was recorded keeps that notification from being requested at all.
ALTER TABLE delivery.chat_members ADD COLUMN read_seq bigint NOT NULL DEFAULT 0;
