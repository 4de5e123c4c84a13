-- An event's outbox row need not carry a second copy of the event: with `body` NULL, readers
-- take the body from `events.cloudevent` (the row's `event_id`). Inbound messages, the bulk of
-- the traffic, are stored this way; it saves their body's size in table and WAL writes.
ALTER TABLE outbox ALTER COLUMN body DROP NOT NULL;
