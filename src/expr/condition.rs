//! Conditions in CEL (Common Expression Language, cel.dev): compiled when the workflow loads,
//! evaluated over the run's data (`trigger`, `event`, `contact`, `steps`).
//! CEL has no loops of its own (its macros walk the data's lists once), so an expression's cost
//! is bounded by its size and the data's: loading refuses one longer than [`MAX_SOURCE`] or
//! nested deeper than [`MAX_NESTING`] (which also keeps the parser's recursion off the stack's end).

use std::{fmt, sync::Arc};

use serde::Deserialize;

#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Condition {
    source: String,
    #[serde(skip)]
    program: Option<Arc<cel::Program>>,
}

/// The longest expression a workflow may write, in bytes. The parser recurses on chains of
/// arithmetic (`1+1+1...`): in a debug build on a 2 MiB stack (a tokio worker's, where the API
/// validates workflows) about 1300 terms overflow it; 1024 bytes hold at most 512.
pub const MAX_SOURCE: usize = 1024;

/// The deepest nesting of brackets (`(`, `[`, `{`) an expression may write. Each level costs
/// the parser its whole chain of precedence rules: a debug build overflows a 2 MiB stack at
/// about 12 levels of parentheses (before this check, an expression in a workflow sent to
/// `POST /api/v1/workflows/validate` could abort the process).
pub const MAX_NESTING: usize = 8;

/// How deep `source` nests brackets, outside its string literals.
fn nesting(source: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in source.chars() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '(' | '[' | '{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                ')' | ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
    }
    deepest
}

impl Condition {
    pub fn parse(source: &str) -> Result<Self, String> {
        if source.len() > MAX_SOURCE {
            return Err(format!(
                "bad expression '{}...': {} bytes long, at most {MAX_SOURCE}",
                source.chars().take(40).collect::<String>(),
                source.len()
            ));
        }
        let depth = nesting(source);
        if depth > MAX_NESTING {
            return Err(format!(
                "bad expression '{}...': brackets nested {depth} deep, at most {MAX_NESTING}",
                source.chars().take(40).collect::<String>()
            ));
        }
        let program = cel::Program::compile(source).map_err(|e| {
            let e = e.to_string();
            let first = e.lines().next().unwrap_or_default();
            let first = first.strip_prefix("ERROR: <input>:").unwrap_or(first);
            format!("bad expression '{source}': {first}")
        })?;
        Ok(Condition {
            source: source.to_string(),
            program: Some(Arc::new(program)),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates to a boolean; anything else (or an evaluation error) is an error.
    pub fn evaluate(&self, data: &serde_json::Value) -> Result<bool, String> {
        let program = self.program.as_ref().ok_or("condition was not compiled")?;
        let mut context = cel::Context::default();
        if let Some(map) = data.as_object() {
            for (key, value) in map {
                let value = cel::to_value(value).map_err(|e| e.to_string())?;
                context.add_variable_from_value(key.clone(), value);
            }
        }
        match program.execute(&context) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!(
                "condition '{}' gave {other:?}, not true or false",
                self.source
            )),
            Err(e) => Err(format!("condition '{}' failed: {e}", self.source)),
        }
    }
}

impl TryFrom<String> for Condition {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Condition::parse(&value)
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Condition({:?})", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions_read_the_trigger_data() {
        let c =
            Condition::parse("trigger.message_type == 'text' && trigger.text.contains('hello')")
                .unwrap();
        assert!(
            c.evaluate(&json!({"trigger": {"message_type": "text", "text": "oh hello"}}))
                .unwrap()
        );
        assert!(
            !c.evaluate(&json!({"trigger": {"message_type": "image", "text": "hello"}}))
                .unwrap()
        );
    }

    #[test]
    fn a_syntax_error_is_caught_when_loading() {
        assert!(Condition::parse("trigger.text ==").is_err());
    }

    #[test]
    fn an_expression_too_long_or_too_deep_is_refused_when_loading() {
        let long = format!("trigger.text == '{}'", "x".repeat(MAX_SOURCE));
        let err = Condition::parse(&long).unwrap_err();
        assert!(err.contains("at most 1024"), "{err}");
        for (open, close) in [("(", ")"), ("[", "]"), ("{1: ", "}")] {
            let deep = format!("{}true{}", open.repeat(100), close.repeat(100));
            let err = Condition::parse(&deep).unwrap_err();
            assert!(err.contains("nested 100 deep, at most 8"), "{err}");
        }
        // Brackets inside a string do not count, and ordinary nesting loads.
        let quoted = format!("trigger.text == '{}'", "(".repeat(100));
        assert!(Condition::parse(&quoted).is_ok());
        let nested = format!("{}true{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        assert!(
            Condition::parse(&nested)
                .unwrap()
                .evaluate(&json!({}))
                .unwrap()
        );
    }

    #[test]
    fn a_non_boolean_result_is_an_error() {
        let c = Condition::parse("trigger.text").unwrap();
        assert!(c.evaluate(&json!({"trigger": {"text": "x"}})).is_err());
    }

    #[test]
    fn a_missing_field_is_an_error_not_a_crash() {
        let c = Condition::parse("trigger.nope == 'x'").unwrap();
        assert!(c.evaluate(&json!({"trigger": {}})).is_err());
    }
}

crate::string_schema!(Condition);
