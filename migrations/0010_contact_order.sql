-- Per-contact ordering: a run's step waits while an earlier run of the same contact (by the
-- order its event was received) is queued or running. This index finds those runs.
CREATE INDEX runs_active_customer ON runs (customer_id) WHERE status IN ('queued', 'running');

-- Which execution recorded an intent: a worker whose intent statement failed (the connection
-- broke, so it cannot know whether it committed) removes its own intent, and only its own,
-- before the job is tried again: it never called the provider.
ALTER TABLE step_attempts ADD COLUMN owner uuid;
