-- Active dispatch: one run per contact of a list or group, started at a paced rate by the
-- dispatcher (scheduler role). Contacts are claimed with FOR UPDATE SKIP LOCKED on the dispatch
-- row, so several schedulers never start one contact twice and the rate holds across them.
CREATE TABLE dispatches (
    id            uuid PRIMARY KEY,
    workflow      text NOT NULL,
    sender_id     text NOT NULL,
    event_type    text NOT NULL,                 -- manual | schedule: the runs' trigger type
    source        text NOT NULL,                 -- api | cli | schedule
    started_by    text,
    target        jsonb NOT NULL,                -- {"to": [...]} or {"group": "..."}
    vars          jsonb NOT NULL DEFAULT '{}',
    rate          double precision NOT NULL,     -- runs started per second at most
    status        text NOT NULL,                 -- running | paused | cancelled | completed
    budget        double precision NOT NULL DEFAULT 1,  -- starts allowed now (token bucket)
    ticked_at     timestamptz NOT NULL DEFAULT now(),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
CREATE INDEX dispatches_active ON dispatches (created_at) WHERE status = 'running';

CREATE TABLE dispatch_contacts (
    dispatch_id   uuid NOT NULL REFERENCES dispatches (id) ON DELETE CASCADE,
    position      integer NOT NULL,
    raw           text NOT NULL,                 -- the number as given
    phone         text,                          -- E.164, when it parsed
    customer_id   text,
    state         text NOT NULL,                 -- pending | started | skipped_opted_out | failed | cancelled
    error         jsonb,
    event_id      uuid,
    started_at    timestamptz,
    PRIMARY KEY (dispatch_id, position)
);
CREATE INDEX dispatch_contacts_pending ON dispatch_contacts (dispatch_id, position) WHERE state = 'pending';

ALTER TABLE runs ADD COLUMN dispatch_id uuid;
CREATE INDEX runs_dispatch ON runs (dispatch_id, customer_id) WHERE dispatch_id IS NOT NULL;

-- The last tick each schedule fired (or skipped). A scheduler locks the row (SKIP LOCKED), fires
-- the due tick and moves `last_tick` in one transaction: one fire per tick across schedulers.
CREATE TABLE schedule_ticks (
    workflow    text PRIMARY KEY,
    last_tick   timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
