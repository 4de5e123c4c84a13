//! Text with variables (`Hello {{ trigger.contact_name }}`), checked when the workflow loads and
//! rendered with strict undefined: a missing variable is an error, never an empty string.
//! Rendering has a budget ([`FUEL`] engine steps, [`MAX_OUTPUT`] bytes): a loop that would run
//! for hours or write gigabytes is a render error, not a stuck worker.

use std::{collections::BTreeSet, fmt, sync::LazyLock};

use minijinja::{Environment, UndefinedBehavior, Value};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

/// The engine steps one rendering may take (minijinja's fuel: about one per instruction). A
/// text of a workflow with a loop over a few thousand items stays far below it; a loop of a
/// hundred million iterations stops after a few milliseconds.
pub const FUEL: u64 = 500_000;

/// The most bytes one rendering may write (a message body, a URL, an HTTP request's body).
pub const MAX_OUTPUT: usize = 1024 * 1024;

/// An engine with the settings every text shares: strict undefined and the budget.
fn engine() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env
}

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = engine();
    // Outside a URL a value is written as it is: `raw_url` changes nothing.
    env.add_filter("raw_url", |value: Value| value);
    env
});

/// The engine for URLs ([`Text::render_url`]): every value is percent-encoded as a URL
/// component, except one marked `| raw_url` (or `| safe`).
static URL_ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = engine();
    env.add_filter("raw_url", |value: Value| {
        if value.is_safe() {
            value
        } else {
            Value::from_safe_string(value.to_string())
        }
    });
    env.set_formatter(|out, state, value| {
        if value.is_safe() || value.is_undefined() {
            return minijinja::escape_formatter(out, state, value);
        }
        out.write_str(&encode_component(&value.to_string()))
            .map_err(minijinja::Error::from)
    });
    env
});

/// What stays as it is in a URL component: letters, digits and `-._~` (RFC 3986 unreserved).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `value` percent-encoded as one URL component: `/`, `?`, `&`, `=`, `#`, `%`, spaces and
/// every other reserved or non-ASCII character become `%XX`.
pub fn encode_component(value: &str) -> String {
    utf8_percent_encode(value, COMPONENT).to_string()
}

/// How values are written into the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escape {
    None,
    UrlComponent,
}

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
        self.render_as(data, Escape::None)
    }

    /// Renders a URL: every value is percent-encoded as a URL component, so that a value cannot
    /// add query parameters, path segments or a fragment; `{{ x | raw_url }}` writes a value
    /// that is itself a URL or a path as it is.
    pub fn render_url(&self, data: &serde_json::Value) -> Result<String, RenderError> {
        self.render_as(data, Escape::UrlComponent)
    }

    fn render_as(&self, data: &serde_json::Value, escape: Escape) -> Result<String, RenderError> {
        if self.parsed.variables.is_empty()
            && !self.source.contains("{{")
            && !self.source.contains("{%")
        {
            return Ok(self.source.clone());
        }
        if let Some(rendered) = self.render_plain(data, escape) {
            return rendered;
        }
        self.render_with_engine(data, escape)
    }

    /// Renders a plain text by looking its variables up, as the engine would render them;
    /// `None` when a value is one the engine formats in its own way (a boolean, a float, a
    /// list, a map).
    fn render_plain(
        &self,
        data: &serde_json::Value,
        escape: Escape,
    ) -> Option<Result<String, RenderError>> {
        let write = |out: &mut String, value: &str| match escape {
            Escape::None => out.push_str(value),
            Escape::UrlComponent => out.extend(utf8_percent_encode(value, COMPONENT)),
        };
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
                        Some(serde_json::Value::String(s)) => write(&mut out, s),
                        Some(serde_json::Value::Number(n)) if !n.is_f64() => {
                            write(&mut out, &n.to_string());
                        }
                        Some(_) => return None,
                    }
                }
            }
        }
        Some(Ok(out))
    }

    fn render_with_engine(
        &self,
        data: &serde_json::Value,
        escape: Escape,
    ) -> Result<String, RenderError> {
        // `null` counts as missing: drop it so strict mode (or `default`) sees it as undefined.
        let data = &without_nulls(data);
        let env = match escape {
            Escape::None => &*ENV,
            Escape::UrlComponent => &*URL_ENV,
        };
        let mut out = Bounded::default();
        env.template_from_str(&self.source)
            .and_then(|template| {
                template.render_captured_to(minijinja::value::Serde(data), &mut out)
            })
            .map_err(|e| {
                let budget = match e.kind() {
                    minijinja::ErrorKind::OutOfFuel => Some(format!(
                        "it takes more than {FUEL} steps to render (a loop too long?)"
                    )),
                    _ if out.over => Some(format!(
                        "it writes more than {} KiB (a loop too long?)",
                        MAX_OUTPUT / 1024
                    )),
                    _ => None,
                };
                if let Some(reason) = budget {
                    return RenderError::Other {
                        text: self.source.clone(),
                        reason,
                    };
                }
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
            })?;
        String::from_utf8(out.bytes).map_err(|e| RenderError::Other {
            text: self.source.clone(),
            reason: e.to_string(),
        })
    }
}

/// Where the engine writes: refuses to grow past [`MAX_OUTPUT`].
#[derive(Default)]
struct Bounded {
    bytes: Vec<u8>,
    over: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_OUTPUT {
            self.over = true;
            return Err(std::io::Error::other("rendered text too long"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
            for escape in [Escape::None, Escape::UrlComponent] {
                let engine = text.render_with_engine(&data, escape);
                assert_eq!(text.render_as(&data, escape), engine, "{source}");
                if let Some(fast) = text.render_plain(&data, escape) {
                    assert_eq!(fast, engine, "{source} ({escape:?})");
                }
            }
        }
        // The cases above reach both branches of the fast path.
        let fast = Text::parse("{{ trigger.n }}").unwrap();
        assert_eq!(
            fast.render_plain(&data, Escape::None),
            Some(Ok("42".to_string()))
        );
        let engine_only = Text::parse("{{ trigger.f }}").unwrap();
        assert_eq!(engine_only.render_plain(&data, Escape::None), None);
        assert_eq!(engine_only.render(&data).unwrap(), "1.5");
    }

    #[test]
    fn in_a_url_every_value_is_percent_encoded_unless_marked_raw_url() {
        let data = json!({"trigger": {"text": "a b/../c?x=1&y=2#z%", "name": "Zoë", "n": 7,
                          "list": ["a", "b"], "next": "https://x.example/p?q=1"}});
        let url = |source: &str| Text::parse(source).unwrap().render_url(&data);
        assert_eq!(
            url("/s/{{ trigger.text }}").unwrap(),
            "/s/a%20b%2F..%2Fc%3Fx%3D1%26y%3D2%23z%25"
        );
        assert_eq!(url("?n={{ trigger.name }}").unwrap(), "?n=Zo%C3%AB");
        assert_eq!(
            url("{{ trigger.text | upper }}").unwrap(),
            "A%20B%2F..%2FC%3FX%3D1%26Y%3D2%23Z%25"
        );
        assert_eq!(url("{{ trigger.n + 1 }}").unwrap(), "8");
        assert_eq!(
            url("{{ trigger.list }}").unwrap(),
            "%5B%27a%27%2C%20%27b%27%5D"
        );
        assert_eq!(url("{% if trigger.n %}/a b{% endif %}").unwrap(), "/a b");
        assert_eq!(
            url("{{ trigger.next | raw_url }}&r=1").unwrap(),
            "https://x.example/p?q=1&r=1"
        );
        assert_eq!(
            url("{{ trigger.next | safe }}").unwrap(),
            "https://x.example/p?q=1"
        );
        assert_eq!(
            url("{{ trigger.missing }}").unwrap_err(),
            RenderError::MissingVariable("trigger.missing".into())
        );
        // Outside a URL, raw_url changes nothing.
        let text = Text::parse("{{ trigger.text | raw_url }}").unwrap();
        assert_eq!(text.render(&data).unwrap(), "a b/../c?x=1&y=2#z%");
    }

    #[test]
    fn a_template_that_loops_too_long_is_a_render_error_not_a_hang() {
        let data = json!({"trigger": {"text": "x"}});
        let started = std::time::Instant::now();
        for (source, says) in [
            (
                "{% for i in range(100000000) %}x{% endfor %}",
                "too many elements",
            ),
            (
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
                "steps to render",
            ),
            (
                "{% for i in range(100000) %}{{ trigger.text * 10000 }}{% endfor %}",
                "KiB",
            ),
        ] {
            let text = Text::parse(source).unwrap();
            for rendered in [text.render(&data), text.render_url(&data)] {
                let err = rendered.unwrap_err().to_string();
                assert!(err.starts_with("could not render"), "{source}: {err}");
                assert!(err.contains(says), "{source}: {err}");
            }
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the budget took {:?} to stop them",
            started.elapsed()
        );
        // A loop of an ordinary size renders.
        let text = Text::parse("{% for i in range(5000) %}{{ trigger.text }}{% endfor %}").unwrap();
        assert_eq!(text.render(&data).unwrap().len(), 5000);
    }

    #[test]
    fn plain_text_is_returned_as_is() {
        let t = Text::parse("no variables here").unwrap();
        assert_eq!(t.render(&json!({})).unwrap(), "no variables here");
    }
}

crate::string_schema!(Text);
