-- Groups: named lists of contacts (`contacts.groups` names them). A group named on a contact
-- exists: the trigger below creates its row whenever a contact is written with a group it has
-- not seen, whoever writes (import, CLI, API, the update_contact step). Deleting a group
-- removes it from its contacts first (src/contacts/mod.rs).
CREATE TABLE groups (
    name         text PRIMARY KEY,
    description  text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Members of a group: `groups @> ARRAY[name]`.
CREATE INDEX contacts_groups ON contacts USING GIN (groups);

INSERT INTO groups (name)
SELECT DISTINCT g FROM contacts, unnest(contacts.groups) AS g
ON CONFLICT (name) DO NOTHING;

CREATE FUNCTION contacts_groups_exist() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO groups (name) SELECT DISTINCT g FROM unnest(NEW.groups) AS g
    ON CONFLICT (name) DO NOTHING;
    RETURN NULL;
END
$$;

-- Fires only for a contact that has groups (an inbound message's contact upsert never does).
CREATE TRIGGER contacts_groups_exist
AFTER INSERT OR UPDATE OF groups ON contacts
FOR EACH ROW WHEN (cardinality(NEW.groups) > 0)
EXECUTE FUNCTION contacts_groups_exist();
