use std::fmt;

use serde::{Deserialize, Serialize};

/// A group's name: 1 to 64 letters, digits, `-`, `_` or `.`. The only way to get one is
/// [`GroupName::parse`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GroupName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Invalid group name '{input}': use 1 to 64 letters, digits, '-', '_' or '.' (e.g. vip-customers)"
)]
pub struct InvalidGroupName {
    pub input: String,
}

impl GroupName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, InvalidGroupName> {
        let name = raw.trim();
        let ok = !name.is_empty()
            && name.chars().count() <= Self::MAX_LEN
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Ok(Self(name.to_string()))
        } else {
            Err(InvalidGroupName {
                input: raw.to_string(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

crate::string_schema!(GroupName);

impl TryFrom<String> for GroupName {
    type Error = InvalidGroupName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<GroupName> for String {
    fn from(value: GroupName) -> Self {
        value.0
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_of_letters_digits_dash_underscore_and_dot_parse() {
        for name in ["vip", "VIP-2026", "leads_berlin", "a.b", "São-Paulo", "x"] {
            assert_eq!(GroupName::parse(name).unwrap().as_str(), name);
        }
        assert_eq!(GroupName::parse("  vip ").unwrap().as_str(), "vip");
        assert!(GroupName::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn bad_group_names_are_refused_with_the_rule() {
        for name in [
            "",
            "  ",
            "with space",
            "a;b",
            "a,b",
            "emoji🙂",
            &"a".repeat(65),
        ] {
            let err = GroupName::parse(name).unwrap_err();
            assert!(err.to_string().contains("1 to 64 letters"), "{name}");
        }
        assert!(serde_json::from_str::<GroupName>("\"no way\"").is_err());
        let ok: GroupName = serde_json::from_str("\"vip\"").unwrap();
        assert_eq!(ok.as_str(), "vip");
    }
}
