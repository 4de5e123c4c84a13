//! Contacts and groups: the people Herald writes to and the named lists they belong to.
//! A library over PostgreSQL that the CLI and the HTTP API share; inputs arrive parsed
//! (`PhoneNumber`, `GroupName`), outputs serialise, errors carry a stable `code()`.
//! A contact is keyed by its customer id (the phone's digits, as WhatsApp's wa_id).

pub mod import;

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{InvalidPhoneNumber, PhoneNumber};

/// A group's name: 1 to 64 letters, digits, `-`, `_` or `.`. The only way to get one is
/// [`GroupName::parse`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GroupName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Invalid group name '{input}': use 1 to 64 letters, digits, '-', '_' or '.' (e.g. vip-customers)"
)]
pub struct InvalidGroupName {
    pub input: String,
}

impl GroupName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, InvalidGroupName> {
        let name = raw.trim();
        let ok = !name.is_empty()
            && name.chars().count() <= Self::MAX_LEN
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Ok(Self(name.to_string()))
        } else {
            Err(InvalidGroupName {
                input: raw.to_string(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

crate::string_schema!(GroupName);

impl TryFrom<String> for GroupName {
    type Error = InvalidGroupName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<GroupName> for String {
    fn from(value: GroupName) -> Self {
        value.0
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What went wrong; `code()` is stable (the HTTP API answers it as `error`).
///
/// | code | meaning | HTTP |
/// |---|---|---|
/// | `invalid_phone`, `invalid_group`, `invalid_input`, `invalid_csv` | bad input | 422 (400 for CSV) |
/// | `not_found` | no such contact or group | 404 |
/// | `conflict` | it exists already | 409 |
/// | `unavailable` | PostgreSQL failed | 503 |
#[derive(Debug, thiserror::Error)]
pub enum ContactsError {
    #[error(transparent)]
    InvalidPhone(#[from] InvalidPhoneNumber),
    #[error(transparent)]
    InvalidGroup(#[from] InvalidGroupName),
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    InvalidCsv(String),
    #[error("No contact {0}")]
    ContactNotFound(String),
    #[error("No group '{0}'")]
    GroupNotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
}

impl ContactsError {
    pub fn code(&self) -> &'static str {
        match self {
            ContactsError::InvalidPhone(_) => "invalid_phone",
            ContactsError::InvalidGroup(_) => "invalid_group",
            ContactsError::InvalidInput(_) => "invalid_input",
            ContactsError::InvalidCsv(_) => "invalid_csv",
            ContactsError::ContactNotFound(_) | ContactsError::GroupNotFound(_) => "not_found",
            ContactsError::Conflict(_) => "conflict",
            ContactsError::Database(_) => "unavailable",
        }
    }
}

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

/// How a caller names a contact: `+4915112345678` (phone), a contact id (UUID), or a customer id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContactKey {
    Phone(PhoneNumber),
    Id(Uuid),
    CustomerId(String),
}

impl ContactKey {
    /// `+...` is a phone (E.164, checked); a UUID is a contact id; digits are a customer id
    /// (a phone without `+`); anything else is refused.
    pub fn parse(raw: &str) -> Result<Self, ContactsError> {
        let raw = raw.trim();
        if raw.starts_with('+') {
            return Ok(ContactKey::Phone(PhoneNumber::parse(raw)?));
        }
        if let Ok(id) = Uuid::parse_str(raw) {
            return Ok(ContactKey::Id(id));
        }
        if !raw.is_empty() && raw.len() <= 64 && raw.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(ContactKey::CustomerId(raw.to_string()));
        }
        Err(PhoneNumber::parse(raw).unwrap_err().into())
    }

    /// `(customer_id, id)`: exactly one is set.
    fn binds(&self) -> (Option<&str>, Option<Uuid>) {
        match self {
            ContactKey::Phone(p) => (Some(p.digits()), None),
            ContactKey::CustomerId(c) => (Some(c), None),
            ContactKey::Id(id) => (None, Some(*id)),
        }
    }
}

impl fmt::Display for ContactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContactKey::Phone(p) => write!(f, "{p}"),
            ContactKey::Id(id) => write!(f, "{id}"),
            ContactKey::CustomerId(c) => f.write_str(c),
        }
    }
}

impl From<PhoneNumber> for ContactKey {
    fn from(value: PhoneNumber) -> Self {
        ContactKey::Phone(value)
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

/// Which contacts `list` returns. `search` matches name, phone or customer id (case-insensitive
/// substring). `limit` defaults to 100 and is at most 1000.
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

/// An upsert's outcome.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Upserted {
    pub contact: Contact,
    pub created: bool,
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
pub(crate) async fn upsert_many(
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

/// Creates a contact; `conflict` when one with this phone exists.
pub async fn create(pool: &PgPool, contact: &NewContact) -> Result<Contact, ContactsError> {
    let row: Option<Contact> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
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
    .await?;
    row.ok_or_else(|| {
        ContactsError::Conflict(format!("A contact with phone {} exists", contact.phone))
    })
}

/// Creates the contact or merges into the existing one (see [`NewContact`]).
pub async fn upsert(pool: &PgPool, contact: &NewContact) -> Result<Upserted, ContactsError> {
    let mut tx = pool.begin().await?;
    let created = upsert_many(&mut tx, std::slice::from_ref(contact)).await?[0];
    tx.commit().await?;
    let contact = get(pool, &ContactKey::Phone(contact.phone.clone())).await?;
    Ok(Upserted { contact, created })
}

pub async fn get(pool: &PgPool, key: &ContactKey) -> Result<Contact, ContactsError> {
    let (customer_id, id) = key.binds();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM contacts WHERE customer_id = $1 OR id = $2"
    )))
    .bind(customer_id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| ContactsError::ContactNotFound(key.to_string()))
}

pub async fn get_by_phone(pool: &PgPool, phone: &PhoneNumber) -> Result<Contact, ContactsError> {
    get(pool, &ContactKey::Phone(phone.clone())).await
}

pub async fn get_by_id(pool: &PgPool, id: Uuid) -> Result<Contact, ContactsError> {
    get(pool, &ContactKey::Id(id)).await
}

/// `%`, `_` and `\` in a search are literal.
fn like_pattern(search: &str) -> String {
    let escaped = search
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// Contacts matching `filter`, oldest first.
pub async fn list(pool: &PgPool, filter: &ContactFilter) -> Result<Vec<Contact>, ContactsError> {
    let limit = filter.limit.unwrap_or(100);
    let offset = filter.offset.unwrap_or(0);
    if !(1..=1000).contains(&limit) || offset < 0 {
        return Err(ContactsError::InvalidInput(format!(
            "limit must be 1 to 1000 and offset 0 or more (got limit {limit}, offset {offset})"
        )));
    }
    let search = filter
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(like_pattern);
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
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
    .await?)
}

/// Changes a contact (see [`ContactUpdate`]); `not_found` when there is none.
pub async fn update(
    pool: &PgPool,
    key: &ContactKey,
    change: &ContactUpdate,
) -> Result<Contact, ContactsError> {
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
    .await?
    .ok_or_else(|| ContactsError::ContactNotFound(key.to_string()))
}

/// Sets or clears a contact's opt-out.
pub async fn set_opted_out(
    pool: &PgPool,
    key: &ContactKey,
    opted_out: bool,
) -> Result<Contact, ContactsError> {
    let change = ContactUpdate {
        opted_out: Some(opted_out),
        ..ContactUpdate::default()
    };
    update(pool, key, &change).await
}

/// Deletes a contact and returns it (its runs and messages stay in the history).
pub async fn delete(pool: &PgPool, key: &ContactKey) -> Result<Contact, ContactsError> {
    let (customer_id, id) = key.binds();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "DELETE FROM contacts WHERE customer_id = $1 OR id = $2 RETURNING {COLUMNS}"
    )))
    .bind(customer_id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| ContactsError::ContactNotFound(key.to_string()))
}

const GROUP_COLUMNS: &str = "g.name, g.description, g.created_at,
       (SELECT count(*) FROM contacts c WHERE c.groups @> ARRAY[g.name]) AS members,
       (SELECT count(*) FROM contacts c WHERE c.groups @> ARRAY[g.name] AND c.opted_out) AS opted_out";

/// Every group with its member counts, by name.
pub async fn list_groups(pool: &PgPool) -> Result<Vec<Group>, ContactsError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {GROUP_COLUMNS} FROM groups g ORDER BY g.name"
    )))
    .fetch_all(pool)
    .await?)
}

pub async fn get_group(pool: &PgPool, name: &GroupName) -> Result<Group, ContactsError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {GROUP_COLUMNS} FROM groups g WHERE g.name = $1"
    )))
    .bind(name.as_str())
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| ContactsError::GroupNotFound(name.to_string()))
}

/// Creates an empty group; `conflict` when it exists.
pub async fn create_group(
    pool: &PgPool,
    name: &GroupName,
    description: Option<&str>,
) -> Result<Group, ContactsError> {
    let created = sqlx::query(
        "INSERT INTO groups (name, description) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name.as_str())
    .bind(description.map(str::trim).filter(|d| !d.is_empty()))
    .execute(pool)
    .await?
    .rows_affected();
    if created == 0 {
        return Err(ContactsError::Conflict(format!(
            "The group '{name}' exists"
        )));
    }
    get_group(pool, name).await
}

/// Deletes a group and removes it from its contacts (one transaction). Returns how many
/// contacts were in it.
pub async fn delete_group(pool: &PgPool, name: &GroupName) -> Result<u64, ContactsError> {
    let mut tx = pool.begin().await?;
    let exists: Option<String> =
        sqlx::query_scalar("SELECT name FROM groups WHERE name = $1 FOR UPDATE")
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_none() {
        return Err(ContactsError::GroupNotFound(name.to_string()));
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
    Ok(removed)
}

/// Puts phones in a group (the group is created when it does not exist; a phone that is not a
/// contact yet becomes one). Returns how many were not in it before.
pub async fn add_members(
    pool: &PgPool,
    group: &GroupName,
    phones: &[PhoneNumber],
) -> Result<u64, ContactsError> {
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

/// Takes phones out of a group; `not_found` when the group does not exist. Returns how many
/// were in it.
pub async fn remove_members(
    pool: &PgPool,
    group: &GroupName,
    phones: &[PhoneNumber],
) -> Result<u64, ContactsError> {
    get_group(pool, group).await?;
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

/// Every member of a group, opted-out ones included (the caller decides), oldest first;
/// `not_found` when the group does not exist.
pub async fn members(pool: &PgPool, group: &GroupName) -> Result<Vec<Contact>, ContactsError> {
    let rows: Vec<Contact> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM contacts WHERE groups @> ARRAY[$1::text]
         ORDER BY created_at, customer_id"
    )))
    .bind(group.as_str())
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        get_group(pool, group).await?;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_of_letters_digits_dash_underscore_and_dot_parse() {
        for name in ["vip", "VIP-2026", "leads_berlin", "a.b", "São-Paulo", "x"] {
            assert_eq!(GroupName::parse(name).unwrap().as_str(), name);
        }
        assert_eq!(GroupName::parse("  vip ").unwrap().as_str(), "vip");
        assert!(GroupName::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn bad_group_names_are_refused_with_the_rule() {
        for name in [
            "",
            "  ",
            "with space",
            "a;b",
            "a,b",
            "emoji🙂",
            &"a".repeat(65),
        ] {
            let err = GroupName::parse(name).unwrap_err();
            assert!(err.to_string().contains("1 to 64 letters"), "{name}");
        }
        assert!(serde_json::from_str::<GroupName>("\"no way\"").is_err());
        let ok: GroupName = serde_json::from_str("\"vip\"").unwrap();
        assert_eq!(ok.as_str(), "vip");
    }

    #[test]
    fn a_contact_key_is_a_phone_an_id_or_a_customer_id() {
        assert_eq!(
            ContactKey::parse("+4915112345678").unwrap(),
            ContactKey::Phone(PhoneNumber::parse("+4915112345678").unwrap())
        );
        let id = Uuid::now_v7();
        assert_eq!(
            ContactKey::parse(&id.to_string()).unwrap(),
            ContactKey::Id(id)
        );
        assert_eq!(
            ContactKey::parse("4915112345678").unwrap(),
            ContactKey::CustomerId("4915112345678".into())
        );
        for bad in ["+49 151", "hello", ""] {
            let err = ContactKey::parse(bad).unwrap_err();
            assert_eq!(err.code(), "invalid_phone", "{bad}");
            assert!(err.to_string().contains("+[country code][number]"));
        }
    }

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
