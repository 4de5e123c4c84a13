-- Durable timers: delays, reply timeouts and (later) retries. The scheduler claims due rows with
-- FOR UPDATE SKIP LOCKED, deletes them and stages their job in the outbox in one transaction,
-- so a timer fires once even with several schedulers and across restarts of every component.
CREATE TABLE timers (
    id          bigserial PRIMARY KEY,
    run_id      uuid NOT NULL REFERENCES runs (id),
    step_index  integer NOT NULL,
    kind        text NOT NULL,           -- wake | timeout
    due_at      timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX timers_due_at ON timers (due_at);
CREATE INDEX timers_run ON timers (run_id);

-- Runs waiting for the contact's reply are found by (sender, customer).
CREATE INDEX runs_waiting ON runs (sender_id, customer_id) WHERE status = 'waiting';
-- The inbound message that resumed a waiting run (so its sibling events start no new runs).
ALTER TABLE runs ADD COLUMN resumed_by text;
CREATE INDEX runs_resumed_by ON runs (resumed_by) WHERE resumed_by IS NOT NULL;
