//! Text with variables (`Hello {{ trigger.contact_name }}`), checked when the workflow loads and
//! rendered with strict undefined: a missing variable is an error, never an empty string.

use std::{collections::BTreeSet, fmt, sync::LazyLock};

use minijinja::{Environment, UndefinedBehavior};
use serde::Deserialize;

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
});

/// A string that may contain `{{ ... }}` variables.
#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Text {
    source: String,
    /// Dotted variable paths the text reads (`trigger.customer_name`).
    #[serde(skip)]
    variables: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("Missing variable {0}")]
    MissingVariable(String),
    #[error("could not render '{text}': {reason}")]
    Other { text: String, reason: String },
}

impl Text {
    pub fn parse(source: &str) -> Result<Self, String> {
        let variables = if source.contains("{{") || source.contains("{%") {
            let template = ENV
                .template_from_str(source)
                .map_err(|e| format!("bad variable syntax in '{source}': {e}"))?;
            template.undeclared_variables(true).into_iter().collect()
        } else {
            BTreeSet::new()
        };
        Ok(Text {
            source: source.to_string(),
            variables,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The dotted paths this text reads.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.variables.iter().map(String::as_str)
    }

    /// Renders with the run's data (`{trigger, contact, steps, event}`).
    pub fn render(&self, data: &serde_json::Value) -> Result<String, RenderError> {
        if self.variables.is_empty() && !self.source.contains("{%") {
            return Ok(self.source.clone());
        }
        // `null` counts as missing: drop it so strict mode (or `default`) sees it as undefined.
        let data = &without_nulls(data);
        ENV.render_str(&self.source, minijinja::value::Serde(data))
            .map_err(|e| {
                if e.kind() == minijinja::ErrorKind::UndefinedError
                    && let Some(missing) = self.variables.iter().find(|v| lookup(data, v).is_none())
                {
                    return RenderError::MissingVariable(missing.clone());
                }
                RenderError::Other {
                    text: self.source.clone(),
                    reason: e.to_string(),
                }
            })
    }
}

fn without_nulls(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Finds a dotted path in JSON; `null` counts as missing.
fn lookup<'a>(data: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    let mut current = data;
    for part in path.split('.') {
        current = current.get(part)?;
    }
    (!current.is_null()).then_some(current)
}

impl TryFrom<String> for Text {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Text::parse(&value)
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Text({:?})", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn variables_render_from_the_run_data() {
        let t = Text::parse("Hello {{ trigger.contact_name }}!").unwrap();
        let out = t
            .render(&json!({"trigger": {"contact_name": "Ana"}}))
            .unwrap();
        assert_eq!(out, "Hello Ana!");
    }

    #[test]
    fn a_missing_variable_is_an_error_naming_it() {
        let t = Text::parse("Hi {{trigger.customer_name}}").unwrap();
        let err = t.render(&json!({"trigger": {}})).unwrap_err();
        assert_eq!(err.to_string(), "Missing variable trigger.customer_name");
    }

    #[test]
    fn a_null_value_is_missing_too() {
        let t = Text::parse("{{trigger.contact_name}}").unwrap();
        let err = t
            .render(&json!({"trigger": {"contact_name": null}}))
            .unwrap_err();
        assert_eq!(err.to_string(), "Missing variable trigger.contact_name");
    }

    #[test]
    fn the_default_filter_fills_a_missing_value() {
        let t = Text::parse("Hi {{ trigger.name | default('there') }}").unwrap();
        assert_eq!(t.render(&json!({"trigger": {}})).unwrap(), "Hi there");
    }

    #[test]
    fn bad_syntax_is_caught_when_loading() {
        assert!(Text::parse("Hi {{ trigger.name ").is_err());
    }

    #[test]
    fn plain_text_is_returned_as_is() {
        let t = Text::parse("no variables here").unwrap();
        assert_eq!(t.render(&json!({})).unwrap(), "no variables here");
    }
}

crate::string_schema!(Text);
