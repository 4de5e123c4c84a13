//! Conditions in CEL (Common Expression Language, cel.dev): compiled when the workflow loads,
//! evaluated over the run's data (`trigger`, `event`, `contact`, `steps`).

use std::{fmt, sync::Arc};

use serde::Deserialize;

#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Condition {
    source: String,
    #[serde(skip)]
    program: Option<Arc<cel::Program>>,
}

impl Condition {
    pub fn parse(source: &str) -> Result<Self, String> {
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
