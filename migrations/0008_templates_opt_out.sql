-- The template catalog at run time: the WABA's templates (sender-independent), filled from
-- templates.yaml at start (source 'config') and synced from the Graph API's template list
-- (source 'graph', which wins over a config row of the same name and language).
-- `message_template_status_update` webhooks move `status`. send_template checks a send against
-- this table before calling Meta; an empty table means no check (no catalog configured).
CREATE TABLE templates (
    name              text NOT NULL,
    language          text NOT NULL,                    -- en_US (a '-' is stored as '_')
    category          text NOT NULL,                    -- MARKETING | UTILITY | AUTHENTICATION
    body_parameters   integer NOT NULL DEFAULT 0,       -- positional {{1}}..{{n}}
    named_parameters  text[] NOT NULL DEFAULT '{}',     -- named {{name}}, in order
    status            text NOT NULL,                    -- APPROVED | PENDING | REJECTED | PAUSED | DISABLED | ...
    source            text NOT NULL CHECK (source IN ('config', 'graph')),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, language)
);

-- Opt-out is read at send time by recipient phone.
CREATE INDEX contacts_phone ON contacts (phone);
