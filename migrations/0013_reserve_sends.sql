-- Send slots for a whole batch of sends in one call. herald_reserve_send (0007) reserves one
-- send: called once per send of a batch, it wrote the sender's pacing row once per send, and
-- each write left one more row version for the next send of the batch to step over. This
-- function decides each send exactly as herald_reserve_send does, in the same order within a
-- sender, but holds each sender's next free time in a variable while it goes through that
-- sender's sends and writes it once. Senders are taken in order, so two batches lock their
-- rows in the same order. herald_reserve_send stays for processes of the previous version.
CREATE FUNCTION herald_reserve_sends(
    p_senders     text[],
    p_recipients  text[],
    p_intervals   double precision[],
    p_gaps        double precision[],
    p_bursts      integer[],
    p_max_wait    double precision,
    p_recheck     double precision
) RETURNS TABLE (ord bigint, status text, detail text, wait double precision, reserved boolean, probe boolean)
LANGUAGE plpgsql AS $$
DECLARE
    r             record;
    v_now         timestamptz;
    v_sender      text;
    v_status      text;
    v_detail      text;
    v_changed     timestamptz;
    v_sender_next timestamptz;
    v_moved       boolean := false;
    v_pair_next   timestamptz;
    v_slot        timestamptz;
BEGIN
    FOR r IN
        SELECT x.sender, x.recipient, x.step, x.gap, x.burst, x.ord
          FROM unnest(p_senders, p_recipients, p_intervals, p_gaps, p_bursts)
               WITH ORDINALITY AS x(sender, recipient, step, gap, burst, ord)
         ORDER BY x.sender, x.ord
    LOOP
        IF v_sender IS DISTINCT FROM r.sender THEN
            IF v_moved THEN
                UPDATE sender_pacing sp SET next_at = v_sender_next
                 WHERE sp.sender_id = v_sender AND sp.recipient = '';
            END IF;
            v_sender := r.sender;
            v_moved := false;
            SELECT s.status, s.status_detail, s.status_changed_at INTO v_status, v_detail, v_changed
              FROM senders s WHERE s.id = r.sender;
            v_status := coalesce(v_status, 'connected');
            INSERT INTO sender_pacing (sender_id, recipient, next_at) VALUES (r.sender, '', '-infinity')
                ON CONFLICT DO NOTHING;
            SELECT sp.next_at INTO v_sender_next FROM sender_pacing sp
             WHERE sp.sender_id = r.sender AND sp.recipient = '' FOR UPDATE;
        END IF;
        v_now := clock_timestamp();
        ord := r.ord;
        status := v_status;
        detail := v_detail;
        wait := 0;
        reserved := false;
        probe := false;

        IF v_status IN ('offline', 'disconnected', 'restricted')
           AND v_changed IS NOT NULL AND v_changed > v_now - make_interval(secs => p_recheck) THEN
            RETURN NEXT;
            CONTINUE;
        END IF;

        v_slot := greatest(v_now, v_sender_next);
        IF r.gap > 0 THEN
            INSERT INTO sender_pacing (sender_id, recipient, next_at)
                VALUES (r.sender, r.recipient, '-infinity') ON CONFLICT DO NOTHING;
            SELECT sp.next_at INTO v_pair_next FROM sender_pacing sp
             WHERE sp.sender_id = r.sender AND sp.recipient = r.recipient FOR UPDATE;
            v_slot := greatest(v_slot,
                v_pair_next - make_interval(secs => r.gap * (greatest(r.burst, 1) - 1)));
        END IF;
        IF v_slot > v_now + make_interval(secs => p_max_wait) THEN
            wait := extract(epoch FROM v_slot - v_now);
            RETURN NEXT;
            CONTINUE;
        END IF;

        IF v_status IN ('offline', 'disconnected', 'restricted') THEN
            -- One probe per recheck period across every worker: whoever moves the clock sends it.
            UPDATE senders s SET status_changed_at = v_now
             WHERE s.id = r.sender
               AND (s.status_changed_at IS NULL
                    OR s.status_changed_at <= v_now - make_interval(secs => p_recheck));
            IF NOT FOUND THEN
                RETURN NEXT;
                CONTINUE;
            END IF;
            v_changed := v_now;
            probe := true;
        END IF;

        v_sender_next := v_slot + make_interval(secs => r.step);
        v_moved := true;
        IF r.gap > 0 THEN
            UPDATE sender_pacing sp SET next_at = greatest(sp.next_at, v_slot) + make_interval(secs => r.gap)
             WHERE sp.sender_id = r.sender AND sp.recipient = r.recipient;
        END IF;
        wait := extract(epoch FROM v_slot - v_now);
        reserved := true;
        RETURN NEXT;
    END LOOP;
    IF v_moved THEN
        UPDATE sender_pacing sp SET next_at = v_sender_next
         WHERE sp.sender_id = v_sender AND sp.recipient = '';
    END IF;
END
$$;
