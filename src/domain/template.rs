use std::fmt;

use serde::{Deserialize, Serialize};

/// An approved template's name: lowercase letters, digits and underscores, at most 512 chars.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TemplateName(String);

impl TemplateName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok = !raw.is_empty()
            && raw.len() <= 512
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(TemplateName(raw.to_string()))
        } else {
            Err(format!(
                "Template not found: '{raw}' is not a template name (lowercase letters, digits and _)"
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A template language code such as `en_US`, `pt_BR` or `de` (`en-US` is accepted and normalised).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LanguageCode(String);

impl LanguageCode {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let normalised = raw.replace('-', "_");
        let mut parts = normalised.split('_');
        let lang = parts.next().unwrap_or_default();
        let region = parts.next();
        let ok = (2..=3).contains(&lang.len())
            && lang.bytes().all(|b| b.is_ascii_lowercase())
            && region.is_none_or(|r| {
                (2..=4).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_alphanumeric())
            })
            && parts.next().is_none();
        if ok {
            Ok(LanguageCode(normalised))
        } else {
            Err(format!(
                "'{raw}' is not a language code such as en_US, pt_BR or de"
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype_impls {
    ($($t:ident),*) => {$(
        impl TryFrom<String> for $t {
            type Error = String;
            fn try_from(value: String) -> Result<Self, Self::Error> { $t::parse(&value) }
        }
        impl From<$t> for String {
            fn from(value: $t) -> Self { value.0 }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(&self.0) }
        }
    )*};
}
string_newtype_impls!(TemplateName, LanguageCode);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_names_are_lowercase_words() {
        assert!(TemplateName::parse("call_followup_2").is_ok());
        for bad in ["", "Hello", "has space", "dash-ed", &"a".repeat(513)] {
            assert!(TemplateName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn language_codes_are_normalised() {
        assert_eq!(LanguageCode::parse("en-US").unwrap().as_str(), "en_US");
        assert_eq!(LanguageCode::parse("de").unwrap().as_str(), "de");
        for bad in ["", "english", "EN", "en_US_x", "e"] {
            assert!(LanguageCode::parse(bad).is_err(), "{bad}");
        }
    }
}

crate::string_schema!(TemplateName);

crate::string_schema!(LanguageCode);
