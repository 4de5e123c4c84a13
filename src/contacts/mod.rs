//! Contacts and groups: the people Herald writes to and the named lists they belong to.
//! A library over PostgreSQL that the CLI and the HTTP API share; inputs arrive parsed
//! (`PhoneNumber`, `GroupName`), outputs serialise, errors carry a stable `code()`.
//! A contact is keyed by its customer id (the phone's digits, as WhatsApp's wa_id).

pub mod import;

use std::fmt;

use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

pub use crate::domain::{GroupName, InvalidGroupName};
use crate::domain::{InvalidPhoneNumber, PhoneNumber};
use crate::store::contacts::{self as store, ContactRef};
pub use crate::store::contacts::{Contact, ContactFilter, ContactUpdate, Group, NewContact};
pub use crate::store::erasure::{ErasedRows, Erasure};

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

    /// The contact's row, as the store names it.
    fn row(&self) -> ContactRef<'_> {
        match self {
            ContactKey::Phone(p) => ContactRef::CustomerId(p.digits()),
            ContactKey::CustomerId(c) => ContactRef::CustomerId(c),
            ContactKey::Id(id) => ContactRef::Id(*id),
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

/// An upsert's outcome.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Upserted {
    pub contact: Contact,
    pub created: bool,
}

/// Creates a contact; `conflict` when one with this phone exists.
pub async fn create(pool: &PgPool, contact: &NewContact) -> Result<Contact, ContactsError> {
    store::create(pool, contact).await?.ok_or_else(|| {
        ContactsError::Conflict(format!("A contact with phone {} exists", contact.phone))
    })
}

/// Creates the contact or merges into the existing one (see [`NewContact`]).
pub async fn upsert(pool: &PgPool, contact: &NewContact) -> Result<Upserted, ContactsError> {
    let mut tx = pool.begin().await?;
    let created = store::upsert_many(&mut tx, std::slice::from_ref(contact)).await?[0];
    tx.commit().await?;
    let contact = get(pool, &ContactKey::Phone(contact.phone.clone())).await?;
    Ok(Upserted { contact, created })
}

pub async fn get(pool: &PgPool, key: &ContactKey) -> Result<Contact, ContactsError> {
    store::get(pool, key.row())
        .await?
        .ok_or_else(|| ContactsError::ContactNotFound(key.to_string()))
}

pub async fn get_by_phone(pool: &PgPool, phone: &PhoneNumber) -> Result<Contact, ContactsError> {
    get(pool, &ContactKey::Phone(phone.clone())).await
}

pub async fn get_by_id(pool: &PgPool, id: Uuid) -> Result<Contact, ContactsError> {
    get(pool, &ContactKey::Id(id)).await
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
    Ok(store::list(pool, filter, limit, offset).await?)
}

/// Changes a contact (see [`ContactUpdate`]); `not_found` when there is none.
pub async fn update(
    pool: &PgPool,
    key: &ContactKey,
    change: &ContactUpdate,
) -> Result<Contact, ContactsError> {
    store::update(pool, key.row(), change)
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

/// Erases a contact: deletes it and removes its personal data from the whole history (events,
/// runs, steps, messages, AI history, quarantine, dispatches), keeping the rows' counts. What
/// the CLI's `contacts delete|erase` and the API's `DELETE /api/v1/contacts/{contact}` do.
pub async fn erase(pool: &PgPool, key: &ContactKey) -> Result<Erasure, ContactsError> {
    crate::store::erasure::erase(pool, key.row())
        .await?
        .ok_or_else(|| ContactsError::ContactNotFound(key.to_string()))
}

/// Deletes a contact's row only and returns it (its runs and messages stay in the history, with
/// its personal data: [`erase`] removes that too).
pub async fn delete(pool: &PgPool, key: &ContactKey) -> Result<Contact, ContactsError> {
    store::delete(pool, key.row())
        .await?
        .ok_or_else(|| ContactsError::ContactNotFound(key.to_string()))
}

/// Every group with its member counts, by name.
pub async fn list_groups(pool: &PgPool) -> Result<Vec<Group>, ContactsError> {
    Ok(store::list_groups(pool).await?)
}

pub async fn get_group(pool: &PgPool, name: &GroupName) -> Result<Group, ContactsError> {
    store::get_group(pool, name)
        .await?
        .ok_or_else(|| ContactsError::GroupNotFound(name.to_string()))
}

/// Creates an empty group; `conflict` when it exists.
pub async fn create_group(
    pool: &PgPool,
    name: &GroupName,
    description: Option<&str>,
) -> Result<Group, ContactsError> {
    if !store::create_group(pool, name, description).await? {
        return Err(ContactsError::Conflict(format!(
            "The group '{name}' exists"
        )));
    }
    get_group(pool, name).await
}

/// Deletes a group and removes it from its contacts (one transaction). Returns how many
/// contacts were in it.
pub async fn delete_group(pool: &PgPool, name: &GroupName) -> Result<u64, ContactsError> {
    store::delete_group(pool, name)
        .await?
        .ok_or_else(|| ContactsError::GroupNotFound(name.to_string()))
}

/// Puts phones in a group (the group is created when it does not exist; a phone that is not a
/// contact yet becomes one). Returns how many were not in it before.
pub async fn add_members(
    pool: &PgPool,
    group: &GroupName,
    phones: &[PhoneNumber],
) -> Result<u64, ContactsError> {
    Ok(store::add_members(pool, group, phones).await?)
}

/// Takes phones out of a group; `not_found` when the group does not exist. Returns how many
/// were in it.
pub async fn remove_members(
    pool: &PgPool,
    group: &GroupName,
    phones: &[PhoneNumber],
) -> Result<u64, ContactsError> {
    get_group(pool, group).await?;
    Ok(store::remove_members(pool, group, phones).await?)
}

/// Every member of a group, opted-out ones included (the caller decides), oldest first;
/// `not_found` when the group does not exist.
pub async fn members(pool: &PgPool, group: &GroupName) -> Result<Vec<Contact>, ContactsError> {
    let rows = store::members(pool, group).await?;
    if rows.is_empty() {
        get_group(pool, group).await?;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
