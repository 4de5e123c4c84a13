//! What PostgreSQL refuses to keep: a NUL character (`\u0000`) in a `text` or `jsonb` value.
//! Webhook bodies are made storable where they enter: every NUL in a string or an object key
//! becomes the six characters `\u0000`, so the data is kept, visibly, and never refused.

use serde_json::{Map, Value};

/// The text a NUL character is stored as.
pub const ESCAPED_NUL: &str = "\\u0000";

/// Replaces every NUL in `value`'s strings and keys with [`ESCAPED_NUL`]. Returns whether it
/// found one.
pub fn escape_nuls(value: &mut Value) -> bool {
    match value {
        Value::String(s) => escape_in(s),
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |found, v| escape_nuls(v) | found),
        Value::Object(map) => escape_nuls_in(map),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// [`escape_nuls`] for an object's keys and values.
pub fn escape_nuls_in(map: &mut Map<String, Value>) -> bool {
    let mut found = false;
    if map.keys().any(|k| k.contains('\0')) {
        let entries = std::mem::take(map);
        for (mut k, v) in entries {
            escape_in(&mut k);
            map.insert(k, v);
        }
        found = true;
    }
    map.values_mut()
        .fold(found, |found, v| escape_nuls(v) | found)
}

fn escape_in(s: &mut String) -> bool {
    if !s.contains('\0') {
        return false;
    }
    *s = s.replace('\0', ESCAPED_NUL);
    true
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nuls_in_strings_and_keys_become_visible_escapes() {
        let mut v = json!({"te\u{0}xt": ["a\u{0}b", {"deep": "\u{0}"}], "n": 1, "ok": "plain"});
        assert!(escape_nuls(&mut v));
        assert_eq!(
            v,
            json!({"te\\u0000xt": ["a\\u0000b", {"deep": "\\u0000"}], "n": 1, "ok": "plain"})
        );
        assert!(!escape_nuls(&mut v), "nothing is left to escape");
    }
}
