-- Steps that failed for good (no retry left, or an error no retry can fix): what failed, why,
-- the input that was tried and when. `herald dead-letters retry ID` continues the run there.
CREATE TABLE dead_letters (
    id           uuid PRIMARY KEY,
    run_id       uuid NOT NULL REFERENCES runs (id),
    workflow     text NOT NULL,
    step_index   integer NOT NULL,
    step_id      text NOT NULL,
    step_type    text NOT NULL,
    customer_id  text,
    error        jsonb NOT NULL,
    input        jsonb,
    attempts     integer NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    retried_at   timestamptz
);
CREATE INDEX dead_letters_created_at ON dead_letters (created_at DESC);
