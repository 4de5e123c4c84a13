//! `/api/v1/contacts` and `/api/v1/groups`: contacts (CRUD, CSV import) and groups.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State, rejection::JsonRejection, rejection::QueryRejection},
    http::StatusCode,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Api, ApiError, ApiResult, ApiState, Body, Op, schema};
use crate::{
    contacts::{
        self, Contact, ContactFilter, ContactKey, ContactUpdate, ContactsError, Group, GroupName,
        NewContact,
        import::{self, ImportReport},
    },
    domain::PhoneNumber,
};

impl From<ContactsError> for ApiError {
    fn from(e: ContactsError) -> Self {
        let status = match &e {
            ContactsError::ContactNotFound(_) | ContactsError::GroupNotFound(_) => {
                StatusCode::NOT_FOUND
            }
            ContactsError::Conflict(_) => StatusCode::CONFLICT,
            ContactsError::Database(db) => return ApiError::internal(db),
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

fn key(raw: &str) -> ApiResult<ContactKey> {
    ContactKey::parse(raw).map_err(ApiError::from)
}

fn group(raw: &str) -> ApiResult<GroupName> {
    GroupName::parse(raw).map_err(|e| ContactsError::from(e).into())
}

async fn list(
    State(s): State<ApiState>,
    query: Result<Query<ContactFilter>, QueryRejection>,
) -> ApiResult<Json<Vec<Contact>>> {
    let Query(filter) = query?;
    Ok(Json(contacts::list(&s.pool, &filter).await?))
}

async fn create(
    State(s): State<ApiState>,
    body: Result<Json<NewContact>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Contact>)> {
    let Json(new) = body?;
    Ok((
        StatusCode::CREATED,
        Json(contacts::create(&s.pool, &new).await?),
    ))
}

async fn show(State(s): State<ApiState>, Path(raw): Path<String>) -> ApiResult<Json<Contact>> {
    Ok(Json(contacts::get(&s.pool, &key(&raw)?).await?))
}

async fn update(
    State(s): State<ApiState>,
    Path(raw): Path<String>,
    body: Result<Json<ContactUpdate>, JsonRejection>,
) -> ApiResult<Json<Contact>> {
    let key = key(&raw)?;
    let Json(change) = body?;
    Ok(Json(contacts::update(&s.pool, &key, &change).await?))
}

async fn remove(State(s): State<ApiState>, Path(raw): Path<String>) -> ApiResult<Json<Contact>> {
    Ok(Json(contacts::delete(&s.pool, &key(&raw)?).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportQuery {
    group: Option<String>,
}

async fn import_csv(
    State(s): State<ApiState>,
    query: Result<Query<ImportQuery>, QueryRejection>,
    body: Bytes,
) -> ApiResult<Json<ImportReport>> {
    let Query(q) = query?;
    let group = q.group.as_deref().map(group).transpose()?;
    Ok(Json(
        import::import_csv(&s.pool, &body, group.as_ref()).await?,
    ))
}

async fn groups(State(s): State<ApiState>) -> ApiResult<Json<Vec<Group>>> {
    Ok(Json(contacts::list_groups(&s.pool).await?))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    pub name: GroupName,
    #[serde(default)]
    pub description: Option<String>,
}

async fn create_group(
    State(s): State<ApiState>,
    body: Result<Json<NewGroup>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Group>)> {
    let Json(new) = body?;
    Ok((
        StatusCode::CREATED,
        Json(contacts::create_group(&s.pool, &new.name, new.description.as_deref()).await?),
    ))
}

async fn show_group(State(s): State<ApiState>, Path(name): Path<String>) -> ApiResult<Json<Group>> {
    Ok(Json(contacts::get_group(&s.pool, &group(&name)?).await?))
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct GroupDeleted {
    pub deleted: String,
    /// Contacts the group was taken off.
    pub contacts_updated: u64,
}

async fn delete_group(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<GroupDeleted>> {
    let name = group(&name)?;
    let n = contacts::delete_group(&s.pool, &name).await?;
    Ok(Json(GroupDeleted {
        deleted: name.as_str().to_string(),
        contacts_updated: n,
    }))
}

/// Add contacts to a group (creating contacts that do not exist yet) and take others off it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MembersChange {
    #[serde(default)]
    pub add: Vec<PhoneNumber>,
    #[serde(default)]
    pub remove: Vec<PhoneNumber>,
}

async fn members(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    body: Result<Json<MembersChange>, JsonRejection>,
) -> ApiResult<Json<Group>> {
    let name = group(&name)?;
    let Json(change) = body?;
    if !change.add.is_empty() {
        contacts::add_members(&s.pool, &name, &change.add).await?;
    }
    if !change.remove.is_empty() {
        contacts::remove_members(&s.pool, &name, &change.remove).await?;
    }
    Ok(Json(contacts::get_group(&s.pool, &name).await?))
}

async fn group_contacts(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<Contact>>> {
    let name = group(&name)?;
    contacts::get_group(&s.pool, &name).await?;
    Ok(Json(contacts::members(&s.pool, &name).await?))
}

const CONTACT: &[(&str, &str, &str)] = &[(
    "contact",
    "path",
    "the contact's phone (+E.164), id (UUID) or customer id (digits)",
)];
const GROUP: &[(&str, &str, &str)] = &[("name", "path", "the group's name")];

pub(super) fn routes(api: Api) -> Api {
    api.op(
        Op {
            method: "get",
            path: "/api/v1/contacts",
            summary: "Contacts, oldest first, filtered",
            tag: "contacts",
            params: &[
                ("group", "query", "only members of this group"),
                ("opted_out", "query", "true: only opted-out contacts; false: only reachable ones"),
                ("search", "query", "part of a name, phone or customer id"),
                ("limit", "query", "at most this many (default 100, at most 1000)"),
                ("offset", "query", "skip this many"),
            ],
            body: Body::None,
            ok: (200, schema::<Vec<Contact>>),
            errors: &[400, 422],
        },
        list,
    )
    .op(
        Op {
            method: "post",
            path: "/api/v1/contacts",
            summary: "Create a contact",
            tag: "contacts",
            params: &[],
            body: Body::Json(schema::<NewContact>),
            ok: (201, schema::<Contact>),
            errors: &[409, 422],
        },
        create,
    )
    .op(
        Op {
            method: "post",
            path: "/api/v1/contacts/import",
            summary: "Import a CSV (header row; `phone` required; `name`, `groups` (;-separated), `opted_out`, other columns become fields). Bad rows are reported by line and skipped; good rows are written in one transaction",
            tag: "contacts",
            params: &[("group", "query", "put every imported contact in this group")],
            body: Body::Text("text/csv", "the CSV file"),
            ok: (200, schema::<ImportReport>),
            errors: &[400, 422],
        },
        import_csv,
    )
    .op(
        Op {
            method: "get",
            path: "/api/v1/contacts/{contact}",
            summary: "One contact",
            tag: "contacts",
            params: CONTACT,
            body: Body::None,
            ok: (200, schema::<Contact>),
            errors: &[404, 422],
        },
        show,
    )
    .op(
        Op {
            method: "patch",
            path: "/api/v1/contacts/{contact}",
            summary: "Change a contact: name, fields (merged; null removes), groups to add or remove, opted_out",
            tag: "contacts",
            params: CONTACT,
            body: Body::Json(schema::<ContactUpdate>),
            ok: (200, schema::<Contact>),
            errors: &[404, 422],
        },
        update,
    )
    .op(
        Op {
            method: "delete",
            path: "/api/v1/contacts/{contact}",
            summary: "Delete a contact (answers the deleted contact)",
            tag: "contacts",
            params: CONTACT,
            body: Body::None,
            ok: (200, schema::<Contact>),
            errors: &[404, 422],
        },
        remove,
    )
    .op(
        Op {
            method: "get",
            path: "/api/v1/groups",
            summary: "Groups with their member counts",
            tag: "groups",
            params: &[],
            body: Body::None,
            ok: (200, schema::<Vec<Group>>),
            errors: &[],
        },
        groups,
    )
    .op(
        Op {
            method: "post",
            path: "/api/v1/groups",
            summary: "Create a group",
            tag: "groups",
            params: &[],
            body: Body::Json(schema::<NewGroup>),
            ok: (201, schema::<Group>),
            errors: &[409, 422],
        },
        create_group,
    )
    .op(
        Op {
            method: "get",
            path: "/api/v1/groups/{name}",
            summary: "One group with its member counts",
            tag: "groups",
            params: GROUP,
            body: Body::None,
            ok: (200, schema::<Group>),
            errors: &[404, 422],
        },
        show_group,
    )
    .op(
        Op {
            method: "delete",
            path: "/api/v1/groups/{name}",
            summary: "Delete a group (its contacts stay, without it)",
            tag: "groups",
            params: GROUP,
            body: Body::None,
            ok: (200, schema::<GroupDeleted>),
            errors: &[404, 422],
        },
        delete_group,
    )
    .op(
        Op {
            method: "get",
            path: "/api/v1/groups/{name}/contacts",
            summary: "The group's contacts",
            tag: "groups",
            params: GROUP,
            body: Body::None,
            ok: (200, schema::<Vec<Contact>>),
            errors: &[404, 422],
        },
        group_contacts,
    )
    .op(
        Op {
            method: "post",
            path: "/api/v1/groups/{name}/members",
            summary: "Add contacts to the group (created when new) and take others off it",
            tag: "groups",
            params: GROUP,
            body: Body::Json(schema::<MembersChange>),
            ok: (200, schema::<Group>),
            errors: &[404, 422],
        },
        members,
    )
}
