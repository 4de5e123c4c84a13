-- Senders: throughput limits shared by every worker process, per-recipient pacing, the sender's
-- connection status as the Graph API last showed it, and quality notices for the team.

ALTER TABLE senders
    ADD COLUMN display_phone_number text,          -- digits only; quality webhooks name a sender by it
    ADD COLUMN status_detail        text,          -- why the status is what it is (a Graph error, an operator)
    ADD COLUMN status_changed_at    timestamptz,
    ADD COLUMN quality_event        text,          -- the last phone_number_quality_update event (FLAGGED, ...)
    ADD COLUMN quality_at           timestamptz;

CREATE INDEX senders_display_phone_number ON senders (display_phone_number);

-- Virtual scheduling (GCRA): `next_at` is the theoretical arrival time of the next message of
-- a sender (recipient = '') or of a (sender, recipient) pair. One row lock per send.
CREATE TABLE sender_pacing (
    sender_id  text NOT NULL,
    recipient  text NOT NULL,
    next_at    timestamptz NOT NULL,
    PRIMARY KEY (sender_id, recipient)
);

-- Team notifications about senders, written in the same statement as the webhook's event (so a
-- repeated delivery writes none) and sent by the scheduler (`FOR UPDATE SKIP LOCKED`: once,
-- even with several schedulers).
CREATE TABLE sender_notices (
    id           bigserial PRIMARY KEY,
    sender_id    text NOT NULL,
    event_id     uuid,
    kind         text NOT NULL,                    -- quality_dropped
    rating       text,
    reason       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    attempts     integer NOT NULL DEFAULT 0,
    next_try_at  timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz
);

CREATE INDEX sender_notices_pending ON sender_notices (next_try_at) WHERE sent_at IS NULL;

-- Reserves the time of one send, in one round trip: fails fast for an offline sender (except
-- one probe per `p_recheck` seconds), then takes the next slot of the sender (one every
-- `p_interval` seconds) and of the (sender, recipient) pair (`p_burst` back to back, then one
-- every `p_gap` seconds). A slot farther than `p_max_wait` seconds away is not reserved: the
-- caller defers the send and asks again later.
CREATE FUNCTION herald_reserve_send(
    p_sender     text,
    p_recipient  text,
    p_interval   double precision,
    p_gap        double precision,
    p_burst      integer,
    p_max_wait   double precision,
    p_recheck    double precision
) RETURNS TABLE (status text, detail text, wait double precision, reserved boolean, probe boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_now         timestamptz := clock_timestamp();
    v_status      text;
    v_detail      text;
    v_changed     timestamptz;
    v_probe       boolean := false;
    v_sender_next timestamptz;
    v_pair_next   timestamptz;
    v_slot        timestamptz;
BEGIN
    SELECT s.status, s.status_detail, s.status_changed_at INTO v_status, v_detail, v_changed
      FROM senders s WHERE s.id = p_sender;
    v_status := coalesce(v_status, 'connected');
    IF v_status IN ('offline', 'disconnected', 'restricted')
       AND v_changed IS NOT NULL AND v_changed > v_now - make_interval(secs => p_recheck) THEN
        RETURN QUERY SELECT v_status, v_detail, 0::double precision, false, false;
        RETURN;
    END IF;

    INSERT INTO sender_pacing (sender_id, recipient, next_at) VALUES (p_sender, '', '-infinity')
        ON CONFLICT DO NOTHING;
    SELECT sp.next_at INTO v_sender_next FROM sender_pacing sp
     WHERE sp.sender_id = p_sender AND sp.recipient = '' FOR UPDATE;
    v_slot := greatest(v_now, v_sender_next);
    IF p_gap > 0 THEN
        INSERT INTO sender_pacing (sender_id, recipient, next_at)
            VALUES (p_sender, p_recipient, '-infinity') ON CONFLICT DO NOTHING;
        SELECT sp.next_at INTO v_pair_next FROM sender_pacing sp
         WHERE sp.sender_id = p_sender AND sp.recipient = p_recipient FOR UPDATE;
        v_slot := greatest(v_slot,
            v_pair_next - make_interval(secs => p_gap * (greatest(p_burst, 1) - 1)));
    END IF;
    IF v_slot > v_now + make_interval(secs => p_max_wait) THEN
        RETURN QUERY SELECT v_status, v_detail,
            extract(epoch FROM v_slot - v_now)::double precision, false, false;
        RETURN;
    END IF;

    IF v_status IN ('offline', 'disconnected', 'restricted') THEN
        -- One probe per recheck period across every worker: whoever moves the clock sends it.
        UPDATE senders s SET status_changed_at = v_now
         WHERE s.id = p_sender
           AND (s.status_changed_at IS NULL
                OR s.status_changed_at <= v_now - make_interval(secs => p_recheck));
        IF NOT FOUND THEN
            RETURN QUERY SELECT v_status, v_detail, 0::double precision, false, false;
            RETURN;
        END IF;
        v_probe := true;
    END IF;

    UPDATE sender_pacing sp SET next_at = v_slot + make_interval(secs => p_interval)
     WHERE sp.sender_id = p_sender AND sp.recipient = '';
    IF p_gap > 0 THEN
        UPDATE sender_pacing sp SET next_at = greatest(sp.next_at, v_slot) + make_interval(secs => p_gap)
         WHERE sp.sender_id = p_sender AND sp.recipient = p_recipient;
    END IF;
    RETURN QUERY SELECT v_status, v_detail,
        extract(epoch FROM v_slot - v_now)::double precision, true, v_probe;
END
$$;
