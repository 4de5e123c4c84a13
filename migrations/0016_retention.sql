-- Retention (HERALD_RETENTION): the scheduler deletes history older than the retention in
-- batches of old rows, and each batch must find its rows, and what still refers to them,
-- without reading the table whole. Old runs are found by `runs_created_at` (0001), old events
-- by `events_received_at` (0001), a run's step attempts by their unique key, its timers by
-- `timers_run` (0003) and its messages by `outbound_messages_run` (0001). Missing were:

-- "Does a run still refer to this event?" (the unique key (workflow, event_id) cannot answer
-- it). A run's event never changes, so this index keeps a run's updates HOT (0012).
CREATE INDEX runs_event_id ON runs (event_id);

-- A run's dead letters, deleted with the run.
CREATE INDEX dead_letters_run ON dead_letters (run_id);

-- Old AI messages, quarantined bodies, sent notices and messages that belong to no run.
CREATE INDEX ai_messages_created_at ON ai_messages (created_at);
CREATE INDEX quarantine_received_at ON quarantine (received_at);
CREATE INDEX sender_notices_sent_at ON sender_notices (sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX outbound_messages_unlinked ON outbound_messages (created_at) WHERE run_id IS NULL;
