//! The `contacts` and `groups` tables: contacts keyed by customer id, the groups that name
//! them (`contacts.groups`; a trigger creates a group's row when a contact names it first).
//! The inbound message statement upserts contacts too (with its events, in the events' store).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{GroupName, PhoneNumber};

/// A contact as stored.
#[derive(Clone, Debug, PartialEq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct Contact {
    pub id: Uuid,
    /// The phone's digits (WhatsApp's wa_id), or a business-scoped user id.
    pub customer_id: String,
    /// E.164.
    pub phone: Option<String>,
    pub name: Option<String>,
    /// Custom fields (a JSON object).
    pub fields: Value,
    pub groups: Vec<String>,
    pub opted_out: bool,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, customer_id, phone, name, fields, groups, opted_out, created_at, last_seen_at";

/// Which contact a statement is about: by customer id (a phone's digits) or by contact id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContactRef<'a> {
    CustomerId(&'a str),
    Id(Uuid),
}

impl<'a> ContactRef<'a> {
    /// `(customer_id, id)`: exactly one is set.
    fn binds(self) -> (Option<&'a str>, Option<Uuid>) {
        match self {
            ContactRef::CustomerId(c) => (Some(c), None),
            ContactRef::Id(id) => (None, Some(id)),
        }
    }
}

/// A contact to create, or to merge into an existing one (upsert): a given name replaces the
/// stored one, fields are merged, groups added, a given `opted_out` replaces the stored one.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewContact {
    pub phone: PhoneNumber,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub fields: Map<String, Value>,
    #[serde(default)]
    pub groups: Vec<GroupName>,
    #[serde(default)]
    pub opted_out: Option<bool>,
}

impl NewContact {
    pub fn new(phone: PhoneNumber) -> Self {
        NewContact {
            phone,
            name: None,
            fields: Map::new(),
            groups: Vec::new(),
            opted_out: None,
        }
    }
}

/// A change to a contact. A field set to `null` is removed.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactUpdate {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub fields: Map<String, Value>,
    #[serde(default)]
    pub add_groups: Vec<GroupName>,
    #[serde(default)]
    pub remove_groups: Vec<GroupName>,
    #[serde(default)]
    pub opted_out: Option<bool>,
}

/// Which contacts a listing returns. `search` matches name, phone or customer id
/// (case-insensitive substring). `limit` defaults to 100 and is at most 1000.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactFilter {
    #[serde(default)]
    pub group: Option<GroupName>,
    #[serde(default)]
    pub opted_out: Option<bool>,
    #[serde(default)]
    pub search: Option<String>,
    #[serde(default)]
    pub limit: Option<i64>,
    #[serde(default)]
    pub offset: Option<i64>,
}

/// A group with its member counts (opted-out members included in `members`).
#[derive(Clone, Debug, PartialEq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct Group {
    pub name: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub members: i64,
    pub opted_out: i64,
}

/// A member of a group who has a phone, as a dispatch reads it (its filter sees `contact`).
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct GroupMember {
    pub customer_id: String,
    pub phone: Option<String>,
    pub name: Option<String>,
    pub fields: Value,
    pub groups: Vec<String>,
    pub opted_out: bool,
}

/// The `update_contact` step's change: creates the contact or changes it.
#[derive(Clone, Copy, Debug)]
pub struct StepChange<'a> {
    pub customer_id: &'a str,
    /// E.164, for a customer id that is a phone's digits.
    pub phone: Option<&'a str>,
    pub name: Option<&'a str>,
    pub fields: &'a Map<String, Value>,
    pub add_groups: &'a [String],
    pub remove_groups: &'a [String],
    pub opted_out: Option<bool>,
}

/// A contact as the `update_contact` step answers it.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct StepContact {
    pub customer_id: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub fields: Value,
    pub groups: Vec<String>,
    pub opted_out: bool,
}

fn names(groups: &[GroupName]) -> Vec<String> {
    groups.iter().map(|g| g.as_str().to_string()).collect()
}

fn clean_name(name: &Option<String>) -> Option<String> {
    name.as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

/// Keeps the contact an event is about (an inbound call): creates it, fills a missing name,
/// moves `last_seen_at` forward. Runs in the caller's transaction.
pub async fn seen(
    conn: &mut PgConnection,
    phone: &PhoneNumber,
    name: Option<&str>,
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO contacts (id, customer_id, phone, name, last_seen_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (customer_id) DO UPDATE SET
           name = COALESCE(contacts.name, EXCLUDED.name),
           phone = COALESCE(contacts.phone, EXCLUDED.phone),
           last_seen_at = GREATEST(contacts.last_seen_at, EXCLUDED.last_seen_at)",
    )
    .bind(Uuid::now_v7())
    .bind(phone.digits())
    .bind(phone.as_str())
    .bind(name)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Creates or merges many contacts in the caller's transaction (two statements: insert the new
/// ones, then merge into the others). Phones must be distinct. Returns, per input, whether it
/// was created.
pub async fn upsert_many(
    conn: &mut PgConnection,
    contacts: &[NewContact],
) -> sqlx::Result<Vec<bool>> {
    let ids: Vec<Uuid> = contacts.iter().map(|_| Uuid::now_v7()).collect();
    let customer_ids: Vec<&str> = contacts.iter().map(|c| c.phone.digits()).collect();
    let phones: Vec<&str> = contacts.iter().map(|c| c.phone.as_str()).collect();
    let names_: Vec<Option<String>> = contacts.iter().map(|c| clean_name(&c.name)).collect();
    let fields: Vec<Value> = contacts
        .iter()
        .map(|c| Value::Object(c.fields.clone()))
        .collect();
    let groups: Vec<Value> = contacts
        .iter()
        .map(|c| Value::from(names(&c.groups)))
        .collect();
    let opted_out: Vec<Option<bool>> = contacts.iter().map(|c| c.opted_out).collect();
    let created: Vec<String> = sqlx::query_scalar(
        "INSERT INTO contacts (id, customer_id, phone, name, fields, groups, opted_out)
         SELECT id, customer_id, phone, name, fields,
                ARRAY(SELECT g FROM jsonb_array_elements_text(groups) WITH ORDINALITY AS t(g, n)
                      GROUP BY g ORDER BY min(n)),
                COALESCE(opted_out, false)
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::jsonb[], $7::bool[])
              AS r(id, customer_id, phone, name, fields, groups, opted_out)
         ON CONFLICT (customer_id) DO NOTHING
         RETURNING customer_id",
    )
    .bind(&ids)
    .bind(&customer_ids)
    .bind(&phones)
    .bind(&names_)
    .bind(&fields)
    .bind(&groups)
    .bind(&opted_out)
    .fetch_all(&mut *conn)
    .await?;
    if created.len() < contacts.len() {
        sqlx::query(
            "UPDATE contacts c SET
               name = COALESCE(r.name, c.name),
               phone = r.phone,
               fields = c.fields || r.fields,
               groups = ARRAY(SELECT g FROM unnest(c.groups || ARRAY(SELECT jsonb_array_elements_text(r.groups)))
                              WITH ORDINALITY AS t(g, n) GROUP BY g ORDER BY min(n)),
               opted_out = COALESCE(r.opted_out, c.opted_out)
             FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::jsonb[], $6::bool[])
                  AS r(customer_id, phone, name, fields, groups, opted_out)
             WHERE c.customer_id = r.customer_id AND r.customer_id <> ALL($7)",
        )
        .bind(&customer_ids)
        .bind(&phones)
        .bind(&names_)
        .bind(&fields)
        .bind(&groups)
        .bind(&opted_out)
        .bind(&created)
        .execute(&mut *conn)
        .await?;
    }
    let created: std::collections::HashSet<String> = created.into_iter().collect();
    Ok(customer_ids.iter().map(|c| created.contains(*c)).collect())
}

/// Creates a contact; `None` when one with this phone exists.
pub async fn create(pool: &PgPool, contact: &NewContact) -> sqlx::Result<Option<Contact>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO contacts (id, customer_id, phone, name, fields, groups, opted_out)
         VALUES ($1, $2, $3, $4, $5,
                 ARRAY(SELECT g FROM unnest($6::text[]) WITH ORDINALITY AS t(g, n) GROUP BY g ORDER BY min(n)),
                 COALESCE($7, false))
         ON CONFLICT (customer_id) DO NOTHING
         RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(contact.phone.digits())
    .bind(contact.phone.as_str())
    .bind(clean_name(&contact.name))
    .bind(Value::Object(contact.fields.clone()))
    .bind(names(&contact.groups))
    .bind(contact.opted_out)
    .fetch_optional(pool)
    .await
}

pub async fn get(pool: &PgPool, key: ContactRef<'_>) -> sqlx::Result<Option<Contact>> {
    let (customer_id, id) = key.binds();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM contacts WHERE customer_id = $1 OR id = $2"
    )))
    .bind(customer_id)
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// `%`, `_` and `\` in a search are literal.
fn like_pattern(search: &str) -> String {
    let escaped = search
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// Contacts matching `filter` (its limit and offset as given here), oldest first.
pub async fn list(
    pool: &PgPool,
    filter: &ContactFilter,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<Contact>> {
    let search = filter
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(like_pattern);
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM contacts
         WHERE ($1::text IS NULL OR groups @> ARRAY[$1::text])
           AND ($2::bool IS NULL OR opted_out = $2)
           AND ($3::text IS NULL OR name ILIKE $3 OR phone LIKE $3 OR customer_id LIKE $3)
         ORDER BY created_at, customer_id
         LIMIT $4 OFFSET $5"
    )))
    .bind(filter.group.as_ref().map(GroupName::as_str))
    .bind(filter.opted_out)
    .bind(search)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await
}

/// Changes a contact (see [`ContactUpdate`]); `None` when there is none.
pub async fn update(
    pool: &PgPool,
    key: ContactRef<'_>,
    change: &ContactUpdate,
) -> sqlx::Result<Option<Contact>> {
    let (customer_id, id) = key.binds();
    let removed: Vec<&str> = change
        .fields
        .iter()
        .filter(|(_, v)| v.is_null())
        .map(|(k, _)| k.as_str())
        .collect();
    let set: Map<String, Value> = change
        .fields
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE contacts c SET
           name = COALESCE($3, c.name),
           fields = (c.fields || $4) - $5::text[],
           groups = ARRAY(SELECT g FROM unnest(c.groups || $6::text[]) WITH ORDINALITY AS t(g, n)
                          WHERE g <> ALL($7::text[]) GROUP BY g ORDER BY min(n)),
           opted_out = COALESCE($8, c.opted_out)
         WHERE customer_id = $1 OR id = $2
         RETURNING {COLUMNS}"
    )))
    .bind(customer_id)
    .bind(id)
    .bind(clean_name(&change.name))
    .bind(Value::Object(set))
    .bind(&removed)
    .bind(names(&change.add_groups))
    .bind(names(&change.remove_groups))
    .bind(change.opted_out)
    .fetch_optional(pool)
    .await
}

/// Deletes a contact and returns it; `None` when there is none.
pub async fn delete(pool: &PgPool, key: ContactRef<'_>) -> sqlx::Result<Option<Contact>> {
    let (customer_id, id) = key.binds();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "DELETE FROM contacts WHERE customer_id = $1 OR id = $2 RETURNING {COLUMNS}"
    )))
    .bind(customer_id)
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The `update_contact` step's statement: creates the contact or updates it; groups keep their
/// order, new ones are appended, removed ones dropped, none twice.
pub async fn apply_step_change(pool: &PgPool, change: StepChange<'_>) -> sqlx::Result<StepContact> {
    sqlx::query_as(
        "INSERT INTO contacts (id, customer_id, phone, name, fields, groups, opted_out)
         VALUES ($1, $2, $3, $4, $5,
                 ARRAY(SELECT g FROM unnest($6::text[]) WITH ORDINALITY AS t(g, i)
                       WHERE g <> ALL($7::text[]) GROUP BY g ORDER BY min(i)),
                 COALESCE($8, false))
         ON CONFLICT (customer_id) DO UPDATE SET
           name = COALESCE($4, contacts.name),
           phone = COALESCE(contacts.phone, EXCLUDED.phone),
           fields = contacts.fields || $5,
           groups = ARRAY(SELECT g FROM unnest(contacts.groups || $6::text[]) WITH ORDINALITY AS t(g, i)
                          WHERE g <> ALL($7::text[]) GROUP BY g ORDER BY min(i)),
           opted_out = COALESCE($8, contacts.opted_out)
         RETURNING customer_id, name, phone, fields, groups, opted_out",
    )
    .bind(Uuid::now_v7())
    .bind(change.customer_id)
    .bind(change.phone)
    .bind(change.name)
    .bind(Value::Object(change.fields.clone()))
    .bind(change.add_groups)
    .bind(change.remove_groups)
    .bind(change.opted_out)
    .fetch_one(pool)
    .await
}

const GROUP_COLUMNS: &str = "g.name, g.description, g.created_at,
       (SELECT count(*) FROM contacts c WHERE c.groups @> ARRAY[g.name]) AS members,
       (SELECT count(*) FROM contacts c WHERE c.groups @> ARRAY[g.name] AND c.opted_out) AS opted_out";

/// Every group with its member counts, by name.
pub async fn list_groups(pool: &PgPool) -> sqlx::Result<Vec<Group>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {GROUP_COLUMNS} FROM groups g ORDER BY g.name"
    )))
    .fetch_all(pool)
    .await
}

pub async fn get_group(pool: &PgPool, name: &GroupName) -> sqlx::Result<Option<Group>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {GROUP_COLUMNS} FROM groups g WHERE g.name = $1"
    )))
    .bind(name.as_str())
    .fetch_optional(pool)
    .await
}

/// Creates an empty group; false when it exists.
pub async fn create_group(
    pool: &PgPool,
    name: &GroupName,
    description: Option<&str>,
) -> sqlx::Result<bool> {
    let created = sqlx::query(
        "INSERT INTO groups (name, description) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name.as_str())
    .bind(description.map(str::trim).filter(|d| !d.is_empty()))
    .execute(pool)
    .await?
    .rows_affected();
    Ok(created > 0)
}

/// Deletes a group and removes it from its contacts (one transaction). Returns how many
/// contacts were in it, or `None` when there is no such group.
pub async fn delete_group(pool: &PgPool, name: &GroupName) -> sqlx::Result<Option<u64>> {
    let mut tx = pool.begin().await?;
    let exists: Option<String> =
        sqlx::query_scalar("SELECT name FROM groups WHERE name = $1 FOR UPDATE")
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_none() {
        return Ok(None);
    }
    let removed = sqlx::query(
        "UPDATE contacts SET groups = array_remove(groups, $1) WHERE groups @> ARRAY[$1]",
    )
    .bind(name.as_str())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("DELETE FROM groups WHERE name = $1")
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(removed))
}

/// Puts phones in a group (the group is created when it does not exist; a phone that is not a
/// contact yet becomes one). Returns how many were not in it before.
pub async fn add_members(
    pool: &PgPool,
    group: &GroupName,
    phones: &[PhoneNumber],
) -> sqlx::Result<u64> {
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO groups (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
        .bind(group.as_str())
        .execute(&mut *tx)
        .await?;
    let ids: Vec<Uuid> = phones.iter().map(|_| Uuid::now_v7()).collect();
    let customer_ids: Vec<&str> = phones.iter().map(PhoneNumber::digits).collect();
    let e164: Vec<&str> = phones.iter().map(PhoneNumber::as_str).collect();
    let created = sqlx::query(
        "INSERT INTO contacts (id, customer_id, phone, groups)
         SELECT DISTINCT ON (customer_id) id, customer_id, phone, ARRAY[$4]
         FROM unnest($1::uuid[], $2::text[], $3::text[]) AS r(id, customer_id, phone)
         ON CONFLICT (customer_id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&customer_ids)
    .bind(&e164)
    .bind(group.as_str())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let joined = sqlx::query(
        "UPDATE contacts SET groups = array_append(groups, $2)
         WHERE customer_id = ANY($1) AND NOT groups @> ARRAY[$2]",
    )
    .bind(&customer_ids)
    .bind(group.as_str())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(created + joined)
}

/// Takes phones out of a group. Returns how many were in it.
pub async fn remove_members(
    pool: &PgPool,
    group: &GroupName,
    phones: &[PhoneNumber],
) -> sqlx::Result<u64> {
    let customer_ids: Vec<&str> = phones.iter().map(PhoneNumber::digits).collect();
    Ok(sqlx::query(
        "UPDATE contacts SET groups = array_remove(groups, $2)
         WHERE customer_id = ANY($1) AND groups @> ARRAY[$2]",
    )
    .bind(&customer_ids)
    .bind(group.as_str())
    .execute(pool)
    .await?
    .rows_affected())
}

/// Every member of a group, opted-out ones included, oldest first.
pub async fn members(pool: &PgPool, group: &GroupName) -> sqlx::Result<Vec<Contact>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM contacts WHERE groups @> ARRAY[$1::text]
         ORDER BY created_at, customer_id"
    )))
    .bind(group.as_str())
    .fetch_all(pool)
    .await
}

/// The members of a group who have a phone, oldest first, in the caller's transaction.
pub async fn members_with_phone(
    conn: &mut PgConnection,
    group: &str,
) -> sqlx::Result<Vec<GroupMember>> {
    sqlx::query_as(
        "SELECT customer_id, phone, name, fields, groups, opted_out FROM contacts
             WHERE $1 = ANY(groups) AND phone IS NOT NULL ORDER BY created_at, customer_id",
    )
    .bind(group)
    .fetch_all(&mut *conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_treat_wildcards_as_text() {
        assert_eq!(like_pattern("50%_a\\"), "%50\\%\\_a\\\\%");
    }

    #[test]
    fn inputs_deserialise_strictly_through_the_parsers() {
        let c: NewContact = serde_json::from_value(serde_json::json!({
            "phone": "+4915112345678", "groups": ["vip"], "fields": {"plan": "pro"}
        }))
        .unwrap();
        assert_eq!(c.phone.digits(), "4915112345678");
        assert_eq!(names(&c.groups), ["vip"]);
        for bad in [
            serde_json::json!({"phone": "015112345678"}),
            serde_json::json!({"phone": "+4915112345678", "groups": ["a b"]}),
            serde_json::json!({"phone": "+4915112345678", "colour": "red"}),
        ] {
            assert!(serde_json::from_value::<NewContact>(bad).is_err());
        }
    }
}

/// A contact as a run's steps see it (`{{ contact.* }}`).
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct ContactView {
    pub name: Option<String>,
    pub phone: Option<String>,
    pub fields: Value,
    pub groups: Vec<String>,
    pub opted_out: bool,
}

/// The contact of `customer_id`, as steps see it, inside the caller's transaction.
pub async fn view(conn: &mut PgConnection, customer_id: &str) -> sqlx::Result<Option<ContactView>> {
    sqlx::query_as(
        "SELECT name, phone, fields, groups, opted_out FROM contacts WHERE customer_id = $1",
    )
    .bind(customer_id)
    .fetch_optional(conn)
    .await
}
