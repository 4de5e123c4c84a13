-- The states of the pipeline's tables, as the code writes them (the enums in src/store/runs.rs,
-- attempts.rs, messages.rs and outbox.rs): any other value is refused when it is written.

ALTER TABLE runs
    ADD CONSTRAINT runs_status_check
        CHECK (status IN ('queued', 'running', 'sleeping', 'waiting', 'retrying',
                          'completed', 'failed', 'cancelled'));

ALTER TABLE step_attempts
    ADD CONSTRAINT step_attempts_state_check
        CHECK (state IN ('started', 'succeeded', 'failed', 'interrupted'));

ALTER TABLE outbound_messages
    ADD CONSTRAINT outbound_messages_status_check
        CHECK (status IN ('accepted', 'sent', 'delivered', 'read', 'played', 'failed'));

ALTER TABLE timers
    ADD CONSTRAINT timers_kind_check CHECK (kind IN ('wake', 'timeout', 'retry', 'turn'));

ALTER TABLE outbox
    ADD CONSTRAINT outbox_destination_check CHECK (destination IN ('events', 'jobs'));
