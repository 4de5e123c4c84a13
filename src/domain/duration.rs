use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

/// A duration written as `500ms`, `90s`, `10m`, `2h` or `3d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HumanDuration(Duration);

impl HumanDuration {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let err = || format!("bad duration '{raw}': write it as 90s, 10m, 2h or 3d");
        let s = raw.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let (number, unit) = s.split_at(split);
        let n: u64 = number.parse().map_err(|_| err())?;
        let seconds = match unit {
            "ms" => return Ok(HumanDuration(Duration::from_millis(n))),
            "s" => n,
            "m" => n.checked_mul(60).ok_or_else(err)?,
            "h" => n.checked_mul(3600).ok_or_else(err)?,
            "d" => n.checked_mul(86_400).ok_or_else(err)?,
            _ => return Err(err()),
        };
        if seconds > 366 * 86_400 {
            return Err(format!("bad duration '{raw}': at most 366d"));
        }
        Ok(HumanDuration(Duration::from_secs(seconds)))
    }

    pub fn get(self) -> Duration {
        self.0
    }
}

impl From<Duration> for HumanDuration {
    fn from(value: Duration) -> Self {
        HumanDuration(value)
    }
}

impl TryFrom<String> for HumanDuration {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        HumanDuration::parse(&value)
    }
}

impl From<HumanDuration> for String {
    fn from(value: HumanDuration) -> Self {
        value.to_string()
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        let s = self.0.as_secs();
        if !ms.is_multiple_of(1000) {
            write!(f, "{ms}ms")
        } else if s.is_multiple_of(86_400) && s > 0 {
            write!(f, "{}d", s / 86_400)
        } else if s.is_multiple_of(3600) && s > 0 {
            write!(f, "{}h", s / 3600)
        } else if s.is_multiple_of(60) && s > 0 {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

crate::string_schema!(HumanDuration);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit() {
        for (raw, secs) in [("90s", 90), ("10m", 600), ("2h", 7200), ("3d", 259_200)] {
            assert_eq!(
                HumanDuration::parse(raw).unwrap().get(),
                Duration::from_secs(secs)
            );
            assert_eq!(HumanDuration::parse(raw).unwrap().to_string(), raw);
        }
        assert_eq!(
            HumanDuration::parse("500ms").unwrap().get(),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn bad_durations_say_how_to_write_them() {
        for raw in ["", "10", "m", "10 minutes", "1.5h", "-3s", "10w", "999999d"] {
            let err = HumanDuration::parse(raw).unwrap_err();
            assert!(err.contains("bad duration"), "{raw}: {err}");
        }
    }
}
