//! `update_contact`: sets a contact's name, custom fields, groups and opt-out. The contact is the
//! run's customer unless `contact:` names another (a customer id, or an E.164 number); it is
//! created when missing. Later steps see the result in `{{ contact.* }}` (and in
//! `{{ steps.<id>.* }}`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{ErrorClass, Step, StepContext, StepError, StepOutput, http_request::JsonTemplate};
use crate::{
    domain::PhoneNumber,
    expr::Text,
    store::contacts::{StepChange, StepContact},
};

/// Longest name, field name and group name accepted.
const MAX_NAME_CHARS: usize = 256;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(try_from = "Spec")]
pub struct UpdateContact(Spec);

/// The step as written in YAML.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    #[serde(default)]
    pub id: Option<String>,
    /// This step's retry policy (default: the workflow's `retry`, then the global one).
    #[serde(default)]
    pub retry: Option<super::RetryPolicy>,
    /// Which contact: a customer id (wa_id) or an E.164 number; default the run's customer.
    #[serde(default)]
    pub contact: Option<Text>,
    /// The contact's name.
    #[serde(default)]
    pub name: Option<Text>,
    /// Custom fields merged into the contact's fields (others are kept). Values may be any
    /// YAML value; strings may contain variables.
    #[serde(default)]
    pub fields: BTreeMap<String, JsonTemplate>,
    /// Groups to add the contact to.
    #[serde(default)]
    pub add_groups: Vec<Text>,
    /// Groups to remove the contact from.
    #[serde(default)]
    pub remove_groups: Vec<Text>,
    /// true: the contact unsubscribed (no marketing templates); false: subscribed again.
    #[serde(default)]
    pub opted_out: Option<bool>,
}

impl TryFrom<Spec> for UpdateContact {
    type Error = String;
    fn try_from(spec: Spec) -> Result<Self, Self::Error> {
        if spec.name.is_none()
            && spec.fields.is_empty()
            && spec.add_groups.is_empty()
            && spec.remove_groups.is_empty()
            && spec.opted_out.is_none()
        {
            return Err(
                "update_contact changes nothing: give at least one of name, fields, \
                        add_groups, remove_groups or opted_out"
                    .into(),
            );
        }
        if let Some(key) = spec
            .fields
            .keys()
            .find(|k| k.trim().is_empty() || k.chars().count() > MAX_NAME_CHARS)
        {
            return Err(format!(
                "field name '{key}' must be 1 to {MAX_NAME_CHARS} characters"
            ));
        }
        let fixed = |groups: &[Text]| -> Vec<String> {
            groups
                .iter()
                .filter(|g| g.variables().next().is_none())
                .map(|g| g.source().trim().to_string())
                .collect()
        };
        let removed = fixed(&spec.remove_groups);
        if let Some(both) = fixed(&spec.add_groups).iter().find(|g| removed.contains(g)) {
            return Err(format!("group '{both}' is both added and removed"));
        }
        Ok(UpdateContact(spec))
    }
}

#[derive(Debug, Serialize)]
pub struct Input {
    /// The customer id (`contacts.customer_id`).
    pub contact: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub fields: Map<String, Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add_groups: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove_groups: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opted_out: Option<bool>,
}

fn invalid(message: String) -> StepError {
    StepError::new(ErrorClass::ProviderError, message)
}

/// `+4915112345678` -> `4915112345678`; any other id is kept as it is (trimmed).
fn customer_id(raw: &str) -> Result<String, StepError> {
    let raw = raw.trim();
    if raw.starts_with('+') {
        return Ok(PhoneNumber::parse(raw)?.digits().to_string());
    }
    if raw.is_empty() {
        return Err(invalid("update_contact: `contact` rendered empty".into()));
    }
    Ok(raw.to_string())
}

/// The phone number of a customer id that is a WhatsApp id (digits).
fn phone_of(customer_id: &str) -> Option<String> {
    if customer_id.bytes().all(|b| b.is_ascii_digit()) {
        PhoneNumber::from_wa_id(customer_id)
            .ok()
            .map(|p| p.to_string())
    } else {
        None
    }
}

fn render_groups(groups: &[Text], data: &Value) -> Result<Vec<String>, StepError> {
    let mut out: Vec<String> = Vec::with_capacity(groups.len());
    for group in groups {
        let name = group.render(data)?.trim().to_string();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
            return Err(invalid(format!(
                "group '{}' must be 1 to {MAX_NAME_CHARS} characters once rendered",
                group.source()
            )));
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

#[async_trait]
impl Step for UpdateContact {
    type Input = Input;

    fn id(&self) -> Option<&str> {
        self.0.id.as_deref()
    }

    fn retry(&self) -> Option<super::RetryPolicy> {
        self.0.retry
    }

    fn render(&self, ctx: &StepContext<'_>) -> Result<Input, StepError> {
        let spec = &self.0;
        let contact = match &spec.contact {
            Some(text) => customer_id(&text.render(ctx.data)?)?,
            None => ctx.customer_id.map(str::to_string).ok_or_else(|| {
                invalid(
                    "update_contact: this run has no customer (its trigger names none) and the \
                     step names no `contact:`"
                        .into(),
                )
            })?,
        };
        let name = match &spec.name {
            Some(text) => {
                let name = text.render(ctx.data)?.trim().to_string();
                if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
                    return Err(invalid(format!(
                        "update_contact: the name must be 1 to {MAX_NAME_CHARS} characters once rendered"
                    )));
                }
                Some(name)
            }
            None => None,
        };
        let mut fields = Map::new();
        for (key, value) in &spec.fields {
            fields.insert(key.clone(), value.render(ctx.data)?);
        }
        let add_groups = render_groups(&spec.add_groups, ctx.data)?;
        let remove_groups = render_groups(&spec.remove_groups, ctx.data)?;
        if let Some(both) = add_groups.iter().find(|g| remove_groups.contains(g)) {
            return Err(invalid(format!(
                "update_contact: group '{both}' is both added and removed"
            )));
        }
        Ok(Input {
            contact,
            name,
            fields,
            add_groups,
            remove_groups,
            opted_out: spec.opted_out,
        })
    }

    async fn execute(&self, input: Input, ctx: &StepContext<'_>) -> Result<StepOutput, StepError> {
        let phone = phone_of(&input.contact);
        let row = crate::store::contacts::apply_step_change(
            &ctx.services.pool,
            StepChange {
                customer_id: &input.contact,
                phone: phone.as_deref(),
                name: input.name.as_deref(),
                fields: &input.fields,
                add_groups: &input.add_groups,
                remove_groups: &input.remove_groups,
                opted_out: input.opted_out,
            },
        )
        .await
        .map_err(|e| invalid(format!("update_contact: could not save the contact: {e}")))?;
        let StepContact {
            customer_id: id,
            name,
            phone,
            fields,
            groups,
            opted_out,
        } = row;
        tracing::info!(run_id = %ctx.run_id, step = ctx.step_id, contact = %id, "contact updated");
        Ok(StepOutput::new(json!({
            "id": id,
            "name": name,
            "phone": phone,
            "fields": fields,
            "groups": groups,
            "opted_out": opted_out,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(yaml: &str) -> Result<UpdateContact, String> {
        serde_saphyr::from_str::<UpdateContact>(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn a_step_that_changes_nothing_is_refused_when_loading() {
        let err = step("id: save").unwrap_err();
        assert!(err.contains("changes nothing"), "{err}");
        assert!(step("opted_out: true").is_ok());
        assert!(step("add_groups: [leads]").is_ok());
        assert!(step("name: x\ncolour: red").is_err());
        let err = step("add_groups: [a]\nremove_groups: [a]").unwrap_err();
        assert!(err.contains("both added and removed"), "{err}");
    }

    #[test]
    fn contacts_are_named_by_customer_id_or_e164() {
        assert_eq!(customer_id(" 4915112345678 ").unwrap(), "4915112345678");
        assert_eq!(customer_id("+4915112345678").unwrap(), "4915112345678");
        assert_eq!(customer_id("BR.123abc").unwrap(), "BR.123abc");
        assert_eq!(
            customer_id("+12").unwrap_err().class,
            ErrorClass::InvalidPhoneNumber
        );
        assert!(customer_id("  ").is_err());
        assert_eq!(phone_of("4915112345678").as_deref(), Some("+4915112345678"));
        assert_eq!(phone_of("BR.123abc"), None);
    }

    #[test]
    fn fields_keep_their_types_and_groups_are_deduplicated() {
        let s = step("fields: { city: '{{ trigger.city }}', score: 5, vip: true }\nadd_groups: [leads, '{{ trigger.g }}', leads]").unwrap();
        let data = json!({"trigger": {"city": "Lisbon", "g": " vip "}});
        let mut fields = Map::new();
        for (k, v) in &s.0.fields {
            fields.insert(k.clone(), v.render(&data).unwrap());
        }
        assert_eq!(
            Value::Object(fields),
            json!({"city": "Lisbon", "score": 5, "vip": true})
        );
        assert_eq!(
            render_groups(&s.0.add_groups, &data).unwrap(),
            vec!["leads", "vip"]
        );
    }
}
