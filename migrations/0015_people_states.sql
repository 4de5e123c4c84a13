-- The states of the people-side tables, as the code writes them (the enums in src/store/
-- senders.rs, sender_notices.rs, templates.rs and dispatches.rs): any other value is refused
-- when it is written, not found when a row is read back.

ALTER TABLE senders
    ADD CONSTRAINT senders_status_check
        CHECK (status IN ('connected', 'offline', 'disconnected', 'flagged', 'restricted')),
    ADD CONSTRAINT senders_quality_rating_check
        CHECK (quality_rating IN ('GREEN', 'YELLOW', 'RED'));

ALTER TABLE sender_notices
    ADD CONSTRAINT sender_notices_kind_check CHECK (kind IN ('quality_dropped')),
    ADD CONSTRAINT sender_notices_rating_check CHECK (rating IN ('GREEN', 'YELLOW', 'RED'));

-- The catalog is a copy of templates.yaml (written again at every start) and of the Graph
-- API's list (synced again every few minutes): a row whose status or category Herald does not
-- know goes, as the sync now leaves such a template out (it could not be sent either way).
DELETE FROM templates
 WHERE status NOT IN ('APPROVED', 'PENDING', 'REJECTED', 'PAUSED', 'DISABLED', 'FLAGGED',
                      'IN_APPEAL', 'PENDING_DELETION', 'DELETED', 'ARCHIVED', 'LOCKED',
                      'LIMIT_EXCEEDED')
    OR category NOT IN ('MARKETING', 'UTILITY', 'AUTHENTICATION');

-- templates.source has its CHECK since 0008.
ALTER TABLE templates
    ADD CONSTRAINT templates_status_check
        CHECK (status IN ('APPROVED', 'PENDING', 'REJECTED', 'PAUSED', 'DISABLED', 'FLAGGED',
                          'IN_APPEAL', 'PENDING_DELETION', 'DELETED', 'ARCHIVED', 'LOCKED',
                          'LIMIT_EXCEEDED')),
    ADD CONSTRAINT templates_category_check
        CHECK (category IN ('MARKETING', 'UTILITY', 'AUTHENTICATION'));

ALTER TABLE dispatches
    ADD CONSTRAINT dispatches_status_check
        CHECK (status IN ('running', 'paused', 'cancelled', 'completed')),
    ADD CONSTRAINT dispatches_source_check CHECK (source IN ('api', 'cli', 'schedule')),
    ADD CONSTRAINT dispatches_event_type_check CHECK (event_type IN ('manual', 'schedule'));

ALTER TABLE dispatch_contacts
    ADD CONSTRAINT dispatch_contacts_state_check
        CHECK (state IN ('pending', 'started', 'skipped_opted_out', 'failed', 'cancelled'));
