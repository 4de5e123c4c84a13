use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A standard 5-field cron expression (`0 9 * * 1-5`), parsed by croner when it is written.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CronExpr {
    source: String,
    cron: croner::Cron,
}

impl CronExpr {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let cron = croner::Cron::from_str(raw.trim()).map_err(|e| {
            format!("bad cron '{raw}': {e} (write five fields: minute hour day month weekday)")
        })?;
        Ok(CronExpr {
            source: raw.trim().to_string(),
            cron,
        })
    }
    pub fn cron(&self) -> &croner::Cron {
        &self.cron
    }
}

impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronExpr({:?})", self.source)
    }
}

impl TryFrom<String> for CronExpr {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        CronExpr::parse(&value)
    }
}

impl From<CronExpr> for String {
    fn from(value: CronExpr) -> Self {
        value.source
    }
}

/// An IANA time zone such as `Europe/Berlin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeZone(chrono_tz::Tz);

impl TimeZone {
    pub fn parse(raw: &str) -> Result<Self, String> {
        raw.trim()
            .parse::<chrono_tz::Tz>()
            .map(TimeZone)
            .map_err(|_| {
                format!("unknown time zone '{raw}' (use an IANA name such as Europe/Berlin)")
            })
    }
    pub fn tz(self) -> chrono_tz::Tz {
        self.0
    }
}

impl Default for TimeZone {
    fn default() -> Self {
        TimeZone(chrono_tz::UTC)
    }
}

impl TryFrom<String> for TimeZone {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        TimeZone::parse(&value)
    }
}

impl From<TimeZone> for String {
    fn from(value: TimeZone) -> Self {
        value.0.name().to_string()
    }
}

crate::string_schema!(CronExpr);
crate::string_schema!(TimeZone);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_five_field_expressions_parse() {
        for ok in ["0 9 * * *", "*/15 * * * 1-5", "30 8 1 * *"] {
            assert!(CronExpr::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "61 * * * *", "every day", "* * *"] {
            assert!(
                CronExpr::parse(bad).unwrap_err().contains("bad cron"),
                "{bad}"
            );
        }
    }

    #[test]
    fn time_zones_are_iana_names() {
        assert!(TimeZone::parse("Europe/Berlin").is_ok());
        assert!(
            TimeZone::parse("Mars/Olympus")
                .unwrap_err()
                .contains("unknown time zone")
        );
    }
}
