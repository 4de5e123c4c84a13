//! `/api/v1/contacts` and `/api/v1/groups`: contacts (CRUD, CSV import) and groups.

use aide::axum::{
    ApiRouter,
    routing::{get_with, post_with},
};
use axum::{Json, extract::State, http::StatusCode};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    ApiError, ApiResult, ApiState, Conflict, NotFound, Unavailable, Unprocessable,
    io::{Body, Created, Csv, ErrorStatuses, JsonBody, PathParams, QueryParams},
};
use crate::{
    contacts::{
        self, Contact, ContactFilter, ContactKey, ContactUpdate, ContactsError, Erasure, Group,
        GroupName, NewContact,
        import::{self, ImportReport},
    },
    domain::PhoneNumber,
};

impl<S: ErrorStatuses> From<ContactsError> for ApiError<S> {
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

fn group(raw: &str) -> Result<GroupName, ContactsError> {
    Ok(GroupName::parse(raw)?)
}

/// Which contacts to list.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only members of this group.
    group: Option<GroupName>,
    /// true: only opted-out contacts; false: only reachable ones.
    opted_out: Option<bool>,
    /// Part of a name, phone or customer id.
    search: Option<String>,
    /// At most this many (default 100).
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<i64>,
    /// Skip this many.
    #[schemars(range(min = 0))]
    offset: Option<i64>,
}

async fn list(
    State(s): State<ApiState>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Vec<Contact>>, (Unprocessable, Unavailable)> {
    let filter = ContactFilter {
        group: q.group,
        opted_out: q.opted_out,
        search: q.search,
        limit: q.limit,
        offset: q.offset,
    };
    Ok(Json(contacts::list(&s.pool, &filter).await?))
}

/// A contact named in the path.
#[derive(Deserialize, JsonSchema)]
struct ContactPath {
    /// The contact's phone (+E.164), id (UUID) or customer id (digits).
    contact: String,
}

impl ContactPath {
    fn key(&self) -> Result<ContactKey, ContactsError> {
        ContactKey::parse(&self.contact)
    }
}

/// A group named in the path.
#[derive(Deserialize, JsonSchema)]
struct GroupPath {
    /// The group's name.
    name: String,
}

impl GroupPath {
    fn group(&self) -> Result<GroupName, ContactsError> {
        group(&self.name)
    }
}

async fn create(
    State(s): State<ApiState>,
    JsonBody(new): JsonBody<NewContact>,
) -> ApiResult<Created<Contact>, (Conflict, Unprocessable, Unavailable)> {
    Ok(Created(contacts::create(&s.pool, &new).await?))
}

/// What answering about one contact can give besides the contact.
type ContactAnswer = ApiResult<Json<Contact>, (NotFound, Unprocessable, Unavailable)>;

async fn show(State(s): State<ApiState>, PathParams(p): PathParams<ContactPath>) -> ContactAnswer {
    Ok(Json(contacts::get(&s.pool, &p.key()?).await?))
}

async fn update(
    State(s): State<ApiState>,
    PathParams(p): PathParams<ContactPath>,
    JsonBody(change): JsonBody<ContactUpdate>,
) -> ContactAnswer {
    Ok(Json(contacts::update(&s.pool, &p.key()?, &change).await?))
}

async fn remove(
    State(s): State<ApiState>,
    PathParams(p): PathParams<ContactPath>,
) -> ApiResult<Json<Erasure>, (NotFound, Unprocessable, Unavailable)> {
    Ok(Json(contacts::erase(&s.pool, &p.key()?).await?))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ImportQuery {
    /// Put every imported contact in this group.
    group: Option<String>,
}

async fn import_csv(
    State(s): State<ApiState>,
    QueryParams(q): QueryParams<ImportQuery>,
    Body(body, ..): Body<Csv>,
) -> ApiResult<Json<ImportReport>, (Unprocessable, Unavailable)> {
    let group = q.group.as_deref().map(group).transpose()?;
    if body.contains(&0) {
        // PostgreSQL stores no NUL in text: refused here rather than failing the transaction.
        return Err(ContactsError::InvalidCsv(
            "the file contains a NUL byte, which no contact field can hold".into(),
        )
        .into());
    }
    Ok(Json(
        import::import_csv(&s.pool, &body, group.as_ref()).await?,
    ))
}

async fn groups(State(s): State<ApiState>) -> ApiResult<Json<Vec<Group>>, (Unavailable,)> {
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
    JsonBody(new): JsonBody<NewGroup>,
) -> ApiResult<Created<Group>, (Conflict, Unprocessable, Unavailable)> {
    Ok(Created(
        contacts::create_group(&s.pool, &new.name, new.description.as_deref()).await?,
    ))
}

/// What answering about one group can give besides the answer `T`.
type GroupAnswer<T> = ApiResult<Json<T>, (NotFound, Unprocessable, Unavailable)>;

async fn show_group(
    State(s): State<ApiState>,
    PathParams(p): PathParams<GroupPath>,
) -> GroupAnswer<Group> {
    Ok(Json(contacts::get_group(&s.pool, &p.group()?).await?))
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct GroupDeleted {
    pub deleted: String,
    /// Contacts the group was taken off.
    pub contacts_updated: u64,
}

async fn delete_group(
    State(s): State<ApiState>,
    PathParams(p): PathParams<GroupPath>,
) -> GroupAnswer<GroupDeleted> {
    let name = p.group()?;
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
    PathParams(p): PathParams<GroupPath>,
    JsonBody(change): JsonBody<MembersChange>,
) -> GroupAnswer<Group> {
    let name = p.group()?;
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
    PathParams(p): PathParams<GroupPath>,
) -> GroupAnswer<Vec<Contact>> {
    let name = p.group()?;
    contacts::get_group(&s.pool, &name).await?;
    Ok(Json(contacts::members(&s.pool, &name).await?))
}

pub(super) fn routes() -> ApiRouter<ApiState> {
    let contacts = ApiRouter::new()
        .api_route(
            "/api/v1/contacts",
            get_with(list, |o| o.summary("Contacts, oldest first, filtered"))
                .post_with(create, |o| o.summary("Create a contact")),
        )
        .api_route(
            "/api/v1/contacts/import",
            post_with(import_csv, |o| {
                o.summary(
                    "Import a CSV (header row; `phone` required; `name`, `groups` (;-separated), \
                     `opted_out`, other columns become fields). Bad rows are reported by line and \
                     skipped; good rows are written in one transaction",
                )
            }),
        )
        .api_route(
            "/api/v1/contacts/{contact}",
            get_with(show, |o| o.summary("One contact"))
                .patch_with(update, |o| {
                    o.summary(
                        "Change a contact: name, fields (merged; null removes), groups to add or \
                         remove, opted_out",
                    )
                })
                .delete_with(remove, |o| {
                    o.summary(
                        "Delete a contact and erase its personal data from the whole history \
                         (answers the deleted contact and, in `erased`, the rows erased per \
                         table; the rows stay, with their personal data replaced)",
                    )
                }),
        )
        .with_path_items(|item| item.tag("contacts"));
    let groups = ApiRouter::new()
        .api_route(
            "/api/v1/groups",
            get_with(groups, |o| o.summary("Groups with their member counts"))
                .post_with(create_group, |o| o.summary("Create a group")),
        )
        .api_route(
            "/api/v1/groups/{name}",
            get_with(show_group, |o| {
                o.summary("One group with its member counts")
            })
            .delete_with(delete_group, |o| {
                o.summary("Delete a group (its contacts stay, without it)")
            }),
        )
        .api_route(
            "/api/v1/groups/{name}/contacts",
            get_with(group_contacts, |o| o.summary("The group's contacts")),
        )
        .api_route(
            "/api/v1/groups/{name}/members",
            post_with(members, |o| {
                o.summary("Add contacts to the group (created when new) and take others off it")
            }),
        )
        .with_path_items(|item| item.tag("groups"));
    contacts.merge(groups)
}
