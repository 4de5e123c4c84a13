use std::fmt;

use serde::{Deserialize, Serialize};

/// A phone number in E.164 form (`+4915112345678`). The only way to get one is [`PhoneNumber::parse`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid phone number '{input}': format as +[country code][number], e.g. +4915112345678")]
pub struct InvalidPhoneNumber {
    pub input: String,
}

impl PhoneNumber {
    /// Parses an E.164 number. A leading `+` is required; WhatsApp ids (digits only) go through
    /// [`PhoneNumber::from_wa_id`].
    pub fn parse(raw: &str) -> Result<Self, InvalidPhoneNumber> {
        let err = || InvalidPhoneNumber {
            input: raw.to_string(),
        };
        let trimmed = raw.trim();
        let digits = trimmed.strip_prefix('+').ok_or_else(err)?;
        if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        if digits.starts_with('0') {
            return Err(err());
        }
        // libphonenumber checks the country code; numbering-plan validity is Meta's to judge
        // (fictional test numbers such as +1 650 555 01xx must pass).
        phonenumber::parse(None, trimmed).map_err(|_| err())?;
        Ok(Self(format!("+{digits}")))
    }

    /// A WhatsApp id (`wa_id`, digits without `+`) as a phone number.
    pub fn from_wa_id(wa_id: &str) -> Result<Self, InvalidPhoneNumber> {
        Self::parse(&format!("+{wa_id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits without `+`, as the Graph API's `to` field takes them.
    pub fn digits(&self) -> &str {
        &self.0[1..]
    }
}

impl TryFrom<String> for PhoneNumber {
    type Error = InvalidPhoneNumber;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<PhoneNumber> for String {
    fn from(value: PhoneNumber) -> Self {
        value.0
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

crate::string_schema!(PhoneNumber);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_e164_numbers_parse() {
        for n in [
            "+4915112345678",
            "+5511987650101",
            "+16505551234",
            "+447700900311",
        ] {
            assert_eq!(PhoneNumber::parse(n).unwrap().as_str(), n);
        }
    }

    #[test]
    fn numbers_without_plus_or_with_junk_are_rejected_with_the_expected_format() {
        for n in [
            "4915112345678",
            "+49 151 1234",
            "+49-151-12345678",
            "",
            "+",
            "+0123456789",
            "+12",
            "+1234567890123456",
            "hello",
        ] {
            let err = PhoneNumber::parse(n).unwrap_err();
            assert!(err.to_string().contains("+[country code][number]"), "{n}");
        }
    }

    #[test]
    fn a_wa_id_becomes_an_e164_number() {
        let p = PhoneNumber::from_wa_id("5511987650101").unwrap();
        assert_eq!(p.as_str(), "+5511987650101");
        assert_eq!(p.digits(), "5511987650101");
    }

    #[test]
    fn deserializing_goes_through_parse() {
        let ok: PhoneNumber = serde_json::from_str("\"+4915112345678\"").unwrap();
        assert_eq!(ok.as_str(), "+4915112345678");
        assert!(serde_json::from_str::<PhoneNumber>("\"12345\"").is_err());
    }
}
