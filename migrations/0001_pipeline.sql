-- Herald's system of record: events, the outbox, contacts, conversations, runs and their history.

-- Every event Herald accepted, as a CloudEvent. `dedup_key` makes a repeated delivery a no-op
-- (message wamid, status wamid+status, ...); rows are kept at least 7 days (Meta retries that long).
CREATE TABLE events (
    id           uuid PRIMARY KEY,
    type         text NOT NULL,
    sender_id    text NOT NULL,
    subject      text,
    dedup_key    text NOT NULL UNIQUE,
    cloudevent   jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_received_at ON events (received_at);

-- Messages that are stored but not yet confirmed by RabbitMQ. A row is deleted once published;
-- the relay publishes rows left behind by a crash or a broker outage.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    destination  text NOT NULL,          -- 'events' or 'jobs'
    routing_key  text NOT NULL,
    body         jsonb NOT NULL,
    event_id     uuid,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_event_id ON outbox (event_id) WHERE event_id IS NOT NULL;

-- Signed webhook bodies Herald could not parse or route, kept whole.
CREATE TABLE quarantine (
    id            uuid PRIMARY KEY,
    source        text NOT NULL,
    body          bytea NOT NULL,
    reason        text NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    replayed_at   timestamptz,
    replay_result text
);

CREATE TABLE contacts (
    id            uuid PRIMARY KEY,
    customer_id   text NOT NULL UNIQUE,   -- wa_id digits or a business-scoped user id
    phone         text,                   -- E.164
    name          text,
    fields        jsonb NOT NULL DEFAULT '{}',
    groups        text[] NOT NULL DEFAULT '{}',
    opted_out     boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz
);

-- The 24-hour customer-service window per (our sender, customer).
CREATE TABLE conversations (
    sender_id          text NOT NULL,
    customer_id        text NOT NULL,
    id                 uuid NOT NULL,
    started_at         timestamptz NOT NULL,
    last_inbound_at    timestamptz NOT NULL,
    window_expires_at  timestamptz NOT NULL,
    PRIMARY KEY (sender_id, customer_id)
);

CREATE TABLE runs (
    id           uuid PRIMARY KEY,
    workflow     text NOT NULL,
    event_id     uuid NOT NULL REFERENCES events (id),
    customer_id  text,
    sender_id    text,
    status       text NOT NULL,            -- queued | running | completed | failed
    step_index   integer NOT NULL DEFAULT 0,  -- the next step to run
    context      jsonb NOT NULL,           -- {trigger, contact, steps}
    error        jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    UNIQUE (workflow, event_id)
);
CREATE INDEX runs_created_at ON runs (created_at DESC);

-- Every attempt of every step: input, output, error and times.
CREATE TABLE step_attempts (
    id           bigserial PRIMARY KEY,
    run_id       uuid NOT NULL REFERENCES runs (id),
    step_index   integer NOT NULL,
    step_id      text NOT NULL,
    step_type    text NOT NULL,
    attempt      integer NOT NULL,
    state        text NOT NULL,            -- started | succeeded | failed | interrupted
    input        jsonb,
    output       jsonb,
    error        jsonb,
    lease_until  timestamptz NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    UNIQUE (run_id, step_index, attempt)
);

-- What Herald sent (or the sandbox recorded), joined to status webhooks by wamid.
CREATE TABLE outbound_messages (
    id           uuid PRIMARY KEY,
    run_id       uuid REFERENCES runs (id),
    step_index   integer,
    sender_id    text NOT NULL,
    recipient    text NOT NULL,
    kind         text NOT NULL,            -- template | text
    provider     text NOT NULL,            -- sandbox | whatsapp
    request      jsonb NOT NULL,
    wamid        text UNIQUE,
    status       text NOT NULL,            -- accepted | sent | delivered | read | failed
    status_at    timestamptz,
    error        jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbound_messages_run ON outbound_messages (run_id);
