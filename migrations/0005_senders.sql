-- Our WhatsApp senders (phone_number_ids) as Herald knows them: their connection status and
-- quality as Meta last reported, and whether their bulk dispatches are paused (a quality drop
-- pauses them; `herald senders resume SENDER` resumes). A sender without a row is connected
-- and not paused.
CREATE TABLE senders (
    id               text PRIMARY KEY,
    status           text NOT NULL DEFAULT 'connected',   -- connected | offline | disconnected | flagged | restricted
    quality_rating   text,                                -- GREEN | YELLOW | RED | UNKNOWN
    dispatch_paused  boolean NOT NULL DEFAULT false,
    paused_reason    text,
    paused_at        timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
