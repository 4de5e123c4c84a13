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
    /// What loading found in it (boxed: steps hold many texts).
    #[serde(skip)]
    parsed: Box<Parsed>,
}

#[derive(Clone, Default)]
struct Parsed {
    /// Dotted variable paths the text reads (`trigger.customer_name`).
    variables: BTreeSet<String>,
    /// The text as literal parts and plain `{{ a.b }}` variables, when that is all it holds:
    /// such a text renders by lookup, without the template engine (`None`: render with it).
    plain: Option<Vec<Part>>,
}

/// A piece of a plain text.
#[derive(Clone, Debug, PartialEq)]
enum Part {
    Literal(String),
    /// A dotted path (`trigger.text`).
    Variable(String),
}

/// Splits `source` into literal text and plain variables, or `None` when it holds anything
/// else for the engine: a statement or comment, a filter, an expression, whitespace control,
/// a literal (`true`, `none`) or a trailing newline (which the engine drops).
fn plain_parts(source: &str) -> Option<Vec<Part>> {
    if source.contains("{%") || source.contains("{#") || source.ends_with('\n') {
        return None;
    }
    let identifier = |s: &str| {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let literal = ["true", "false", "none", "True", "False", "None"];
    let mut parts = Vec::new();
    let mut rest = source;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            parts.push(Part::Literal(rest[..open].to_string()));
        }
        let after = &rest[open + 2..];
        let close = after.find("}}")?;
        let path = after[..close].trim();
        let first = path.split('.').next().unwrap_or_default();
        if !path.split('.').all(identifier) || literal.contains(&first) {
            return None;
        }
        parts.push(Part::Variable(path.to_string()));
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Literal(rest.to_string()));
    }
    Some(parts)
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
            parsed: Box::new(Parsed {
                variables,
                plain: plain_parts(source),
            }),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The dotted paths this text reads.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.parsed.variables.iter().map(String::as_str)
    }

    /// Renders with the run's data (`{trigger, contact, steps, event}`).
    pub fn render(&self, data: &serde_json::Value) -> Result<String, RenderError> {
        if self.parsed.variables.is_empty()
            && !self.source.contains("{{")
            && !self.source.contains("{%")
        {
            return Ok(self.source.clone());
        }
        if let Some(rendered) = self.render_plain(data) {
            return rendered;
        }
        self.render_with_engine(data)
    }

    /// Renders a plain text by looking its variables up, as the engine would render them;
    /// `None` when a value is one the engine formats in its own way (a boolean, a float, a
    /// list, a map).
    fn render_plain(&self, data: &serde_json::Value) -> Option<Result<String, RenderError>> {
        let parts = self.parsed.plain.as_ref()?;
        let mut out = String::with_capacity(self.source.len() + 16);
        for part in parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Variable(path) => {
                    match lookup(data, path) {
                        None => {
                            // The first missing one in the order the engine's error names it.
                            let missing = self
                                .parsed
                                .variables
                                .iter()
                                .find(|v| lookup(data, v).is_none())
                                .unwrap_or(path);
                            return Some(Err(RenderError::MissingVariable(missing.clone())));
                        }
                        Some(serde_json::Value::String(s)) => out.push_str(s),
                        Some(serde_json::Value::Number(n)) if !n.is_f64() => {
                            out.push_str(&n.to_string());
                        }
                        Some(_) => return None,
                    }
                }
            }
        }
        Some(Ok(out))
    }

    fn render_with_engine(&self, data: &serde_json::Value) -> Result<String, RenderError> {
        // `null` counts as missing: drop it so strict mode (or `default`) sees it as undefined.
        let data = &without_nulls(data);
        ENV.render_str(&self.source, minijinja::value::Serde(data))
            .map_err(|e| {
                if e.kind() == minijinja::ErrorKind::UndefinedError
                    && let Some(missing) = self
                        .parsed
                        .variables
                        .iter()
                        .find(|v| lookup(data, v).is_none())
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
    fn plain_texts_render_without_the_engine_exactly_as_the_engine_does() {
        let data = json!({
            "trigger": {"text": "olá {{x}}", "n": 42, "neg": -7, "big": u64::MAX, "yes": true,
                        "no": false, "gone": null, "f": 1.5, "whole": 2.0,
                        "list": [1, "a"], "map": {"k": "v"}, "empty": ""},
            "contact": {"name": "Ana", "fields": {"plan": "gold"}},
        });
        let cases = [
            ("{{ trigger.text }}", true),
            (
                "Hi {{trigger.text}}, you have {{ trigger.n }} ({{ trigger.neg }})",
                true,
            ),
            (
                "{{ trigger.big }}/{{ trigger.yes }}/{{ trigger.no }}/[{{ trigger.empty }}]",
                true,
            ),
            (
                "{{ contact.fields.plan }} plan for {{ contact.name }}!",
                true,
            ),
            ("{{ trigger.missing }}", true),
            ("{{ trigger.gone }} and {{ contact.nope }}", true),
            ("{{ trigger.text.deeper }}", true),
            ("{{ trigger.f }} {{ trigger.whole }}", true),
            ("{{ trigger.list }} {{ trigger.map }}", true),
            ("a } b {{ trigger.n }} c }} d", true),
            ("{{ trigger.text | upper }}", false),
            ("{{- trigger.text }}", false),
            ("{{ trigger.n + 1 }}", false),
            ("{{ true }}", false),
            ("{{ trigger.text }}\n", false),
            ("{% if trigger.yes %}y{% endif %}", false),
        ];
        for (source, plain) in cases {
            let text = Text::parse(source).unwrap_or_else(|e| panic!("{source}: {e}"));
            assert_eq!(text.parsed.plain.is_some(), plain, "{source}");
            let engine = text.render_with_engine(&data);
            assert_eq!(text.render(&data), engine, "{source}");
            if let Some(fast) = text.render_plain(&data) {
                assert_eq!(fast, engine, "{source}");
            }
        }
        // The cases above reach both branches of the fast path.
        let fast = Text::parse("{{ trigger.n }}").unwrap();
        assert_eq!(fast.render_plain(&data), Some(Ok("42".to_string())));
        let engine_only = Text::parse("{{ trigger.f }}").unwrap();
        assert_eq!(engine_only.render_plain(&data), None);
        assert_eq!(engine_only.render(&data).unwrap(), "1.5");
    }

    #[test]
    fn plain_text_is_returned_as_is() {
        let t = Text::parse("no variables here").unwrap();
        assert_eq!(t.render(&json!({})).unwrap(), "no variables here");
    }
}

crate::string_schema!(Text);
