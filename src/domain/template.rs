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

/// A template's review status, as Meta spells it (`approved` is read as `APPROVED` too). The
/// `templates` table stores it in Meta's spelling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, sqlx::Type)]
#[serde(try_from = "String")]
#[sqlx(type_name = "text", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TemplateStatus {
    #[default]
    Approved,
    Pending,
    Rejected,
    Paused,
    Disabled,
    Flagged,
    InAppeal,
    PendingDeletion,
    Deleted,
    Archived,
    Locked,
    LimitExceeded,
}

impl TemplateStatus {
    pub const ALL: [TemplateStatus; 12] = [
        TemplateStatus::Approved,
        TemplateStatus::Pending,
        TemplateStatus::Rejected,
        TemplateStatus::Paused,
        TemplateStatus::Disabled,
        TemplateStatus::Flagged,
        TemplateStatus::InAppeal,
        TemplateStatus::PendingDeletion,
        TemplateStatus::Deleted,
        TemplateStatus::Archived,
        TemplateStatus::Locked,
        TemplateStatus::LimitExceeded,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            TemplateStatus::Approved => "APPROVED",
            TemplateStatus::Pending => "PENDING",
            TemplateStatus::Rejected => "REJECTED",
            TemplateStatus::Paused => "PAUSED",
            TemplateStatus::Disabled => "DISABLED",
            TemplateStatus::Flagged => "FLAGGED",
            TemplateStatus::InAppeal => "IN_APPEAL",
            TemplateStatus::PendingDeletion => "PENDING_DELETION",
            TemplateStatus::Deleted => "DELETED",
            TemplateStatus::Archived => "ARCHIVED",
            TemplateStatus::Locked => "LOCKED",
            TemplateStatus::LimitExceeded => "LIMIT_EXCEEDED",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        let wanted = raw.trim().to_ascii_uppercase();
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == wanted)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
                format!("'{raw}' is not a template status ({})", names.join(", "))
            })
    }
}

impl TryFrom<String> for TemplateStatus {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        TemplateStatus::parse(&value)
    }
}

impl fmt::Display for TemplateStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

crate::string_schema!(TemplateStatus);

/// A template's category. `templates.yaml` writes it in lowercase; Meta and the `templates`
/// table in uppercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "UPPERCASE")]
pub enum TemplateCategory {
    Marketing,
    Utility,
    Authentication,
}

impl TemplateCategory {
    pub const ALL: [TemplateCategory; 3] = [
        TemplateCategory::Marketing,
        TemplateCategory::Utility,
        TemplateCategory::Authentication,
    ];

    /// As Meta spells it (and the `templates` table stores it).
    pub const fn as_str(self) -> &'static str {
        match self {
            TemplateCategory::Marketing => "MARKETING",
            TemplateCategory::Utility => "UTILITY",
            TemplateCategory::Authentication => "AUTHENTICATION",
        }
    }

    /// Meta's spelling, in any case.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let wanted = raw.trim().to_ascii_uppercase();
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == wanted)
            .ok_or_else(|| {
                format!("'{raw}' is not a template category (MARKETING, UTILITY, AUTHENTICATION)")
            })
    }
}

impl fmt::Display for TemplateCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

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
    fn template_statuses_and_categories_read_meta_spellings_in_any_case() {
        assert_eq!(
            TemplateStatus::parse("pending_deletion"),
            Ok(TemplateStatus::PendingDeletion)
        );
        for s in TemplateStatus::ALL {
            assert_eq!(TemplateStatus::parse(s.as_str()), Ok(s));
        }
        assert!(TemplateStatus::parse("SUSPENDED").is_err());
        assert_eq!(
            TemplateCategory::parse("marketing"),
            Ok(TemplateCategory::Marketing)
        );
        assert!(TemplateCategory::parse("").is_err());
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
